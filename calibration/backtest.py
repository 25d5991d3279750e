"""Does the model predict what it did not see? `journey backtest` (pure: returns a `Backtest` record).

Fit on the rows before a split date (the split is the fitted log's end, so journeys still open at
the split are censored there), then predict, for every customer whose first interaction is at or
after the split, the chance of reaching each stage within the time that customer was observable
(log end - first interaction): the exact reach at that age from the fitted model (the persona's
chain of sim.exact, evaluated at all ages at once). Beside it the contract's naive baseline: the
earlier cohort's observed reach at the same age.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calibration.estimate import DEFAULT_INACTIVITY_DAYS, estimate
from calibration.eventlog import EventLog
from calibration.load import load_events
from calibration.timestamps import NS_PER_DAY
from calibration.weekly import weekly_conversions
from sim.errors import InputError
from sim.exact import evaluate, reach_by_age
from sim.model import Model
from sim.records import Record
from sim.rounding import round6

AGE_BINS = 8
REACH_AGES = (1, 2, 3, 5, 7, 10, 14, 21, 30, 45, 60, 90, 120, 180, 270, 365)  # days, for reach_by_age
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
    """A date (midnight UTC) or an ISO 8601 time of ``days`` since 1970."""
    ts = pd.Timestamp(int(round(days * NS_PER_DAY)), unit="ns", tz="UTC")
    if ts == ts.normalize():
        return ts.strftime("%Y-%m-%d")
    return ts.isoformat().replace("+00:00", "Z")


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



@dataclass
class PersonaReach(Record):
    """One persona's later customers: reach per stage predicted, observed, by the baselines, and the errors."""

    customers: int
    predicted: dict[str, float]
    observed: dict[str, float]
    naive: dict[str, float]
    error: dict[str, float]
    naive_error: dict[str, float]
    naive_same_persona: dict[str, float]
    naive_same_persona_error: dict[str, float]



@dataclass
class AgeBand(Record):
    """Conversion of the later customers of one age band."""

    age_from_days: float
    age_to_days: float
    customers: int
    predicted: float
    observed: float
    naive: float



@dataclass
class Backtest(Record):
    """The backtest of a model fitted on the rows before a split (backtest.json)."""

    split: str
    conversion_stage: str
    predicted: dict[str, float]
    observed: dict[str, float]
    naive: dict[str, float]
    error: dict[str, float]
    naive_error: dict[str, float]
    observed_se: dict[str, float]
    conversion: dict[str, float]
    mean_error: float
    mean_naive_error: float
    customers: dict[str, int]
    rows_fit: int
    log: dict[str, Any]
    inactivity_days: float
    later_age_days: dict[str, float]
    fitted_expected_conversion_rate: float
    fallbacks: list[dict[str, Any]]
    personas: dict[str, PersonaReach]
    by_age: list[AgeBand]
    method: dict[str, str] = field(default_factory=dict)
    reach_by_age: list[dict[str, Any]] = field(default_factory=list)
    weekly_conversions: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """backtest.json: these keys in this order."""
        out = self.fields_dict()
        out["personas"] = {name: rec.to_dict() for name, rec in self.personas.items()}
        out["by_age"] = [band.to_dict() for band in self.by_age]
        return out


@dataclass
class _Cohorts:
    """The full log split into the customers before the split (early) and from it on (later)."""

    full: EventLog
    split_days: float
    t_first: np.ndarray  # per customer: first interaction time
    first_idx: np.ndarray
    later: np.ndarray  # per customer: first interaction at or after the split
    ages: np.ndarray  # per later customer: days observable (log end - first interaction)


