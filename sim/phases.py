"""Phase-type stays: a mixture of Erlang distributions with one phase rate (a Coxian of equal rates).

A stay bound for one way out has ``weights[k - 1]`` = P(it takes k phases), k = 1..K; every phase
lasts an exponential time of the same rate ``lam``. So the stay is Erlang(k, lam) with probability
``weights[k - 1]``: the Coxian chain of K phases where, after phase j, the stay ends with
probability ``exit_j = w_j / (w_j + ... + w_K)`` and otherwise goes on to phase j + 1. Mean
``kbar / lam`` with ``kbar = sum_k k w_k``. K = 1 is the exponential stay. Weights are stored per
way out with the mean fixed elsewhere (the model's leave rate ``mu``): ``lam = kbar * mu``, so the
shape is unit-free and a what-if that changes the leave rate scales every phase rate alike.
"""
from __future__ import annotations

import math

import numpy as np

E_MAX = 17.5  # -log(1 - u) of the largest float32 uniform below 1 is 16.6
_E0, _NG = 1e-9, 3000
_GRID = np.concatenate([[0.0], np.geomspace(_E0, E_MAX, _NG)])  # exponential quantiles e of the tables
_DLOG = np.log(E_MAX / _E0) / (_NG - 1)


def kbar(weights: np.ndarray) -> np.ndarray:
    """Mean number of phases, over the last axis."""
    return (weights * np.arange(1, weights.shape[-1] + 1)).sum(-1)


def is_exponential(weights: np.ndarray) -> np.ndarray:
    """True where the stay is one phase (over the last axis)."""
    return weights[..., 1:].sum(-1) <= 0


def n_phases(weights: np.ndarray) -> np.ndarray:
    """The largest phase count with a positive weight (at least 1), over the last axis."""
    on = weights > 0
    last = weights.shape[-1] - np.argmax(on[..., ::-1], axis=-1)
    return np.where(on.any(-1), last, 1)


def exit_probs(weights: np.ndarray) -> np.ndarray:
    """P(the stay ends after phase j | it reached phase j), over the last axis (1 where nothing is left)."""
    tail = np.cumsum(weights[..., ::-1], axis=-1)[..., ::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tail > 1e-300, weights / np.where(tail > 1e-300, tail, 1.0), 1.0)


def cdf(weights: np.ndarray, t: np.ndarray | float, mean: float = 1.0) -> np.ndarray:
    """P(stay <= t) of one shape (weights [K]) with the given mean, at times ``t``."""
    from scipy import special  # lazy: a plain simulate run does not pay for scipy
    lam = float(kbar(weights)) / mean
    t = np.asarray(t, dtype=float)
    ks = np.arange(1, weights.size + 1)
    return (weights * special.gammainc(ks, lam * t[..., None])).sum(-1)


def quantile(weights: np.ndarray, prob: float, mean: float = 1.0) -> float:
    """The stay's ``prob`` quantile (days) for the given mean."""
    return float(np.interp(-np.log1p(-prob), _GRID, unit_table(weights))) * mean


def unit_table(weights: np.ndarray) -> np.ndarray:
    """Stay of unit mean at the exponential quantiles of ``_GRID``: t(e) with P(stay > t) = exp(-e).

    The fast engine maps one exponential draw e (the plain model's) to t(e) by interpolation; for
    one phase t(e) = e exactly.
    """
    if is_exponential(weights):
        return _GRID.copy()
    t = np.geomspace(1e-12, 1.0, 4000)
    while True:  # the table must reach past E_MAX
        e = -np.log(np.maximum(1.0 - cdf(weights, t), 1e-300))
        if e[-1] > E_MAX + 1.0:
            break
        t = np.concatenate([t, np.geomspace(t[-1] * 1.01, t[-1] * 4, 800)])
    e[0] = 0.0
    e = np.maximum.accumulate(e)  # rounding flats: keep it non-decreasing for interp
    out = np.interp(_GRID, e, t)
    # Newton steps on log P(stay > t) = -e: the interpolation above is only a start
    lam = float(kbar(weights))
    for _ in range(3):
        x = lam * np.maximum(out[1:], 1e-300)
        terms = np.exp(log_poisson(weights.size, x))
        surv = (weights * np.cumsum(terms, axis=1)).sum(1)
        dens = lam * (weights * terms).sum(1)
        step = (np.log(np.maximum(surv, 1e-300)) + _GRID[1:]) * surv / np.maximum(dens, 1e-300)
        out[1:] = np.maximum(out[1:] + step, out[1:] * 0.5)
    out[0] = 0.0
    return out


