"""The value model from an optional `value` column (money realised by each interaction).

What the three means are, and how revenue follows from them, is sim/money.py's text. The value of a
row is known whatever its outcome's censoring (the money was realised when the row was written), so
every row of a live stage enters, recent ones too: no censoring rule is needed here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from calibration.counting import row_structure
from calibration.eventlog import EventLog
from sim.rounding import round_sig

NOTE = ("per persona: conversion = mean value of the interaction that converts; entry = mean value of any other "
        "interaction that moves the customer into the stage; interaction = mean value of an interaction in the "
        "stage that does not move the customer on; n = interactions behind each mean; pooled = no such "
        "interaction of the persona, so the all-persona mean; values after the final stage are not projected")


@dataclass
class ValueSums:
    """Per persona x stage: count, sum and sum of squares of the values of converting moves, other moves
    into a stage and interactions that stay; and the log's totals (adds up over buckets)."""

    groups: np.ndarray  # [3 (conversion, entry, interaction), 3 (n, sum, sum of squares), P, S]
    rows_with_value: int
    total: float
    after_final_rows: int
    after_final_total: float

    @staticmethod
    def add_up(parts: list[ValueSums]) -> ValueSums:
        """The buckets' sums added in order."""
        groups = parts[0].groups.copy()
        for p in parts[1:]:
            groups += p.groups
        return ValueSums(groups=groups, rows_with_value=sum(p.rows_with_value for p in parts),
                         total=float(sum(p.total for p in parts)),
                         after_final_rows=sum(p.after_final_rows for p in parts),
                         after_final_total=float(sum(p.after_final_total for p in parts)))


def value_sums(log: EventLog, before: np.ndarray, after: np.ndarray) -> ValueSums | None:
    """The sums of one bucket (``before`` / ``after``: each row's stage before and after it); None without values."""
    if log.value is None:
        return None
    P, S = len(log.personas), len(log.stages)
    final, c = S - 1, log.conversion_index
    persona = log.persona_of_customer[log.customer].astype(np.int64)
    value = np.asarray(log.value, dtype=float)
    live = before < final
    converting = live & (before < c) & (after >= c)
    groups = np.zeros((3, 3, P, S))
    for g, (mask, stage) in enumerate(((converting, None), (live & (after > before) & ~converting, after),
                                       (live & (after == before), before))):
        idx = persona[mask] * S + (stage[mask] if stage is not None else 0)
        groups[g, 0] = np.bincount(idx, minlength=P * S).reshape(P, S)
        groups[g, 1] = np.bincount(idx, weights=value[mask], minlength=P * S).reshape(P, S)
        groups[g, 2] = np.bincount(idx, weights=value[mask] ** 2, minlength=P * S).reshape(P, S)
    return ValueSums(groups=groups, rows_with_value=int((value > 0).sum()), total=float(value.sum()),
                     after_final_rows=int((value[~live] > 0).sum()), after_final_total=float(value[~live].sum()))


def value_section(log: EventLog, currency: str | None = None) -> dict[str, Any]:
    """The model JSON's ``value`` section of a whole log; {} when it has no value column and no currency."""
    sums = None
    if log.value is not None:
        _, _, before = row_structure(log.customer, log.stage.astype(np.int64))
        sums = value_sums(log, before, log.stage.astype(np.int64))
    return section_of(sums, log.personas, log.stages, currency)


def section_of(sums: ValueSums | None, personas: list[str], stages: list[str],
               currency: str | None = None) -> dict[str, Any]:
    """The model JSON's ``value`` section from the sums; {} when there are none and no currency is given."""
    if sums is None:
        return {"currency": currency} if currency else {}
    S = len(stages)

    def means(g: int) -> tuple[np.ndarray, ...]:
        n, s1, s2 = sums.groups[g]
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

    conv, entry, inter = means(0), means(1), means(2)
    out = {}
    for p, name in enumerate(personas):
        out[name] = {
            "conversion": cell(conv[0][p, 0], conv[1][p, 0], conv[2][p, 0]),
            "entry": {stages[u]: cell(entry[0][p, u], entry[1][p, u], entry[2][p, u]) for u in range(1, S)},
            "interaction": {stages[s]: cell(inter[0][p, s], inter[1][p, s], inter[2][p, s]) for s in range(S - 1)},
        }
    return {
        "currency": currency,
        "model": NOTE,
        "personas": out,
        "log": {"rows_with_value": sums.rows_with_value, "total": round_sig(sums.total),
                "after_final_stage": {"rows_with_value": sums.after_final_rows,
                                      "total": round_sig(sums.after_final_total)}},
    }
