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

Every shape's EM step is the same few array operations, so the steps run batched (``_step``): all
persona x stage x way out cells of one phase count at once, and all candidates of the choice at
once (phases beyond a candidate's count held at weight 0), each shape stopping on its own test.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from calibration.counting import weighted_counts
from sim.phases import FAR, cumulated, kbar, mixture_survival, n_phases, poisson_terms, scaled_powers

CANDIDATES = (1, 2, 3, 4, 6, 8, 12, 16)
_CLIMB = ((1, 2, 3, 4), (6, 8), (12, 16))  # candidates fitted together; later groups only where the climb goes on
ROUNDS = 3  # quiet rows reweighted with the shapes, then the EM again
QUIET_BLOCK = 1 << 20  # quiet rows weighed at once: their [phases, rows] arrays stay bounded however long the log
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


def _keys(cell: np.ndarray, t: np.ndarray, width: float = _BIN, tmin: float = _TMIN) -> np.ndarray:
    """The key of each time: its cell * _NBINS + its log-time bin."""
    b = np.minimum(np.floor(np.log(np.maximum(t, tmin) / tmin) / width), _NBINS - 1).astype(np.int64)
    return cell.astype(np.int64) * _NBINS + b


def bin_sums(cell: np.ndarray, t: np.ndarray, w: np.ndarray | None = None, width: float = _BIN,
             tmin: float = _TMIN) -> BinSums:
    """The weight and weighted time of each cell x log-time bin with weight > 0."""
    w = np.ones(t.size) if w is None else w
    keep = w > 0
    cell, t, w = cell[keep], t[keep], w[keep]
    return _summed(_keys(cell, t, width, tmin), w, w * t)


def merge_bins(parts: list[BinSums]) -> BinSums:
    """Binned times of several sets together (in the order given)."""
    return _summed(np.concatenate([p.key for p in parts]), np.concatenate([p.w for p in parts]),
                   np.concatenate([p.wt for p in parts]))


def _unique(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct keys (ascending) and each key's position among them."""
    if key.size and key.max() < 4 * key.size:  # a dense key space: counting is O(n), a sort is not
        seen = np.bincount(key, minlength=int(key.max()) + 1) > 0
        return np.flatnonzero(seen), (np.cumsum(seen) - 1)[key]
    return np.unique(key, return_inverse=True)


def _summed(key: np.ndarray, w: np.ndarray, wt: np.ndarray) -> BinSums:
    uniq, inv = _unique(key)
    return BinSums(key=uniq, w=np.bincount(inv, weights=w, minlength=uniq.size),
                   wt=np.bincount(inv, weights=wt, minlength=uniq.size))


def _binned(b: BinSums) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell, weighted mean time, summed weight) per bin."""
    return b.key // _NBINS, b.wt / np.maximum(b.w, 1e-300), b.w


def _bin(cell: np.ndarray, t: np.ndarray, w: np.ndarray, width: float = _BIN,
         tmin: float = _TMIN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell, weighted mean time, summed weight) per cell x log-time bin with weight > 0."""
    return _binned(bin_sums(cell, t, w, width, tmin))


class _Rows:
    """Binned times of a batch of shapes, the rows of each shape together: its shape, time and weight.

    Per-row arrays over the phases are laid out [K, rows]: numpy's loops then run along the rows.
    """

    def __init__(self, seg: np.ndarray, t: np.ndarray, w: np.ndarray, n: int):
        self.seg, self.t, self.w, self.n = seg, t, w, n
        first = np.ones(seg.size, dtype=bool)
        first[1:] = seg[1:] != seg[:-1]
        self.starts = np.flatnonzero(first)
        self.cells = seg[self.starts]
        self.lens = np.bincount(seg, minlength=n)
        self.t_pos = np.maximum(t, 1e-12)
        self.w_sum, self.wt_sum = self.sum(w), self.sum(w * t)

    def sum(self, x: np.ndarray) -> np.ndarray:
        """Per-shape sums of x [rows] -> [n]."""
        return weighted_counts(self.seg, x, self.n)

    def sum_rows(self, x: np.ndarray) -> np.ndarray:
        """Per-shape sums of x [K, rows] -> [n, K]."""
        out = np.zeros((self.n, x.shape[0]))
        if self.starts.size:
            out[self.cells] = np.add.reduceat(x, self.starts, axis=1).T
        return out

    def spread(self, a: np.ndarray) -> np.ndarray:
        """Per-shape values a [n, K] on every row of the shape: [K, rows]."""
        return np.repeat(a.T, self.lens, axis=1)

    def take(self, on: np.ndarray) -> _Rows:
        """The rows of the shapes marked ``on``, the shapes renumbered in order."""
        keep = on[self.seg]
        rank = np.cumsum(on) - 1
        return _Rows(rank[self.seg[keep]], self.t[keep], self.w[keep], int(on.sum()))


def _ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The indices lo[i]..hi[i] - 1 one range after another, and the range of each."""
    lens = hi - lo
    seg = np.repeat(np.arange(lens.size), lens)
    return np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens - lo, lens), seg


def _step(pi: np.ndarray, lam: np.ndarray, ex: _Rows, ce: _Rows, wc: np.ndarray, prior_pi: np.ndarray | None,
          m: float, prior_mean: np.ndarray | None,
          pad: np.ndarray | None = None, want_ll: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One EM step of C shapes at once: (pi [C, K], lam [C], log-likelihood at the old parameters [C] or None).

    ``ex``: finished visits' bins; ``ce``: bins still going, of weights ``wc``; ``pad`` [C, K]: phases
    beyond a shape's own count (their weight stays 0). Weights are floored at 1e-300 as logs of them were.
    """
    C, K = pi.shape
    j = np.arange(K, dtype=float)[:, None]  # k - 1
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        eff = np.maximum(pi, 1e-300)
        if pad is not None:
            eff[pad] = 0.0
        # finished at t: the density lam e^-x sum_k pi_k x^(k-1) / (k-1)!, x = lam t; the powers stay
        # far inside the float range for the times and rates of stays
        x = lam[ex.seg] * ex.t_pos
        q = scaled_powers(x, K)
        tot = np.einsum("kn,kn->n", ex.spread(eff), q)
        ll = ex.sum(ex.w * (np.log(tot) - x)) + np.log(lam) * ex.w_sum if want_ll else None
        u = ex.w / tot
        counts = eff * ex.sum_rows(q * u)
        comp = counts @ (j[:, 0] + 1.0)
        time = ex.wt_sum.copy()
        n = ex.w_sum.copy()
        if ce.seg.size:
            # still going at t: pi_k P(N <= k - 1) = pi_k e^-x sum_{j < k} x^j / j!, and the completions
            # so far, E[N | N < k] = x P(N <= k - 2) / P(N <= k - 1); rows far out in logs (_censored_far)
            x = lam[ce.seg] * ce.t
            far = x > FAR
            w = np.where(far, 0.0, wc)
            g = cumulated(scaled_powers(x, K))
            tot = np.einsum("kn,kn->n", ce.spread(eff), g)
            ll = ll + ce.sum(w * (np.log(tot) - x)) if want_ll else None
            u = w / tot
            counts += eff * ce.sum_rows(g * u)
            comp += (eff[:, 1:] * ce.sum_rows(g[:-1] * (u * x))).sum(1)
            if far.any():
                part = _Rows(ce.seg[far], ce.t[far], wc[far], C)
                ll_f, counts_f, comp_f = _censored_far(eff, x[far], part, K)
                ll, counts, comp = ll + ll_f if want_ll else None, counts + counts_f, comp + comp_f
            time += ce.sum(wc * ce.t)
            n += ce.sum(wc)
        if prior_pi is None or m <= 0:
            new_pi = np.where((n > 0)[:, None], counts / np.maximum(n, 1e-300)[:, None], pi)
        else:
            new_pi = (counts + m * prior_pi) / (n + m)[:, None]
        new_pi = new_pi / new_pi.sum(1, keepdims=True)
        plain = np.where((time > 0) & (comp > 0), comp / time, lam)
        if m > 0 and prior_mean is not None:  # m pseudo-visits of kbar phases in prior_mean days
            new_lam = np.where(np.isfinite(prior_mean), (comp + m * kbar(new_pi)) / (time + m * prior_mean), plain)
        else:
            new_lam = plain
    return new_pi, new_lam, ll


def _censored_far(eff: np.ndarray, x: np.ndarray, rows: _Rows, K: int) -> tuple[np.ndarray, ...]:
    """`_step`'s sums over bins still going far out (x > FAR), in logs with the floors (1e-300 on a
    survival, 1e-280 before a ratio of them) of the per-shape fit: (ll, counts, completions)."""
    j = np.arange(K, dtype=float)[:, None]
    sc = cumulated(poisson_terms(K, x))
    b = rows.spread(np.log(eff)) + np.log(np.maximum(sc, 1e-300))
    top = b.max(0)
    r = np.exp(b - top)
    tot = r.sum(0)
    u = rows.w / tot
    below = np.zeros_like(sc)
    below[1:] = sc[:-1]
    ok = sc > 1e-280
    ratio = np.where(ok, x * below / np.where(ok, sc, 1.0), j)
    return (rows.sum(rows.w * (np.log(tot) + top)), rows.sum_rows(r * u),
            rows.sum(u * (r * np.minimum(ratio, j)).sum(0)))


def _fit_shapes(ks: list[int], data: list[tuple[np.ndarray, ...]],
                iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Shapes of ks[i] phases fitted without a prior to data[i] = (te, we, tc, wc), unit mean: (pi, ll).

    The start puts 0.7 on the phase count of an Erlang with the finished visits' squared coefficient
    of variation (1 / k), the rest spread evenly: EM moves weights slowly, so a flat start would
    leave a sharp shape unfound within the iterations. Each shape stops on its own when its
    log-likelihood changes by less than 1e-6 (relative).
    """
    C, K = len(ks), max(ks)
    pi, lam = np.zeros((C, K)), np.zeros(C)
    for i, (k, (te, we, _, _)) in enumerate(zip(ks, data)):
        m1 = float(we @ te / max(we.sum(), 1e-300))
        var = float(we @ (te - m1) ** 2 / max(we.sum(), 1e-300))
        k0 = int(np.clip(round(m1 * m1 / max(var, 1e-300)), 1, k))
        pi[i, :k] = 0.3 / k
        pi[i, k0 - 1] += 0.7
        lam[i] = float(kbar(pi[i, :k]))
    pad = np.arange(K) >= np.array(ks)[:, None]
    ex = _Rows(np.repeat(np.arange(C), [d[0].size for d in data]), np.concatenate([d[0] for d in data]),
               np.concatenate([d[1] for d in data]), C)
    ce = _Rows(np.repeat(np.arange(C), [d[2].size for d in data]), np.concatenate([d[2] for d in data]),
               np.concatenate([d[3] for d in data]), C)
    ll_old, ll_out = np.full(C, -np.inf), np.full(C, -np.inf)
    active = np.arange(C)
    ex_on, ce_on = ex, ce
    for _ in range(iterations):
        new_pi, new_lam, ll = _step(pi[active], lam[active], ex_on, ce_on, ce_on.w, None, 0.0, None, pad[active])
        pi[active], lam[active], ll_out[active] = new_pi, new_lam, ll
        done = np.abs(ll - ll_old[active]) < 1e-6 * np.maximum(1.0, np.abs(ll))
        ll_old[active] = ll
        if done.any():  # converged shapes leave the batch
            active = active[~done]
            if not active.size:
                break
            on = np.zeros(C, dtype=bool)
            on[active] = True
            ex_on, ce_on = ex.take(on), ce.take(on)
    return pi, ll_out


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


class _QuietBins:
    """The bins each round's observations fall in: fixed, as only the quiet rows' weights change by round.

    Sums run over the same rows in the same order as binning each round afresh would, so the
    observations are the same to the last bit.
    """

    def __init__(self, move_bins: BinSums, c_idx: np.ndarray, c_w: np.ndarray, c_t: np.ndarray, quiet: Quiet,
                 K1: int):
        timed = quiet.timed
        self.timed, self.t_timed = timed, quiet.t_row[timed]
        q_key = _keys(quiet.ps[timed] * K1, self.t_timed)
        self.f_key, inv = _unique(np.concatenate([move_bins.key, q_key]))
        self.f_move = np.zeros(self.f_key.size, dtype=bool)
        self.f_move[inv[:move_bins.key.size]] = True
        self.move_w = np.bincount(inv[:move_bins.key.size], weights=move_bins.w, minlength=self.f_key.size)
        self.move_wt = np.bincount(inv[:move_bins.key.size], weights=move_bins.wt, minlength=self.f_key.size)
        self.f_inv = inv[move_bins.key.size:]
        self.c_t = np.concatenate([c_t, quiet.t_row + quiet.quiet])
        self.c_key, self.c_inv = _unique(_keys(np.concatenate([c_idx, quiet.ps]), self.c_t))
        self.c_w = c_w

    def obs(self, wq: np.ndarray) -> _Obs:
        """The binned observations with the quiet rows weighted ``wq`` (P(over))."""
        w = wq[self.timed]
        w = np.where(w > 0, w, 0.0)  # rows of weight 0 are no observation
        n = self.f_key.size
        fw = self.move_w + np.bincount(self.f_inv, weights=w, minlength=n)
        fwt = self.move_wt + np.bincount(self.f_inv, weights=w * self.t_timed, minlength=n)
        keep = self.f_move | (fw > 0)
        cw = np.concatenate([self.c_w, 1.0 - wq])
        cw = np.where(cw > 0, cw, 0.0)
        n = self.c_key.size
        sw = np.bincount(self.c_inv, weights=cw, minlength=n)
        swt = np.bincount(self.c_inv, weights=cw * self.c_t, minlength=n)
        on = sw > 0
        return _Obs(*_binned(BinSums(self.f_key[keep], fw[keep], fwt[keep])),
                    *_binned(BinSums(self.c_key[on], sw[on], swt[on])))


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
    bins = _QuietBins(move_bins, c_idx, c_w, c_t, quiet, K1)
    for rnd in range(ROUNDS):
        wq = _quiet_weights(quiet, way, pi, lam, stay_rate, out0)
        exits = move_exits + np.bincount(quiet.ps * K1, weights=wq, minlength=P * S * K1).reshape(P, S, K1)
        obs = bins.obs(wq)
        if rnd == 0:  # the phase counts, with the quiet rows as the exponential fit weighs them
            resp = _responsibilities(obs, way, pi, lam, P, S)
            mean = kbar(pi) / np.maximum(lam, 1e-300)
            chosen, pooled, sparse = _select(obs, resp, valid, np.where(valid, mean, 1.0), P, S)
            if all(k == 1 for k in chosen.values()):  # exponential everywhere: way_out's fit
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


@dataclass
class _Batch:
    """The persona x stage x way out cells of one phase count, with their rows, for `_em`."""

    K: int
    cell: np.ndarray  # flat (p, s, o)
    ex: _Rows  # finished visits of the cell
    ce: _Rows  # visits of the cell's (p, s) still going, weights before the way's responsibility
    c_at: np.ndarray  # flat [censored bin, way] of each of ce's rows in the responsibilities
    prior: np.ndarray  # [C, K] the pooled shape
    prior_mean: np.ndarray  # [C] the plain model's mean stay


def _batches(obs: _Obs, chosen: dict, pooled: dict, prior_mean: np.ndarray, P: int, S: int,
             K1: int) -> list[_Batch]:
    """The cells of `_em` grouped by phase count, each cell's rows in the order of the observations."""
    e_order = np.argsort(obs.e_cell, kind="stable")
    e_lo = np.searchsorted(obs.e_cell[e_order], np.arange(P * S * K1 + 1))
    c_order = np.argsort(obs.c_cell, kind="stable")
    c_lo = np.searchsorted(obs.c_cell[c_order], np.arange(P * S + 1))
    by_k: dict[int, list[tuple[int, int, int]]] = {}
    for (s, o), k in chosen.items():
        by_k.setdefault(k, []).extend((p, s, o) for p in range(P))
    out = []
    for k, cells in by_k.items():
        p, s, o = np.array(cells, dtype=np.int64).T
        flat, ps = (p * S + s) * K1 + o, p * S + s
        rows, seg = _ranges(e_lo[flat], e_lo[flat + 1])
        rows = e_order[rows]
        ex = _Rows(seg, obs.e_t[rows], obs.e_w[rows], len(cells))
        rows, seg = _ranges(c_lo[ps], c_lo[ps + 1])
        rows = c_order[rows]
        ce = _Rows(seg, obs.c_t[rows], obs.c_w[rows], len(cells))
        prior = np.array([pooled[(si, oi)][:k] for _, si, oi in cells])
        out.append(_Batch(k, flat, ex, ce, rows * K1 + o[seg], prior, prior_mean.reshape(-1)[ps]))
    return out


def _em(obs: _Obs, exits: np.ndarray, way: np.ndarray, pi: np.ndarray, lam: np.ndarray, way0: np.ndarray,
        chosen: dict, pooled: dict, prior_mean: np.ndarray, m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ways out and shapes by EM over fixed observations: (way, phase weights, phase rates)."""
    P, S, K1 = way.shape
    valid = way0 > 0
    batches = _batches(obs, chosen, pooled, prior_mean, P, S, K1)
    c_order = np.argsort(obs.c_cell, kind="stable")
    censored = _Rows(obs.c_cell[c_order], obs.c_t[c_order], obs.c_w[c_order], P * S)
    pi, lam = pi.copy(), lam.copy()
    flat_pi, flat_lam = pi.reshape(-1, pi.shape[-1]), lam.reshape(-1)
    for _ in range(OUTER_ITERATIONS):
        resp = _responsibilities(obs, way, pi, lam, P, S)
        cens = censored.sum_rows((resp[c_order] * censored.w[:, None]).T)
        visits = exits + cens.reshape(P, S, K1)
        new_way = (visits + m * way0) / np.maximum(visits.sum(-1, keepdims=True) + m, 1e-300)
        new_way = np.where(valid, new_way, 0.0)
        new_way /= np.maximum(new_way.sum(-1, keepdims=True), 1e-300)
        change = float(np.abs(new_way - way).max(initial=0.0))
        way = new_way
        flat_resp = resp.ravel()
        for b in batches:
            wc = b.ce.w * flat_resp[b.c_at]
            cur, rate = flat_pi[b.cell, :b.K], flat_lam[b.cell]
            for _ in range(INNER):
                cur, rate, _ = _step(cur, rate, b.ex, b.ce, wc, b.prior, m, b.prior_mean, want_ll=False)
            with np.errstate(divide="ignore", invalid="ignore"):
                moved = np.concatenate([np.abs(rate / flat_lam[b.cell] - 1.0),
                                        np.abs(cur - flat_pi[b.cell, :b.K]).max(1)])
            moved = moved[~np.isnan(moved)]  # as max() of Python floats: a NaN never counts
            change = max(change, float(moved.max(initial=-np.inf)))
            flat_pi[b.cell, :b.K], flat_lam[b.cell] = cur, rate
        if change < 1e-5:
            break
    return way, pi, lam


def _density(pi: np.ndarray, lam: np.ndarray, t: np.ndarray, K: int) -> np.ndarray:
    """The density at t of stays with phase weights pi [>= K, n] and phase rates lam [n]."""
    return np.einsum("kn,kn->n", pi[:K], poisson_terms(K, lam * np.maximum(t, 1e-12))) * lam


def _by_way(pi: np.ndarray, K1: int) -> np.ndarray:
    """Phase weights [P, S, 1 + S, K] as [1 + S, K, P * S]: a way's weights of many rows by one take."""
    return np.ascontiguousarray(pi.reshape(-1, K1, pi.shape[-1]).transpose(1, 2, 0))


def _quiet_weights(quiet: Quiet, way: np.ndarray, pi: np.ndarray, lam: np.ndarray, stay_rate: np.ndarray,
                   out0: np.ndarray) -> np.ndarray:
    """P(over) of each quiet row under the current ways and shapes (see Quiet), QUIET_BLOCK rows at a time."""
    K1 = way.shape[-1]
    way_of = way.reshape(-1, K1)  # gathered one way at a time: a [rows, ways] copy is what grows with the log
    need = n_phases(pi.reshape(-1, K1, pi.shape[-1]))  # [P * S, 1 + S]: phases past the last weighted add nothing
    ps = quiet.ps
    # the phases summed per way out are the whole log's: every block sums the same terms, as one pass would
    phases = [int(need[ps, o][way_of[ps, o] > 0].max(initial=0)) for o in range(K1)]
    ways, flat_lam, phases0 = _by_way(pi, K1), lam.reshape(-1, K1), int(need[ps, 0].max(initial=1))
    out = np.empty(ps.size)
    for lo in range(0, ps.size, QUIET_BLOCK):
        block = Quiet(**{f.name: getattr(quiet, f.name)[lo:lo + QUIET_BLOCK] for f in fields(Quiet)})
        out[lo:lo + QUIET_BLOCK] = _quiet_block(block, way_of, ways, flat_lam, phases, phases0, stay_rate, out0)
    return out


def _quiet_block(quiet: Quiet, way_of: np.ndarray, ways: np.ndarray, flat_lam: np.ndarray, phases: list[int],
                 phases0: int, stay_rate: np.ndarray, out0: np.ndarray) -> np.ndarray:
    """`_quiet_weights` of a block of quiet rows."""
    ps = quiet.ps
    t_cut = np.maximum(quiet.t_row + quiet.quiet, 1e-12)
    surv = np.zeros(ps.size)
    for o, k in enumerate(phases):
        on = way_of[ps, o] > 0
        if on.any():
            cells = ps[on]
            surv[on] += way_of[cells, o] * mixture_survival(ways[o, :k][:, cells], flat_lam[cells, o] * t_cut[on], k)
    log_b = -stay_rate[ps] * quiet.quiet + np.log(np.maximum(surv, 1e-300))
    dens = _density(ways[0, :phases0][:, ps], flat_lam[ps, 0], quiet.t_row, phases0)
    log_a = quiet.log_odds + np.where(
        quiet.timed, np.log(np.maximum(way_of[ps, 0] * dens, 1e-300)) - np.log(np.maximum(out0[ps], 1e-300)), 0.0)
    with np.errstate(over="ignore"):
        w = 1.0 / (1.0 + np.exp(np.clip(log_b - log_a, -700, 700)))
    return np.where(quiet.fixed, quiet.w, w)


def _responsibilities(obs: _Obs, way: np.ndarray, pi: np.ndarray | None, lam: np.ndarray, P: int,
                      S: int) -> np.ndarray:
    """P(way out o | a visit still going at its time), per censored bin [n, 1 + S]."""
    K1 = way.shape[-1]
    cell = obs.c_cell
    lam_by_way = lam.reshape(P * S, K1).T
    t = obs.c_t
    logit = np.log(np.maximum(way.reshape(P * S, K1).T[:, cell], 1e-300))  # [1 + S, n]: rows run along the bins
    if pi is not None:
        ways = _by_way(pi, K1)
        need = n_phases(pi.reshape(P * S, K1, -1))  # phases past a cell's last weighted one add nothing
    for o in range(K1):
        rate = lam_by_way[o, cell]
        if pi is None:
            logit[o] -= rate * t
            continue
        k = int(need[cell, o].max(initial=1))
        logit[o] += np.log(np.maximum(mixture_survival(ways[o, :k][:, cell], rate * t, k), 1e-300))
    resp = np.exp(logit - logit.max(0))
    return np.ascontiguousarray((resp / resp.sum(0)).T)


def _select(obs: _Obs, resp: np.ndarray, valid: np.ndarray, mean: np.ndarray, P: int,
            S: int) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], np.ndarray], list[tuple[int, int]]]:
    """Phases per stage x way out by BIC over all personas, and the pooled shape (weights padded to 16).

    The shape is unit-free: each persona's times are divided by its current mean stay that way
    (``mean`` [P, S, 1 + S]) before they are pooled, so personas of different speeds do not make
    the pooled stay look more variable than any of theirs. Candidates climb in CANDIDATES order and
    stop after two larger ones no better; each group of ``_CLIMB`` is fitted at once for every
    stage x way out still climbing.
    """
    K1 = valid.shape[-1]
    sparse: list[tuple[int, int]] = []
    e_p, rest = np.divmod(obs.e_cell, S * K1)
    e_s, e_o = np.divmod(rest, K1)
    c_p, c_s = np.divmod(obs.c_cell, S)
    ways: list[tuple[int, int]] = []
    data: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
    size: dict[tuple[int, int], float] = {}
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
            ways.append((s, o))
            if we.sum() < MIN_EXITS:
                sparse.append((s, o))
            else:
                data[(s, o)], size[(s, o)] = (te, we, tc, wc), n
    best = {key: (1, np.inf, np.ones(1)) for key in ways}
    worse = dict.fromkeys(data, 0)
    for group in _CLIMB:
        todo = [(key, k) for key in data if worse[key] < 2 for k in group]
        if not todo:
            break
        shapes, lls = _fit_shapes([k for _, k in todo], [data[key] for key, _ in todo], SELECT_ITERATIONS)
        for (key, k), shape, ll in zip(todo, shapes, lls):
            if worse[key] == 2:  # stopped climbing earlier in this group
                continue
            bic = -2.0 * float(ll) + k * np.log(max(size[key], 2.0))
            if bic < best[key][1]:
                best[key], worse[key] = (k, bic, shape[:k]), 0
            else:
                worse[key] += 1
    chosen: dict[tuple[int, int], int] = {}
    pooled: dict[tuple[int, int], np.ndarray] = {}
    for key in ways:
        k, _, shape = best[key]
        pad = np.zeros(max(CANDIDATES))
        pad[:k] = shape
        chosen[key], pooled[key] = k, pad
    return chosen, pooled, sparse
