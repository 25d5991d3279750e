"""Personas discovered from behaviour: a finite mixture of journey models fitted by EM.

When a log has no persona column, each customer's interactions are explained by one of K plain
journey models (README, "The model in one paragraph"): per stage x touchpoint shares, outcomes
(stay, drop off, advance to each later stage), the lapse after a move and exponential gaps at a
per-stage rate. A customer's log-likelihood under a component is linear in per-customer counts
(a sparse customer x feature matrix: interactions per (stage, touchpoint), known outcomes, moves
answered or lapsed, gaps and their days) plus one cure term for the last quiet interaction,
log(P(drop) + P(stay) exp(-rate quiet)) (or the lapse's), as in calibration/estimate.py. So an
E step is one sparse product and a few exps, and an M step one transposed product.

Censoring is the plain fit's: the same rows are decided (the outcome window unless it would leave
most rows undecided), rows after the final stage are ignored. Parameters are shrunk toward the
all-customer estimate with ``PRIOR`` pseudo-counts (no cell has probability 0). K runs from 1 to
``max_k`` (stopping after BIC rose twice); for each K a few seeded k-means++ starts run a short
EM, the best runs to convergence, and BIC picks K (`fit_personas`). Personas are then named
``segment_1``... by size, and each customer's persona is drawn from its posterior (seeded), so the
final model is today's estimate on those personas. calibration/discovery.py runs these steps over a
log's buckets (streamed or in memory alike).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from calibration.counting import row_structure
from calibration.estimate import DEFAULT_INACTIVITY_DAYS
from calibration.eventlog import EventLog
from sim.errors import InputError

MAX_K = 6
STARTS = 4
SHORT_EM = 15  # iterations of each start before the best one is run to convergence
MAX_EM = 400
TOLERANCE = 1e-6  # relative change of the log-likelihood that ends the EM
# K is chosen on a seeded sample of this many customers (BIC differences between wrong and right K
# are thousands here); the chosen K is then refined on every customer
SEARCH_SAMPLE = 25_000
PRIOR = 1.0  # pseudo-counts toward the all-customer estimate
DEFAULT_SEED = 20


@dataclasses.dataclass
class Features:
    """Per-customer sufficient statistics of the plain journey model."""

    X: sp.csr_matrix  # [C, F] counts (days for the gap-days block)
    S: int
    T: int
    q_cust: np.ndarray  # quiet last interactions (drop or stay): customer, cell (s*T + t), stage, quiet days
    q_cell: np.ndarray
    q_stage: np.ndarray
    q_days: np.ndarray
    l_cust: np.ndarray  # unanswered moves into a stage (lapse or still to come)
    l_stage: np.ndarray
    l_days: np.ndarray
    valid: np.ndarray  # [S, S + 2] outcomes a stage has: stay, drop, advance to u
    seen: np.ndarray  # [S, T] pairs with an interaction

    @property
    def n_customers(self) -> int:
        """Customers (rows of X)."""
        return self.X.shape[0]

    # feature blocks: share [S*T], outcome [S*T*(S+2)], answered / lapsed [S] each, gaps [S], gap days [S]
    @property
    def offsets(self) -> tuple[int, int, int, int, int, int]:
        """Where each feature block starts in a row of X."""
        S, T = self.S, self.T
        o_out = S * T
        o_ans = o_out + S * T * (S + 2)
        return 0, o_out, o_ans, o_ans + S, o_ans + 2 * S, o_ans + 3 * S

    @property
    def n_features(self) -> int:
        """Columns of X."""
        return self.offsets[-1] + self.S


def window_rows(log: EventLog, *, end: float, inactivity_days: float = DEFAULT_INACTIVITY_DAYS) -> tuple[int, int]:
    """The log's live rows (before the final stage) and how many of them lie in the outcome window
    before ``end``: summed over a log's parts, calibration.counting.every_row_decided of them is the whole
    log's rule."""
    _, _, before = row_structure(log.customer, log.stage.astype(np.int64))
    live = before < len(log.stages) - 1
    return int(live.sum()), int((live & (log.time > end - inactivity_days)).sum())


