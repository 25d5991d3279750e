"""Which estimates changed beyond noise between two calibrations? `journey drift` (pure: returns a `Drift`).

Per persona x stage x touchpoint, two-sample tests on the counts stored in two model files,
Benjamini-Hochberg over all tests, significant changes ranked by their effect on expected conversion.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from sim.errors import InputError
from sim.exact import evaluate
from sim.model import Model
from sim.records import Record
from sim.rounding import round4, round6
from sim.scenario import with_advance, with_drop, with_persona_share, with_share

KINDS = ("persona_share", "drop_off", "advance", "share", "lapse", "gap_rate")


def check_same_names(old: Model, new: Model, old_path: Path, new_path: Path) -> None:
    """Refuse two models that do not name the same stages, touchpoints, personas and conversion stage,
    or that have no counts to test."""
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


@dataclass
class Change(Record):
    """One estimate that changed beyond noise, with its counts, test and effect on conversion."""

    kind: str
    persona: str
    stage: str | None
    touchpoint: str | None
    way_out: str | None
    old: float
    new: float
    old_estimate: float
    new_estimate: float
    old_counts: list[float]
    new_counts: list[float]
    p_value: float
    q_value: float
    conversion_effect: float
    rank: int = 0  # set once the changes are ranked



@dataclass
class Drift(Record):
    """The estimates that changed between two calibrations (drift.json)."""

    alpha: float
    conversion_stage: str
    old_expected_conversion_rate: float
    new_expected_conversion_rate: float
    conversion_change: float
    tests: int
    untested: int
    significant: int
    changes: list[Change]
    method: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """drift.json: these keys in this order."""
        out = self.fields_dict()
        out["changes"] = [c.to_dict() for c in self.changes]
        return out


def drift(old: Model, new: Model, *, alpha: float = 0.05) -> Drift:
    """Which estimates changed beyond noise between two calibrations (record for drift.json)."""
    if not 0.0 < alpha < 1.0:
        raise InputError("must be between 0 and 1 (exclusive)", where="--alpha", value=alpha)
    c_old, c_new = _cells(old), _cells(new)
    if len(c_old) != len(c_new):  # one model calibrated with --dwell plain: compare what both have
        c_old = [c for c in c_old if c["kind"] != "leave_speed"]
        c_new = [c for c in c_new if c["kind"] != "leave_speed"]
    tested = [(a, b) for a, b in zip(c_old, c_new) if a["n"] > 0 and b["n"] > 0]
    pvals = _p_values(tested)
    q = benjamini_hochberg(pvals)
    base = evaluate(old).conversion_rate
    changes = [_change(old, new, a, b, p_value, q_value, base)
               for (a, b), p_value, q_value in zip(tested, pvals, q) if not q_value > alpha]
    _rank(changes)
    new_conv = evaluate(new).conversion_rate
    return Drift(
        alpha=alpha,
        conversion_stage=old.conversion_stage,
        old_expected_conversion_rate=round6(base),
        new_expected_conversion_rate=round6(new_conv),
        conversion_change=round6(new_conv - base),
        tests=len(tested),
        untested=len(c_old) - len(tested),
        significant=len(changes),
        changes=changes,
        method=_method(alpha),
    )


def _p_values(tested: list[tuple[dict[str, Any], dict[str, Any]]]) -> np.ndarray:
    """Per tested pair of cells: two proportions, or two Poisson rates for the timing kinds."""
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
    return pvals


def _change(old: Model, new: Model, a: dict[str, Any], b: dict[str, Any], p_value: float, q_value: float,
            base: float) -> Change:
    """The record of a significant change; its effect: the old model with this one estimate swapped in."""
    effect = 0.0 if a["kind"] in _TIMING else evaluate(_swap(old, new, a)).conversion_rate - base
    old_raw, new_raw = a["k"] / a["n"], b["k"] / b["n"]  # a proportion, or gaps per day at risk
    return Change(
        kind=a["kind"],
        persona=old.personas[a["p"]],
        stage=None if a["s"] is None else old.stages[a["s"]],
        touchpoint=None if a["t"] is None else old.touchpoints[a["t"]],
        way_out=old.way_name(a["o"]) if "o" in a else None,
        old=round6(old_raw), new=round6(new_raw),
        old_estimate=round6(_estimate_of(old, a)), new_estimate=round6(_estimate_of(new, b)),
        old_counts=_counts(a), new_counts=_counts(b),
        p_value=round4(p_value), q_value=round4(q_value),
        conversion_effect=round6(effect),
    )


def _rank(changes: list[Change]) -> None:
    """Largest effect on conversion first (then the q-value, then by name); ranks from 1."""
    changes.sort(key=lambda r: (-abs(r.conversion_effect), r.q_value, r.kind, r.persona, r.stage or "",
                                r.touchpoint or ""))
    for rank, rec in enumerate(changes, start=1):
        rec.rank = rank


def _method(alpha: float) -> dict[str, str]:
    """How the tests were made, in words."""
    return {
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
    }


def _counts(cell: dict[str, Any]) -> list[float]:
    """[successes, trials], or [gaps, days at risk] for a gap rate."""
    if cell["kind"] == "gap_rate":
        return [int(cell["k"]), round6(float(cell["n"]))]
    return [int(cell["k"]), int(cell["n"])]
