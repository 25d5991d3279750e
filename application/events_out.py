"""Temporary: the engines helper replaces this module with the event-log writer moved out of sim/engines/events.py."""
from sim.engines.events import write_event_log  # noqa: F401  # replaced by the engines helper's module
