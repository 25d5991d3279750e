"""Does the model predict what it did not see? `journey backtest` and `journey drift`.

Backtest: fit on the rows before a split date (the split is the fitted log's end, so journeys still
open at the split are censored there), then predict, for every customer whose first interaction is
at or after the split, the chance of reaching each stage within the time that customer was
observable (log end - first interaction): the exact reach at that age from the fitted model (the
persona's chain of sim.exact, evaluated at all ages at once). Beside it the contract's naive
baseline: the earlier cohort's observed reach at the same age.

Drift: per persona x stage x touchpoint, two-sample tests on the counts stored in two model files,
Benjamini-Hochberg over all tests, significant changes ranked by their effect on expected conversion.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.linalg import expm

from application.rundir import check_run_out, run_directory
from calibration.estimate import DEFAULT_INACTIVITY_DAYS, estimate
from calibration.load import NS_PER_DAY, EventLog, load_events
from sim.errors import InputError
from sim.exact import evaluate, generator
from sim.limits import finite
from sim.model import Model
from sim.scenario import with_advance, with_drop, with_persona_share, with_share

AGE_BINS = 8
_BATCH = 4096  # ages per batched matrix exponential (bounds memory: BATCH x n x n floats)
_MAX_GRID = 1 << 20  # grid points of reach_at_ages (memory: points x states floats)


# ---- backtest ------------------------------------------------------------------------------------
_ISO_SPLIT = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?")


def parse_split(split: str) -> float:
    """``--split`` as days since 1970-01-01 UTC; a date means midnight UTC.

    ISO 8601 only (2024-04-01, 2024-04-01T12:00:00Z): 01/04/2024 could be 1 April or 4 January.
    """
    text = str(split).strip()
    ts = None
    if _ISO_SPLIT.fullmatch(text):
        try:
            ts = pd.Timestamp(text)
        except (ValueError, TypeError):
            ts = None
    if ts is None or pd.isna(ts):
        raise InputError("not a date", where="--split", value=split,
                         hint="use an ISO 8601 date such as 2024-04-01 (or 2024-04-01T12:00:00Z)")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return float(ts.value) / NS_PER_DAY


def _iso_day(days: float) -> str:
    ts = pd.Timestamp(int(round(days * NS_PER_DAY)), unit="ns", tz="UTC")
    if ts == ts.normalize():
        return ts.strftime("%Y-%m-%d")
    return ts.isoformat().replace("+00:00", "Z")


def reach_at_ages(model: Model, persona: int, ages: np.ndarray) -> np.ndarray:
    """P(reach each stage within ``age`` days of arrival) [n, S] for one persona, exact.

    Same chain as ``sim.exact.evaluate(model, horizon_days=age)``, evaluated at many ages at once:
    the state distribution on a grid of step h (h * |Q| <= 1) by repeated doubling of
    expm(Q h), then from the grid point below each age a Taylor series of expm(Q r), r < h
    (terms up to order 20: truncation below 1e-18).
    """
    ages = np.asarray(ages, dtype=float)
    chain = generator(model, persona)
    Q, start, stage_of = chain.Q, chain.start, chain.stage_of
    S = model.n_stages
    member = (stage_of[:, None] >= np.arange(S)[None, :]).astype(float)  # [states, S]
    norm = float(np.abs(Q).sum(axis=1).max())
    top = float(ages.max()) if ages.size else 0.0
    h = 1.0 / norm if norm > 0 else top + 1.0
    steps = int(top / h) + 1
    if steps > _MAX_GRID:  # a very fast chain over a long age range: one batched expm per age instead
        dist = np.concatenate([np.einsum("i,kij->kj", start, expm(Q[None] * ages[lo:lo + _BATCH, None, None]))
                               for lo in range(0, ages.size, _BATCH)] or [np.zeros((0, start.size))])
    else:
        grid = start[None, :]
        step = expm(Q * h)
        while grid.shape[0] < steps:
            grid = np.concatenate([grid, grid @ step])
            step = step @ step
        k = np.minimum((ages / h).astype(np.int64), grid.shape[0] - 1)
        r = ages - k * h
        term = grid[k]
        dist = term.copy()
        for j in range(1, 21):
            term = (term @ Q) * (r / j)[:, None]
            dist += term
    out = dist @ member
    out[:, 0] = 1.0
    return np.clip(out, 0.0, 1.0)


def _customer_table(log: EventLog) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per customer: first interaction time, index of the first row, index of the last row."""
    cust = log.customer
    first = np.ones(cust.size, dtype=bool)
    first[1:] = cust[1:] != cust[:-1]
    first_idx = np.flatnonzero(first)
    last_idx = np.append(first_idx[1:] - 1, cust.size - 1)
    return log.time[first_idx], first_idx, last_idx


