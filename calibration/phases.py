"""Phase-type dwell (``--dwell phases``): per persona x stage x way out, a stay of k Erlang phases.

The way-out fit (calibration/dwell.py) takes every stay as exponential. Here a stay bound for way
out o takes k phases with probability pi_k (k = 1..K), each of the same rate lam (sim/phases.py).
The fit is EM under the same right-censoring: finished visits give their time, visits still going
at the cut give their time so far, and the way out of an unfinished visit is uncertain with
P(o) proportional to way_o * P(stay_o > time so far). The complete data of a visit is its way out,
its phase count and its phase completions, so the M step is closed form: pi from the expected
phase counts, lam = expected completions / time in the stage (a censored visit of k phases has
completed E[N | N < k] phases, N ~ Poisson(lam t)).

K per stage x way out is chosen by BIC on all personas together (candidates ``CANDIDATES``); each
persona's weights are shrunk toward that pooled shape with ``m`` pseudo-visits and its mean toward
the plain model's 1 / (rate q), as the way-out fit shrinks its rates, so thin cells keep the pooled
shape and the plain mean. Times are binned on a 1 % log grid (the weights of a bin summed, its
time the weighted mean): the fit's cost depends on the bins, not on the log's size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.phases import censored_completions, kbar, log_density, log_poisson, survival_k

CANDIDATES = (1, 2, 3, 4, 6, 8, 12, 16)
ROUNDS = 3  # quiet rows reweighted with the shapes, then the EM again
OUTER_ITERATIONS = 40
INNER = 2  # shape steps per outer iteration
SELECT_ITERATIONS = 200
MIN_EXITS = 30  # fewer timed exits (all personas) than a sparse cell: the stay stays exponential
_BIN = np.log1p(0.01)
_TMIN = 1e-4  # days (9 s): shorter stays share one bin
_SELECT_BIN = np.log1p(0.04)  # unit-free times (stay / its mean) when choosing the phase count


@dataclass
class PhaseFit:
    """Way-out probabilities, leave rates (1 / mean stay), phase weights, and the evidence behind them."""

    way: np.ndarray  # [P, S, 1 + S]
    leave: np.ndarray  # [P, S, 1 + S] 1 / mean stay of a visit bound that way
    phases: np.ndarray  # [P, S, 1 + S, K]
    exposure: np.ndarray  # [P, S, 1 + S] days in the stage, censored visits by their way's responsibility
    chosen: dict[str, int]  # "stage/way" -> phases chosen by BIC
    sparse: list[str]  # "stage/way" with too few timed exits to fit a shape: kept exponential


@dataclass
class _Obs:
    """Binned observations: finished visits per (p, s, o), visits still going per (p, s)."""

    e_cell: np.ndarray
    e_t: np.ndarray
    e_w: np.ndarray
    c_cell: np.ndarray
    c_t: np.ndarray
    c_w: np.ndarray


_NBINS = 1 << 13  # log-time bins a cell: 1 % bins from 9 s reach far beyond any stay


@dataclass
class BinSums:
    """Binned times: per (cell, log-time bin) key, the summed weight and weighted time (adds up over buckets)."""

    key: np.ndarray  # cell * _NBINS + bin, ascending
    w: np.ndarray
    wt: np.ndarray


def bin_sums(cell: np.ndarray, t: np.ndarray, w: np.ndarray | None = None, width: float = _BIN,
             tmin: float = _TMIN) -> BinSums:
    """The weight and weighted time of each cell x log-time bin with weight > 0."""
    w = np.ones(t.size) if w is None else w
    keep = w > 0
    cell, t, w = cell[keep], t[keep], w[keep]
    b = np.minimum(np.floor(np.log(np.maximum(t, tmin) / tmin) / width), _NBINS - 1).astype(np.int64)
    return _summed(cell.astype(np.int64) * _NBINS + b, w, w * t)


def merge_bins(parts: list[BinSums]) -> BinSums:
    """Binned times of several sets together (in the order given)."""
    return _summed(np.concatenate([p.key for p in parts]), np.concatenate([p.w for p in parts]),
                   np.concatenate([p.wt for p in parts]))


def _summed(key: np.ndarray, w: np.ndarray, wt: np.ndarray) -> BinSums:
    if key.size and key.max() < 4 * key.size:  # a dense key space: counting is O(n), a sort is not
        seen = np.bincount(key, minlength=int(key.max()) + 1) > 0
        uniq = np.flatnonzero(seen)
        inv = (np.cumsum(seen) - 1)[key]
    else:
        uniq, inv = np.unique(key, return_inverse=True)
    return BinSums(key=uniq, w=np.bincount(inv, weights=w, minlength=uniq.size),
                   wt=np.bincount(inv, weights=wt, minlength=uniq.size))


def _binned(b: BinSums) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell, weighted mean time, summed weight) per bin."""
    return b.key // _NBINS, b.wt / np.maximum(b.w, 1e-300), b.w


