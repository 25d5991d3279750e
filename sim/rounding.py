"""Rounding rules for the JSON records: one owner, so every file rounds alike."""
from __future__ import annotations

import math


def round_sig(x: float | None) -> float | None:
    """10 significant digits: stable JSON without float noise; None stays None."""
    return None if x is None else float(f"{float(x):.10g}")


def round6(x: float) -> float:
    """6 significant digits (backtest and drift estimates); nan and inf become 0.0."""
    return float(f"{float(x):.6g}") if math.isfinite(float(x)) else 0.0


def round4(x: float) -> float:
    """4 significant digits (p- and q-values)."""
    return float(f"{float(x):.4g}")
