"""Way-out-specific dwell (``--dwell way_out``): a visit's way out and its time in the stage fitted together.

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
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.phases import BinSums, Quiet, fit_phases
from sim.model import Model

EM_ITERATIONS = 200


@dataclass
class DwellInputs:
    """What the dwell fit reads: the visits' sums and the customers' last rows, where visits are cut, the quiet
    rows' weights, the plain estimates."""

    move_exits: np.ndarray  # [P, S, 1 + S] visits finished by a move by the cut, by way out
    move_timed: np.ndarray  # [P, S, 1 + S] of them, those that took time in the stage
    move_days: np.ndarray  # [P, S, 1 + S] their days in the stage
    move_bins: BinSums | None  # their days binned (phase-type stays)
    late_ps: np.ndarray  # moves after the cut (other than at arrival): flat [P, S] and days in the stage at the cut
    late_t: np.ndarray
    open_ps: np.ndarray  # customers whose last row, after the cut, did not move them
    open_t: np.ndarray
    drop_ps: np.ndarray  # quiet last rows (drop-off or stay): stage, days in it at the row and at the cut,
    drop_t: np.ndarray
    drop_cut: np.ndarray
    drop_timed: np.ndarray  # False: the interaction at arrival
    w_drop: np.ndarray  # and P(over)
    lapse_idx: np.ndarray  # unanswered moves: stage moved to, days to the cut, P(lapsed)
    lapse_cut: np.ndarray
    w_lapse: np.ndarray
    share: np.ndarray  # the plain (per-interaction) estimates
    advance: np.ndarray
    drop: np.ndarray
    lapse: np.ndarray
    rate: np.ndarray
    m: float  # pseudo-visits of the shrinkage


@dataclass
class DwellFit:
    """The refitted per-interaction estimates, the leave speeds, and the counts behind the speeds."""

    advance: np.ndarray
    drop: np.ndarray
    rate: np.ndarray
    leave_speed: np.ndarray  # [P, S, 1 + S]
    leave_events: np.ndarray  # [P, S, 1 + S] timed exits
    leave_days: np.ndarray  # [P, S, 1 + S] days at risk, censored visits included
    phases: np.ndarray | None = None  # [P, S, 1 + S, K] phase weights (--dwell phases)
    chosen: dict[str, int] | None = None  # "stage/way" -> phases chosen by BIC
    sparse: list[str] | None = None  # "stage/way" kept exponential for lack of timed exits

    def counts(self) -> dict[str, np.ndarray]:
        """The counts the model stores (and drift tests)."""
        return {"leave_events": self.leave_events, "leave_days": self.leave_days}


@dataclass
class _Visits:
    """Quiet last rows as finished visits (way out drop-off, with weight and days) and visits still going at
    the cut."""

    ev_idx: np.ndarray  # flat [P, S, K] of a finished visit's way out
    ev_w: np.ndarray
    ev_d: np.ndarray  # days in the stage
    ev_timed: np.ndarray  # False: the interaction at arrival left at once (no time in the stage)
    c_idx: np.ndarray  # flat [P, S] of an unfinished visit
    c_w: np.ndarray
    c_t: np.ndarray  # days in the stage at the cut


def fit_dwell(x: DwellInputs, *, phases: bool = False) -> DwellFit:
    """Way-out-specific dwell refitted per visit (see the module docstring); ``phases``: phase-type
    stays (calibration/phases.py), started from the exponential fit."""
    P, S, T = x.share.shape
    plain = _plain_model(x.share, x.advance, x.drop, x.lapse, x.rate)
    q, way0 = plain.way_out()
    way, leave, timed_exits, exposure = _em(x, _visits(x, with_quiet=True), P, S, q, way0, x.rate, x.m)
    shape = chosen = sparse = None
    if phases:
        bare = _visits(x, with_quiet=False)
        pf = fit_phases(x.move_exits, x.move_bins, bare.c_idx, bare.c_w, bare.c_t, _quiet(x), way=way, leave=leave,
                        way0=way0, q=q, rate=x.rate, m=x.m, exposure=exposure)
        way, leave, exposure, shape, chosen, sparse = pf.way, pf.leave, pf.exposure, pf.phases, pf.chosen, pf.sparse
    adv, drop, rate, speed = _per_interaction(plain, x, q, way0, way, leave)
    return DwellFit(advance=adv, drop=drop, rate=rate, leave_speed=speed, leave_events=timed_exits,
                    leave_days=exposure, phases=shape, chosen=chosen, sparse=sparse)


def _quiet(x: DwellInputs) -> Quiet:
    """The quiet last rows with what their cure weights are made of (calibration.phases.Quiet)."""
    quiet = x.drop_cut - x.drop_t
    keep = quiet >= 0
    w = x.w_drop[keep]
    ps = x.drop_ps[keep]
    quiet = quiet[keep]
    fixed = (w >= 1.0) | (w <= 0.0)
    with np.errstate(divide="ignore"):
        odds = np.log(np.where(fixed, 1.0, w)) - np.log(np.where(fixed, 1.0, 1.0 - w))
    return Quiet(ps=ps, t_row=x.drop_t[keep], quiet=quiet, timed=x.drop_timed[keep],
                 log_odds=odds - x.rate.ravel()[ps] * quiet, fixed=fixed, w=w)


