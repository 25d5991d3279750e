"""The value model from an optional `value` column (money realised by each interaction).

What the three means are, and how revenue follows from them, is sim/money.py's text. The value of a
row is known whatever its outcome's censoring (the money was realised when the row was written), so
every row of a live stage enters, recent ones too: no censoring rule is needed here.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from calibration.eventlog import EventLog
from sim.rounding import round_sig

NOTE = ("per persona: conversion = mean value of the interaction that converts; entry = mean value of any other "
        "interaction that moves the customer into the stage; interaction = mean value of an interaction in the "
        "stage that does not move the customer on; n = interactions behind each mean; pooled = no such "
        "interaction of the persona, so the all-persona mean; values after the final stage are not projected")


def value_section(log: EventLog, currency: str | None = None) -> dict[str, Any]:
    """The model JSON's ``value`` section; {} when the log has no value column and no currency is given."""
    if log.value is None:
        return {"currency": currency} if currency else {}
    P, S = len(log.personas), len(log.stages)
    final, c = S - 1, log.conversion_index
    cust = log.customer
    first = np.ones(cust.size, dtype=bool)
    first[1:] = cust[1:] != cust[:-1]
    after = log.stage.astype(np.int64)
    before = np.empty_like(after)
    if after.size:
        before[0] = 0
        before[1:] = after[:-1]
    before[first] = 0
    persona = log.persona_of_customer[cust].astype(np.int64)
    value = np.asarray(log.value, dtype=float)
    live = before < final
    converting = live & (before < c) & (after >= c)
    moved = live & (after > before) & ~converting
    still = live & (after == before)

    def stats(mask: np.ndarray, stage: np.ndarray | None) -> tuple[np.ndarray, ...]:
        idx = persona[mask] * S + (stage[mask] if stage is not None else 0)
        n = np.bincount(idx, minlength=P * S).reshape(P, S).astype(float)
        s1 = np.bincount(idx, weights=value[mask], minlength=P * S).reshape(P, S)
        s2 = np.bincount(idx, weights=value[mask] ** 2, minlength=P * S).reshape(P, S)
        mean = np.where(n > 0, s1 / np.maximum(n, 1), 0.0)
        var = np.where(n > 1, (s2 - n * mean ** 2) / np.maximum(n - 1, 1), 0.0)
        top_n = n.sum(0)
        top = np.where(top_n > 0, s1.sum(0) / np.maximum(top_n, 1), 0.0)
        return n, np.where(n > 0, mean, top[None]), np.sqrt(np.maximum(var, 0.0))

    def cell(n: float, mean: float, sd: float) -> dict[str, Any]:
        rec: dict[str, Any] = {"mean": round_sig(mean), "sd": round_sig(sd), "n": int(n)}
        if n == 0:
            rec["pooled"] = True
        return rec

    conv = stats(converting, None)
    entry = stats(moved, after)
    inter = stats(still, before)
    personas = {}
    for p, name in enumerate(log.personas):
        personas[name] = {
            "conversion": cell(conv[0][p, 0], conv[1][p, 0], conv[2][p, 0]),
            "entry": {log.stages[u]: cell(entry[0][p, u], entry[1][p, u], entry[2][p, u]) for u in range(1, S)},
            "interaction": {log.stages[s]: cell(inter[0][p, s], inter[1][p, s], inter[2][p, s])
                            for s in range(S - 1)},
        }
    return {
        "currency": currency,
        "model": NOTE,
        "personas": personas,
        "log": {"rows_with_value": int((value > 0).sum()), "total": round_sig(value.sum()),
                "after_final_stage": {"rows_with_value": int((value[~live] > 0).sum()),
                                      "total": round_sig(value[~live].sum())}},
    }

