"""Estimation: EventLog in, Model out (pure; keeps the counts behind every estimate).

Censoring. A row that moved the customer on, or was followed by another row of the customer, has
a known outcome however recent it is; only a customer's last non-advancing row (drop-off, or a stay
whose return is still to come) and an unanswered move into a stage (lapse, or a return still to
come) are uncertain.
  * ``censoring="cure"`` (default): every row enters the likelihood. Known rows count as they are,
    with their gaps; an uncertain row counts as a drop-off (lapse) with P(journey over | quiet time)
    = d / (d + stay * exp(-rate * quiet)) (l / (l + (1 - l) * exp(-rate * quiet))), the rest as a
    stay whose quiet time is censored time at risk for the rate (a cure model, solved by EM; the
    weights of "over" and "still going" are exactly the likelihood's, so nothing is biased and no
    row is dropped). ``inactivity_days`` does not enter the estimates: forcing rows quiet longer
    than it to "over" would bring back the bias the cure model removes (slow journeys written
    off); it only sets the log summary's ended / in-progress counts.
  * ``censoring="window"``: rows in the last ``inactivity_days`` of the log are left out of the
    outcome, lapse and gap estimates, whatever their outcome (no selection bias), and an earlier
    quiet row counts as a drop-off (the contract's inactivity rule, as it is). Their customers
    still count as customers, and their touchpoints toward the shares.
Where the data cannot tell, an estimate is the pooled prior: ``estimator.fallbacks`` lists each
such place in plain words; where nothing can be estimated, an InputError says so.

Sparse cells are pooled: each persona × stage × touchpoint estimate is a Dirichlet (beta) posterior
mean shrunk toward the all-persona estimate of the same stage and touchpoint, which is shrunk
toward the stage's average, with a prior weight of ``pooling`` pseudo-interactions.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from calibration.load import EventLog
from sim.errors import InputError
from sim.model import Model

DEFAULT_INACTIVITY_DAYS = 30.0
DEFAULT_POOLING = 10.0
DEFAULT_GAP_DAYS = 7.0
SPARSE_BELOW = 30
CENSORING = ("cure", "window")
DWELL = ("way_out", "plain")
EM_ITERATIONS = 200
EM_TOLERANCE = 1e-7
CURE_STEPS = 2000  # EM steps at most for the cure weights (accelerated: tens usually do)
# Under the cure model the outcome window stays (robust to gaps that are not exponential, as real
# ones are not) unless it would leave more than this share of the rows undecided; then every row
# enters, weighted by the cure model (a short history: a week's log with a 30-day window).
ALL_ROWS_ABOVE = 0.5
SEQUENCE_NOTE_NATS = 0.05  # below this the next touchpoint says too little about the last to matter


def estimate(log: EventLog, *, inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
             pooling: float = DEFAULT_POOLING, censoring: str = "cure", dwell: str = "way_out",
             touch_order: int = 0) -> Model:
    """The journey model of an event log (see the module docstring); ``touch_order=1``: the next
    touchpoint depends on the last one in the stage (touch sequences, one time to leave per stage)."""
    if touch_order not in (0, 1):
        raise InputError("must be 0 or 1", where="--touch-order", value=touch_order,
                         hint="1: the next touchpoint depends on the last one; 0: drawn afresh each time")
    if touch_order == 1:
        dwell = "plain"  # leave speeds assume touchpoints drawn afresh; sequences keep one time to leave
    if censoring not in CENSORING:
        raise InputError("unknown censoring method", where="--censoring", value=censoring, hint="use cure or window")
    if dwell not in DWELL:
        raise InputError("unknown dwell model", where="--dwell", value=dwell, hint="use way_out or plain")
    if inactivity_days < 0:
        raise InputError("must not be negative", where="--inactivity-days", value=inactivity_days)
    if pooling < 0:
        raise InputError("must not be negative", where="pooling", value=pooling)
    P, S, T = len(log.personas), len(log.stages), len(log.touchpoints)
    final = S - 1
    m = float(pooling)

    cust, time, tp, after = log.customer, log.time, log.touchpoint, log.stage.astype(np.int64)
    n = cust.size
    first, last, before = row_structure(cust, after)
    persona = log.persona_of_customer[cust].astype(np.int64)

    live = before < final  # rows after completion are ignored
    advanced = after > before
    certain = np.zeros(n, dtype=bool)  # journeys a mapping's end_values closed: over for sure
    if log.ended is not None:
        certain = log.ended[cust]
    # outcome known: the row moved the customer on, was followed by another, or its journey was closed
    known = live & (advanced | ~last | certain)
    history = float(log.end - time.min()) if n else 0.0
    in_window = live & (time > log.end - inactivity_days)
    all_rows = censoring == "cure" and in_window.sum() > ALL_ROWS_ABOVE * live.sum()
    if all_rows:
        # the window would leave most rows undecided: every row enters, known ones as they are,
        # quiet last ones weighted by P(over | quiet time)
        decided = live.copy()
        if live.any() and not known.any():
            raise InputError("no interaction has a known outcome (none moved a customer on or was followed by "
                             "another), so nothing can be estimated", file=log.source,
                             hint="check the stage column and the customer ids")
    else:
        decided = live & ~in_window
        if live.any() and not decided.any():
            raise InputError(f"every interaction is within the last {inactivity_days:g} days of the log, so no "
                             "outcome is decided and nothing can be estimated", where="--inactivity-days",
                             value=inactivity_days,
                             hint=f"use a shorter --inactivity-days (history is {history:.3g} days) or "
                                  "--censoring cure")

    cell = (persona * S + before) * T + tp  # flat [P, S, T]
    size = P * S * T

    def count(mask: np.ndarray, index: np.ndarray = cell, length: int = size) -> np.ndarray:
        return np.bincount(index[mask], minlength=length)

    interactions = count(live).reshape(P, S, T)
    dec = count(decided).reshape(P, S, T)
    adv_flat = cell * S + after
    adv = count(decided & advanced, adv_flat, size * S).reshape(P, S, T, S)
    stay_seen = count(decided & ~advanced & ~last).reshape(P, S, T).astype(float)

    # lapse: entered a non-final stage and never interacted again
    entry = decided & advanced & (after < final)
    entry_idx = persona * S + after
    entered = count(entry, entry_idx, P * S).reshape(P, S)

    # gaps: after a decided interaction that leaves the customer in a non-final stage
    gap_rows = decided & ~last & (after < final)
    gap_len = np.zeros(n)
    gap_len[:-1] = time[1:] - time[:-1]
    gaps = count(gap_rows, entry_idx, P * S).reshape(P, S)
    days_seen = np.bincount(entry_idx[gap_rows], weights=gap_len[gap_rows], minlength=P * S).reshape(P, S)

    # Quiet last interactions: a drop-off (or a lapse), or a stay whose return is still to come.
    quiet_drop = np.flatnonzero(decided & ~advanced & last)
    quiet_lapse = np.flatnonzero(entry & last)
    outcome = np.zeros((P, S, T, S + 1))  # [drop, advance to u...]
    outcome[..., 1:] = adv
    # gathered once: the EM below only touches the quiet rows
    cell_d, stage_d, quiet_d = cell[quiet_drop], entry_idx[quiet_drop], log.end - time[quiet_drop]
    stage_l, quiet_l = entry_idx[quiet_lapse], log.end - time[quiet_lapse]
    sure_d, sure_l = certain[quiet_drop], certain[quiet_lapse]
    k_drop = quiet_drop.size

    def m_step(w: np.ndarray) -> tuple[np.ndarray, ...]:
        """Counts and pooled estimates given each quiet row's P(journey over) (drop rows, then lapse rows)."""
        w_d, w_l = w[:k_drop], w[k_drop:]
        drp = np.bincount(cell_d, weights=w_d, minlength=size).reshape(P, S, T)
        stay = stay_seen + np.bincount(cell_d, weights=1 - w_d, minlength=size).reshape(P, S, T)
        lapsed = np.bincount(stage_l, weights=w_l, minlength=P * S).reshape(P, S)
        days = (days_seen + np.bincount(stage_d, weights=(1 - w_d) * quiet_d, minlength=P * S).reshape(P, S)
                + np.bincount(stage_l, weights=(1 - w_l) * quiet_l, minlength=P * S).reshape(P, S))
        out = outcome.copy()
        out[..., 0] = drp
        probs = _pool_outcomes(out, stay, m)
        lapse = _pool_binomial(lapsed, entered.astype(float), m)
        rate = _pool_rates(gaps.astype(float), days, m)
        return drp, stay, lapsed, days, probs[..., 0], probs[..., 1:], lapse, rate

    def em(w: np.ndarray) -> np.ndarray:
        """One EM step: M step, then how likely each quiet row ended the journey given its quiet time."""
        *_, drop_p, adv_p, lapse, rate = m_step(w)
        new = np.concatenate([_drop_weight(drop_p, adv_p, rate, cell_d, stage_d, quiet_d, sure_d),
                              _lapse_weight(lapse, rate, stage_l, quiet_l, sure_l)])
        # never exactly "over" unless closed: a stage where nobody came back yet keeps a sliver of stay
        return np.where(sure, new, np.minimum(new, 1.0 - 1e-9))

    sure = np.concatenate([sure_d, sure_l])

    w = np.ones(k_drop + quiet_lapse.size)  # the window rule: every quiet journey is over
    if censoring == "cure":
        # from even odds: "all over" is itself a fixed point where a stage has no observed stay
        w = _accelerated_fixed_point(em, np.where(sure, 1.0, 0.5))
    drp, stay, lapsed, days, drop_p, adv_p, lapse, rate = m_step(w)
    w_drop, w_lapse = w[:k_drop], w[k_drop:]
    outcome[..., 0] = drp
    # how much of a quiet row's outcome its quiet time leaves unknown (for the parameter draws)
    stay_p = np.clip(1.0 - drop_p - adv_p.sum(-1), 0.0, 1.0)
    unknown = _unknown_share(drop_p.ravel()[cell_d], stay_p.ravel()[cell_d], np.exp(-rate.ravel()[stage_d] * quiet_d),
                             w_drop, sure_d)
    uncertain = np.bincount(cell_d, weights=unknown, minlength=size).reshape(P, S, T)
    unknown_l = _unknown_share(lapse.ravel()[stage_l], 1.0 - lapse.ravel()[stage_l],
                               np.exp(-rate.ravel()[stage_l] * quiet_l), w_lapse, sure_l)
    uncertain_lapse = np.bincount(stage_l, weights=unknown_l, minlength=P * S).reshape(P, S)

    fallbacks = _fallbacks(log, censoring=censoring, inactivity_days=inactivity_days, history=history,
                           live=live, decided=decided, known=known, cell=cell, size=size,
                           interactions=interactions, quiet_rows=quiet_drop, quiet_rate=rate.ravel()[stage_d],
                           quiet_time=quiet_d, sure=sure_d, gaps=gaps, entered=entered)
    if all_rows:
        k, n_live = int(in_window.sum()), int(live.sum())
        fallbacks.insert(0, {"kind": "all_rows", "count": k, "of": n_live,
                             "message": f"{k:,} of {n_live:,} interactions are in the last {inactivity_days:g} days "
                                        f"(history {history:.3g} days): too many to leave out, so every interaction "
                                        "enters with the cure model, which leans on exponential gaps between "
                                        "interactions"})

    # ---- pooled estimates -------------------------------------------------------------
    share = _pool_shares(interactions.astype(float), m)
    seq_share, seq_follow, sequence_counts = _touch_sequences(share, cell, tp, live, advanced, first, last, m)
    dependence = _touch_dependence(share, sequence_counts["followed"])
    follow = None
    if touch_order == 1:
        share, follow = seq_share, seq_follow
    else:
        sequence_counts = {}
        if dependence["bic_favours_sequences"] and dependence["nats_per_interaction"] >= SEQUENCE_NOTE_NATS:
            fallbacks.append({"kind": "touch_order", "count": dependence["pairs"],
                              "message": "consecutive touchpoints depend on each other (the next one tells "
                                         f"{dependence['nats_per_interaction']:.2f} nats about the last, over "
                                         f"{dependence['pairs']:,} pairs), but every touchpoint was drawn afresh: for "
                                         "attribution and removals that follow the sequences, as first-order Markov "
                                         "attribution does, calibrate with --touch-order 1 (it keeps one time to "
                                         "leave per stage, without leave speeds)"})
    lapse[:, 0] = 0.0
    lapse[:, final] = 0.0
    if dwell == "way_out":
        cut = log.end - inactivity_days
        q_rows, q_w, l_rows, l_w = quiet_drop, w_drop, quiet_lapse, w_lapse
        if censoring == "cure":
            # visits are followed to the log's end, so recent arrivals count too: a quiet last row
            # is a drop-off with the cure model's P(over | quiet so far) at the final estimates
            cut = log.end
            q_rows = np.flatnonzero(live & ~advanced & last)
            q_w = _drop_weight(drop_p, adv_p, rate, cell[q_rows], entry_idx[q_rows], log.end - time[q_rows],
                               certain[q_rows])
            l_rows = np.flatnonzero(live & advanced & (after < final) & last)
            l_w = _lapse_weight(lapse, rate, entry_idx[l_rows], log.end - time[l_rows], certain[l_rows])
        adv_p, drop_p, rate, speed, dwell_counts = _fit_dwell(
            time=time, first=first, last=last, before=before, after=after, live=live, advanced=advanced,
            persona=persona, cut=cut, quiet_drop=q_rows, w_drop=q_w,
            quiet_lapse=l_rows, w_lapse=l_w, share=share, advance=adv_p, drop=drop_p, lapse=lapse,
            rate=rate, m=m)
    else:
        speed, dwell_counts = np.ones((P, S, 1 + S)), {}

    # ---- customers, personas, arrivals ------------------------------------------------
    customers = np.bincount(log.persona_of_customer, minlength=P)
    persona_share = customers / customers.sum()
    start = time[first]
    span = float(start.max() - start.min())
    arrival_days = max(span, 1.0)
    last_time = time[last]
    last_stage = after[last]
    completed = int((last_stage == final).sum())
    quiet = last_time <= log.end - inactivity_days
    if log.ended is not None:  # a mapping's end_values closed these journeys, however recent
        quiet = quiet | log.ended[cust[last]]
    ended = int(((last_stage < final) & quiet).sum())
    weeks = np.floor((start - start.min()) / 7.0).astype(np.int64)

    model = Model(
        stages=list(log.stages), touchpoints=list(log.touchpoints), personas=list(log.personas),
        conversion_stage=log.conversion_stage, persona_share=persona_share,
        share=share, advance=adv_p, drop=drop_p, lapse=lapse, rate=rate, leave_speed=speed, follow=follow,
        arrival_days=arrival_days,
        counts={
            "interactions": interactions, "decided": dec, "advanced": adv, "dropped": drp, "stayed": stay,
            "entered": entered, "lapsed": lapsed, "gaps": gaps, "days_at_risk": days,
            "customers": customers, "uncertain": uncertain, "uncertain_lapse": uncertain_lapse,
            **sequence_counts, **dwell_counts,
        },
        estimator={
            "censoring": {"cure": "cure model", "window": "outcome-window"}[censoring],
            "censoring_note": (
                "every interaction enters (the outcome window would have left most undecided): one that "
                "moved the customer on or was followed by another has a known outcome; a customer's last "
                "one counts as a drop-off (or lapse) with P(journey over | quiet time) from the calibrated "
                "gaps (EM), the rest as a stay whose quiet time is time at risk"
                if all_rows else
                "interactions within inactivity_days of the log's end have undecided outcomes and are "
                "excluded from outcome, lapse and gap estimates; a decided interaction never followed by "
                "another counts as a drop-off with P(journey over | quiet time) from the calibrated gaps "
                "(EM), the rest as a stay whose quiet time is time at risk"
                if censoring == "cure" else
                "interactions within inactivity_days of the log's end have undecided outcomes and are "
                "excluded from outcome, lapse and gap estimates; a decided interaction never followed by "
                "another counts as a drop-off"),
            "inactivity_days": float(inactivity_days),
            "outcome_rows": "all" if all_rows else "outcome window",
            "pooling": {"method": "hierarchical Dirichlet shrinkage: persona -> all personas -> stage average",
                        "prior_weight": m},
            "gaps": "exponential per persona x stage (Poisson interactions; touchpoint rate = rate x share)",
            "lapse": "P(no further interaction | just moved into the stage)",
            "touch_order": int(touch_order),
            "touch_dependence": dependence,
            "touch_sequences": ("the first interaction in a stage meets a touchpoint by share (from first "
                                "interactions there); after a staying one the next is drawn from its row of "
                                "next_touchpoint (consecutive interactions in the stage), shrunk toward the "
                                "stage's shares with prior_weight pseudo-interactions; one time to leave per stage"
                                if touch_order == 1 else "none: every interaction's touchpoint is drawn by share"),
            "dwell": ("way_out: way-out probabilities and a leave rate per way out fitted together by EM for "
                      "exponential times in stage, visits followed to the log's end (cure model) or to the "
                      "outcome window (window); shrunk toward the plain model with prior_weight pseudo-visits"
                      if dwell == "way_out" else
                      "plain: one time to leave per stage (leave_speed 1)"),
            "sparse_below": SPARSE_BELOW,
            "fallbacks": fallbacks,
        },
        log_summary={
            "source": log.source, "sha256": log.sha256, "rows": log.n_rows, "customers": log.n_customers,
            "first_timestamp": _iso(float(time.min())), "last_timestamp": _iso(log.end),
            "backward_rows": log.backward_rows, "rows_after_final_stage": int((~live).sum()),
            "undecided_rows": int((live & ~decided).sum()),
            "customers_completed": completed, "customers_ended": ended,
            "customers_in_progress": int(log.n_customers - completed - ended),
        },
        arrivals={"first": _iso(float(start.min())), "last": _iso(float(start.max())),
                  "days": arrival_days, "per_week": np.bincount(weeks).tolist()},
    )
    model.check()
    return model


