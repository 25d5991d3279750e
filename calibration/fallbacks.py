"""Where the data cannot tell and an estimate is the pooled prior: fallback records with a plain message."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from calibration.counting import Counts
from calibration.cure import OutcomeFit
from calibration.pooling import DEFAULT_GAP_DAYS

if TYPE_CHECKING:
    from calibration.stats import LogStats

SEQUENCE_NOTE_NATS = 0.05  # below this the next touchpoint says too little about the last to matter


def fallbacks(st: LogStats, c: Counts, fit: OutcomeFit, *, censoring: str,
              inactivity_days: float) -> list[dict[str, Any]]:
    """Where the data cannot tell and an estimate is the pooled prior: records with a plain message.

    Evidence about a row's outcome: 1 if known (moved on, followed by another interaction, closed by
    end_values; under the window estimator, every decided row); for a quiet last row under the cure
    model, 1 - exp(-rate * quiet time), how far its quiet time tells "over" from "still to return".
    A cell with less than one interaction's worth of evidence is left to the pooled estimate.
    """
    history = c.history
    interactions, gaps, entered = c.interactions, c.gaps, c.entered
    quiet_time, sure = fit.quiet.quiet_d, fit.quiet.sure_d
    quiet_rate = fit.rate.ravel()[fit.quiet.stage_d]
    P, S, T = interactions.shape
    final = S - 1
    stages = st.stages
    out: list[dict[str, Any]] = []
    if censoring == "window":
        evidence = c.decided.astype(float)
        live = st.live_rows
        left = int(live - c.decided.sum())
        if left * 2 > live:
            out.append({"kind": "window", "count": left, "of": int(live),
                        "message": f"{left:,} of {int(live):,} interactions are in the last "
                                   f"{inactivity_days:g} days (history {history:.3g} days) and left out of the "
                                   "outcome, lapse and gap estimates; --censoring cure uses them"})
    else:
        # rows in the outcome window (when it applies) are not used; a quiet last row's evidence is
        # how far its quiet time tells "over" from "still to return"
        quiet_ev = np.where(sure, 1.0, 1.0 - np.exp(-quiet_rate * quiet_time))
        evidence = c.followed + np.bincount(fit.quiet.cell_d, weights=quiet_ev, minlength=P * S * T).reshape(P, S, T)
    evidence = evidence[:, :final]
    seen = interactions[:, :final] > 0
    blind = seen & (evidence < 1.0)
    stage_seen = seen.any(axis=(0, 2))
    stage_ev = evidence.sum(axis=(0, 2))
    for s in range(final):
        what = []
        if not stage_seen[s]:
            what.append("no interaction in the log: its drop-off, advance and interaction rate are the prior")
        else:
            if stage_ev[s] < 1.0:
                what.append("no interaction with a known outcome: its drop-off and advance are an even guess")
            if gaps[:, s].sum() == 0:
                what.append("no gap between two interactions: its interaction rate is "
                            + ("the other stages' average" if gaps.sum() > 0 else
                               f"the default of one per {DEFAULT_GAP_DAYS:g} days"))
        if 0 < s and stage_seen[s] and entered[:, s].sum() == 0:
            what.append("no move into it: its lapse is 0")
        if what:
            out.append({"kind": "stage", "stage": stages[s], "message": f"stage {stages[s]!r}: " + "; ".join(what)})
    informed_stage = stage_ev >= 1.0
    tp_seen = seen.any(axis=0)
    tp_blind = tp_seen & (evidence.sum(axis=0) < 1.0) & informed_stage[:, None]
    if tp_blind.any():
        k, n_ = int(tp_blind.sum()), int(tp_seen.sum())
        out.append({"kind": "touchpoints", "count": k, "of": n_,
                    "message": f"{k} of {n_} stage x touchpoint pairs had no interaction with a known outcome "
                               "and use their stage's average drop-off and advance"})
    cells = blind & ~tp_blind[None] & informed_stage[None, :, None]
    if cells.any():
        k, n_ = int(cells.sum()), int(seen.sum())
        out.append({"kind": "cells", "count": k, "of": n_,
                    "message": f"{k} of {n_} persona x stage x touchpoint cells had no interaction with a known "
                               "outcome and use the all-persona estimate"})
    out.extend(zone_notes(st.notes))
    return out


def zone_notes(notes: dict[str, Any]) -> list[dict[str, Any]]:
    """A log whose timestamps mix rows with a time zone and rows without (no mapping naming their zone):
    the latter were read as UTC, which local times are not."""
    zoneless, zoned = notes.get("zoneless_rows", 0), notes.get("zoned_rows", 0)
    if not (zoneless and zoned):
        return []
    return [{"kind": "time_zone", "count": int(zoneless), "of": int(zoneless + zoned),
             "message": f"{zoneless:,} of {zoneless + zoned:,} timestamps name no time zone while the others do; "
                        "they were read as UTC: if they are local times, set [timestamp] timezone in a "
                        "--mapping file"}]


def all_rows_note(st: LogStats, c: Counts, inactivity_days: float) -> dict[str, Any]:
    """The record saying every interaction entered (the window would have left most undecided)."""
    k, n_live = int(st.window_rows), int(st.live_rows)
    return {"kind": "all_rows", "count": k, "of": n_live,
            "message": f"{k:,} of {n_live:,} interactions are in the last {inactivity_days:g} days "
                       f"(history {c.history:.3g} days): too many to leave out, so every interaction "
                       "enters with the cure model, which leans on exponential gaps between "
                       "interactions"}


def touch_order_note(dependence: dict[str, Any]) -> dict[str, Any] | None:
    """The record saying the touchpoints depend on each other though drawn afresh; None if they hardly do."""
    if not (dependence["bic_favours_sequences"] and dependence["nats_per_interaction"] >= SEQUENCE_NOTE_NATS):
        return None
    return {"kind": "touch_order", "count": dependence["pairs"],
            "message": "consecutive touchpoints depend on each other (the next one tells "
                       f"{dependence['nats_per_interaction']:.2f} nats about the last, over "
                       f"{dependence['pairs']:,} pairs), but every touchpoint was drawn afresh: for "
                       "attribution and removals that follow the sequences, as first-order Markov "
                       "attribution does, calibrate with --touch-order 1 (it keeps one time to "
                       "leave per stage, without leave speeds)"}