def lookup(tables: np.ndarray, row: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Stays at exponential quantiles e from ``tables`` [R, len(grid)] (row ``row`` per value).

    The grid is geometric, so a value's cell is found by one log, not a search; linear in e within
    a cell (as np.interp, which this replaces for speed; below the first point, from 0).
    """
    width = _GRID.size
    e = np.minimum(np.asarray(e, dtype=np.float64), E_MAX)
    pos = np.log(np.maximum(e, _E0) / _E0) * (1.0 / _DLOG)
    i = np.minimum(pos.astype(np.int64), _NG - 2)
    flat = tables.ravel()
    at = row.astype(np.int64) * width + 1 + i
    lo, hi = flat[at], flat[at + 1]
    g_lo, g_hi = _GRID[1 + i], _GRID[2 + i]
    out = lo + (e - g_lo) / (g_hi - g_lo) * (hi - lo)
    return np.where(e < _E0, flat[row.astype(np.int64) * width + 1] * (e / _E0), out)


def grid() -> np.ndarray:
    """The exponential quantiles the unit tables are tabulated at."""
    return _GRID


def poisson_terms(K: int, x: np.ndarray) -> np.ndarray:
    """P(N = j), N ~ Poisson(x), j = 0..K - 1: [K, n] for x [n] (log_poisson's, exponentiated and transposed:
    arrays over the phases are laid out [K, n] so that numpy's loops run along the n values)."""
    with np.errstate(divide="ignore"):
        lx = np.log(np.maximum(x, 1e-300))
    return np.exp((np.arange(K, dtype=float)[:, None] * lx - x) - _log_factorials(K)[:, None])


def scaled_powers(x: np.ndarray, K: int) -> np.ndarray:
    """x^j / j!, j = 0..K - 1: [K, n] (Poisson terms without e^-x, by products: no exp per term)."""
    q = np.empty((K, x.size))
    q[0] = 1.0
    q[1:] = (1.0 / np.arange(1, K))[:, None] * x  # x / j
    for k in range(2, K):
        q[k] *= q[k - 1]
    return q


def cumulated(terms: np.ndarray) -> np.ndarray:
    """Cumulative sums over the first axis of [K, n], in place (a loop over K is faster than cumsum there)."""
    for k in range(1, terms.shape[0]):
        terms[k] += terms[k - 1]
    return terms


FAR = 600.0  # x = lam t beyond which e^-x nears the 1e-280 / 1e-300 floors: sums in logs there


def mixture_survival(weights: np.ndarray, x: np.ndarray, K: int) -> np.ndarray:
    """sum_k weights[k - 1] P(N <= k - 1), N ~ Poisson(x) (P(stay > t) at x = lam t), the first K phases.

    ``weights`` [>= K, n] (phases first, as poisson_terms). As e^-x sum_k w_k sum_{j < k} x^j / j!;
    far rows (x > FAR) sum the Poisson terms themselves, as small as they get.
    """
    w = weights[:K]
    out = np.exp(-x) * np.einsum("kn,kn->n", w, cumulated(scaled_powers(x, K)))
    far = x > FAR
    if far.any():
        out[far] = np.einsum("kn,kn->n", w[:, far], cumulated(poisson_terms(K, x[far])))
    return out


_LOG_FACT = np.array([math.lgamma(j + 1.0) for j in range(64)])


def _log_factorials(K: int) -> np.ndarray:
    """The logs of j!, j = 0..K - 1."""
    return _LOG_FACT[:K] if K <= _LOG_FACT.size else np.array([math.lgamma(j + 1.0) for j in range(K)])


def log_poisson(K: int, x: np.ndarray) -> np.ndarray:
    """The log Poisson(x) probabilities of 0..K - 1, [n, K]."""
    from scipy import special  # lazy: a plain simulate run does not pay for scipy

    j = np.arange(K, dtype=float)
    with np.errstate(divide="ignore"):
        lx = np.log(np.maximum(x, 1e-300))[:, None]
    return j * lx - x[:, None] - special.gammaln(j + 1.0)


def shape_record(weights: np.ndarray, mean: float) -> dict[str, object]:
    """A stay's shape as written: phase count, weights, mean and percentiles in days."""
    k = int(n_phases(weights))
    return {"phases": k, "weights": [_round(x) for x in weights[:k]], "mean_days": _round(mean),
            "p10_days": _round(quantile(weights, 0.1, mean)), "p50_days": _round(quantile(weights, 0.5, mean)),
            "p90_days": _round(quantile(weights, 0.9, mean))}


def phases_from(shapes: dict[tuple[int, int, int], list[float]], P: int, S: int) -> np.ndarray | None:
    """The phase weights [P, S, 1 + S, K] read from the model file's dwell_shape records (None without)."""
    if not shapes:
        return None
    K = max(len(w) for w in shapes.values())
    phases = np.zeros((P, S, 1 + S, K))
    phases[..., 0] = 1.0  # ways without a record: exponential
    for (p, s, o), w in shapes.items():
        phases[p, s, o] = 0.0
        phases[p, s, o, :len(w)] = w
    return phases


def _round(x: float) -> float:
    """12 significant digits, as the model file writes numbers."""
    return float(f"{float(x):.12g}")