def _reach_times(log: EventLog, first_idx: np.ndarray, upto: float) -> np.ndarray:
    """[c, S] days from the first interaction until the customer first stood in stage >= s, using
    only rows before ``upto``; inf where not reached by then."""
    S = len(log.stages)
    c = first_idx.size
    t0 = log.time[first_idx][log.customer]
    out = np.full((c, S), np.inf)
    seen = log.time < upto
    for s in range(S):
        mask = seen & (log.stage >= s)
        ids, pos = np.unique(log.customer[mask], return_index=True)
        out[ids, s] = (log.time[mask] - t0[mask])[pos]
    out[:, 0] = 0.0
    return out


def naive_reach(ages_later: np.ndarray, ages_early: np.ndarray, reach_early: np.ndarray) -> np.ndarray:
    """Contract's naive baseline, per later customer [n, S].

    For a later customer observable for ``a`` days: the share of earlier customers observable for
    at least ``a`` days before the split who reached the stage within ``a`` days (``a`` capped at
    the longest earlier age). Counted with sorted arrays: as a reach time never exceeds the
    customer's own age, #{age >= a and t <= a} = #{t <= a} - #{reached and age < a}.
    """
    a = np.minimum(ages_later, ages_early.max())
    age_sorted = np.sort(ages_early)
    at_risk = ages_early.size - np.searchsorted(age_sorted, a, side="left")
    out = np.empty((a.size, reach_early.shape[1]))
    for s in range(reach_early.shape[1]):
        t = reach_early[:, s]
        reached = np.isfinite(t)
        t_sorted = np.sort(t[reached])
        age_reached = np.sort(ages_early[reached])
        within = np.searchsorted(t_sorted, a, side="right") - np.searchsorted(age_reached, a, side="left")
        out[:, s] = within / np.maximum(at_risk, 1)
    return out


