"""The cure model: how likely each quiet last interaction ended the journey, given how long it has been quiet.

An uncertain row counts as a drop-off (lapse) with P(journey over | quiet time)
= d / (d + stay * exp(-rate * quiet)) (l / (l + (1 - l) * exp(-rate * quiet))), the rest as a stay
whose quiet time is censored time at risk for the rate; the weights and the estimates are solved
together by EM (SQUAREM-accelerated). With ``censoring="window"`` every quiet row is simply over.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from calibration.counting import Counts
from calibration.pooling import pool_binomial, pool_outcomes, pool_rates

if TYPE_CHECKING:
    from calibration.stats import LogStats

EM_TOLERANCE = 1e-7
CURE_STEPS = 2000  # EM steps at most for the cure weights (accelerated: tens usually do)


@dataclass
class QuietRows:
    """The quiet last interactions (drop-off or stay) and unanswered moves (lapse or return to come)."""

    drop: np.ndarray  # indices (into the customers' last rows, Tails) of quiet last rows that did not move
    lapse: np.ndarray  # indices of quiet moves into a non-final stage
    cell_d: np.ndarray  # their flat [P, S, T] cells
    stage_d: np.ndarray  # their flat [P, S] stages
    quiet_d: np.ndarray  # days quiet at the log's end
    stage_l: np.ndarray
    quiet_l: np.ndarray
    sure_d: np.ndarray  # closed by a mapping's end_values: over for sure
    sure_l: np.ndarray


@dataclass
class OutcomeFit:
    """The outcome, lapse and rate estimates with the quiet rows weighted by P(journey over | quiet)."""

    dropped: np.ndarray  # [P, S, T] drop-offs (weighted)
    stayed: np.ndarray  # [P, S, T] stays (weighted)
    lapsed: np.ndarray  # [P, S]
    days: np.ndarray  # [P, S] days at risk
    drop: np.ndarray  # [P, S, T] pooled P(drop-off)
    advance: np.ndarray  # [P, S, T, S] pooled P(advance to each stage)
    lapse: np.ndarray  # [P, S]
    rate: np.ndarray  # [P, S] interactions per day
    w_drop: np.ndarray  # per quiet drop row: P(over)
    w_lapse: np.ndarray  # per quiet lapse row: P(lapsed)
    quiet: QuietRows
    uncertain: np.ndarray  # [P, S, T] how much of the quiet rows' outcomes their quiet time leaves unknown
    uncertain_lapse: np.ndarray  # [P, S]

    def release_rows(self) -> None:
        """Drop the per-row arrays (one entry a quiet customer) once only the estimates are needed."""
        self.quiet = _no_rows()
        self.w_drop = self.w_lapse = np.zeros(0)


def _no_rows() -> QuietRows:
    """No quiet rows (what `OutcomeFit.release_rows` leaves)."""
    none = np.zeros(0, dtype=np.int64)
    return QuietRows(drop=none, lapse=none, cell_d=none, stage_d=none, quiet_d=np.zeros(0), stage_l=none,
                     quiet_l=np.zeros(0), sure_d=np.zeros(0, bool), sure_l=np.zeros(0, bool))


def quiet_rows(st: LogStats, all_rows: bool) -> QuietRows:
    """Quiet last interactions that enter the outcome estimates: a drop-off (or a lapse), or a stay whose
    return is still to come."""
    t, end = st.tails, st.end
    decided = t.live & (all_rows | ~(t.time > end - st.inactivity_days))
    quiet_drop = np.flatnonzero(decided & ~t.advanced)
    quiet_lapse = np.flatnonzero(decided & t.advanced & (t.after < len(st.stages) - 1))
    return QuietRows(drop=quiet_drop, lapse=quiet_lapse, cell_d=t.cell[quiet_drop], stage_d=t.to_idx[quiet_drop],
                     quiet_d=end - t.time[quiet_drop], stage_l=t.to_idx[quiet_lapse],
                     quiet_l=end - t.time[quiet_lapse], sure_d=t.certain[quiet_drop], sure_l=t.certain[quiet_lapse])


def fit_outcomes(st: LogStats, c: Counts, m: float, censoring: str) -> OutcomeFit:
    """The EM of the cure model (``censoring="cure"``), or every quiet journey over (the window rule)."""
    P, S, T = st.shape
    size = P * S * T
    q = quiet_rows(st, c.all_rows)
    cell_d, stage_d, quiet_d, stage_l, quiet_l = q.cell_d, q.stage_d, q.quiet_d, q.stage_l, q.quiet_l
    outcome = np.zeros((P, S, T, S + 1))  # [drop, advance to u...]
    outcome[..., 1:] = c.advanced
    k_drop = q.drop.size

    def m_step(w: np.ndarray) -> tuple[np.ndarray, ...]:
        """Counts and pooled estimates given each quiet row's P(journey over) (drop rows, then lapse rows)."""
        w_d, w_l = w[:k_drop], w[k_drop:]
        drp = np.bincount(cell_d, weights=w_d, minlength=size).reshape(P, S, T)
        stay = c.stay_seen + np.bincount(cell_d, weights=1 - w_d, minlength=size).reshape(P, S, T)
        lapsed = np.bincount(stage_l, weights=w_l, minlength=P * S).reshape(P, S)
        days = (c.days_seen + np.bincount(stage_d, weights=(1 - w_d) * quiet_d, minlength=P * S).reshape(P, S)
                + np.bincount(stage_l, weights=(1 - w_l) * quiet_l, minlength=P * S).reshape(P, S))
        out = outcome.copy()
        out[..., 0] = drp
        probs = pool_outcomes(out, stay, m)
        lapse = pool_binomial(lapsed, c.entered.astype(float), m)
        rate = pool_rates(c.gaps.astype(float), days, m)
        return drp, stay, lapsed, days, probs[..., 0], probs[..., 1:], lapse, rate

    sure = np.concatenate([q.sure_d, q.sure_l])

    def em(w: np.ndarray) -> np.ndarray:
        """One EM step: M step, then how likely each quiet row ended the journey given its quiet time."""
        *_, drop_p, adv_p, lapse, rate = m_step(w)
        new = np.concatenate([drop_weight(drop_p, adv_p, rate, cell_d, stage_d, quiet_d, q.sure_d),
                              lapse_weight(lapse, rate, stage_l, quiet_l, q.sure_l)])
        # never exactly "over" unless closed: a stage where nobody came back yet keeps a sliver of stay
        return np.where(sure, new, np.minimum(new, 1.0 - 1e-9))

    w = np.ones(k_drop + q.lapse.size)  # the window rule: every quiet journey is over
    if censoring == "cure":
        # from even odds: "all over" is itself a fixed point where a stage has no observed stay
        w = accelerated_fixed_point(em, np.where(sure, 1.0, 0.5))
    drp, stay, lapsed, days, drop_p, adv_p, lapse, rate = m_step(w)
    w_drop, w_lapse = w[:k_drop], w[k_drop:]
    # how much of a quiet row's outcome its quiet time leaves unknown (for the parameter draws)
    stay_p = np.clip(1.0 - drop_p - adv_p.sum(-1), 0.0, 1.0)
    unknown = unknown_share(drop_p.ravel()[cell_d], stay_p.ravel()[cell_d], np.exp(-rate.ravel()[stage_d] * quiet_d),
                            w_drop, q.sure_d)
    unknown_l = unknown_share(lapse.ravel()[stage_l], 1.0 - lapse.ravel()[stage_l],
                              np.exp(-rate.ravel()[stage_l] * quiet_l), w_lapse, q.sure_l)
    return OutcomeFit(dropped=drp, stayed=stay, lapsed=lapsed, days=days, drop=drop_p, advance=adv_p, lapse=lapse,
                      rate=rate, w_drop=w_drop, w_lapse=w_lapse, quiet=q,
                      uncertain=np.bincount(cell_d, weights=unknown, minlength=size).reshape(P, S, T),
                      uncertain_lapse=np.bincount(stage_l, weights=unknown_l, minlength=P * S).reshape(P, S))


