"""Plain records out of engine results: summary.json and the weekly series."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from sim.engines.result import EngineResult
from sim.exact import Exact
from sim.model import Model
from sim.rounding import round_sig

Z95 = 1.959963984540054


def wilson(k: float, n: float, z: float = Z95) -> list[float]:
    """Wilson score interval for a binomial proportion."""
    if n <= 0:
        return [0.0, 1.0]
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo = 0.0 if k <= 0 else max(0.0, centre - half)  # exact ends: rounding must not leave the point outside
    hi = 1.0 if k >= n else min(1.0, centre + half)
    return [round_sig(lo), round_sig(hi)]


def mean_ci(values: np.ndarray, bounds: tuple[float, float] = (-1.0, 1.0)) -> list[float]:
    """Student-t 95 % interval of the mean of replication values, cut to ``bounds``.

    The values are rates (pass ``(0, 1)``) or differences of rates (the default, ``(-1, 1)``): with few
    replications of a small cohort the t interval reaches past what the quantity can be.
    """
    values = np.asarray(values, dtype=float)
    r = values.size
    m = float(values.mean())
    if r < 2:
        return [round_sig(m), round_sig(m)]
    from scipy import stats  # lazy: importing scipy.stats costs ~0.5 s of every run's start-up

    half = float(stats.t.ppf(0.975, r - 1) * values.std(ddof=1) / math.sqrt(r))
    lo, hi = bounds
    return [round_sig(max(m - half, lo)), round_sig(min(m + half, hi))]


def rate_ci(successes: np.ndarray, trials: np.ndarray) -> list[float]:
    """CI of a rate (within [0, 1]): across replications when there are >= 2, else binomial (Wilson)."""
    successes, trials = np.asarray(successes, float), np.asarray(trials, float)
    if successes.size >= 2:
        return mean_ci(successes / np.maximum(trials, 1), bounds=(0.0, 1.0))
    return wilson(float(successes.sum()), float(trials.sum()))


@dataclass
class Summary:
    """summary.json: one target simulated (counts over all replications) beside its exact expectation.

    ``extra`` keeps the keys a run adds after the counts (queues, money, name, notes, data intervals,
    notes on the expectation) in the order they were added, as summary.json lists them.
    """

    customers: int
    seed: int | None
    replications: int
    simulated_customers: int
    engine: str
    horizon_days: float | None
    conversion_stage: str
    conversion_rate: float
    conversion_rate_ci: list[float]
    ci_method: str
    expected_conversion_rate: float
    replication_conversion_rates: list[float]
    stages: dict[str, dict[str, Any]]
    personas: dict[str, dict[str, Any]]
    touchpoints: dict[str, dict[str, Any]]
    counts_note: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, record: dict[str, Any]) -> Summary:
        """The record of a summary dict as ``summarize`` and the data intervals build it."""
        names = [f.name for f in fields(cls) if f.name != "extra"]
        return cls(**{k: record[k] for k in names}, extra={k: v for k, v in record.items() if k not in names})

    @property
    def name(self) -> str:
        """The target's name (baseline, or the scenario's)."""
        return self.extra["name"]

    def to_dict(self) -> dict[str, Any]:
        """summary.json's object, keys in today's order."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out


def summarize(model: Model, results: list[EngineResult], exact: Exact, *, customers: int, seed: int | None,
              engine: str, horizon_days: float | None = None) -> dict[str, Any]:
    """summary.json's keys from the replications and the exact answer (a dict: the money and interval
    helpers add keys to it; ``Summary.of`` makes the record)."""
    total = results[0]
    for r in results[1:]:
        total = total + r
    c = model.conversion_index
    n_sim = total.n
    conv = np.array([r.conversions for r in results])
    ns = np.array([r.n for r in results])
    stages = {}
    reach_exact = exact.reach_overall
    for s, name in enumerate(model.stages):
        stages[name] = {
            "reached": int(total.reached[:, s].sum()),
            "reached_rate": round_sig(total.reached[:, s].sum() / max(n_sim, 1)),
            "dropped": int(total.dropped[:, s].sum()),
            "expected_reached_rate": round_sig(reach_exact[s]),
        }
    personas = {}
    for p, name in enumerate(model.personas):
        n_p = total.customers[p]
        per_conv = np.array([r.reached[p, c] for r in results])
        per_n = np.array([r.customers[p] for r in results])
        personas[name] = {
            "customers": int(n_p),
            "conversion_rate": round_sig(total.reached[p, c] / max(n_p, 1)),
            "conversion_rate_ci": rate_ci(per_conv, per_n),
            "expected_conversion_rate": round_sig(exact.reach[p, c]),
            "share": round_sig(model.persona_share[p]),
        }
    touchpoints = {}
    exp_inter = np.einsum("p,pst->t", exact.persona_share, exact.interactions) * n_sim
    exp_drop = np.einsum("p,pst->t", exact.persona_share, exact.drop_offs) * n_sim
    for t, name in enumerate(model.touchpoints):
        touchpoints[name] = {
            "interactions": int(total.interactions[:, :, t].sum()),
            "drop_offs": int(total.drop_offs[:, :, t].sum()),
            "expected_interactions": round_sig(exp_inter[t]),
            "expected_drop_offs": round_sig(exp_drop[t]),
        }
    summary = {
        "customers": int(customers),
        "seed": seed,
        "replications": len(results),
        "simulated_customers": int(n_sim),
        "engine": engine,
        "horizon_days": horizon_days,
        "conversion_stage": model.conversion_stage,
        "conversion_rate": round_sig(total.conversions / max(n_sim, 1)),
        "conversion_rate_ci": rate_ci(conv, ns),
        "ci_method": "t over replications" if len(results) >= 2 else "Wilson binomial",
        "expected_conversion_rate": round_sig(exact.conversion_rate),
        "replication_conversion_rates": [round_sig(x) for x in conv / np.maximum(ns, 1)],
        "stages": stages,
        "personas": personas,
        "touchpoints": touchpoints,
        "counts_note": "stage, persona and touchpoint counts are totals over all replications",
    }
    if total.extras.get("capacity"):
        summary["capacity"] = capacity_summary(total.extras["capacity"])
    from sim.money import add_money

    add_money(summary, model, exact, customers)
    return summary