def features(log: EventLog, *, end: float, every_row: bool, inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
             censoring: str = "cure") -> Features:
    """The sparse per-customer counts and the quiet rows of a log's part, with the plain fit's censoring:
    ``end`` the whole log's end, ``every_row`` its `every_row_decided` (`window_rows` summed over parts)."""
    S, T = len(log.stages), len(log.touchpoints)
    final = S - 1
    cust, time, tp, after = log.customer, log.time, log.touchpoint.astype(np.int64), log.stage.astype(np.int64)
    n = cust.size
    first, last, before = row_structure(cust, after)
    live = before < final
    advanced = after > before
    certain = log.ended[cust] if log.ended is not None else np.zeros(n, dtype=bool)
    in_window = live & (time > end - inactivity_days)
    decided = live.copy() if every_row else live & ~in_window
    cure = censoring != "window"  # the window rule: a decided quiet row is over
    quiet_time = end - time
    cell = before * T + tp

    F = Features(X=sp.csr_matrix((0, 0)), S=S, T=T, q_cust=cust[:0], q_cell=cell[:0],
                 q_stage=cell[:0], q_days=time[:0], l_cust=cust[:0], l_stage=cell[:0], l_days=time[:0],
                 valid=_valid(S), seen=np.zeros((S, T), dtype=bool))
    o_share, o_out, o_ans, o_lap, o_gap, o_days = F.offsets
    rows, cols, vals = [], [], []

    def add(mask: np.ndarray, col: np.ndarray, val: np.ndarray | None = None) -> None:
        rows.append(cust[mask])
        cols.append(col[mask])
        vals.append(np.ones(int(mask.sum())) if val is None else val[mask])

    add(live, o_share + cell)
    # known outcomes: 0 stay, 1 drop, 2 + u advance to u
    quiet = decided & ~advanced & last & ~certain & cure
    outcome = np.where(advanced, 2 + after, np.where(last, 1, 0))
    add(decided & ~quiet, o_out + cell * (S + 2) + outcome)
    entry = decided & advanced & (after < final)
    quiet_l = entry & last & ~certain & cure
    add(entry & ~last, o_ans + after)
    add(entry & last & ~quiet_l, o_lap + after)
    gap_rows = decided & ~last & (after < final)
    gap = np.zeros(n)
    gap[:-1] = time[1:] - time[:-1]
    add(gap_rows, o_gap + after)
    add(gap_rows, o_days + after, gap)

    C = log.n_customers
    X = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(C, F.n_features)).tocsr()
    X.sum_duplicates()
    seen = np.bincount(cell[live], minlength=S * T).reshape(S, T) > 0
    return dataclasses.replace(
        F, X=X, q_cust=cust[quiet], q_cell=cell[quiet], q_stage=before[quiet],
        q_days=quiet_time[quiet], l_cust=cust[quiet_l], l_stage=after[quiet_l], l_days=quiet_time[quiet_l],
        seen=seen)


def stacked(parts: list[Features]) -> Features:
    """The parts' customers one after another (a log's buckets, in order), as one log's features. The list
    is emptied as it is copied, so that each part's matrix is freed once copied (not two copies at once)."""
    head = parts[0]
    C, nnz = sum(p.n_customers for p in parts), sum(p.X.nnz for p in parts)
    index = np.int32 if max(nnz, C) < np.iinfo(np.int32).max else np.int64
    data, indices = np.empty(nnz, dtype=head.X.dtype), np.empty(nnz, dtype=index)
    indptr = np.zeros(C + 1, dtype=index)
    quiet: dict[str, list[np.ndarray]] = {name: [] for name in _QUIET}
    seen = np.zeros_like(head.seen)
    row = at = 0
    while parts:
        p = parts.pop(0)
        n, m = p.n_customers, p.X.nnz
        data[at:at + m], indices[at:at + m] = p.X.data, p.X.indices
        indptr[row + 1:row + n + 1] = p.X.indptr[1:] + at
        for name in _QUIET:
            quiet[name].append(getattr(p, name) + (row if name in ("q_cust", "l_cust") else 0))
        seen |= p.seen
        row, at = row + n, at + m
        del p
    X = sp.csr_matrix((data, indices, indptr), shape=(C, head.X.shape[1]))
    return dataclasses.replace(head, X=X, seen=seen, **{name: np.concatenate(quiet[name]) for name in _QUIET})