def backtest(events: str | Path, *, split: str, stages: str | list[str] | None = None,
             conversion_stage: str | None = None, inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
             mapping: str | Path | None = None, censoring: str = "cure",
             dwell: str = "way_out", touch_order: int = 0) -> tuple[dict[str, Any], Model]:
    """The backtest record (backtest.json) and the model fitted on the rows before the split."""
    split_days = parse_split(split)
    full = load_events(events, stages=stages, conversion_stage=conversion_stage, mapping=mapping)
    t_first, first_idx, last_idx = _customer_table(full)
    lo, hi = float(full.time.min()), full.end
    if not lo < split_days <= hi:
        raise InputError("the split is outside the log's time range", where="--split", value=split,
                         hint=f"choose a date after {_iso_day(lo)} and up to {_iso_day(hi)}")
    later = t_first >= split_days
    early = ~later
    if not later.any():
        raise InputError("no customer starts on or after the split: nothing to predict", where="--split",
                         value=split,
                         hint=f"choose an earlier date; the last customer starts {_iso_day(t_first.max())}")

    # fit on the rows before the split only; the split is the fitted log's end (censoring)
    fit_log = load_events(events, stages=stages, conversion_stage=conversion_stage, mapping=mapping,
                          before=split_days)
    fit_log = replace(fit_log, end=split_days)
    model = estimate(fit_log, inactivity_days=inactivity_days, censoring=censoring, dwell=dwell,
                     touch_order=touch_order)

    S = len(full.stages)
    names = full.stages
    # observed: highest stage by the log's end (the loader's stage is the highest reached so far)
    highest = full.stage[last_idx].astype(np.int64)
    ages = full.end - t_first
    obs = (highest[later, None] >= np.arange(S)[None, :]).astype(float)

    # predicted: the fitted chain at each later customer's own age
    persona_full = full.persona_of_customer[later]
    pred = np.empty((int(later.sum()), S))
    later_ages = ages[later]
    for p, name in enumerate(full.personas):
        rows = persona_full == p
        if rows.any():
            pred[rows] = reach_at_ages(model, model.persona_index(name), later_ages[rows])

    # naive: earlier cohort, rows before the split only, at the same age
    reach_t = _reach_times(full, first_idx, split_days)
    naive = naive_reach(later_ages, split_days - t_first[early], reach_t[early])

    def by_stage(values: np.ndarray) -> dict[str, float]:
        return {names[s]: _r(values[s]) for s in range(S)}

    p_mean, o_mean, n_mean = pred.mean(axis=0), obs.mean(axis=0), naive.mean(axis=0)
    n_later = int(later.sum())
    conv = full.conversion_index
    personas: dict[str, Any] = {}
    persona_early = full.persona_of_customer[early]
    for p, name in enumerate(full.personas):
        rows = persona_full == p
        if not rows.any():
            continue
        pm, om, nm = pred[rows].mean(axis=0), obs[rows].mean(axis=0), naive[rows].mean(axis=0)
        same = persona_early == p  # the naive baseline knows no personas; this one looks at the same persona
        ns = (naive_reach(later_ages[rows], (split_days - t_first[early])[same], reach_t[early][same]).mean(axis=0)
              if same.any() else nm)
        personas[name] = {"customers": int(rows.sum()), "predicted": by_stage(pm), "observed": by_stage(om),
                          "naive": by_stage(nm), "error": by_stage(np.abs(pm - om)),
                          "naive_error": by_stage(np.abs(nm - om)),
                          "naive_same_persona": by_stage(ns), "naive_same_persona_error": by_stage(np.abs(ns - om))}
    inner = slice(1, S)  # every customer is in the first stage: leave it out of the mean error
    return {
        "split": _iso_day(split_days),
        "conversion_stage": full.conversion_stage,
        "predicted": by_stage(p_mean),
        "observed": by_stage(o_mean),
        "naive": by_stage(n_mean),
        "error": by_stage(np.abs(p_mean - o_mean)),
        "naive_error": by_stage(np.abs(n_mean - o_mean)),
        "observed_se": by_stage(np.sqrt(o_mean * (1 - o_mean) / n_later)),
        "conversion": {"predicted": _r(p_mean[conv]), "observed": _r(o_mean[conv]), "naive": _r(n_mean[conv]),
                       "error": _r(abs(p_mean[conv] - o_mean[conv])),
                       "naive_error": _r(abs(n_mean[conv] - o_mean[conv]))},
        "mean_error": _r(float(np.abs(p_mean - o_mean)[inner].mean())),
        "mean_naive_error": _r(float(np.abs(n_mean - o_mean)[inner].mean())),
        "customers": {"fit": int(early.sum()), "later": n_later},
        "rows_fit": fit_log.n_rows,
        "log": {"first_timestamp": _iso_day(lo), "last_timestamp": _iso_day(hi), "rows": full.n_rows,
                "customers": full.n_customers},
        "inactivity_days": float(inactivity_days),
        "later_age_days": {"min": _r(float(later_ages.min())), "median": _r(float(np.median(later_ages))),
                           "max": _r(float(later_ages.max()))},
        "fitted_expected_conversion_rate": _r(evaluate(model).conversion_rate),
        "fallbacks": list(model.estimator.get("fallbacks", [])),  # where the fit is the pooled prior
        "personas": personas,
        "by_age": _by_age(later_ages, pred[:, conv], obs[:, conv], naive[:, conv]),
        "method": {
            "predicted": "exact reach within each later customer's observable age (log end - first "
                         "interaction), from the model fitted on rows before the split, the customer's persona"
                         + ("; time to leave a stage depends on the way out (--dwell way_out)" if dwell == "way_out"
                            else "; one time to leave per stage (--dwell plain)"),
            "naive": "earlier customers observable at least as long before the split: share reaching the stage "
                     "within the same age (age capped at the longest available), averaged over later customers",
            "observed": "share of later customers reaching the stage by the log's end",
        },
    }, model


def _by_age(ages: np.ndarray, pred: np.ndarray, obs: np.ndarray, naive: np.ndarray) -> list[dict[str, Any]]:
    """Conversion by age band of the later customers: where the dwell times show."""
    edges = np.unique(np.quantile(ages, np.linspace(0, 1, AGE_BINS + 1)))
    if edges.size < 2:
        edges = np.array([ages.min(), ages.max() + 1e-9])
    band = np.clip(np.searchsorted(edges, ages, side="right") - 1, 0, edges.size - 2)
    out = []
    for b in range(edges.size - 1):
        rows = band == b
        if rows.any():
            out.append({"age_from_days": _r(edges[b]), "age_to_days": _r(edges[b + 1]), "customers": int(rows.sum()),
                        "predicted": _r(pred[rows].mean()), "observed": _r(obs[rows].mean()),
                        "naive": _r(naive[rows].mean())})
    return out


