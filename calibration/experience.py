"""Customer experience per stage x touchpoint from an optional `satisfaction` column (1-5).

A score belongs to the stage the customer was in *before* the interaction, like the model's
outcome counts, so the map's emotion curve lines up with the touchpoints it describes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from calibration.counting import row_structure
from calibration.eventlog import EventLog


@dataclass
class ExperienceSums:
    """Scored rows and their scores' sum per stage x touchpoint (adds up over buckets)."""

    n: np.ndarray  # [S, T]
    total: np.ndarray  # [S, T]

    @staticmethod
    def add_up(parts: list[ExperienceSums]) -> ExperienceSums:
        """The buckets' sums added in order."""
        n, total = parts[0].n.copy(), parts[0].total.copy()
        for p in parts[1:]:
            n += p.n
            total += p.total
        return ExperienceSums(n=n, total=total)


def experience_sums(log: EventLog, before: np.ndarray) -> ExperienceSums | None:
    """The sums of one bucket (``before``: each row's stage before it); None when the log has no scores."""
    if log.satisfaction is None:
        return None
    S, T = len(log.stages), len(log.touchpoints)
    score = np.asarray(log.satisfaction, dtype=float)
    has = ~np.isnan(score)
    cell = before[has] * T + log.touchpoint[has].astype(np.int64)
    return ExperienceSums(n=np.bincount(cell, minlength=S * T).reshape(S, T),
                          total=np.bincount(cell, weights=score[has], minlength=S * T).reshape(S, T))


def satisfaction_section(sums: ExperienceSums | None, stages: list[str],
                         touchpoints: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """{stage: {touchpoint: {mean, n}}} over the rows that carry a score (all personas pooled).

    Only cells with at least one score appear; an empty dict when the log has no scores.
    """
    if sums is None:
        return {}
    n, total = sums.n, sums.total
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for s, stage in enumerate(stages):
        row = {touchpoints[t]: {"mean": round(float(total[s, t] / n[s, t]), 6), "n": int(n[s, t])}
               for t in range(len(touchpoints)) if n[s, t] > 0}
        if row:
            out[stage] = row
    return out


def satisfaction_by_cell(log: EventLog) -> dict[str, dict[str, dict[str, Any]]]:
    """`satisfaction_section` of a whole log."""
    if log.satisfaction is None or log.n_rows == 0:
        return {}
    _, _, before = row_structure(log.customer, log.stage.astype(np.int64))
    return satisfaction_section(experience_sums(log, before), log.stages, log.touchpoints)