def _fallbacks(log: EventLog, *, censoring: str, inactivity_days: float, history: float, live: np.ndarray,
               decided: np.ndarray, known: np.ndarray, cell: np.ndarray, size: int, interactions: np.ndarray,
               quiet_rows: np.ndarray, quiet_rate: np.ndarray, quiet_time: np.ndarray, sure: np.ndarray,
               gaps: np.ndarray, entered: np.ndarray) -> list[dict[str, Any]]:
    """Where the data cannot tell and an estimate is the pooled prior: records with a plain message.

    Evidence about a row's outcome: 1 if known (moved on, followed by another interaction, closed by
    end_values; under the window estimator, every decided row); for a quiet last row under the cure
    model, 1 - exp(-rate * quiet time), how far its quiet time tells "over" from "still to return".
    A cell with less than one interaction's worth of evidence is left to the pooled estimate.
    """
    P, S, T = interactions.shape
    final = S - 1
    stages = log.stages
    out: list[dict[str, Any]] = []
    if censoring == "window":
        evidence = np.bincount(cell[decided], minlength=size).astype(float)
        left = int((live & ~decided).sum())
        if left * 2 > live.sum():
            out.append({"kind": "window", "count": left, "of": int(live.sum()),
                        "message": f"{left:,} of {int(live.sum()):,} interactions are in the last "
                                   f"{inactivity_days:g} days (history {history:.3g} days) and left out of the "
                                   "outcome, lapse and gap estimates; --censoring cure uses them"})
    else:
        row_ev = known.astype(float)
        quiet_ev = np.where(sure, 1.0, 1.0 - np.exp(-quiet_rate * quiet_time))
        row_ev[quiet_rows] = quiet_ev
        row_ev[~decided] = 0.0  # in the outcome window (when it applies): not used
        evidence = np.bincount(cell[live], weights=row_ev[live], minlength=size)
    evidence = evidence.reshape(P, S, T)[:, :final]
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
    return out