def _bin(cell: np.ndarray, t: np.ndarray, w: np.ndarray, width: float = _BIN,
         tmin: float = _TMIN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell, weighted mean time, summed weight) per cell x log-time bin with weight > 0."""
    return _binned(bin_sums(cell, t, w, width, tmin))


def _step(pi: np.ndarray, lam: float, te: np.ndarray, we: np.ndarray, tc: np.ndarray, wc: np.ndarray,
          prior_pi: np.ndarray | None, m: float, prior_mean: float) -> tuple[np.ndarray, float, float]:
    """One EM step of one shape: (pi, lam, log-likelihood at the old parameters)."""
    K = pi.size
    ks = np.arange(1, K + 1, dtype=float)
    logpi = np.log(np.maximum(pi, 1e-300))
    le = logpi + log_density(ks, lam, te)
    sc = survival_k(ks, lam, tc)
    lc = logpi + np.log(np.maximum(sc, 1e-300))
    ll = 0.0
    counts = np.zeros(K)
    comp = 0.0
    for lx, w, done in ((le, we, True), (lc, wc, False)):
        if w.size == 0:
            continue
        top = lx.max(1, keepdims=True)
        r = np.exp(lx - top)
        tot = r.sum(1, keepdims=True)
        ll += float(w @ (np.log(tot[:, 0]) + top[:, 0]))
        r /= tot
        counts += w @ r
        comp += float(w @ (r @ ks)) if done else float(w @ (r * censored_completions(ks, lam, tc, sc)).sum(1))
    time = float(we @ te + wc @ tc)
    n = float(we.sum() + wc.sum())
    if prior_pi is None or m <= 0:
        new_pi = counts / max(n, 1e-300) if n > 0 else pi
    else:
        new_pi = (counts + m * prior_pi) / (n + m)
    new_pi = new_pi / new_pi.sum()
    kb = float(kbar(new_pi))
    if m > 0 and np.isfinite(prior_mean):
        new_lam = (comp + m * kb) / (time + m * prior_mean)  # m pseudo-visits of kb phases in prior_mean days
    else:
        new_lam = comp / time if time > 0 and comp > 0 else lam
    return new_pi, float(new_lam), ll


def _fit_shape(K: int, mean: float, te, we, tc, wc, iterations: int) -> tuple[np.ndarray, float, float]:
    """A K-phase shape fitted without a prior: (pi, lam, log-likelihood).

    The start puts 0.7 on the phase count of an Erlang with the finished visits' squared coefficient
    of variation (1 / k), the rest spread evenly: EM moves weights slowly, so a flat start would
    leave a sharp shape unfound within the iterations.
    """
    m1 = float(we @ te / max(we.sum(), 1e-300))
    var = float(we @ (te - m1) ** 2 / max(we.sum(), 1e-300))
    k0 = int(np.clip(round(m1 * m1 / max(var, 1e-300)), 1, K))
    pi = np.full(K, 0.3 / K)
    pi[k0 - 1] += 0.7
    lam = float(kbar(pi)) / mean
    ll_old = -np.inf
    ll = -np.inf
    for _ in range(iterations):
        pi, lam, ll = _step(pi, lam, te, we, tc, wc, None, 0.0, np.inf)
        if abs(ll - ll_old) < 1e-6 * max(1.0, abs(ll)):
            break
        ll_old = ll
    return pi, lam, ll


@dataclass
class Quiet:
    """Quiet last interactions (cure model): a drop-off here, or a stay still going at the cut.

    The cure model's weight of "over" assumed exponential stays; here it is recomputed with the
    fitted shapes: odds = (d_t / stay_t) * way_0 f_0(t_r) / (rate out_0) / (exp(-stay_rate Q)
    sum_o way_o S_o(t_r + Q)) for a row t_r days into the stage and Q days before the cut (at
    arrival: (d_t / stay_t) / (exp(-stay_rate Q) sum_o way_o S_o(Q))); exponential stays give the
    cure model's own odds back.
    """

    ps: np.ndarray  # flat [P, S] of the row's stage
    t_row: np.ndarray  # days in the stage at the row
    quiet: np.ndarray  # days from the row to the cut
    timed: np.ndarray  # False: the interaction at arrival
    log_odds: np.ndarray  # log(d_t / stay_t) of the row's touchpoint
    fixed: np.ndarray  # weight known (end_values, window rule): kept
    w: np.ndarray  # the cure model's weight of "over"


def fit_phases(move_exits: np.ndarray, move_bins: BinSums, c_idx: np.ndarray, c_w: np.ndarray, c_t: np.ndarray,
               quiet: Quiet, *, way: np.ndarray,
               leave: np.ndarray, way0: np.ndarray, q: np.ndarray, rate: np.ndarray, m: float,
               exposure: np.ndarray) -> PhaseFit:
    """Phase-type stays by EM, started from the exponential way-out fit (``way``, ``leave``).

    ``move_exits`` [P, S, 1 + S] / ``move_bins``: visits finished by a move (all; timed ones binned);
    ``c_*``: unfinished visits other than the quiet rows; ``q``, ``rate``:
    the plain model's P(an interaction leaves) and interaction rate [P, S]; ``exposure``: the
    exponential fit's days at risk. Where BIC keeps every stay exponential, the exponential fit is
    the answer, unchanged.
    """
    P, S, K1 = way.shape
    valid = way0 > 0
    stay_rate = (rate * (1.0 - q)).ravel()
    out0 = (rate * q * way0[..., 0]).ravel()  # rate of drop-off interactions, plain model
    pi = np.ones((P, S, K1, 1))
    lam = leave.copy()
    prior_mean = 1.0 / np.maximum(rate * q, 1e-300)
    chosen: dict[tuple[int, int], int] = {}
    pooled: dict[tuple[int, int], np.ndarray] = {}
    sparse: list[tuple[int, int]] = []
    for rnd in range(ROUNDS):
        wq = _quiet_weights(quiet, way, pi, lam, stay_rate, out0)
        qa = quiet.timed & (wq > 0)
        exits = move_exits + np.bincount(quiet.ps * K1, weights=wq, minlength=P * S * K1).reshape(P, S, K1)
        finished = merge_bins([move_bins, bin_sums(quiet.ps[qa] * K1, quiet.t_row[qa], wq[qa])])
        obs = _Obs(*_binned(finished),
                   *_bin(np.concatenate([c_idx, quiet.ps]), np.concatenate([c_t, quiet.t_row + quiet.quiet]),
                         np.concatenate([c_w, 1.0 - wq])))
        if rnd == 0:  # the phase counts, with the quiet rows as the exponential fit weighs them
            resp = _responsibilities(obs, way, pi, lam, P, S)
            mean = kbar(pi) / np.maximum(lam, 1e-300)
            chosen, pooled, sparse = _select(obs, resp, valid, np.where(valid, mean, 1.0), P, S)
            if rnd == 0 and all(k == 1 for k in chosen.values()):  # exponential everywhere: way_out's fit
                return PhaseFit(way=way, leave=leave, phases=np.ones((P, S, K1, 1)), exposure=exposure,
                                chosen={f"{s}/{o}": 1 for s, o in chosen}, sparse=[f"{s}/{o}" for s, o in sparse])
            Kmax = max(chosen.values(), default=1)
            pi = np.zeros((P, S, K1, Kmax))
            pi[..., 0] = 1.0
            for (s, o), k in chosen.items():
                pi[:, s, o] = 0.0
                pi[:, s, o, :k] = pooled[(s, o)][:k]
                lam[:, s, o] = kbar(pi[:, s, o]) / mean[:, s, o]  # the last round's means
        way, pi, lam = _em(obs, exits, way, pi, lam, way0, chosen, pooled, prior_mean, m)
    resp = _responsibilities(obs, way, pi, lam, P, S)
    mean_leave = lam / np.maximum(kbar(pi), 1e-300)
    days = np.bincount(obs.e_cell, weights=obs.e_w * obs.e_t, minlength=P * S * K1).reshape(P, S, K1)
    cdays = np.zeros((P * S, K1))
    np.add.at(cdays, obs.c_cell, resp * (obs.c_w * obs.c_t)[:, None])
    pi[~valid] = 0.0
    pi[~valid, 0] = 1.0
    return PhaseFit(way=way, leave=np.where(valid, mean_leave, leave), phases=pi,
                    exposure=days + cdays.reshape(P, S, K1), chosen={f"{s}/{o}": k for (s, o), k in chosen.items()},
                    sparse=[f"{s}/{o}" for s, o in sparse])


def _em(obs: _Obs, exits: np.ndarray, way: np.ndarray, pi: np.ndarray, lam: np.ndarray, way0: np.ndarray,
        chosen: dict, pooled: dict, prior_mean: np.ndarray, m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ways out and shapes by EM over fixed observations: (way, phase weights, phase rates)."""
    P, S, K1 = way.shape
    valid = way0 > 0
    e_groups = _groups(obs.e_cell, P * S * K1)
    c_groups = _groups(obs.c_cell, P * S)
    pi, lam = pi.copy(), lam.copy()
    for _ in range(OUTER_ITERATIONS):
        resp = _responsibilities(obs, way, pi, lam, P, S)
        cens = np.zeros((P * S, K1))
        np.add.at(cens, obs.c_cell, resp * obs.c_w[:, None])
        visits = exits + cens.reshape(P, S, K1)
        new_way = (visits + m * way0) / np.maximum(visits.sum(-1, keepdims=True) + m, 1e-300)
        new_way = np.where(valid, new_way, 0.0)
        new_way /= np.maximum(new_way.sum(-1, keepdims=True), 1e-300)
        change = np.abs(new_way - way).max(initial=0.0)
        way = new_way
        for (s, o), k in chosen.items():
            for p in range(P):
                ei = e_groups.get((p * S + s) * K1 + o, _EMPTY)
                ci = c_groups.get(p * S + s, _EMPTY)
                te, we = obs.e_t[ei], obs.e_w[ei]
                tc, wc = obs.c_t[ci], obs.c_w[ci] * resp[ci, o]
                cur, rate = pi[p, s, o, :k], float(lam[p, s, o])
                for _ in range(INNER):
                    cur, rate, _ll = _step(cur, rate, te, we, tc, wc, pooled[(s, o)][:k], m, prior_mean[p, s])
                change = max(change, abs(rate / lam[p, s, o] - 1.0), np.abs(cur - pi[p, s, o, :k]).max())
                pi[p, s, o, :k], lam[p, s, o] = cur, rate
        if change < 1e-5:
            break
    return way, pi, lam


