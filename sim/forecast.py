"""Calendar-time projections: arrivals, conversions and revenue week by week (pure; `journey forecast`).

Exact through each persona's chain (sim.exact.generator: whatever dwell the model has). With E =
expm(Q) (one day) and J = start x integral_0^1 expm(Q s) ds (a customer arriving uniformly within
the day, where they stand at its end; both from one matrix exponential of [[Q, I], [0, 0]]), the
expected number of customers in each state at the end of day k is

    X[k + 1] = X[k] E + arrivals[k] x persona share x J,

from the log's first observed day (customers already in progress at the start count) to the last
forecast day. Conversions on day k are the growth of the mass in states at or past the conversion
stage (stages only move forward): the sum over arrival cohorts of arrivals x (reach by age at the
day's end - at its start). A scenario applies from the rollout day: customers already in progress
carry over (their state distribution at the rollout continues under the scenario's generator, same
states), later cohorts start under it. With a ramp of K weeks the share of customers under the
change rises by 1 / (7 K) a day (each customer switches once, at a time independent of their
state): two tracks, the unchanged one losing that share of its mass to the changed one each day.

Revenue is booked at conversion: conversions x the persona's expected revenue per converting
customer (sim.money's whole-journey revenue per customer / P(convert)).

Intervals: the same D parameter draws (sim.uncertainty) for the base and every scenario, each
paired with one draw of the arrivals (sim.arrivals: fit uncertainty and day-to-day noise); a
week's conversions interval adds Poisson outcome noise to each draw's expectation; an uplift's
interval is over the paired expectations (parameters and arrivals, no outcome noise).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np

from sim.arrivals import ArrivalModel
from sim.errors import InputError
from sim.exact import evaluate, generator
from sim.model import Model
from sim.records import Record
from sim.rounding import round6

LEVEL = 0.95


def epoch_day(text: str, where: str) -> int:
    """An ISO 8601 date (midnight UTC) as days since 1970-01-01; InputError otherwise."""
    try:
        ts = datetime.strptime(str(text).strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InputError("not a date", where=where, value=text,
                         hint="use an ISO 8601 date such as 2024-07-01") from None
    return int(round(ts.timestamp() / 86400.0))


def iso_date(day: int) -> str:
    """Days since 1970 as an ISO date."""
    return datetime.fromtimestamp(int(day) * 86400.0, tz=UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Plan:
    """What to project: ``weeks`` weeks from ``start_day``; a change from ``rollout_day``, ramped."""

    start_day: int
    weeks: int
    rollout_day: int
    ramp_weeks: int = 0

    def share_under_change(self, days: np.ndarray) -> np.ndarray:
        """The share of customers under the change on each epoch day (0 before the rollout)."""
        k = np.asarray(days) - self.rollout_day
        if self.ramp_weeks <= 0:
            return (k >= 0).astype(float)
        return np.clip((k + 1) / (7.0 * self.ramp_weeks), 0.0, 1.0)


def check_plan(*, weeks: int, start_day: int, rollout_day: int | None, ramp_weeks: int) -> Plan:
    """The plan, or InputError on weeks <= 0, a negative ramp or a rollout before the start."""
    if weeks <= 0:
        raise InputError("must be at least 1", where="--weeks", value=weeks)
    if weeks > 520:
        raise InputError("at most 520 weeks (10 years)", where="--weeks", value=weeks)
    if ramp_weeks < 0:
        raise InputError("must not be negative", where="--ramp-weeks", value=ramp_weeks)
    rollout = start_day if rollout_day is None else rollout_day
    if rollout < start_day:
        raise InputError("the rollout is before the start", where="--rollout", value=iso_date(rollout),
                         hint=f"choose {iso_date(start_day)} (the start) or later")
    return Plan(start_day=start_day, weeks=weeks, rollout_day=rollout, ramp_weeks=ramp_weeks)


# ---- the daily recurrence ---------------------------------------------------------------------------
@dataclass
class Kernels:
    """One persona's one-day step on every draw: E [D, n, n], J [D, n], the converted states [n]."""

    E: np.ndarray
    J: np.ndarray
    converted: np.ndarray