def _accelerated_fixed_point(step, w: np.ndarray) -> np.ndarray:
    """The EM's fixed point w = step(w), weights in [0, 1], by SQUAREM (Varadhan and Roland 2008).

    Plain EM crawls along the ridge a short history leaves between "over" and "still to return"
    (thousands of steps for a one-week log); the squared extrapolation gets there in tens. An
    extrapolated point is kept only if the EM step from it moves less than the last plain step (a
    residual check, no likelihood needed), else the plain steps are kept. At most ``CURE_STEPS``.
    """
    steps = 0
    while steps < CURE_STEPS:
        w1 = step(w)
        r = w1 - w
        if np.abs(r).max(initial=0.0) < EM_TOLERANCE:
            return w1
        w2 = step(w1)
        steps += 2
        v = w2 - w1 - r
        plain = np.abs(w2 - w1).max(initial=0.0)
        if plain < EM_TOLERANCE:
            return w2
        nv = float(np.sqrt(v @ v))
        alpha = min(-float(np.sqrt(r @ r)) / nv, -1.0) if nv > 0 else -1.0
        if alpha == -1.0:
            w = w2
            continue
        # inside (0, 1): a jump onto 0 or 1 for a whole stage would land on a degenerate fixed point
        jump = np.clip(w - 2 * alpha * r + alpha * alpha * v, 1e-6, 1.0 - 1e-6)
        w3 = step(jump)
        steps += 1
        w = w3 if np.abs(w3 - jump).max(initial=0.0) <= plain else w2
    return w


