"""Estimation: EventLog in, Model out (pure; keeps the counts behind every estimate).

Censoring ("outcome window"): whether an interaction ends the journey is only known once
``inactivity_days`` have passed after it. Interactions in the last ``inactivity_days`` of the log
therefore have undecided outcomes and are left out of the outcome, lapse and gap estimates —
whatever their outcome, so no selection bias; their customers still count as customers, and their
touchpoints still count toward the shares. A journey quiet for at least ``inactivity_days`` at
the log's end (and not complete) ended after its last interaction.

Sparse cells are pooled: each persona × stage × touchpoint estimate is a Dirichlet (beta) posterior
mean shrunk toward the all-persona estimate of the same stage and touchpoint, which is shrunk
toward the stage's average, with a prior weight of ``pooling`` pseudo-interactions.
"""
from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from calibration.load import EventLog
from sim.errors import InputError
from sim.model import Model

DEFAULT_INACTIVITY_DAYS = 30.0
DEFAULT_POOLING = 10.0
DEFAULT_GAP_DAYS = 7.0
SPARSE_BELOW = 30


def estimate(log: EventLog, *, inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
             pooling: float = DEFAULT_POOLING) -> Model:
    if inactivity_days < 0:
        raise InputError("must not be negative", where="--inactivity-days", value=inactivity_days)
    if pooling < 0:
        raise InputError("must not be negative", where="pooling", value=pooling)
    P, S, T = len(log.personas), len(log.stages), len(log.touchpoints)
    final = S - 1
    m = float(pooling)

    cust, time, tp, after = log.customer, log.time, log.touchpoint, log.stage.astype(np.int64)
    n = cust.size
    first = np.ones(n, dtype=bool)
    first[1:] = cust[1:] != cust[:-1]
    last = np.ones(n, dtype=bool)
    last[:-1] = cust[1:] != cust[:-1]
    before = np.empty(n, dtype=np.int64)
    before[0] = 0
    before[1:] = after[:-1]
    before[first] = 0
    persona = log.persona_of_customer[cust].astype(np.int64)

    live = before < final  # rows after completion are ignored
    decided = live & (time <= log.end - inactivity_days)
    advanced = after > before

    cell = (persona * S + before) * T + tp  # flat [P, S, T]
    size = P * S * T

    def count(mask: np.ndarray, index: np.ndarray = cell, length: int = size) -> np.ndarray:
        return np.bincount(index[mask], minlength=length)

    interactions = count(live).reshape(P, S, T)
    dec = count(decided).reshape(P, S, T)
    adv_flat = cell * S + after
    adv = count(decided & advanced, adv_flat, size * S).reshape(P, S, T, S)
    drp = count(decided & ~advanced & last).reshape(P, S, T)
    stay = count(decided & ~advanced & ~last).reshape(P, S, T)

    # lapse: entered a non-final stage and never interacted again
    entry = decided & advanced & (after < final)
    entry_idx = persona * S + after
    entered = count(entry, entry_idx, P * S).reshape(P, S)
    lapsed = count(entry & last, entry_idx, P * S).reshape(P, S)

    # gaps: after a decided interaction that leaves the customer in a non-final stage
    gap_rows = decided & ~last & (after < final)
    gap_len = np.zeros(n)
    gap_len[:-1] = time[1:] - time[:-1]
    gaps = count(gap_rows, entry_idx, P * S).reshape(P, S)
    days = np.bincount(entry_idx[gap_rows], weights=gap_len[gap_rows], minlength=P * S).reshape(P, S)

    # ---- pooled estimates -------------------------------------------------------------
    outcome = np.zeros((P, S, T, S + 1))  # [drop, advance to u...]
    outcome[..., 0] = drp
    outcome[..., 1:] = adv
    stay_c = stay.astype(float)
    probs = _pool_outcomes(outcome.astype(float), stay_c, m)
    drop_p = probs[..., 0]
    adv_p = probs[..., 1:]

    share = _pool_shares(interactions.astype(float), m)
    lapse = _pool_binomial(lapsed.astype(float), entered.astype(float), m)
    lapse[:, 0] = 0.0
    lapse[:, final] = 0.0
    rate = _pool_rates(gaps.astype(float), days, m)

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
        share=share, advance=adv_p, drop=drop_p, lapse=lapse, rate=rate, arrival_days=arrival_days,
        counts={
            "interactions": interactions, "decided": dec, "advanced": adv, "dropped": drp, "stayed": stay,
            "entered": entered, "lapsed": lapsed, "gaps": gaps, "days_at_risk": days,
            "customers": customers,
        },
        estimator={
            "censoring": "outcome-window",
            "censoring_note": ("interactions within inactivity_days of the log's end have undecided "
                               "outcomes and are excluded from outcome, lapse and gap estimates; "
                               "journeys quiet that long are ended, later ones are in progress"),
            "inactivity_days": float(inactivity_days),
            "pooling": {"method": "hierarchical Dirichlet shrinkage: persona -> all personas -> stage average",
                        "prior_weight": m},
            "gaps": "exponential per persona x stage (Poisson interactions; touchpoint rate = rate x share)",
            "lapse": "P(no further interaction | just moved into the stage)",
            "sparse_below": SPARSE_BELOW,
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
