"""Engines: same inputs (Model, customers, Generator/SeedSequence), same EngineResult out."""
from sim.engines.result import EngineResult

__all__ = ["EngineResult"]