def row_structure(cust: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a log sorted by customer: its customer's first row, last row, and the stage before it."""
    n = cust.size
    first = np.ones(n, dtype=bool)
    first[1:] = cust[1:] != cust[:-1]
    last = np.ones(n, dtype=bool)
    last[:-1] = cust[1:] != cust[:-1]
    before = np.empty(n, dtype=np.int64)
    before[0] = 0
    before[1:] = after[:-1]
    before[first] = 0
    return first, last, before


def _touch_sequences(share: np.ndarray, cell: np.ndarray, tp: np.ndarray, live: np.ndarray, advanced: np.ndarray,
                     first: np.ndarray, last: np.ndarray, m: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """(share of first interactions in a stage, next-touchpoint rows, their counts) for touch sequences.

    A stage's first interaction is a customer's first, or one after a move. A staying interaction
    followed by another (same customer, so same stage) gives one (this touchpoint -> next) pair,
    whenever it happened: what comes next does not depend on censoring. Both are shrunk toward the
    stage's shares of all interactions (``share``) with ``m`` pseudo-interactions.
    """
    P, S, T = share.shape
    n = cell.size
    entry = live & (first | np.r_[False, advanced[:-1]])
    firsts = np.bincount(cell[entry], minlength=P * S * T).reshape(P, S, T)
    rows = firsts.sum(-1, keepdims=True)
    entry_share = np.where(rows + m > 0, (firsts + m * share) / np.maximum(rows + m, 1e-300), share)
    pairs = np.flatnonzero(live & ~advanced & ~last)
    nxt = pairs + 1
    keep = nxt < n
    pairs, nxt = pairs[keep], nxt[keep]
    followed = np.bincount(cell[pairs] * T + tp[nxt], minlength=P * S * T * T).reshape(P, S, T, T)
    total = followed.sum(-1, keepdims=True)
    follow = (followed + m * share[:, :, None, :]) / np.maximum(total + m, 1e-300)
    follow = np.where(total + m > 0, follow, share[:, :, None, :])
    entry_share[:, S - 1] = 0.0
    follow[:, S - 1] = 0.0
    return entry_share, follow, {"first_in_stage": firsts, "followed": followed}


def _touch_dependence(share: np.ndarray, followed: np.ndarray) -> dict[str, Any]:
    """How much the next touchpoint in a stage depends on the last: the log-likelihood gained per pair
    by first-order rows over independent draws (their own maximum-likelihood rows against the shares),
    and whether BIC favours the rows (one free parameter per (persona, stage, last, next) pair seen)."""
    pairs = int(followed.sum())
    if pairs == 0:
        return {"pairs": 0, "nats_per_interaction": 0.0, "bic_favours_sequences": False}
    rows = followed.sum(-1, keepdims=True)
    mle = followed / np.maximum(rows, 1)
    base = np.broadcast_to(share[:, :, None, :], followed.shape)
    seen = followed > 0
    gain = float((followed[seen] * (np.log(mle[seen]) - np.log(np.maximum(base[seen], 1e-300)))).sum())
    extra = int(((rows[..., 0] > 0)[..., None] & (base > 0)).sum() - (rows > 0).sum())
    return {"pairs": pairs, "nats_per_interaction": round(gain / pairs, 6),
            "bic_favours_sequences": bool(2 * gain > max(extra, 0) * np.log(pairs))}


def _unknown_share(p: np.ndarray, q: np.ndarray, e: np.ndarray, w: np.ndarray, sure: np.ndarray) -> np.ndarray:
    """Per quiet row, the share of a known row's information about "over" (p) against "still going" (q)
    that its quiet time does not give (Louis: 1 - observed / complete information).

    Its likelihood is p + q e (e = P(no return yet)): observed information (1 - e)^2 / (p + q e)^2
    against w / p^2 + (1 - w) / q^2 had its outcome been seen (w = P(over | quiet)). 0 for a long
    quiet (e -> 0) or a journey a mapping closed, 1 for a row seen just now (e = 1).
    """
    p, q = np.maximum(p, 1e-12), np.maximum(q, 1e-12)
    observed = (1.0 - e) ** 2 / np.maximum(p + q * e, 1e-300) ** 2
    complete = w / p ** 2 + (1.0 - w) / q ** 2
    out = np.clip(1.0 - observed / np.maximum(complete, 1e-300), 0.0, 1.0)
    out[sure] = 0.0
    return out


def _drop_weight(drop_p: np.ndarray, adv_p: np.ndarray, rate: np.ndarray, cells: np.ndarray,
                 stages: np.ndarray, quiet: np.ndarray, sure: np.ndarray) -> np.ndarray:
    """Cure model, per quiet last interaction: P(journey over | quiet so long)
    = p / (p + P(stay) * P(no return yet)); 1 where a mapping's end_values closed the journey."""
    d = drop_p.ravel()[cells]
    stay_p = np.clip(1.0 - drop_p - adv_p.sum(-1), 0.0, 1.0).ravel()[cells]
    w = d / np.maximum(d + stay_p * np.exp(-rate.ravel()[stages] * quiet), 1e-300)
    w[sure] = 1.0
    return w


def _lapse_weight(lapse: np.ndarray, rate: np.ndarray, stages: np.ndarray, quiet: np.ndarray,
                  sure: np.ndarray) -> np.ndarray:
    """The same for an unanswered move into a stage: P(lapsed | quiet so long)."""
    lp = lapse.ravel()[stages]
    w = lp / np.maximum(lp + (1 - lp) * np.exp(-rate.ravel()[stages] * quiet), 1e-300)
    w[sure] = 1.0
    return w


def _fit_dwell(*, time: np.ndarray, first: np.ndarray, last: np.ndarray, before: np.ndarray,
               after: np.ndarray, live: np.ndarray, advanced: np.ndarray, persona: np.ndarray, cut: float,
               quiet_drop: np.ndarray, w_drop: np.ndarray, quiet_lapse: np.ndarray, w_lapse: np.ndarray,
               share: np.ndarray, advance: np.ndarray, drop: np.ndarray, lapse: np.ndarray, rate: np.ndarray,
               m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Way-out-specific dwell: (advance, drop, rate, leave_speed, counts) refitted per visit.

    A visit to a stage runs from the interaction that moved the customer in (arrival for the first
    stage) to the interaction that moved them on or ended the journey. Its way out and its time are
    fitted together by EM for a mixture of exponentials: the way out probabilities and each way's
    leave rate. Per-interaction counts cannot give the way out probabilities here: the visits still
    going when the log ends are mostly the slow ways out, so counting only finished ones would
    favour the fast ways. Visits are followed to ``cut`` (the log's end with the cure model, else
    the start of the outcome window; moves after it are censored, so moves and drop-offs are
    treated alike): a visit still going then, and the "stayed" part of a quiet last interaction
    (1 - its cure weight) or of an unanswered move (1 - its lapse weight), is censored at the cut
    with way out o weighted by way_o * exp(-rate_o * time in stage).
    Way probabilities are shrunk toward the per-interaction estimate and leave rates toward the
    plain rate * q with ``m`` pseudo-visits, so thin cells keep the plain model. The result is
    written back in per-interaction terms: staying interactions keep their rate r_s, the mean stay
    tau = sum_o way_o / leave_o gives q = 1 / (1 + r_s tau) (one leaving interaction per visit) and
    rate = r_s + 1 / tau; per touchpoint, drop-off and advance are rescaled to the refitted way
    probabilities and that q; speeds are leave_o * tau, so sum_o way_o / speed_o = 1 and the model's
    share, drop-off and advance are what it implies per interaction (as in the first stage, where
    the interaction at arrival leaves with q like any other).
    """
    P, S, T = share.shape
    K = 1 + S
    plain = Model(stages=[str(i) for i in range(S)], touchpoints=[str(i) for i in range(T)],
                  personas=[str(i) for i in range(P)], conversion_stage="1", persona_share=np.full(P, 1.0 / P),
                  share=share, advance=advance, drop=drop, lapse=lapse, rate=rate)
    q, way0 = plain.way_out()
    n = time.size
    # per row, the row that moved the customer into the row's stage (itself for the first stage):
    # int32 and per-subset lookups keep a 10 M-row log's peak memory down
    rows = np.arange(n, dtype=np.int32)
    run_start = first.copy()
    run_start[1:] |= before[1:] != before[:-1]
    entry_row = np.where(run_start, np.where(first, rows, rows - 1), 0).astype(np.int32)
    del rows
    np.maximum.accumulate(entry_row, out=entry_row)

    def ps(idx: np.ndarray) -> np.ndarray:  # flat [P, S] of the rows' stage
        return persona[idx] * S + before[idx]

    def in_stage(idx: np.ndarray) -> np.ndarray:  # days from entering the stage to the row
        return time[idx] - time[entry_row[idx]]

    def to_cut(idx: np.ndarray) -> np.ndarray:  # days from entering the stage to the cut
        return cut - time[entry_row[idx]]

    # finished visits: way out known (a drop-off with its cure weight); moves after the cut are censored
    moves = np.flatnonzero(live & advanced)
    early = moves[time[moves] <= cut]
    moves = moves[time[moves] > cut]
    late = moves[~(first[moves] & (before[moves] == 0))]  # a move at arrival took no time in the stage
    ev_idx = np.concatenate([ps(early) * K + 1 + after[early], ps(quiet_drop) * K])
    ev_w = np.concatenate([np.ones(early.size), w_drop])
    ev_d = np.concatenate([in_stage(early), in_stage(quiet_drop)])
    # the interaction at arrival leaving at once: a way out without time in the stage
    ev_timed = ~np.concatenate([first[early] & (before[early] == 0), first[quiet_drop] & (before[quiet_drop] == 0)])
    # unfinished visits at the cut: in-progress customers, the stayed part of quiet rows and of moves
    open_rows = np.flatnonzero(live & ~advanced & last & (time > cut))
    c_idx = np.concatenate([ps(late), ps(quiet_drop), ps(open_rows), persona[quiet_lapse] * S + after[quiet_lapse]])
    c_w = np.concatenate([np.ones(late.size), 1.0 - w_drop, np.ones(open_rows.size), 1.0 - w_lapse])
    c_t = np.concatenate([to_cut(late), to_cut(quiet_drop), to_cut(open_rows), cut - time[quiet_lapse]])
    keep = (c_t >= 0) & (c_w > 0)
    c_idx, c_w, c_t = c_idx[keep], c_w[keep], c_t[keep]

    size = P * S * K
    exits = np.bincount(ev_idx, weights=ev_w, minlength=size).reshape(P, S, K)
    timed_exits = np.bincount(ev_idx[ev_timed], weights=ev_w[ev_timed], minlength=size).reshape(P, S, K)
    days = np.bincount(ev_idx[ev_timed], weights=(ev_w * ev_d)[ev_timed], minlength=size).reshape(P, S, K)
    prior_rate = (rate * q)[..., None] * np.ones(K)
    valid = way0 > 0
    way, leave = way0.copy(), prior_rate.copy()
    flat = (c_idx[:, None] * K + np.arange(K)).ravel()
    censored_visits = np.zeros_like(days)
    censored_days = np.zeros_like(days)
    for _ in range(EM_ITERATIONS):
        logit = (np.log(np.maximum(way.reshape(P * S, K)[c_idx], 1e-300))
                 - leave.reshape(P * S, K)[c_idx] * c_t[:, None])
        resp = np.exp(logit - logit.max(axis=1, keepdims=True))
        resp /= resp.sum(axis=1, keepdims=True)
        censored_visits = np.bincount(flat, weights=(resp * c_w[:, None]).ravel(), minlength=size).reshape(P, S, K)
        censored_days = np.bincount(flat, weights=(resp * (c_w * c_t)[:, None]).ravel(),
                                    minlength=size).reshape(P, S, K)
        visits = exits + censored_visits
        new_way = (visits + m * way0) / np.maximum(visits.sum(-1, keepdims=True) + m, 1e-300)
        new_way = np.where(valid, new_way, 0.0)
        new_way /= np.maximum(new_way.sum(-1, keepdims=True), 1e-300)
        exposure = days + censored_days
        if m > 0:
            new_leave = (timed_exits + m) / (exposure + m / np.maximum(prior_rate, 1e-300))
        else:  # no pooling: the plain rate where a way out has no exits to go by
            new_leave = np.where((timed_exits > 0) & (exposure > 0),
                                 timed_exits / np.maximum(exposure, 1e-300), prior_rate)
        change = max(np.abs(new_leave / np.maximum(leave, 1e-300) - 1.0).max(initial=0.0),
                     np.abs(new_way - way).max(initial=0.0))
        way, leave = new_way, new_leave
        if change < 1e-7:
            break

    # Per-interaction meaning: the model's shares, drop-offs and advances stay what they say (P(an
    # interaction ends the journey / moves the customer on)) when the mean stay is the plain model's
    # 1 / (rate * q), i.e. sum_o way_o / speed_o = 1. Staying interactions keep their rate r_s, the
    # fitted ways and leave rates fix the mean stay tau, so q = 1 / (1 + r_s tau) (one leaving
    # interaction per visit among 1 + r_s tau) and rate = r_s + 1 / tau.
    stay_rate = rate * np.clip(1.0 - q, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.where(valid, way / np.maximum(leave, 1e-300), 0.0).sum(-1)
    target_q = np.where(tau > 0, 1.0 / (1.0 + stay_rate * tau), q)
    ratio = np.where(valid, way * target_q[..., None] / np.maximum(way0 * q[..., None], 1e-300), 1.0)
    new_drop = drop * ratio[:, :, None, 0]
    new_adv = advance * ratio[:, :, None, 1:]
    leaving = new_drop + new_adv.sum(-1)
    over = np.maximum(leaving, 1.0)  # a touchpoint cannot leave more than always
    new_drop /= over
    new_adv /= over[..., None]
    refit = plain.copy()
    refit.drop, refit.advance = new_drop, new_adv
    new_q, _ = refit.way_out()
    # no staying interactions seen (a thin cell): the visit's one interaction comes at 1 / tau
    new_rate = np.where((new_q < 1.0 - 1e-9) & (stay_rate > 0), stay_rate / np.maximum(1.0 - new_q, 1e-12),
                        1.0 / np.maximum(tau, 1e-300))
    new_rate = np.where((tau > 0) & (new_rate > 0), new_rate, rate)
    new_rate[:, S - 1] = 0.0
    speed = np.where(valid, leave / np.maximum((new_rate * new_q)[..., None], 1e-300), 1.0)
    speed[:, S - 1] = 1.0
    return new_adv, new_drop, new_rate, speed, {"leave_events": timed_exits, "leave_days": days + censored_days}


def _iso(days: float) -> str:
    return datetime.fromtimestamp(days * 86400.0, tz=UTC).isoformat().replace("+00:00", "Z")


def _pool_outcomes(outcome: np.ndarray, stay: np.ndarray, m: float) -> np.ndarray:
    """Dirichlet shrinkage of [drop, advance...] (with stay as the remainder)."""
    P, S, T, K = outcome.shape
    full = np.concatenate([stay[..., None], outcome], axis=-1)  # [P,S,T,1+K]: stay, drop, adv...
    valid = np.zeros((S, 1 + K), dtype=bool)
    valid[:, :2] = True
    for s in range(S):
        valid[s, 2 + s + 1:] = True
    stage_tot = full.sum(axis=(0, 2))  # [S, 1+K]
    stage_n = stage_tot.sum(axis=-1, keepdims=True)
    uniform = valid / valid.sum(axis=-1, keepdims=True)
    stage_p = np.where(stage_n > 0, stage_tot / np.maximum(stage_n, 1), uniform)
    tp_tot = full.sum(axis=0)  # [S, T, 1+K]
    tp_n = tp_tot.sum(axis=-1, keepdims=True)
    tp_p = (tp_tot + m * stage_p[:, None, :]) / (tp_n + m) if m > 0 else np.where(
        tp_n > 0, tp_tot / np.maximum(tp_n, 1), stage_p[:, None, :])
    cell_n = full.sum(axis=-1, keepdims=True)
    if m > 0:
        cell_p = (full + m * tp_p[None]) / (cell_n + m)
    else:
        cell_p = np.where(cell_n > 0, full / np.maximum(cell_n, 1), tp_p[None])
    cell_p = cell_p * valid[None, :, None, :]
    cell_p /= np.maximum(cell_p.sum(axis=-1, keepdims=True), 1e-300)
    cell_p[:, S - 1] = 0.0
    return cell_p[..., 1:]


def _pool_shares(counts: np.ndarray, m: float) -> np.ndarray:
    P, S, T = counts.shape
    top = counts.sum(axis=0)  # [S, T]
    top_n = top.sum(axis=-1, keepdims=True)
    top_p = np.where(top_n > 0, top / np.maximum(top_n, 1), 1.0 / T)
    n = counts.sum(axis=-1, keepdims=True)
    share = (counts + m * top_p[None]) / (n + m) if m > 0 else np.where(n > 0, counts / np.maximum(n, 1), top_p[None])
    share[:, S - 1] = 0.0
    return share


def _pool_binomial(k: np.ndarray, n: np.ndarray, m: float) -> np.ndarray:
    top_n = n.sum(axis=0)
    top = np.where(top_n > 0, k.sum(axis=0) / np.maximum(top_n, 1), 0.0)
    if m > 0:
        return (k + m * top[None]) / (n + m)
    return np.where(n > 0, k / np.maximum(n, 1), top[None])


def _pool_rates(gaps: np.ndarray, days: np.ndarray, m: float) -> np.ndarray:
    P, S = gaps.shape
    g_all, d_all = gaps.sum(), days.sum()
    overall = g_all / d_all if g_all > 0 and d_all > 0 else 1.0 / DEFAULT_GAP_DAYS
    g_s, d_s = gaps.sum(axis=0), days.sum(axis=0)
    stage = np.where((g_s > 0) & (d_s > 0), g_s / np.maximum(d_s, 1e-300), overall)
    if m > 0:
        rate = (gaps + m) / (days + m / stage[None])
    else:
        rate = np.where((gaps > 0) & (days > 0), gaps / np.maximum(days, 1e-300), stage[None])
    rate[:, S - 1] = 0.0
    return rate