def accelerated_fixed_point(step, w: np.ndarray) -> np.ndarray:
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



def unknown_share(p: np.ndarray, q: np.ndarray, e: np.ndarray, w: np.ndarray, sure: np.ndarray) -> np.ndarray:
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


def drop_weight(drop_p: np.ndarray, adv_p: np.ndarray, rate: np.ndarray, cells: np.ndarray,
                 stages: np.ndarray, quiet: np.ndarray, sure: np.ndarray) -> np.ndarray:
    """Cure model, per quiet last interaction: P(journey over | quiet so long)
    = p / (p + P(stay) * P(no return yet)); 1 where a mapping's end_values closed the journey."""
    d = drop_p.ravel()[cells]
    stay_p = np.clip(1.0 - drop_p - adv_p.sum(-1), 0.0, 1.0).ravel()[cells]
    w = d / np.maximum(d + stay_p * np.exp(-rate.ravel()[stages] * quiet), 1e-300)
    w[sure] = 1.0
    return w


def lapse_weight(lapse: np.ndarray, rate: np.ndarray, stages: np.ndarray, quiet: np.ndarray,
                  sure: np.ndarray) -> np.ndarray:
    """The same for an unanswered move into a stage: P(lapsed | quiet so long)."""
    lp = lapse.ravel()[stages]
    w = lp / np.maximum(lp + (1 - lp) * np.exp(-rate.ravel()[stages] * quiet), 1e-300)
    w[sure] = 1.0
    return w