def kernels(models: Sequence[Model], p: int) -> Kernels:
    """Persona p's one-day kernels of each model (one matrix exponential per model)."""
    from scipy.linalg import expm

    Es, Js, conv = [], [], None
    for m in models:
        chain = generator(m, p)
        n = chain.Q.shape[0]
        big = np.zeros((2 * n, 2 * n))
        big[:n, :n] = chain.Q
        big[:n, n:] = np.eye(n)
        step = expm(big)
        Es.append(step[:n, :n])
        Js.append(chain.start @ step[:n, n:])
        conv = (chain.stage_of >= m.conversion_index).astype(float)
    return Kernels(E=np.array(Es), J=np.array(Js), converted=conv)


@dataclass
class Daily:
    """Expected daily conversions [D, days] and revenue booked at conversion [D, days]."""

    conversions: np.ndarray
    revenue: np.ndarray | None


def revenue_per_conversion(model: Model) -> np.ndarray | None:
    """Expected revenue per converting customer of each persona [P] (None without values)."""
    from sim.money import has_values, revenue_by_persona

    if not has_values(model):
        return None
    ex = evaluate(model)
    conv = ex.conversion_by_persona
    return np.where(conv > 0, revenue_by_persona(model, ex) / np.where(conv > 0, conv, 1.0), 0.0)


def project(base: Sequence[Model], changed: Sequence[Model] | None, arrivals: np.ndarray,
            arrivals_changed: np.ndarray | None, share: np.ndarray) -> Daily:
    """Daily expected conversions on every draw d of ``base[d]`` (and ``changed[d]`` from the rollout).

    ``arrivals`` [D, days] (``arrivals_changed`` for customers under the change), ``share`` [days]
    the share of customers under the change each day.
    """
    D, H = arrivals.shape
    a_changed = arrivals if arrivals_changed is None else arrivals_changed
    conv_out = np.zeros((D, H))
    values_b = [revenue_per_conversion(m) for m in base]
    values_c = [revenue_per_conversion(m) for m in changed] if changed is not None else None
    money = values_b[0] is not None or (values_c is not None and values_c[0] is not None)
    rev_out = np.zeros((D, H)) if money else None
    mix_b = np.array([m.persona_share for m in base])
    mix_c = np.array([m.persona_share for m in changed]) if changed is not None else None
    prev = np.concatenate([[0.0], share[:-1]])
    move = np.where(prev < 1.0, (share - prev) / np.maximum(1.0 - prev, 1e-300), 0.0)
    for p in range(base[0].n_personas):
        kb = kernels(base, p)
        kc = kernels(changed, p) if changed is not None and share.any() else None
        if kc is not None and kc.E.shape != kb.E.shape:
            raise InputError("the scenario changes the journey's states: customers in progress cannot carry over",
                             where="rollout", value=base[0].personas[p])
        vc = _per_draw(values_c, p, D) if values_c is not None else None
        vb = _per_draw(values_b, p, D)
        if vb is None:  # only the scenario says what a conversion is worth: its customers before it too
            vb = vc
        B = np.zeros((D, kb.E.shape[1]))
        C = np.zeros_like(B)
        for k in range(H):
            if kc is not None and move[k] > 0:
                moved = B * move[k]
                B = B - moved
                C = C + moved
            nb = np.einsum("dn,dnm->dm", B, kb.E) + ((1.0 - share[k]) * arrivals[:, k] * mix_b[:, p])[:, None] * kb.J
            cb = (nb - B) @ kb.converted
            conv_out[:, k] += cb
            if rev_out is not None and vb is not None:
                rev_out[:, k] += cb * vb
            B = nb
            if kc is not None:
                nc = (np.einsum("dn,dnm->dm", C, kc.E)
                      + (share[k] * a_changed[:, k] * mix_c[:, p])[:, None] * kc.J)
                cc = (nc - C) @ kc.converted
                conv_out[:, k] += cc
                if rev_out is not None and vc is not None:
                    rev_out[:, k] += cc * vc
                C = nc
    return Daily(conversions=conv_out, revenue=rev_out)


def _per_draw(values: list[np.ndarray | None], p: int, D: int) -> np.ndarray | None:
    if not values or values[0] is None:
        return None
    return np.array([v[p] if v is not None else 0.0 for v in values])[:D]