def run_backtest(events: str | Path, *, split: str, stages: str | list[str] | None = None,
                 conversion_stage: str | None = None, inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
                 mapping: str | Path | None = None, out: str | Path | None = None,
                 censoring: str = "cure", dwell: str = "way_out", touch_order: int = 0) -> tuple[Path, dict[str, Any]]:
    """`journey backtest`: backtest.json, the fitted model.json and backtest.png in a run directory."""
    finite(inactivity_days, "--inactivity-days")
    if out is not None:
        check_run_out(out, [events, mapping])  # before the work; run_directory checks again
    result, model = backtest(events, split=split, stages=stages, conversion_stage=conversion_stage,
                             inactivity_days=inactivity_days, mapping=mapping, censoring=censoring, dwell=dwell,
                             touch_order=touch_order)
    args = {"events": str(events), "split": split, "stages": ",".join(model.stages),
            "conversion_stage": model.conversion_stage, "inactivity_days": inactivity_days, "censoring": censoring,
            "dwell": dwell, "mapping": str(mapping) if mapping else None}
    if touch_order:  # only when asked: earlier runs' manifests stay as they were
        args["touch_order"] = touch_order
    png = backtest_png(result)
    with run_directory("backtest", out, args, [events, mapping],
                       known_hashes={str(events): model.log_summary["sha256"]}) as run:
        run.json("backtest.json", result)
        run.text("model.json", model.to_json())
        run.text("backtest.png", png)
    return run.final, result


def backtest_png(result: dict[str, Any]) -> bytes:
    from present.plots import backtest_data, draw_backtest, figure, png_bytes

    fig = figure(11.0, 5.0)
    draw_backtest(backtest_data(result), fig.add_subplot())
    return png_bytes(fig)


# ---- drift ---------------------------------------------------------------------------------------
KINDS = ("persona_share", "drop_off", "advance", "share", "lapse", "gap_rate")


def _same_names(old: Model, new: Model, old_path: Path, new_path: Path) -> None:
    for what in ("stages", "touchpoints", "personas"):
        a, b = getattr(old, what), getattr(new, what)
        if a != b:
            only_old = [x for x in a if x not in b]
            only_new = [x for x in b if x not in a]
            detail = (f"only in the old: {only_old}; only in the new: {only_new}" if only_old or only_new
                      else f"same names in another order: {a} vs {b}")
            raise InputError(f"the two models have different {what}", file=new_path, where=what, value=detail,
                             hint=f"calibrate both with the same --stages and mapping (old model: {old_path})")
    if old.conversion_stage != new.conversion_stage:
        raise InputError("the two models have different conversion stages", file=new_path, where="conversion_stage",
                         value=f"{old.conversion_stage} vs {new.conversion_stage}")
    for path, m in ((old_path, old), (new_path, new)):
        if not m.counts:
            raise InputError("the model file has no counts to test", file=path, where="journey.*.counts",
                             hint="recalibrate it with `journey calibrate` (counts are stored by default)")


def _two_proportions(k1: np.ndarray, n1: np.ndarray, k2: np.ndarray, n2: np.ndarray) -> np.ndarray:
    """Two-sided p-values: pooled z test, Fisher's exact test where an expected count is below 5."""
    k1, n1, k2, n2 = (np.asarray(x, dtype=float) for x in (k1, n1, k2, n2))
    pooled = (k1 + k2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (k1 / n1 - k2 / n2) / se, 0.0)
    p = 2 * stats.norm.sf(np.abs(z))
    expected = np.minimum.reduce([n1 * pooled, n1 * (1 - pooled), n2 * pooled, n2 * (1 - pooled)])
    for i in np.flatnonzero(expected < 5):
        table = [[k1[i], n1[i] - k1[i]], [k2[i], n2[i] - k2[i]]]
        p[i] = stats.fisher_exact(np.asarray(table, dtype=np.int64)).pvalue
    return np.minimum(p, 1.0)