def backtest(events: str | Path, *, split: str, stages: str | list[str] | None = None,
             conversion_stage: str | None = None, inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
             mapping: str | Path | None = None, censoring: str = "cure",
             dwell: str | None = None, touch_order: int = 0, draws: int = 0,
             draw_stream: np.random.SeedSequence | None = None,
             stream: np.random.SeedSequence | None = None) -> tuple[Backtest, Model]:
    """The backtest record (backtest.json) and the model fitted on the rows before the split.

    ``draws`` > 0: the weekly conversions get 95 % intervals (calibration.weekly), the parameter
    draws seeded by ``draw_stream``, the arrival paths and outcome noise by ``stream``.
    """
    split_days = parse_split(split)
    full = load_events(events, stages=stages, conversion_stage=conversion_stage, mapping=mapping)
    co, last_idx = _cohorts(full, split, split_days)

    # fit on the rows before the split only; the split is the fitted log's end (censoring)
    fit_log = load_events(events, stages=stages, conversion_stage=conversion_stage, mapping=mapping,
                          before=split_days)
    fit_log = replace(fit_log, end=split_days)
    model = estimate(fit_log, inactivity_days=inactivity_days, censoring=censoring, dwell=dwell,
                     touch_order=touch_order)

    S = len(full.stages)
    # observed: highest stage by the log's end (the loader's stage is the highest reached so far)
    highest = full.stage[last_idx].astype(np.int64)
    obs = (highest[co.later, None] >= np.arange(S)[None, :]).astype(float)
    pred = _predicted(model, co)
    # naive: earlier cohort, rows before the split only, at the same age
    reach_t = _reach_times(full, co.first_idx, split_days)
    early = ~co.later
    naive = naive_reach(co.ages, split_days - co.t_first[early], reach_t[early])
    reach_all = _reach_times(full, co.first_idx, np.inf)  # the whole log: for the over-time comparisons

    def by_stage(values: np.ndarray) -> dict[str, float]:
        return {full.stages[s]: round6(values[s]) for s in range(S)}

    p_mean, o_mean, n_mean = pred.mean(axis=0), obs.mean(axis=0), naive.mean(axis=0)
    n_later = int(co.later.sum())
    conv = full.conversion_index
    inner = slice(1, S)  # every customer is in the first stage: leave it out of the mean error
    lo, hi = float(full.time.min()), full.end
    return Backtest(
        split=_iso_day(split_days),
        conversion_stage=full.conversion_stage,
        predicted=by_stage(p_mean),
        observed=by_stage(o_mean),
        naive=by_stage(n_mean),
        error=by_stage(np.abs(p_mean - o_mean)),
        naive_error=by_stage(np.abs(n_mean - o_mean)),
        observed_se=by_stage(np.sqrt(o_mean * (1 - o_mean) / n_later)),
        conversion={"predicted": round6(p_mean[conv]), "observed": round6(o_mean[conv]),
                    "naive": round6(n_mean[conv]), "error": round6(abs(p_mean[conv] - o_mean[conv])),
                    "naive_error": round6(abs(n_mean[conv] - o_mean[conv]))},
        mean_error=round6(float(np.abs(p_mean - o_mean)[inner].mean())),
        mean_naive_error=round6(float(np.abs(n_mean - o_mean)[inner].mean())),
        customers={"fit": int(early.sum()), "later": n_later},
        rows_fit=fit_log.n_rows,
        log={"first_timestamp": _iso_day(lo), "last_timestamp": _iso_day(hi), "rows": full.n_rows,
             "customers": full.n_customers},
        inactivity_days=float(inactivity_days),
        later_age_days={"min": round6(float(co.ages.min())), "median": round6(float(np.median(co.ages))),
                        "max": round6(float(co.ages.max()))},
        fitted_expected_conversion_rate=round6(evaluate(model).conversion_rate),
        fallbacks=list(model.estimator.get("fallbacks", [])),  # where the fit is the pooled prior
        personas=_by_persona(co, pred, obs, naive, reach_t, by_stage),
        by_age=_by_age(co.ages, pred[:, conv], obs[:, conv], naive[:, conv]),
        method=_method(str(model.estimator.get("dwell", "way_out")).split(":")[0]),
        reach_by_age=reach_by_age_table(model, co, conv, reach_all, reach_t),
        weekly_conversions=weekly_conversions(
            model, split_days=split_days, end=full.end, t_first=co.t_first, t_conv=co.t_first + reach_all[:, conv],
            draws=draws, draw_stream=draw_stream, stream=stream),
    ), model


def _cohorts(full: EventLog, split: str, split_days: float) -> tuple[_Cohorts, np.ndarray]:
    """The customers on each side of the split (refusing a split with nothing to predict), and each
    customer's last row."""
    t_first, first_idx, last_idx = _customer_table(full)
    lo, hi = float(full.time.min()), full.end
    if not lo < split_days <= hi:
        raise InputError("the split is outside the log's time range", where="--split", value=split,
                         hint=f"choose a date after {_iso_day(lo)} and up to {_iso_day(hi)}")
    later = t_first >= split_days
    if not later.any():
        raise InputError("no customer starts on or after the split: nothing to predict", where="--split",
                         value=split,
                         hint=f"choose an earlier date; the last customer starts {_iso_day(t_first.max())}")
    ages = full.end - t_first
    return _Cohorts(full=full, split_days=split_days, t_first=t_first, first_idx=first_idx, later=later,
                    ages=ages[later]), last_idx


def _predicted(model: Model, co: _Cohorts) -> np.ndarray:
    """[later customers, S] the fitted chain's reach at each later customer's own age."""
    full = co.full
    persona_later = full.persona_of_customer[co.later]
    pred = np.empty((int(co.later.sum()), len(full.stages)))
    for p, name in enumerate(full.personas):
        rows = persona_later == p
        if rows.any():
            pred[rows] = reach_by_age(model, model.persona_index(name), co.ages[rows])
    return pred