# ---- the record ---------------------------------------------------------------------------------------
@dataclass
class Week:
    """One forecast week of one target."""

    week: int
    start: str
    arrivals: float
    conversions: float
    arrivals_interval: list[float] | None = None
    conversions_interval: list[float] | None = None
    share_under_change: float | None = None
    uplift: float | None = None
    uplift_interval: list[float] | None = None
    revenue: float | None = None
    revenue_interval: list[float] | None = None
    arrivals_from: str = "forecast"

    def to_dict(self) -> dict[str, Any]:
        """The week as in forecast.json (keys that do not apply left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass
class TargetForecast:
    """The base or one scenario: its weeks and totals over the forecast."""

    name: str
    kind: str  # baseline | scenario
    arrivals_source: str
    weeks: list[Week]
    total: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The target as in forecast.json."""
        return {"name": self.name, "kind": self.kind, "arrivals_source": self.arrivals_source,
                "total": self.total, "weeks": [w.to_dict() for w in self.weeks]}


@dataclass
class Forecast(Record):
    """forecast.json: the plan, the arrivals, and each target's weeks."""

    start: str
    weeks: int
    rollout: str
    ramp_weeks: int
    conversion_stage: str
    seed: int
    draws: int
    currency: str | None
    arrivals: dict[str, Any]
    targets: list[TargetForecast]
    notes: list[str] = field(default_factory=list)
    method: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """forecast.json: these keys in this order."""
        out = self.fields_dict()
        out["targets"] = [t.to_dict() for t in self.targets]
        return out


def interval(values: np.ndarray) -> list[float]:
    """The central 95 % interval of draws [D, ...] along the first axis, as lists per column."""
    lo, hi = np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=0)
    return [lo, hi]


def weekly(daily: np.ndarray, first_day: int, plan: Plan) -> np.ndarray:
    """Daily values [..., days from ``first_day``] summed into the plan's weeks [..., W]."""
    lo = plan.start_day - first_day
    sl = daily[..., lo:lo + 7 * plan.weeks]
    return sl.reshape(*sl.shape[:-1], plan.weeks, 7).sum(-1)


def _r(x: float) -> float:
    return round6(float(x)) if math.isfinite(float(x)) else float("nan")


def target_weeks(plan: Plan, *, arrivals: np.ndarray, conversions: np.ndarray, source_by_week: list[str],
                 revenue: np.ndarray | None = None, arrival_draws: np.ndarray | None = None,
                 conversion_draws: np.ndarray | None = None, revenue_draws: np.ndarray | None = None,
                 noise: np.random.Generator | None = None, share: np.ndarray | None = None,
                 uplift: np.ndarray | None = None, uplift_draws: np.ndarray | None = None) -> list[Week]:
    """The weeks of one target from its weekly point values [W] and draws [D, W] (None: no intervals)."""
    a_iv = interval(arrival_draws) if arrival_draws is not None else None
    c_iv = interval(noise.poisson(np.maximum(conversion_draws, 0.0))) if conversion_draws is not None else None
    r_iv = interval(revenue_draws) if revenue_draws is not None else None
    u_iv = interval(uplift_draws) if uplift_draws is not None else None
    out = []
    for w in range(plan.weeks):
        out.append(Week(
            week=w + 1, start=iso_date(plan.start_day + 7 * w), arrivals=_r(arrivals[w]),
            conversions=_r(conversions[w]),
            arrivals_interval=[_r(a_iv[0][w]), _r(a_iv[1][w])] if a_iv else None,
            conversions_interval=[_r(c_iv[0][w]), _r(c_iv[1][w])] if c_iv else None,
            share_under_change=_r(share[w]) if share is not None else None,
            uplift=_r(uplift[w]) if uplift is not None else None,
            uplift_interval=[_r(u_iv[0][w]), _r(u_iv[1][w])] if u_iv else None,
            revenue=_r(revenue[w]) if revenue is not None else None,
            revenue_interval=[_r(r_iv[0][w]), _r(r_iv[1][w])] if r_iv else None,
            arrivals_from=source_by_week[w]))
    return out