def capacity_summary(counters: dict[str, Any]) -> dict[str, Any]:
    """Queue figures per capacitated touchpoint from the SimPy engine's counters (all replications)."""
    out = {}
    for name, c in counters.items():
        requests, served, abandoned = c["requests"], c["served"], c["abandoned"]
        out[name] = {
            **c["settings"],
            "requests": int(requests),
            "served": int(served),
            "abandoned": int(abandoned),
            "abandonment_rate": round_sig(abandoned / max(requests, 1)),
            "waited_share": round_sig(c["waited"] / max(served, 1)),
            "mean_wait_minutes": round_sig(c["wait_days_served"] * 1440.0 / max(served, 1)),
            "mean_wait_minutes_abandoned": round_sig(c["wait_days_abandoned"] * 1440.0 / max(abandoned, 1)),
            "utilisation": round_sig(c["busy_days_in_window"] / max(c["open_days_in_window"], 1e-300)),
            "max_queue": int(c["max_queue"]),
        }
    return out


def weekly_csv(results: list[EngineResult]) -> str:
    """weekly.csv: arrivals and conversions per week, over all replications."""
    total = results[0]
    for r in results[1:]:
        total = total + r
    lines = ["week,arrivals,conversions"]
    for w, (a, c) in enumerate(zip(total.weekly_arrivals, total.weekly_conversions)):
        lines.append(f"{w},{int(a)},{int(c)}")
    return "\n".join(lines) + "\n"


def add_data_intervals(summary: dict[str, Any], model: Model, drawn: Any, draws: int) -> None:
    """The calibration's uncertainty in a summary: ``drawn`` is the target's sim.uncertainty.Drawn."""
    from sim.uncertainty import Interval, combined, describe

    data = Interval(drawn.conversion).bounds
    summary["expected_conversion_rate_interval"] = [round_sig(x) for x in data]
    summary["conversion_rate_interval"] = [round_sig(min(max(x, 0.0), 1.0)) for x in combined(
        summary["conversion_rate"], summary["conversion_rate_ci"], summary["expected_conversion_rate"], data)]
    for s, name in enumerate(model.stages):
        summary["stages"][name]["expected_reached_rate_interval"] = [
            round_sig(x) for x in Interval(drawn.reach[:, s]).bounds]
    for p, name in enumerate(model.personas):
        summary["personas"][name]["expected_conversion_rate_interval"] = [
            round_sig(x) for x in Interval(drawn.persona_conversion[:, p]).bounds]
    if drawn.revenue is not None and "expected_revenue_per_customer" in summary:
        summary["expected_revenue_per_customer_interval"] = [round_sig(x) for x in Interval(drawn.revenue).bounds]
        summary["expected_revenue_interval"] = [round_sig(x * summary["customers"])
                                                for x in Interval(drawn.revenue).bounds]
        for p, name in enumerate(model.personas):
            summary["personas"][name]["expected_revenue_per_customer_interval"] = [
                round_sig(x) for x in Interval(drawn.persona_revenue[:, p]).bounds]
    summary["data_uncertainty"] = describe(model, draws)


def no_evidence_note(draws: int) -> dict[str, Any]:
    """What a record says when the model file keeps no counts to draw from."""
    return {"draws": 0, "requested_draws": int(draws),
            "note": "the model file keeps no counts, so intervals cover simulation noise only; recalibrate "
                    "with `journey calibrate` for intervals that include the data's uncertainty"}