def _by_persona(co: _Cohorts, pred: np.ndarray, obs: np.ndarray, naive: np.ndarray, reach_t: np.ndarray,
                by_stage) -> dict[str, PersonaReach]:
    """Per persona of the later customers: the same comparison, and a naive baseline of the same persona."""
    full = co.full
    early = ~co.later
    persona_later, persona_early = full.persona_of_customer[co.later], full.persona_of_customer[early]
    early_ages = co.split_days - co.t_first[early]
    out: dict[str, PersonaReach] = {}
    for p, name in enumerate(full.personas):
        rows = persona_later == p
        if not rows.any():
            continue
        pm, om, nm = pred[rows].mean(axis=0), obs[rows].mean(axis=0), naive[rows].mean(axis=0)
        same = persona_early == p  # the naive baseline knows no personas; this one looks at the same persona
        ns = (naive_reach(co.ages[rows], early_ages[same], reach_t[early][same]).mean(axis=0)
              if same.any() else nm)
        out[name] = PersonaReach(customers=int(rows.sum()), predicted=by_stage(pm), observed=by_stage(om),
                                 naive=by_stage(nm), error=by_stage(np.abs(pm - om)),
                                 naive_error=by_stage(np.abs(nm - om)), naive_same_persona=by_stage(ns),
                                 naive_same_persona_error=by_stage(np.abs(ns - om)))
    return out


def _method(dwell: str) -> dict[str, str]:
    """What each column of the backtest is, in words."""
    return {
        "predicted": "exact reach within each later customer's observable age (log end - first "
                     "interaction), from the model fitted on rows before the split, the customer's persona"
                     + {"way_out": "; time to leave a stage depends on the way out (--dwell way_out)",
                        "phases": "; time to leave a stage depends on the way out, each with a phase-type "
                                  "shape (--dwell phases)"}.get(dwell, "; one time to leave per stage (--dwell plain)"),
        "naive": "earlier customers observable at least as long before the split: share reaching the stage "
                 "within the same age (age capped at the longest available), averaged over later customers",
        "observed": "share of later customers reaching the stage by the log's end",
    }


def _by_age(ages: np.ndarray, pred: np.ndarray, obs: np.ndarray, naive: np.ndarray) -> list[AgeBand]:
    """Conversion by age band of the later customers: where the dwell times show."""
    edges = np.unique(np.quantile(ages, np.linspace(0, 1, AGE_BINS + 1)))
    if edges.size < 2:
        edges = np.array([ages.min(), ages.max() + 1e-9])
    band = np.clip(np.searchsorted(edges, ages, side="right") - 1, 0, edges.size - 2)
    out = []
    for b in range(edges.size - 1):
        rows = band == b
        if rows.any():
            out.append(AgeBand(age_from_days=round6(edges[b]), age_to_days=round6(edges[b + 1]),
                               customers=int(rows.sum()), predicted=round6(pred[rows].mean()),
                               observed=round6(obs[rows].mean()), naive=round6(naive[rows].mean())))
    return out


# ---- over time: reach by age (the weekly conversions: calibration.weekly) ------------------------------
def reach_by_age_table(model: Model, co: _Cohorts, conv: int, reach_all: np.ndarray,
                       reach_early: np.ndarray) -> list[dict[str, Any]]:
    """Cumulative reach of the conversion stage by age (days since arrival) of the later customers.

    At age a: among the later customers observable at least a days, the share that reached it within
    a days (observed), the mean of the model's exact reach at a over the same customers (predicted),
    and the earlier cohort's (naive, as the contract's baseline).
    """
    full = co.full
    t_conv = reach_all[co.later, conv]
    early = ~co.later
    early_t = reach_early[early]
    early_ages = co.split_days - co.t_first[early]
    persona = full.persona_of_customer[co.later]
    ages = np.array([a for a in REACH_AGES if a <= co.ages.max()], dtype=float)
    if ages.size == 0:
        return []
    model_reach = np.zeros((len(full.personas), ages.size))
    for p, name in enumerate(full.personas):
        if (persona == p).any():
            model_reach[p] = reach_by_age(model, model.persona_index(name), ages)[:, conv]
    naive = naive_reach(ages, early_ages, early_t)[:, conv]
    out = []
    for i, a in enumerate(ages):
        at_risk = co.ages >= a
        n = int(at_risk.sum())
        if n == 0:
            continue
        out.append({"age_days": float(a), "customers": n,
                    "predicted": round6(float(model_reach[persona[at_risk], i].mean())),
                    "observed": round6(float((t_conv[at_risk] <= a).mean())),
                    "naive": round6(float(naive[i]))})
    return out
