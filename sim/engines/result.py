"""What one engine run returns: aggregate counts only (no per-event storage)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class EngineResult:
    """Aggregate counts of one engine run; runs add up with ``+``."""

    customers: np.ndarray  # [P] customers per persona
    reached: np.ndarray  # [P, S] customers whose highest stage (within the horizon) is >= s
    dropped: np.ndarray  # [P, S] journeys that ended (within the horizon) in stage s, incomplete
    interactions: np.ndarray  # [P, S, T]
    drop_offs: np.ndarray  # [P, S, T] journeys ended by an interaction with t in s
    weekly_arrivals: np.ndarray  # [W] arrivals per calendar week since the cohort's start
    weekly_conversions: np.ndarray  # [W] conversions per calendar week
    conversion_index: int
    # engine-specific aggregates, e.g. {"capacity": {touchpoint: queue counters}} from the SimPy engine
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Customers simulated."""
        return int(self.customers.sum())

    @property
    def conversions(self) -> int:
        """Customers who reached the conversion stage (within the horizon)."""
        return int(self.reached[:, self.conversion_index].sum())

    @property
    def conversion_rate(self) -> float:
        """Conversions per customer."""
        return self.conversions / max(self.n, 1)

    def __add__(self, other: EngineResult) -> EngineResult:
        w = max(self.weekly_arrivals.size, other.weekly_arrivals.size)

        def pad(a: np.ndarray) -> np.ndarray:
            return np.pad(a, (0, w - a.size))

        return EngineResult(
            customers=self.customers + other.customers, reached=self.reached + other.reached,
            dropped=self.dropped + other.dropped, interactions=self.interactions + other.interactions,
            drop_offs=self.drop_offs + other.drop_offs,
            weekly_arrivals=pad(self.weekly_arrivals) + pad(other.weekly_arrivals),
            weekly_conversions=pad(self.weekly_conversions) + pad(other.weekly_conversions),
            conversion_index=self.conversion_index, extras=merge_extras(self.extras, other.extras),
        )

    @classmethod
    def empty(cls, P: int, S: int, T: int, conversion_index: int) -> EngineResult:
        """A result with no customers: the start of a sum."""
        z = np.zeros
        return cls(customers=z(P, np.int64), reached=z((P, S), np.int64), dropped=z((P, S), np.int64),
                   interactions=z((P, S, T), np.int64), drop_offs=z((P, S, T), np.int64),
                   weekly_arrivals=z(0, np.int64), weekly_conversions=z(0, np.int64),
                   conversion_index=conversion_index)


def merge_extras(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Add two ``extras`` trees: numbers add, ``max_*`` keys take the maximum, ``settings`` keep the first."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif key == "settings":
            continue
        elif isinstance(value, dict):
            out[key] = merge_extras(out[key], value)
        elif key.startswith("max_"):
            out[key] = max(out[key], value)
        else:
            out[key] = out[key] + value
    return out