_QUIET = ("q_cust", "q_cell", "q_stage", "q_days", "l_cust", "l_stage", "l_days")


def _valid(S: int) -> np.ndarray:
    valid = np.zeros((S, S + 2), dtype=bool)
    valid[:, :2] = True
    for s in range(S):
        valid[s, 2 + s + 1:] = True
    valid[S - 1] = False
    return valid


@dataclasses.dataclass
class Params:
    """One set of mixture parameters, per component."""

    weight: np.ndarray  # [K]
    share: np.ndarray  # [K, S, T]
    outcome: np.ndarray  # [K, S, T, S + 2] stay, drop, advance to u
    lapse: np.ndarray  # [K, S]
    rate: np.ndarray  # [K, S]


def _m_step(F: Features, R: np.ndarray, prior: Params | None) -> Params:
    """Pooled estimates per component from posterior weights R [C, K] (cure weights inside)."""
    S, T = F.S, F.T
    K = R.shape[1]
    o_share, o_out, o_ans, o_lap, o_gap, o_days = F.offsets
    N = np.asarray(F.X.T @ R).T  # [K, F]; X.T is a view (CSC), the same sums as a CSR copy, in the same order
    share_n = N[:, o_share:o_out].reshape(K, S, T)
    out_n = N[:, o_out:o_ans].reshape(K, S, T, S + 2)
    answered, lapsed = N[:, o_ans:o_lap].copy(), N[:, o_lap:o_gap].copy()
    gaps, days = N[:, o_gap:o_days], N[:, o_days:o_days + S].copy()
    if prior is not None:  # quiet rows: the E step's share of "over" per component
        e_q = np.exp(-prior.rate[:, F.q_stage] * F.q_days)  # [K, nq]
        d = prior.outcome[:, F.q_stage, F.q_cell % T, 1]
        s_ = prior.outcome[:, F.q_stage, F.q_cell % T, 0]
        w = d / np.maximum(d + s_ * e_q, 1e-300)
        r = R[F.q_cust].T  # [K, nq]
        flat = (np.arange(K)[:, None] * (S * T) + F.q_cell[None]).ravel()
        out_n[..., 1] += np.bincount(flat, weights=(r * w).ravel(), minlength=K * S * T).reshape(K, S, T)
        out_n[..., 0] += np.bincount(flat, weights=(r * (1 - w)).ravel(), minlength=K * S * T).reshape(K, S, T)
        flat_s = (np.arange(K)[:, None] * S + F.q_stage[None]).ravel()
        days += np.bincount(flat_s, weights=(r * (1 - w) * F.q_days).ravel(), minlength=K * S).reshape(K, S)
        lp = prior.lapse[:, F.l_stage]
        e_l = np.exp(-prior.rate[:, F.l_stage] * F.l_days)
        w = lp / np.maximum(lp + (1 - lp) * e_l, 1e-300)
        r = R[F.l_cust].T
        flat_s = (np.arange(K)[:, None] * S + F.l_stage[None]).ravel()
        lapsed += np.bincount(flat_s, weights=(r * w).ravel(), minlength=K * S).reshape(K, S)
        answered += np.bincount(flat_s, weights=(r * (1 - w)).ravel(), minlength=K * S).reshape(K, S)
        days += np.bincount(flat_s, weights=(r * (1 - w) * F.l_days).ravel(), minlength=K * S).reshape(K, S)
    else:  # first step: quiet rows count half over, half still going
        for k in range(K):
            r = R[F.q_cust, k]
            np.add.at(out_n[k, ..., 1], (F.q_stage, F.q_cell % T), 0.5 * r)
            np.add.at(out_n[k, ..., 0], (F.q_stage, F.q_cell % T), 0.5 * r)
            days[k] += np.bincount(F.q_stage, weights=0.5 * r * F.q_days, minlength=S)
            r = R[F.l_cust, k]
            lapsed[k] += np.bincount(F.l_stage, weights=0.5 * r, minlength=S)
            answered[k] += np.bincount(F.l_stage, weights=0.5 * r, minlength=S)
            days[k] += np.bincount(F.l_stage, weights=0.5 * r * F.l_days, minlength=S)
    m = PRIOR
    # shrink toward the all-customer estimate (sums over components)
    top_share = share_n.sum(0)
    top_share = np.where(F.seen, top_share + 1e-3, 0.0)
    top_share /= np.maximum(top_share.sum(-1, keepdims=True), 1e-300)
    share = (share_n + m * top_share) / (share_n.sum(-1, keepdims=True) + m)
    valid = F.valid[:, None, :]
    top_out = np.where(valid, out_n.sum(0) + 1e-3, 0.0)
    top_out /= np.maximum(top_out.sum(-1, keepdims=True), 1e-300)
    outcome = np.where(valid, (out_n + m * top_out) / (out_n.sum(-1, keepdims=True) + m), 0.0)
    entered = answered + lapsed
    top_lapse = (lapsed.sum(0) + 1e-3) / (entered.sum(0) + 2e-3)
    lapse = (lapsed + m * top_lapse) / (entered + m)
    top_rate = (gaps.sum(0) + 1e-3) / (days.sum(0) + 1e-3 * 7.0)
    rate = (gaps + m) / (days + m / top_rate)
    weight = R.sum(0) / R.shape[0]
    return Params(weight=weight, share=share, outcome=outcome, lapse=lapse, rate=rate)