def total(arrivals: np.ndarray, conversions: np.ndarray, *, conversion_draws: np.ndarray | None = None,
          noise: np.random.Generator | None = None, revenue: np.ndarray | None = None,
          revenue_draws: np.ndarray | None = None, uplift: np.ndarray | None = None,
          uplift_draws: np.ndarray | None = None) -> dict[str, Any]:
    """A target's totals over the forecast weeks, with intervals where draws are given."""
    out: dict[str, Any] = {"arrivals": _r(arrivals.sum()), "conversions": _r(conversions.sum())}
    if conversion_draws is not None:
        lo, hi = interval(noise.poisson(np.maximum(conversion_draws.sum(-1), 0.0)))
        out["conversions_interval"] = [_r(lo), _r(hi)]
    if uplift is not None:
        out["uplift"] = _r(uplift.sum())
        if uplift_draws is not None:
            lo, hi = interval(uplift_draws.sum(-1))
            out["uplift_interval"] = [_r(lo), _r(hi)]
            out["probability_positive"] = _r(float(np.mean(uplift_draws.sum(-1) > 0)))
    if revenue is not None:
        out["revenue"] = _r(revenue.sum())
        if revenue_draws is not None:
            lo, hi = interval(revenue_draws.sum(-1))
            out["revenue_interval"] = [_r(lo), _r(hi)]
    return out


def forecast_csv(record: dict[str, Any]) -> str:
    """forecast.csv: one row per target and week."""
    cols = ["target", "week", "start", "arrivals", "arrivals_lo", "arrivals_hi", "conversions", "conversions_lo",
            "conversions_hi", "share_under_change", "uplift", "uplift_lo", "uplift_hi", "revenue", "revenue_lo",
            "revenue_hi", "arrivals_from"]
    lines = [",".join(cols)]
    for t in record["targets"]:
        for w in t["weeks"]:
            row = {"target": t["name"], **w}
            for key in ("arrivals", "conversions", "uplift", "revenue"):
                iv = w.get(f"{key}_interval")
                row[f"{key}_lo"], row[f"{key}_hi"] = (iv[0], iv[1]) if iv else ("", "")
            lines.append(",".join(_csv(row.get(c, "")) for c in cols))
    return "\n".join(lines) + "\n"


def _csv(value: Any) -> str:
    text = "" if value is None else str(value)
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(ch in text for ch in ',"\n') else text


# ---- the whole forecast ---------------------------------------------------------------------------
@dataclass
class TargetInput:
    """One target of a forecast: its model (a scenario applied), its draws, its own arrivals if any."""

    name: str
    model: Model
    draws: list[Model] | None = None
    arrivals: ArrivalModel | None = None  # a scenario's arrivals_per_week (customers under the change)
    is_base: bool = False


METHOD = {
    "conversions": "exact expected conversions per day from each persona's chain (one-day matrix exponentials; "
                   "arrivals uniform within a day), summed over every arrival cohort since the log's first "
                   "day: customers already in progress count",
    "rollout": "from the rollout day customers in progress carry over (their state distribution continues "
               "under the scenario's chain) and later arrivals start under it; a ramp of K weeks puts a share "
               "rising by 1/(7K) a day under the change",
    "revenue": "booked at conversion: conversions x expected revenue per converting customer (whole journey)",
    "intervals": "95 %: the same parameter draws for every target, each paired with a draw of the arrivals "
                 "(fit uncertainty and day-to-day noise); conversions add Poisson outcome noise, uplifts are "
                 "paired expectations",
}


