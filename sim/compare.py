"""`journey compare`: a baseline and what-if scenarios, simulated with common random numbers.

Every target (base and scenarios) is simulated with the same seed, the same cohort size and the
same horizon. The fast engine draws each customer's uniforms independently of the model, so the
same seed *is* the pairing: customer i meets the same luck in every scenario, and the difference
between two runs is mostly the change itself, not noise.

Uplift = scenario minus base conversion rate (absolute). Its 95 % interval:
  * R >= 2 replications: Student t over the R paired differences (replication r of the base
    against replication r of the scenario);
  * R = 1 on the fast engine: the cohort is run as ``BATCHES`` paired batches (seeds spawned from
    the replication's seed), and the interval is the t interval over the batch differences. The
    engine only returns aggregates, so per-customer pairs (McNemar) are not available;
  * otherwise (SimPy engine with R = 1, or a tiny cohort): the normal interval for the difference
    of two independent binomials, which ignores the pairing and is therefore conservative.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from scipy import stats

from sim.engines.result import EngineResult
from sim.errors import InputError
from sim.exact import Exact, evaluate
from sim.money import add_revenue_uplift, add_revenue_uplift_intervals
from sim.simulate import (
    EXPECTED_NOTE_CAPACITY,
    Streams,
    Target,
    children,
    choose_engine,
    on_cluster,
    run_replications,
    target_draws,
)
from sim.summary import Z95, Summary, add_data_intervals, no_evidence_note, summarize
from sim.summary import round_sig as _r
from sim.uncertainty import Drawn, Interval, combined, customers_to_tell, describe, real_customers

DEFAULT_CUSTOMERS = 100_000
BATCHES = 20  # paired batches of one replication (R = 1), for the uplift interval

CSV_COLUMNS = ("name", "conversion_rate", "conversion_rate_ci_lo", "conversion_rate_ci_hi",
               "expected_conversion_rate", "uplift", "uplift_ci_lo", "uplift_ci_hi", "expected_uplift",
               "relative_uplift", "expected_relative_uplift", "base_conversion_rate",
               "base_expected_conversion_rate")
# only where the comparison has money (a comparison without it keeps the columns above, byte for byte)
MONEY_CSV_COLUMNS = ("expected_revenue_per_customer", "expected_revenue_uplift_per_customer",
                     "expected_revenue_uplift")
MONEY_INTERVAL_CSV_COLUMNS = ("expected_revenue_uplift_interval_lo", "expected_revenue_uplift_interval_hi")


@dataclass
class ScenarioComparison:
    """One scenario of comparison.json: its conversion and its uplift over the base.

    ``extra`` keeps the keys added after the per-persona uplifts (notes, money, data intervals, verdict)
    in the order comparison.json lists them.
    """

    name: str
    file: str | None
    conversion_rate: float
    conversion_rate_ci: list[float]
    expected_conversion_rate: float
    uplift: float
    uplift_ci: list[float]
    expected_uplift: float
    relative_uplift: float | None
    expected_relative_uplift: float | None
    significant: bool
    stages: dict[str, dict[str, Any]]
    personas: dict[str, dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, record: dict[str, Any]) -> ScenarioComparison:
        """The record of a scenario's dict as ``compare_targets`` builds it."""
        names = [f.name for f in fields(cls) if f.name != "extra"]
        return cls(**{k: record[k] for k in names}, extra={k: v for k, v in record.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        """The scenario's object in comparison.json, keys in today's order."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out


@dataclass
class Comparison:
    """comparison.json: the base and each scenario, simulated with common random numbers."""

    customers: int
    replications: int
    seed: int
    engine: str
    horizon_days: float | None
    conversion_stage: str
    crn: bool
    uplift_ci_method: str
    batches: int | None
    base: Summary
    scenarios: list[ScenarioComparison]
    data_uncertainty: dict[str, Any] | None = None  # only with --draws

    def to_dict(self) -> dict[str, Any]:
        """comparison.json's object, keys in today's order."""
        out: dict[str, Any] = {
            "customers": self.customers, "replications": self.replications, "seed": self.seed,
            "engine": self.engine, "horizon_days": self.horizon_days, "conversion_stage": self.conversion_stage,
            "crn": self.crn, "uplift_ci_method": self.uplift_ci_method, "batches": self.batches,
            "base": self.base.to_dict(), "scenarios": [sc.to_dict() for sc in self.scenarios],
        }
        if self.data_uncertainty is not None:
            out["data_uncertainty"] = self.data_uncertainty
        return out


# ---- the shared settings ------------------------------------------------------------------
def cohort_size(explicit: int | None, base: Target, scenarios: list[Target]) -> int:
    """--customers, else the base scenario's, else the largest the scenarios ask for, else 100000."""
    if explicit is not None:
        if explicit < 1:
            raise InputError("must be at least 1", where="--customers", value=explicit)
        return int(explicit)
    if base.scenario is not None and base.scenario.customers:
        return int(base.scenario.customers)
    asked = [t.scenario.customers for t in scenarios if t.scenario is not None and t.scenario.customers]
    return int(max(asked)) if asked else DEFAULT_CUSTOMERS


def _horizon(base: Target, scenarios: list[Target]) -> float | None:
    """One horizon for all: the one the files state (absent = none); files that disagree are an error."""
    stated = [(t, t.scenario.horizon_days) for t in [base, *scenarios]
              if t.scenario is not None and t.scenario.horizon_days is not None]
    if not stated:
        return None
    first_target, first = stated[0]
    for target, value in stated[1:]:
        if value != first:
            raise InputError("compare needs one horizon for all files", file=target.source, where="horizon_days",
                             value=value, hint=f"{first_target.source} says {first:g}; state the same "
                                               "horizon_days in each file, or leave it out")
    return float(first)


def _check_same_journey(base: Target, target: Target) -> None:
    a, b = base.model, target.model
    if a.stages != b.stages or a.conversion_stage != b.conversion_stage:
        raise InputError("scenario's model has other stages or another conversion stage than the base",
                         file=target.source, where="model", value=target.scenario.model if target.scenario else None,
                         hint=f"base stages {','.join(a.stages)} (conversion {a.conversion_stage}); "
                              "compare scenarios of one journey")


# ---- simulation -----------------------------------------------------------------------------
def _batch_sizes(n: int, k: int) -> list[int]:
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _simulate(target: Target, n: int, streams: Streams, replications: int, engine: str, horizon: float | None,
              batches: int, jobs: int, advance: Callable[[float], None], client=None) -> list[EngineResult]:
    """The pairing units of one target: its replications, or its batches when R = 1."""
    sc = target.scenario
    arrival = sc.arrival_days if sc is not None else None
    capacity = (sc.capacity or None) if sc is not None else None
    if batches > 1 and client is not None:  # the batches as tasks: the same children, so the same results
        tasks = [("fast", target.model, size, child, horizon, arrival, None)
                 for size, child in zip(_batch_sizes(n, batches), children(streams.stream("batches"), batches))]
        return on_cluster(client, tasks, advance)
    if batches > 1:
        from sim.engines import fast

        out = []
        for size, child in zip(_batch_sizes(n, batches), children(streams.stream("batches"), batches)):
            out.append(fast.run(target.model, size, child, horizon_days=horizon, arrival_days=arrival))
            advance(size)
        return out
    return run_replications(target.model, n, streams.stream("replications"), replications, engine=engine,
                            horizon_days=horizon,
                            arrival_days=arrival, capacity=capacity, jobs=jobs, progress=advance, client=client)


def _pooled(units: list[EngineResult], batched: bool) -> list[EngineResult]:
    """What the summary sees: the replications, or the batches added up into one replication."""
    if not batched:
        return units
    total = units[0]
    for u in units[1:]:
        total = total + u
    return [total]


def _uplift_ci(base: list[EngineResult], scen: list[EngineResult], paired: bool) -> tuple[float, list[float]]:
    n_b = np.array([u.n for u in base], dtype=float)
    n_s = np.array([u.n for u in scen], dtype=float)
    c_b = np.array([u.conversions for u in base], dtype=float)
    c_s = np.array([u.conversions for u in scen], dtype=float)
    p_b, p_s = c_b.sum() / max(n_b.sum(), 1), c_s.sum() / max(n_s.sum(), 1)
    uplift = p_s - p_b
    if paired and len(base) >= 2:
        d = c_s / np.maximum(n_s, 1) - c_b / np.maximum(n_b, 1)
        half = float(stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    else:  # independent binomials: ignores the (positive) pairing, so it is wider than need be
        half = Z95 * math.sqrt(p_b * (1 - p_b) / max(n_b.sum(), 1) + p_s * (1 - p_s) / max(n_s.sum(), 1))
    return uplift, [_r(max(uplift - half, -1.0)), _r(min(uplift + half, 1.0))]  # a difference of rates


def _ci_method(replications: int, batches: int) -> str:
    if replications >= 2:
        return f"t over the {replications} paired replication differences (common random numbers)"
    if batches > 1:
        return (f"t over {batches} paired batch differences of the one replication "
                "(common random numbers; batch seeds spawned from the replication's seed)")
    return ("normal approximation for two independent binomials (ignores the pairing, so conservative; "
            "--replications 2 or more gives the paired interval)")


# ---- records --------------------------------------------------------------------------------
def _relative(diff: float, base: float) -> float | None:
    return _r(diff / base) if base > 0 else None


def _scenario_record(target: Target, summary: dict[str, Any], exact: Exact, base: Target,
                     base_summary: dict[str, Any], base_exact: Exact, uplift: float, ci: list[float]
                     ) -> dict[str, Any]:
    model = target.model
    expected_uplift = exact.conversion_rate - base_exact.conversion_rate
    stages = {}
    reach, base_reach = exact.reach_overall, base_exact.reach_overall
    for s, name in enumerate(model.stages):
        stages[name] = {
            "uplift": _r(summary["stages"][name]["reached_rate"] - base_summary["stages"][name]["reached_rate"]),
            "expected_uplift": _r(reach[s] - base_reach[s]),
        }
    personas = {}
    c = model.conversion_index
    for p, name in enumerate(model.personas):
        if name not in base_summary["personas"]:
            continue
        bp = base_summary["personas"][name]
        sp = summary["personas"][name]
        sim_uplift = (sp["conversion_rate"] - bp["conversion_rate"]) if sp["customers"] and bp["customers"] else None
        personas[name] = {
            "uplift": _r(sim_uplift),
            "expected_uplift": _r(exact.reach[p, c] - base_exact.reach[base.model.personas.index(name), c]),
            "customers": sp["customers"],
        }
    record = {
        "name": target.name,
        "file": target.source.name if target.source is not None else None,
        "conversion_rate": summary["conversion_rate"],
        "conversion_rate_ci": summary["conversion_rate_ci"],
        "expected_conversion_rate": summary["expected_conversion_rate"],
        "uplift": _r(uplift),
        "uplift_ci": ci,
        "expected_uplift": _r(expected_uplift),
        "relative_uplift": _relative(uplift, base_summary["conversion_rate"]),
        "expected_relative_uplift": _relative(expected_uplift, base_exact.conversion_rate),
        "significant": bool(ci[0] > 0 or ci[1] < 0),
        "stages": stages,
        "personas": personas,
    }
    if "expected_note" in summary:
        record["expected_note"] = summary["expected_note"]
    if target.notes:
        record["notes"] = list(target.notes)
    return record


def comparison_csv(comparison: Comparison) -> str:
    """comparison.csv: one row per scenario (money columns only where the comparison has money)."""
    data = comparison.to_dict()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    scenarios = data["scenarios"]
    columns = CSV_COLUMNS
    if any("expected_revenue_uplift_per_customer" in sc for sc in scenarios):
        columns += MONEY_CSV_COLUMNS
    if any("expected_revenue_uplift_interval" in sc for sc in scenarios):
        columns += MONEY_INTERVAL_CSV_COLUMNS
    writer.writerow(columns)
    base = data["base"]
    for sc in scenarios:
        row = {**sc, "conversion_rate_ci_lo": sc["conversion_rate_ci"][0],
               "conversion_rate_ci_hi": sc["conversion_rate_ci"][1], "uplift_ci_lo": sc["uplift_ci"][0],
               "uplift_ci_hi": sc["uplift_ci"][1], "base_conversion_rate": base["conversion_rate"],
               "base_expected_conversion_rate": base["expected_conversion_rate"]}
        interval = sc.get("expected_revenue_uplift_interval") or [None, None]
        row["expected_revenue_uplift_interval_lo"], row["expected_revenue_uplift_interval_hi"] = interval
        writer.writerow(["" if row.get(k) is None else row[k] for k in columns])
    return buf.getvalue()


def compare_targets(base: Target, scenarios: list[Target], *, customers: int | None, streams: Streams,
                    replications: int = 1, engine: str = "auto", jobs: int = 1,
                    progress: Callable[[float], None] | None = None, draws: int = 0, client=None) -> Comparison:
    """The comparison record (no files written); ``client``: run the replications on a Dask cluster."""
    if not scenarios:
        raise InputError("give at least one scenario to compare with the base", where="SCENARIO")
    if replications < 1:
        raise InputError("must be at least 1", where="--replications", value=replications)
    for target in scenarios:
        _check_same_journey(base, target)
    targets = [base, *scenarios]
    n = cohort_size(customers, base, scenarios)
    horizon = _horizon(base, scenarios)
    chosen = choose_engine(engine, targets)
    batches = BATCHES if (replications == 1 and chosen == "fast" and n >= 2 * BATCHES) else 1
    advance = progress or (lambda amount: None)

    seed = streams.seed
    units = [_simulate(t, n, streams, replications, chosen, horizon, batches, jobs, advance, client) for t in targets]
    exacts = [evaluate(t.model, horizon_days=horizon) for t in targets]
    summaries = []
    for target, u, exact in zip(targets, units, exacts):
        summary = summarize(target.model, _pooled(u, batches > 1), exact, customers=n, seed=seed, engine=chosen,
                            horizon_days=horizon)
        summary["name"] = target.name
        if chosen == "simpy" and target.scenario is not None and target.scenario.capacity:
            summary["expected_note"] = EXPECTED_NOTE_CAPACITY
        if horizon is None and target.scenario is not None and target.scenario.speed:
            summary["expected_note"] = ("[[speed]] changes only how soon customers leave a stage; without "
                                        "horizon_days the conversion cannot change: set horizon_days")
        summaries.append(summary)

    drawn = target_draws(base, targets, draws, streams, horizon) if draws else None
    if drawn is not None:
        for target, summary, d in zip(targets, summaries, drawn):
            add_data_intervals(summary, target.model, d, draws)
    paired = replications >= 2 or batches > 1
    records = []
    for i, (target, u, exact, summary) in enumerate(zip(targets[1:], units[1:], exacts[1:], summaries[1:])):
        uplift, ci = _uplift_ci(units[0], u, paired)
        record = _scenario_record(target, summary, exact, base, summaries[0], exacts[0], uplift, ci)
        add_revenue_uplift(record, target.model, exact, base.model, exacts[0], n)
        if drawn is not None and chosen == "simpy" and (target.scenario is not None and target.scenario.capacity
                                                        or base.scenario is not None and base.scenario.capacity):
            # the exact answer on each draw ignores queues: no data interval can speak for this uplift
            record["data_note"] = ("no data interval: capacity limits (queues) are simulated only, and the "
                                   "exact answer on each parameter draw ignores them; the interval is simulation "
                                   "noise only")
        elif drawn is not None:
            _add_uplift_intervals(record, target, drawn[0], drawn[1 + i], base)
            add_revenue_uplift_intervals(record, drawn[1 + i], drawn[0], n)
        records.append(ScenarioComparison.of(record))
    data_uncertainty = None
    if draws:
        data_uncertainty = describe(base.base_model, draws) if drawn is not None else no_evidence_note(draws)
    return Comparison(customers=n, replications=replications, seed=seed, engine=chosen, horizon_days=horizon,
                      conversion_stage=base.model.conversion_stage, crn=True,
                      uplift_ci_method=_ci_method(replications, batches),
                      batches=batches if batches > 1 else None, base=Summary.of(summaries[0]), scenarios=records,
                      data_uncertainty=data_uncertainty)


def _add_uplift_intervals(record: dict[str, Any], target: Target, base_drawn: Drawn, drawn: Drawn,
                          base: Target) -> None:
    """The calibration's uncertainty in a scenario's uplift (draws paired with the base's)."""
    diff = Interval(drawn.conversion - base_drawn.conversion)
    data = diff.bounds
    expected = record["expected_uplift"]
    total = combined(record["uplift"], record["uplift_ci"], expected, data)
    record["expected_uplift_interval"] = [_r(x) for x in data]
    record["uplift_interval"] = [_r(min(max(x, -1.0), 1.0)) for x in total]
    record["probability_positive"] = _r(diff.probability_positive)
    record["verdict"] = "gain" if total[0] > 0 else "loss" if total[1] < 0 else "cannot tell"
    record["customers_to_tell"] = customers_to_tell(diff, expected, real_customers(base.base_model))
    for s, name in enumerate(target.model.stages):
        record["stages"][name]["expected_uplift_interval"] = [
            _r(x) for x in Interval(drawn.reach[:, s] - base_drawn.reach[:, s]).bounds]
    for p, name in enumerate(target.model.personas):
        if name in record["personas"] and name in base.model.personas:
            q = base.model.personas.index(name)
            record["personas"][name]["expected_uplift_interval"] = [
                _r(x) for x in Interval(drawn.persona_conversion[:, p] - base_drawn.persona_conversion[:, q]).bounds]