def _plain_model(share: np.ndarray, advance: np.ndarray, drop: np.ndarray, lapse: np.ndarray,
                 rate: np.ndarray) -> Model:
    """A nameless model of the plain estimates: its stage kernel gives q and the way-out probabilities."""
    P, S, T = share.shape
    return Model(stages=[str(i) for i in range(S)], touchpoints=[str(i) for i in range(T)],
                 personas=[str(i) for i in range(P)], conversion_stage="1", persona_share=np.full(P, 1.0 / P),
                 share=share, advance=advance, drop=drop, lapse=lapse, rate=rate)


def _visits(x: DwellInputs, *, with_quiet: bool) -> _Visits:
    """The quiet rows' visits and the visits still going at the cut (moves after the cut are censored there).
    Without ``with_quiet``, the quiet last rows are left out of both (the phase fit weighs them itself)."""
    S = x.share.shape[1]
    K = 1 + S
    none = np.zeros(0, dtype=np.int64)
    drop_ps, w_drop = (x.drop_ps, x.w_drop) if with_quiet else (none, np.zeros(0))
    pick = slice(None) if with_quiet else slice(0, 0)
    c_idx = np.concatenate([x.late_ps, drop_ps, x.open_ps, x.lapse_idx])
    c_w = np.concatenate([np.ones(x.late_ps.size), 1.0 - w_drop, np.ones(x.open_ps.size), 1.0 - x.w_lapse])
    c_t = np.concatenate([x.late_t, x.drop_cut[pick], x.open_t, x.lapse_cut])
    keep = (c_t >= 0) & (c_w > 0)
    return _Visits(ev_idx=drop_ps * K, ev_w=w_drop, ev_d=x.drop_t[pick], ev_timed=x.drop_timed[pick],
                   c_idx=c_idx[keep], c_w=c_w[keep], c_t=c_t[keep])


def _em(x: DwellInputs, v: _Visits, P: int, S: int, q: np.ndarray, way0: np.ndarray, rate: np.ndarray,
        m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(way, leave rate, timed exits, exposure) of the mixture of exponentials, by EM over the censored visits."""
    K = 1 + S
    c_idx, c_w, c_t = v.c_idx, v.c_w, v.c_t
    size = P * S * K
    exits = x.move_exits + np.bincount(v.ev_idx, weights=v.ev_w, minlength=size).reshape(P, S, K)
    timed_exits = x.move_timed + np.bincount(v.ev_idx[v.ev_timed], weights=v.ev_w[v.ev_timed],
                                             minlength=size).reshape(P, S, K)
    days = x.move_days + np.bincount(v.ev_idx[v.ev_timed], weights=(v.ev_w * v.ev_d)[v.ev_timed],
                                     minlength=size).reshape(P, S, K)
    prior_rate = (rate * q)[..., None] * np.ones(K)
    valid = way0 > 0
    way, leave = way0.copy(), prior_rate.copy()
    cw_t = c_w * c_t
    censored_visits = np.zeros_like(days)
    censored_days = np.zeros_like(days)
    resp = np.empty((K, c_idx.size))  # [K, n]: each way out a contiguous row; the visits are what grows
    for _ in range(EM_ITERATIONS):
        log_way = np.log(np.maximum(way.reshape(P * S, K), 1e-300))
        rates = leave.reshape(P * S, K)
        for o in range(K):
            np.subtract(log_way[c_idx, o], rates[c_idx, o] * c_t, out=resp[o])
        resp -= resp.max(axis=0)
        np.exp(resp, out=resp)
        resp /= resp.sum(axis=0)
        censored_visits = np.stack([np.bincount(c_idx, weights=resp[o] * c_w, minlength=P * S)
                                    for o in range(K)], -1).reshape(P, S, K)
        censored_days = np.stack([np.bincount(c_idx, weights=resp[o] * cw_t, minlength=P * S)
                                  for o in range(K)], -1).reshape(P, S, K)
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
    return way, leave, timed_exits, days + censored_days


def _per_interaction(plain: Model, x: DwellInputs, q: np.ndarray, way0: np.ndarray, way: np.ndarray,
                     leave: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(advance, drop, rate, leave_speed) that say per interaction what the fitted visits say.

    The model's shares, drop-offs and advances stay what they say (P(an interaction ends the journey /
    moves the customer on)) when the mean stay is the plain model's 1 / (rate * q), i.e.
    sum_o way_o / speed_o = 1. Staying interactions keep their rate r_s, the fitted ways and leave rates
    fix the mean stay tau, so q = 1 / (1 + r_s tau) (one leaving interaction per visit among
    1 + r_s tau) and rate = r_s + 1 / tau.
    """
    S = x.share.shape[1]
    rate = x.rate
    valid = way0 > 0
    stay_rate = rate * np.clip(1.0 - q, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.where(valid, way / np.maximum(leave, 1e-300), 0.0).sum(-1)
    target_q = np.where(tau > 0, 1.0 / (1.0 + stay_rate * tau), q)
    ratio = np.where(valid, way * target_q[..., None] / np.maximum(way0 * q[..., None], 1e-300), 1.0)
    new_drop = x.drop * ratio[:, :, None, 0]
    new_adv = x.advance * ratio[:, :, None, 1:]
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
    return new_adv, new_drop, new_rate, speed