def build(base: Model, targets: list[TargetInput], arrivals: ArrivalModel, plan: Plan, *, seed: int,
          draws: int, stream: np.random.SeedSequence, notes: list[str] | None = None) -> Forecast:
    """The forecast record of ``targets`` (the first is the baseline) under ``plan``."""
    first = arrivals.history_first_day if arrivals.history_first_day is not None else plan.start_day
    hist_end = arrivals.history_end_day if arrivals.history_end_day is not None else first
    if plan.start_day < first:
        raise InputError("the start is before the log's first arrival day", where="--start",
                         value=iso_date(plan.start_day), hint=f"choose {iso_date(first)} or later")
    end = plan.start_day + 7 * plan.weeks
    days = np.arange(first, end)
    observed = days < hist_end
    point_a = np.where(observed, np.concatenate([arrivals.history, np.zeros(days.size)])[:days.size],
                       arrivals.mean(days))
    seeds = stream.spawn(2 + len(targets))
    noise = np.random.default_rng(seeds[1])
    use_draws = draws > 0 and targets[0].draws is not None
    if use_draws:
        paths = np.broadcast_to(point_a, (draws, days.size)).copy()
        future = ~observed
        if future.any():
            paths[:, future] = arrivals.paths(days[future], np.random.default_rng(seeds[0]), draws)
    share = plan.share_under_change(days)
    zero = np.zeros(days.size)
    src = [_source(days, hist_end, plan, w) for w in range(plan.weeks)]

    def run(t: TargetInput, i: int) -> tuple[Daily, Daily | None, np.ndarray, np.ndarray | None]:
        s = zero if t.is_base else share
        own = t.arrivals
        pa_c = own.mean(days)[None] if own is not None else None
        point = project([base], None if t.is_base else [t.model], point_a[None], pa_c, s)
        tot_a = (1 - s) * point_a + s * (pa_c[0] if pa_c is not None else point_a)
        if not use_draws:
            return point, None, tot_a, None
        dpaths = own.paths(days, np.random.default_rng(seeds[2 + i]), draws) if own is not None else None
        drawn = project(targets[0].draws, None if t.is_base else t.draws, paths, dpaths, s)
        tot_draws = (1 - s) * paths + s * (dpaths if dpaths is not None else paths)
        return point, drawn, tot_a, tot_draws

    results = [run(t, i) for i, t in enumerate(targets)]
    b_point, b_draws = results[0][0], results[0][1]
    out = []
    for t, (point, drawn, tot_a, tot_draws) in zip(targets, results):
        wk = {"arrivals": weekly(tot_a, first, plan), "conversions": weekly(point.conversions[0], first, plan),
              "source_by_week": src, "noise": noise}
        if point.revenue is not None:
            wk["revenue"] = weekly(point.revenue[0], first, plan)
        if drawn is not None:
            wk["arrival_draws"] = weekly(tot_draws, first, plan)
            wk["conversion_draws"] = weekly(drawn.conversions, first, plan)
            if drawn.revenue is not None:
                wk["revenue_draws"] = weekly(drawn.revenue, first, plan)
        if not t.is_base:
            wk["share"] = weekly(share, first, plan) / 7.0
            wk["uplift"] = wk["conversions"] - weekly(b_point.conversions[0], first, plan)
            if drawn is not None:
                wk["uplift_draws"] = wk["conversion_draws"] - weekly(b_draws.conversions, first, plan)
        weeks = target_weeks(plan, **wk)
        tot = total(wk["arrivals"], wk["conversions"], conversion_draws=wk.get("conversion_draws"), noise=noise,
                    revenue=wk.get("revenue"), revenue_draws=wk.get("revenue_draws"), uplift=wk.get("uplift"),
                    uplift_draws=wk.get("uplift_draws"))
        source = (own.source if (own := t.arrivals) is not None else arrivals.source)
        out.append(TargetForecast(name=t.name, kind="baseline" if t.is_base else "scenario",
                                  arrivals_source=source, weeks=weeks, total=tot))
    from sim.money import currency

    return Forecast(start=iso_date(plan.start_day), weeks=plan.weeks, rollout=iso_date(plan.rollout_day),
                    ramp_weeks=plan.ramp_weeks, conversion_stage=base.conversion_stage, seed=int(seed),
                    draws=int(draws) if use_draws else 0, currency=currency(base), arrivals=arrivals.to_dict(),
                    targets=out, notes=list(notes or []) + _notes(arrivals, plan, first, hist_end, end),
                    method=dict(METHOD))


def _source(days: np.ndarray, hist_end: int, plan: Plan, w: int) -> str:
    lo = plan.start_day + 7 * w
    if lo + 7 <= hist_end:
        return "log"
    return "log and forecast" if lo < hist_end else "forecast"


def _notes(arrivals: ArrivalModel, plan: Plan, first: int, hist_end: int, end: int) -> list[str]:
    """What the user should know about the arrivals behind the numbers."""
    out = []
    if arrivals.history_first_day is None:
        out.append("no arrivals before the start are known: the first weeks count only customers arriving from "
                   "the start (warm-up), so their conversions are too low")
    elif plan.start_day > hist_end:
        out.append(f"the log's arrivals end {iso_date(hist_end - 1)}; the {plan.start_day - hist_end} days up to "
                   "the start are forecast too")
    span = max(hist_end - first, 1)
    if arrivals.history_first_day is not None and end - hist_end > span and "trend" in arrivals.components:
        out.append(f"the forecast reaches {end - hist_end} days past the log's end, longer than the log itself "
                   f"({span} days): its fitted trend is extrapolated that far")
    return out