def _log_params(F: Features, p: Params) -> np.ndarray:
    """[F, K] log-parameters whose product with a customer's counts is its log-likelihood."""
    K = p.weight.size
    S, T = F.S, F.T
    with np.errstate(divide="ignore"):
        blocks = [np.log(p.share).reshape(K, -1), np.log(p.outcome).reshape(K, -1), np.log1p(-p.lapse),
                  np.log(p.lapse), np.log(p.rate), -p.rate]
    W = np.concatenate(blocks, axis=1)
    # a log(0) only meets a zero count (a stage's invalid outcome, the final stage): count it as 0
    W[~np.isfinite(W)] = 0.0
    assert W.shape[1] == F.n_features and S * T > 0
    return W.T


def _e_step(F: Features, p: Params) -> tuple[np.ndarray, float]:
    """Posterior [C, K] and the log-likelihood."""
    T = F.T
    L = np.asarray(F.X @ _log_params(F, p))  # [C, K]
    if F.q_cust.size:
        d = p.outcome[:, F.q_stage, F.q_cell % T, 1]
        s_ = p.outcome[:, F.q_stage, F.q_cell % T, 0]
        L[F.q_cust] += np.log(np.maximum(d + s_ * np.exp(-p.rate[:, F.q_stage] * F.q_days), 1e-300)).T
    if F.l_cust.size:
        lp = p.lapse[:, F.l_stage]
        L[F.l_cust] += np.log(np.maximum(lp + (1 - lp) * np.exp(-p.rate[:, F.l_stage] * F.l_days), 1e-300)).T
    with np.errstate(divide="ignore"):
        L += np.log(p.weight)[None]
    top = L.max(axis=1, keepdims=True)
    R = np.exp(L - top)
    total = R.sum(axis=1, keepdims=True)
    R /= total
    return R, float((np.log(total) + top).sum())


def _n_parameters(F: Features, K: int) -> int:
    S = F.S
    per = 0
    for s in range(S - 1):
        t_seen = int(F.seen[s].sum())
        if t_seen == 0:
            continue
        per += t_seen - 1 + t_seen * (int(F.valid[s].sum()) - 1) + 1  # shares, outcomes, rate
        per += 1 if s > 0 else 0  # lapse
    return K * per + K - 1


