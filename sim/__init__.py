"""journey.sim: the calibrated model, exact evaluator, engines, what-if, optimizer and report."""
from sim._version import __version__

__all__ = ["__version__"]