def _two_rates(k1: np.ndarray, d1: np.ndarray, k2: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """Two-sided p-values for equal Poisson rates: k1 given k1 + k2 is binomial (conditional test)."""
    p = np.ones(len(k1))
    for i in range(len(k1)):
        total = int(k1[i] + k2[i])
        if total > 0:
            p[i] = stats.binomtest(int(k1[i]), total, d1[i] / (d1[i] + d2[i])).pvalue
    return p


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values): reject where q <= alpha controls the false discovery rate."""
    p = np.asarray(p, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def _cells(model: Model) -> list[dict[str, Any]]:
    """Every testable quantity: its kind, where it is, and its counts (k of n, or gaps over days).

    Per persona only: a rate pooled over personas also moves when the persona mix of a stage moves,
    which is not a change of any probability (the mix itself is tested as persona_share).
    """
    c = model.counts
    P, S, T = model.n_personas, model.n_stages, model.n_touchpoints
    cells = []
    q, _ = model.way_out()
    base = model.rate * q  # leave rate at speed 1: a change of drop-off or advance moves it, not the speed
    customers = c.get("customers")
    if P > 1 and customers is not None and customers.sum() > 0:
        for p in range(P):
            cells.append({"kind": "persona_share", "p": p, "s": None, "t": None, "k": customers[p],
                          "n": customers.sum()})
    adv = c["advanced"].sum(axis=-1)
    for p in range(P):
        for s in range(S - 1):
            for t in range(T):
                dec = c["decided"][p, s, t]
                cells.append({"kind": "drop_off", "p": p, "s": s, "t": t, "k": c["dropped"][p, s, t], "n": dec})
                cells.append({"kind": "advance", "p": p, "s": s, "t": t, "k": adv[p, s, t], "n": dec})
                cells.append({"kind": "share", "p": p, "s": s, "t": t, "k": c["interactions"][p, s, t],
                              "n": c["interactions"][p, s].sum()})
            if s > 0:
                cells.append({"kind": "lapse", "p": p, "s": s, "t": None, "k": c["lapsed"][p, s],
                              "n": c["entered"][p, s]})
            cells.append({"kind": "gap_rate", "p": p, "s": s, "t": None, "k": c["gaps"][p, s],
                          "n": c["days_at_risk"][p, s]})
            if "leave_events" in c:  # leave speed by way out: exits over the exits expected at speed 1
                for o in model.ways(s):
                    cells.append({"kind": "leave_speed", "p": p, "s": s, "t": None, "o": o,
                                  "k": c["leave_events"][p, s, o], "n": c["leave_days"][p, s, o] * base[p, s]})
    return cells


def _swap(model: Model, new: Model, cell: dict[str, Any]) -> Model:
    """The old model with one estimate replaced by the new model's (kept feasible by sim.scenario's rules)."""
    p, s, t, kind = cell["p"], cell["s"], cell["t"], cell["kind"]
    if kind == "persona_share":  # the other personas keep their proportions
        return with_persona_share(model, p, new.persona_share[p], new.persona_share)
    if kind == "drop_off":
        return with_drop(model, (p, s, t), new.drop[p, s, t])
    if kind == "advance":
        return with_advance(model, (p, s, t), new.advance[p, s, t])
    if kind == "share":  # the other touchpoints keep their proportions
        return with_share(model, p, s, t, new.share[p, s, t], new.share[p, s])
    m = model.copy()
    if kind == "lapse":
        m.lapse[p, s] = new.lapse[p, s]
    elif kind == "leave_speed":
        m.leave_speed[p, s, cell["o"]] = new.leave_speed[p, s, cell["o"]]
    else:
        m.rate[p, s] = new.rate[p, s]
    return m


def _estimate_of(model: Model, cell: dict[str, Any]) -> float:
    """The model's estimate behind a cell (pooled toward other personas where the cell is thin)."""
    p, s, t, kind = cell["p"], cell["s"], cell["t"], cell["kind"]
    return float({"drop_off": lambda: model.drop[p, s, t], "advance": lambda: model.advance[p, s, t].sum(),
                  "share": lambda: model.share[p, s, t], "lapse": lambda: model.lapse[p, s],
                  "gap_rate": lambda: model.rate[p, s], "persona_share": lambda: model.persona_share[p],
                  "leave_speed": lambda: model.leave_speed[p, s, cell.get("o", 0)]}[kind]())


_TIMING = ("gap_rate", "leave_speed")  # timing (Poisson counts): no effect on conversion without a horizon