def _kmeans_start(F: Features, K: int, rng: np.random.Generator) -> np.ndarray:
    """Hard responsibilities from k-means++ on each customer's touchpoint and outcome mix."""
    o_share, o_out, o_ans, *_ = F.offsets
    Z = F.X[:, o_share:o_ans]
    norm = np.asarray(Z.sum(axis=1)).ravel()
    Z = sp.diags(1.0 / np.maximum(norm, 1.0)) @ Z
    C = Z.shape[0]
    sample = rng.choice(C, size=min(C, 5000), replace=False)
    Zs = Z[sample].toarray()
    centers = [Zs[rng.integers(len(Zs))]]
    d2 = ((Zs - centers[0]) ** 2).sum(1)
    for _ in range(1, K):
        prob = d2 / d2.sum() if d2.sum() > 0 else None
        centers.append(Zs[rng.choice(len(Zs), p=prob)])
        d2 = np.minimum(d2, ((Zs - centers[-1]) ** 2).sum(1))
    Cm = np.array(centers)
    for _ in range(5):  # a few Lloyd steps on the sample
        lab = (-2 * Zs @ Cm.T + (Cm ** 2).sum(1)[None]).argmin(1)
        for k in range(K):
            if (lab == k).any():
                Cm[k] = Zs[lab == k].mean(0)
    sq = np.asarray(Z.multiply(Z).sum(axis=1)).ravel()
    lab = (sq[:, None] - 2 * np.asarray(Z @ Cm.T) + (Cm ** 2).sum(1)[None]).argmin(1)
    R = np.full((C, K), 0.1 / max(K - 1, 1)) if K > 1 else np.ones((C, 1))
    if K > 1:
        R[np.arange(C), lab] = 0.9
    return R


def subset(F: Features, idx: np.ndarray) -> Features:
    """The features of customers ``idx`` (sorted), renumbered 0..len(idx)-1."""
    where = np.full(F.n_customers, -1, dtype=np.int64)
    where[idx] = np.arange(idx.size)
    X = F.X[idx]
    q, lq = where[F.q_cust] >= 0, where[F.l_cust] >= 0
    return dataclasses.replace(F, X=X, q_cust=where[F.q_cust[q]], q_cell=F.q_cell[q],
                               q_stage=F.q_stage[q], q_days=F.q_days[q], l_cust=where[F.l_cust[lq]],
                               l_stage=F.l_stage[lq], l_days=F.l_days[lq])


def _em(F: Features, R: np.ndarray, iterations: int, p: Params | None = None,
        step: Callable[[int], None] | None = None) -> tuple[Params, np.ndarray, float, int]:
    """EM from posteriors ``R`` (and parameters ``p``) until the log-likelihood's relative gain is below
    ``TOLERANCE`` or after ``iterations``; ``step(n)`` hears of each one done."""
    ll_prev = -np.inf
    ll = -np.inf
    steps = 0
    while steps < iterations:
        p = _m_step(F, R, p)
        R, ll = _e_step(F, p)
        steps += 1
        if step is not None:
            step(steps)
        if ll - ll_prev <= TOLERANCE * abs(ll):
            break
        ll_prev = ll
    return p, R, ll, steps


def fit_mixture(F: Features, K: int, *, seed: int, starts: int = STARTS) -> dict[str, Any]:
    """The best of ``starts`` seeded short EMs for K components, run to convergence."""
    rng = np.random.default_rng([seed, K])
    best = None
    for _ in range(starts if K > 1 else 1):
        R0 = _kmeans_start(F, K, rng)
        p, R, ll, _ = _em(F, R0, SHORT_EM)
        if best is None or ll > best[2]:
            best = (p, R, ll)
    p, R, ll, _ = _em(F, best[1], MAX_EM, best[0])
    n = F.n_customers
    k_par = _n_parameters(F, K)
    return {"k": K, "params": p, "posterior": R, "log_likelihood": ll, "parameters": k_par,
            "bic": -2.0 * ll + k_par * np.log(max(n, 1))}


def parse_personas(value: str | int | None) -> int | None:
    """``auto`` -> 0 (choose K), an integer K >= 1 -> K, None -> None (no discovery)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "auto":
        return 0
    try:
        k = int(text)
    except ValueError:
        raise InputError("expected auto or a number of personas", where="--personas", value=value,
                         hint="e.g. --personas auto or --personas 3") from None
    if k < 1:
        raise InputError("the number of personas must be at least 1", where="--personas", value=value)
    return k


def check_no_personas(notes: dict, source: str) -> None:
    """Refuse discovery on a log that names its personas (``notes``: the log's, or a stream's)."""
    if notes.get("persona_column"):
        raise InputError("the log already has personas (a persona column or a mapping's [persona]); "
                         "--personas discovers them only when it has none", file=source,
                         where=f"column {notes['persona_column']!r}", hint="drop --personas")


def check_header_has_no_personas(source: str | Path, mapping) -> None:
    """Refuse discovery on a log that names its personas before any row is read: a mapping's [persona]
    rule, or the persona column in the header (every reader then refuses first, however long the log)."""
    from calibration.load import as_mapping
    from calibration.readers import column_sources, log_header

    mp = as_mapping(mapping)
    column = mp.persona.column if mp.persona is not None else column_sources(mp)["persona"]
    if mp.persona is not None or column in (log_header(source) or []):
        check_no_personas({"persona_column": column}, str(source))


@dataclasses.dataclass
class Fit:
    """The mixture chosen for a log: its parameters, the components' order by size, and the record."""

    params: Params
    order: np.ndarray  # components by size (largest first): persona i is component order[i]
    record: dict[str, Any]