def _mixture(pi: np.ndarray, lam: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Density and survival at t of stays with phase weights pi [n, K] and phase rates lam [n]."""
    K = pi.shape[1]
    terms = np.exp(log_poisson(K, lam * np.maximum(t, 1e-12)))
    return (pi * terms).sum(1) * lam, (pi * np.cumsum(terms, axis=1)).sum(1)


def _quiet_weights(quiet: Quiet, way: np.ndarray, pi: np.ndarray, lam: np.ndarray, stay_rate: np.ndarray,
                   out0: np.ndarray) -> np.ndarray:
    """P(over) of each quiet row under the current ways and shapes (see Quiet)."""
    K1 = way.shape[-1]
    ps = quiet.ps
    flat_way = way.reshape(-1, K1)[ps]
    flat_pi = pi.reshape(-1, K1, pi.shape[-1])
    flat_lam = lam.reshape(-1, K1)
    surv = np.zeros(ps.size)
    for o in range(K1):
        on = flat_way[:, o] > 0
        if on.any():
            surv[on] += flat_way[on, o] * _mixture(flat_pi[ps[on], o], flat_lam[ps[on], o],
                                                   quiet.t_row[on] + quiet.quiet[on])[1]
    log_b = -stay_rate[ps] * quiet.quiet + np.log(np.maximum(surv, 1e-300))
    dens = _mixture(flat_pi[ps, 0], flat_lam[ps, 0], quiet.t_row)[0]
    log_a = quiet.log_odds + np.where(
        quiet.timed, np.log(np.maximum(flat_way[:, 0] * dens, 1e-300)) - np.log(np.maximum(out0[ps], 1e-300)), 0.0)
    with np.errstate(over="ignore"):
        w = 1.0 / (1.0 + np.exp(np.clip(log_b - log_a, -700, 700)))
    return np.where(quiet.fixed, quiet.w, w)


_EMPTY = np.zeros(0, dtype=np.int64)


def _groups(cell: np.ndarray, size: int) -> dict[int, np.ndarray]:
    """Row indices per cell."""
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(size + 1))
    return {c: order[bounds[c]:bounds[c + 1]] for c in range(size) if bounds[c + 1] > bounds[c]}


def _responsibilities(obs: _Obs, way: np.ndarray, pi: np.ndarray | None, lam: np.ndarray, P: int,
                      S: int) -> np.ndarray:
    """P(way out o | a visit still going at its time), per censored bin [n, 1 + S]."""
    K1 = way.shape[-1]
    flat_way = way.reshape(P * S, K1)
    flat_lam = lam.reshape(P * S, K1)
    t = obs.c_t
    logit = np.log(np.maximum(flat_way[obs.c_cell], 1e-300))
    for o in range(K1):
        rate = flat_lam[obs.c_cell, o]
        if pi is None:
            logit[:, o] -= rate * t
            continue
        w = pi.reshape(P * S, K1, -1)[obs.c_cell, o]  # [n, K]
        # P(N <= k - 1) summed with the weights: cumulated Poisson terms, N ~ Poisson(rate t)
        surv = (w * np.cumsum(np.exp(log_poisson(w.shape[1], rate * t)), axis=1)).sum(1)
        logit[:, o] += np.log(np.maximum(surv, 1e-300))
    resp = np.exp(logit - logit.max(1, keepdims=True))
    return resp / resp.sum(1, keepdims=True)


def _select(obs: _Obs, resp: np.ndarray, valid: np.ndarray, mean: np.ndarray, P: int,
            S: int) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], np.ndarray], list[tuple[int, int]]]:
    """Phases per stage x way out by BIC over all personas, and the pooled shape (weights padded to 16).

    The shape is unit-free: each persona's times are divided by its current mean stay that way
    (``mean`` [P, S, 1 + S]) before they are pooled, so personas of different speeds do not make
    the pooled stay look more variable than any of theirs.
    """
    K1 = valid.shape[-1]
    chosen: dict[tuple[int, int], int] = {}
    pooled: dict[tuple[int, int], np.ndarray] = {}
    sparse: list[tuple[int, int]] = []
    e_p, rest = np.divmod(obs.e_cell, S * K1)
    e_s, e_o = np.divmod(rest, K1)
    c_p, c_s = np.divmod(obs.c_cell, S)
    for s in range(S - 1):
        for o in range(K1):
            if not valid[:, s, o].any():
                continue
            ei = (e_s == s) & (e_o == o)
            ci = c_s == s
            te, we = obs.e_t[ei] / mean[e_p[ei], s, o], obs.e_w[ei]
            tc, wc = obs.c_t[ci] / mean[c_p[ci], s, o], obs.c_w[ci] * resp[ci, o]
            n = float(we.sum() + wc.sum())
            # coarser bins for the choice only (the fit itself keeps 1 %): the candidates' EM is the cost
            _, te, we = _bin(np.zeros(te.size, dtype=np.int64), te, we, _SELECT_BIN, 1e-6)
            _, tc, wc = _bin(np.zeros(tc.size, dtype=np.int64), tc, wc, _SELECT_BIN, 1e-6)
            best, best_bic, best_pi = 1, np.inf, np.ones(1)
            if we.sum() < MIN_EXITS:
                sparse.append((s, o))
            else:
                worse = 0
                for k in CANDIDATES:
                    shape, _lam, ll = _fit_shape(k, 1.0, te, we, tc, wc, SELECT_ITERATIONS)
                    bic = -2.0 * ll + k * np.log(max(n, 2.0))
                    if bic < best_bic:
                        best, best_bic, best_pi, worse = k, bic, shape, 0
                    else:
                        worse += 1
                        if worse == 2:  # two larger candidates no better: stop climbing
                            break
            pad = np.zeros(max(CANDIDATES))
            pad[:best] = best_pi
            chosen[(s, o)] = best
            pooled[(s, o)] = pad
    return chosen, pooled, sparse