def drift(old: Model, new: Model, *, alpha: float = 0.05) -> dict[str, Any]:
    """Which estimates changed beyond noise between two calibrations (record for drift.json)."""
    if not 0.0 < alpha < 1.0:
        raise InputError("must be between 0 and 1 (exclusive)", where="--alpha", value=alpha)
    c_old, c_new = _cells(old), _cells(new)
    if len(c_old) != len(c_new):  # one model calibrated with --dwell plain: compare what both have
        c_old = [c for c in c_old if c["kind"] != "leave_speed"]
        c_new = [c for c in c_new if c["kind"] != "leave_speed"]
    tested = [(a, b) for a, b in zip(c_old, c_new) if a["n"] > 0 and b["n"] > 0]
    by_kind: dict[str, list[int]] = {}
    for i, (a, _) in enumerate(tested):
        by_kind.setdefault("rate" if a["kind"] in _TIMING else "prop", []).append(i)
    pvals = np.ones(len(tested))
    for family, idx in by_kind.items():
        k1 = np.array([tested[i][0]["k"] for i in idx], dtype=float)
        n1 = np.array([tested[i][0]["n"] for i in idx], dtype=float)
        k2 = np.array([tested[i][1]["k"] for i in idx], dtype=float)
        n2 = np.array([tested[i][1]["n"] for i in idx], dtype=float)
        pvals[idx] = _two_rates(k1, n1, k2, n2) if family == "rate" else _two_proportions(k1, n1, k2, n2)
    q = benjamini_hochberg(pvals)
    base = evaluate(old).conversion_rate
    changes = []
    for (a, b), p_value, q_value in zip(tested, pvals, q):
        if q_value > alpha:
            continue
        effect = 0.0 if a["kind"] in _TIMING else evaluate(_swap(old, new, a)).conversion_rate - base
        old_raw, new_raw = a["k"] / a["n"], b["k"] / b["n"]  # a proportion, or gaps per day at risk
        changes.append({
            "kind": a["kind"],
            "persona": old.personas[a["p"]],
            "stage": None if a["s"] is None else old.stages[a["s"]],
            "touchpoint": None if a["t"] is None else old.touchpoints[a["t"]],
            "way_out": old.way_name(a["o"]) if "o" in a else None,
            "old": _r(old_raw), "new": _r(new_raw),
            "old_estimate": _r(_estimate_of(old, a)), "new_estimate": _r(_estimate_of(new, b)),
            "old_counts": _counts(a), "new_counts": _counts(b),
            "p_value": _sig(p_value), "q_value": _sig(q_value),
            "conversion_effect": _r(effect),
        })
    changes.sort(key=lambda r: (-abs(r["conversion_effect"]), r["q_value"], r["kind"], r["persona"],
                                r["stage"] or "", r["touchpoint"] or ""))
    for rank, rec in enumerate(changes, start=1):
        rec["rank"] = rank
    new_conv = evaluate(new).conversion_rate
    return {
        "alpha": alpha,
        "conversion_stage": old.conversion_stage,
        "old_expected_conversion_rate": _r(base),
        "new_expected_conversion_rate": _r(new_conv),
        "conversion_change": _r(new_conv - base),
        "tests": len(tested),
        "untested": len(c_old) - len(tested),
        "significant": len(changes),
        "changes": changes,
        "method": {
            "tests": "per persona x stage x touchpoint: drop_off and advance (of decided interactions), "
                     "share (of the stage's interactions); per persona x stage: lapse (of entries); "
                     "persona_share (of customers); "
                     "two-proportion z test, Fisher's exact test where an expected count is below 5; "
                     "gap_rate: conditional binomial test of two Poisson rates",
            "multiple_testing": f"Benjamini-Hochberg, false discovery rate {alpha}",
            "conversion_effect": "expected conversion of the old model with this one estimate set to the new "
                                 "model's, minus the old model's (gap_rate only changes timing: 0)",
            "caveat": "interactions of one customer are treated as independent trials; repeated "
                      "interactions make share and outcome tests somewhat liberal",
        },
    }


def run_drift(old: str | Path, new: str | Path, *, alpha: float = 0.05,
              out: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """`journey drift`: drift.json in a run directory."""
    finite(alpha, "--alpha", positive=True)
    old, new = Path(old), Path(new)
    if out is not None:
        check_run_out(out, [old, new])
    m_old, m_new = Model.load(old), Model.load(new)
    _same_names(m_old, m_new, old, new)
    result = drift(m_old, m_new, alpha=alpha)
    with run_directory("drift", out, {"old": str(old), "new": str(new), "alpha": alpha}, [old, new]) as run:
        run.json("drift.json", result)
    return run.final, result


def _counts(cell: dict[str, Any]) -> list[float]:
    """[successes, trials], or [gaps, days at risk] for a gap rate."""
    if cell["kind"] == "gap_rate":
        return [int(cell["k"]), _r(float(cell["n"]))]
    return [int(cell["k"]), int(cell["n"])]


def _r(x: float) -> float:
    return float(f"{float(x):.6g}") if math.isfinite(float(x)) else 0.0


def _sig(x: float) -> float:
    return float(f"{float(x):.4g}")