def fit_personas(F: Features, *, personas: int | None, max_k: int, seed: int, rng: np.random.Generator,
                 customers: int, progress: Callable[[str, int, int], None] | None = None) -> Fit:
    """K by BIC on a sample of ``SEARCH_SAMPLE`` of ``F``'s customers (or the K given), then fitted on all
    of ``F`` (the log's ``customers``, or a sample of them: calibration/discovery.py). ``progress(what,
    done, total)`` hears of each K tried and of each EM step of that fit (``MAX_EM`` at most)."""
    n = F.n_customers
    searched = n > SEARCH_SAMPLE
    F_search = subset(F, np.sort(rng.choice(n, SEARCH_SAMPLE, replace=False))) if searched else F
    ks = [personas] if personas else list(range(1, max(1, min(max_k, n)) + 1))
    fits: list[dict[str, Any]] = []
    rising = 0
    for k in ks:
        if k > n:
            raise InputError(f"more personas than customers ({n})", where="--personas", value=k)
        fit = fit_mixture(F_search, k, seed=seed)
        rising = rising + 1 if fits and fit["bic"] > min(f["bic"] for f in fits) else 0
        fits.append(fit)
        if progress is not None:
            progress("personas: choosing K", k, ks[-1])
        if not personas and rising >= 2:  # BIC rose twice in a row: larger K will not win
            break
    if progress is not None:
        progress("personas: choosing K", ks[-1], ks[-1])  # the search stopped: done
    best = min(fits, key=lambda f: f["bic"])
    params, R, final_ll = best["params"], best["posterior"], best["log_likelihood"]
    if searched:  # refine the chosen K on every customer of F, from the search's estimates
        R0, _ = _e_step(F, params)
        step = None if progress is None else (lambda n: progress("personas: fitting the chosen K", n, MAX_EM))
        params, R, final_ll, _ = _em(F, R0, MAX_EM, params, step)
        if progress is not None:
            progress("personas: fitting the chosen K", MAX_EM, MAX_EM)  # converged
    sample = f" on a random sample of {n:,} of the {customers:,} customers" if n < customers else ""
    record = {
        "method": "finite mixture of journey models (shares, outcomes with the cure model for quiet "
                  "interactions, lapse, exponential gaps per stage), fitted by EM on each customer's "
                  "interactions; each customer's persona is drawn from its posterior and the model is fitted on them",
        "criterion": ("BIC" + (f" on a random sample of {SEARCH_SAMPLE:,} customers" if searched else "")
                      if not personas else "fixed K (--personas)"),
        "table": [{"k": f["k"], "log_likelihood": round(float(f["log_likelihood"]), 3),
                   "bic": round(float(f["bic"]), 3), "parameters": f["parameters"]} for f in fits],
        "chosen_k": None,  # the personas some customer is drawn for (name_by_size)
        "seed": int(seed),
        "starts": STARTS,
        "customers": int(customers),
        "customers_in_search": int(F_search.n_customers),
        "customers_in_fit": int(n),
        "fit": f"the chosen K fitted{sample or ' on every customer'}; every customer's posterior under that fit",
        "final_log_likelihood": round(float(final_ll), 3),
        "assignment": "each customer's persona drawn from its posterior (seeded); --assignments writes the "
                      "posteriors and the most likely persona",
        "assigned_confidently": None,
    }
    return Fit(params=params, order=np.argsort(-R.sum(0), kind="stable"), record=record)


