"""Customer experience per stage x touchpoint from an optional `satisfaction` column (1-5).

A score belongs to the stage the customer was in *before* the interaction, like the model's
outcome counts, so the map's emotion curve lines up with the touchpoints it describes.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from calibration.eventlog import EventLog


def satisfaction_by_cell(log: EventLog) -> dict[str, dict[str, dict[str, Any]]]:
    """{stage: {touchpoint: {mean, n}}} over the rows that carry a score (all personas pooled).

    Only cells with at least one score appear; an empty dict when the log has no scores.
    """
    if log.satisfaction is None or log.n_rows == 0:
        return {}
    S, T = len(log.stages), len(log.touchpoints)
    cust = log.customer
    first = np.ones(cust.size, dtype=bool)
    first[1:] = cust[1:] != cust[:-1]
    after = log.stage.astype(np.int64)
    before = np.empty_like(after)
    before[0] = 0
    before[1:] = after[:-1]
    before[first] = 0
    score = np.asarray(log.satisfaction, dtype=float)
    has = ~np.isnan(score)
    cell = before[has] * T + log.touchpoint[has].astype(np.int64)
    n = np.bincount(cell, minlength=S * T).reshape(S, T)
    total = np.bincount(cell, weights=score[has], minlength=S * T).reshape(S, T)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for s, stage in enumerate(log.stages):
        row = {log.touchpoints[t]: {"mean": round(float(total[s, t] / n[s, t]), 6), "n": int(n[s, t])}
               for t in range(T) if n[s, t] > 0}
        if row:
            out[stage] = row
    return out