def posterior(F: Features, fit: Fit) -> np.ndarray:
    """Each customer's posterior [C, K] under the fit, columns in the personas' order (by size)."""
    R, _ = _e_step(F, fit.params)
    return R[:, fit.order]


def draw(R: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each customer's persona drawn from its posterior: the personas' customers and counts are then the
    mixture's in expectation. The most likely persona instead would hand the ambiguous short journeys
    all to the largest persona (its share and conversion biased)."""
    return np.minimum((rng.random(R.shape[0])[:, None] > np.cumsum(R, axis=1)).sum(1), R.shape[1] - 1).astype(np.int32)


def name_by_size(fit: Fit, drawn: np.ndarray, R: np.ndarray | None,
                 confident: int) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """``segment_1``… by the customers drawn for each persona, most first (so the model's shares fall
    with the number); a persona no one was drawn for is dropped. Completes the record (``confident``:
    customers whose most likely persona has a posterior above 0.9)."""
    counts = np.bincount(drawn, minlength=fit.order.size)
    present = np.flatnonzero(counts > 0)
    order = present[np.argsort(-counts[present], kind="stable")]  # ties keep the fit's order
    renumber = np.full(counts.size, -1, dtype=np.int32)
    renumber[order] = np.arange(order.size, dtype=np.int32)
    drawn = renumber[drawn]
    if R is not None:
        R = R[:, order]
        if order.size < counts.size:
            R = R / np.maximum(R.sum(1, keepdims=True), 1e-300)
    names = [f"segment_{i + 1}" for i in range(order.size)]
    fit.record["chosen_k"] = len(names)
    fit.record["assigned_confidently"] = round(confident / max(drawn.size, 1), 4)
    return names, drawn, R


# ---- profiles ----------------------------------------------------------------------------
def profiles(model, top: int = 3) -> dict[str, dict[str, Any]]:
    """Per persona: share, expected conversion, touchpoints met most per stage, mean days per stage,
    where it is lost most, and a one-line description."""
    from sim.exact import evaluate

    ex = evaluate(model)
    q, _ = model.way_out()
    S = model.n_stages
    out: dict[str, dict[str, Any]] = {}
    for p, name in enumerate(model.personas):
        tops = {}
        days = {}
        for s in range(S - 1):
            if ex.reach[p, s] <= 0:
                continue
            idx = np.argsort(-model.share[p, s], kind="stable")[:top]
            tops[model.stages[s]] = [model.touchpoints[t] for t in idx if model.share[p, s, t] > 0]
            rq = model.rate[p, s] * q[p, s]
            days[model.stages[s]] = round(float(1.0 / rq), 2) if rq > 0 else None
        lost = ex.dropped[p]
        s_lost = int(np.argmax(lost))
        cell = ex.drop_offs[p, s_lost]
        t_lost = int(np.argmax(cell))
        conv = float(ex.conversion_by_persona[p])
        first = model.stages[0]
        moving = [f"{d:g} days in {st}" for st, d in days.items() if d is not None]
        desc = (f"{model.persona_share[p]:.0%} of customers, {conv:.1%} convert; meets "
                f"{' and '.join(tops.get(first, [])[:2]) or 'nothing'} most in {first}; "
                + (f"{'; '.join(moving[:3])}; " if moving else "")
                + f"lost most in {model.stages[s_lost]} ({lost[s_lost]:.0%} of its customers), "
                  f"most at {model.touchpoints[t_lost]}")
        out[name] = {
            "share": round(float(model.persona_share[p]), 4),
            "expected_conversion": round(conv, 4),
            "top_touchpoints": tops,
            "mean_days_in_stage": days,
            "lost_most": {"stage": model.stages[s_lost], "share_of_customers": round(float(lost[s_lost]), 4),
                          "touchpoint": model.touchpoints[t_lost]},
            "description": desc,
        }
    return out


def first_rows(log: EventLog) -> np.ndarray:
    """Each customer's first data row in the file (rows are sorted by customer, every customer has one)."""
    if not log.customer.size:
        return log.row[:0]
    return np.minimum.reduceat(log.row, np.flatnonzero(np.r_[True, log.customer[1:] != log.customer[:-1]]))
