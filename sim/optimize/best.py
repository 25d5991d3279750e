"""The best split: the study's best trial, simulated against the baseline, checked against the data's
uncertainty and priced, as one record whose ``to_dict()`` is best.json."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.errors import JourneyError
from sim.exact import evaluate
from sim.model import Model
from sim.money import has_values
from sim.optimize.objective import Objective
from sim.optimize.pareto import pareto_method
from sim.optimize.returns import money_record
from sim.optimize.robust import uncertainty_record
from sim.optimize.space import SpendSpace
from sim.optimize.study import count_complete
from sim.scenario import Scenario
from sim.simulate import Streams
from sim.summary import mean_ci
from sim.summary import round_sig as _r

REPLICATIONS = 5
BASELINE = ("the scenario with nothing spent on the investments being optimised "
            "(its changes, persona mix and fixed spends kept)")
SAMPLER = "TPE (multivariate, constant liar)"


@dataclass(frozen=True)
class Problem:
    """What a split is searched for and judged on: the scenario, its model and space, the objective."""

    scenario: Scenario
    model: Model
    space: SpendSpace
    objective: Objective  # the trials' objective
    baseline: float  # the calibrated model's exact conversion with nothing spent
    streams: Streams  # the run's random streams (a RunContext)
    draws: int = 0  # parameter draws for best.json's intervals (0: none)


@dataclass(frozen=True)
class Chosen:
    """The study's best trial: its spends, its value, and the calibrated model's conversion for it."""

    trial: int
    spends: dict[str, float]
    trial_value: float
    value: float  # best.json's conversion: the calibrated model's, whatever the trials' value was


def chosen_trial(study: Any, objective: Objective) -> Chosen:
    """The best complete trial of the study; JourneyError if none completed."""
    if count_complete(study) == 0:
        raise JourneyError("no trial completed; the study keeps the failed ones for inspection")
    best = study.best_trial
    spends = {k: float(v) for k, v in best.user_attrs["spends"].items()}
    trial_value = float(best.value)
    value = trial_value if objective.plain and not objective.spec.uses_draws else objective.point(spends)
    return Chosen(trial=best.number, spends=spends, trial_value=trial_value, value=value)


def trial_states(study: Any) -> dict[str, int]:
    """How many of the study's trials are in each state, by state name."""
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return dict(sorted(states.items()))


@dataclass
class BestSplit:
    """best.json: the chosen split and its expected, simulated, uncertain and money outcomes."""

    scenario: str
    study: str
    storage: str
    trials: int
    trial_states: dict[str, int]
    best_trial: int
    seed: int
    allocation: dict[str, float]
    budget: float
    expected_conversion_rate: float
    baseline_expected_conversion_rate: float
    conversion_stage: str
    horizon_days: float | None
    customers: int
    simulation: dict[str, Any]  # simulate_split's keys
    investments: list[dict[str, Any]]
    quantum: float  # the spends' grid
    notes: list[str] = field(default_factory=list)
    objective: dict[str, Any] = field(default_factory=dict)  # with --draws: what the trials maximised
    uncertainty: dict[str, Any] = field(default_factory=dict)  # with --draws: uncertainty_record's keys
    money: dict[str, Any] | None = None  # money_record's keys, less investment_returns
    investment_returns: dict[str, dict[str, Any]] = field(default_factory=dict)
    expected_note: str | None = None
    pareto: list[dict[str, Any]] | None = None
    pareto_method: str | None = None

    @property
    def spend(self) -> float:
        """The split's total spend."""
        return sum(self.allocation.values())

    def to_dict(self) -> dict[str, Any]:
        """best.json, key for key in today's order."""
        base, value = self.baseline_expected_conversion_rate, self.expected_conversion_rate
        out: dict[str, Any] = {
            "scenario": self.scenario,
            "study": self.study,
            "storage": self.storage,
            "trials": self.trials,
            "trial_states": dict(self.trial_states),
            "best_trial": self.best_trial,
            "seed": self.seed,
            "allocation": dict(self.allocation),
            "spend": _r(self.spend),
            "budget": self.budget,
            "unspent": _r(self.budget - self.spend),
            "expected_conversion_rate": _r(value),
            "baseline_expected_conversion_rate": _r(base),
            "expected_uplift": _r(value - base),
            "expected_uplift_relative": _r((value - base) / base) if base > 0 else None,
            "baseline": BASELINE,
            "conversion_stage": self.conversion_stage,
            "horizon_days": self.horizon_days,
            "customers": self.customers,
            "replications": REPLICATIONS,
            "engine": "fast",
            **self.simulation,
            "investments": [{**rec, **self.investment_returns.get(rec["name"], {})} for rec in self.investments],
            "search": {"sampler": SAMPLER,
                       "parametrisation": "spend per free investment in [min, max] widened by 10 % and clipped; "
                                          "spends above the minimums scaled down to the budget; rounded down "
                                          f"to {self.quantum:g}"},
        }
        if self.notes:
            out["notes"] = list(self.notes)
        out.update(self.objective)
        out.update(self.uncertainty)
        if self.money is not None:
            out.update(self.money)
        if self.expected_note is not None:
            out["expected_note"] = self.expected_note
        if self.pareto is not None:
            out["pareto"] = self.pareto
            out["pareto_method"] = self.pareto_method
        return out


def best_split(problem: Problem, chosen: Chosen, *, study: str, storage: str, trials: int,
               states: dict[str, int], customers: int, simulation: dict[str, Any], notes: list[str] | None = None,
               front: list[dict[str, Any]] | None = None, per_level: int = 0) -> BestSplit:
    """The record of the chosen split: the uncertainty and money sections computed here (exact)."""
    sc, space, objective = problem.scenario, problem.space, problem.objective
    allocation = space.allocation(chosen.spends)
    record = BestSplit(
        scenario=sc.name, study=study, storage=storage, trials=trials, trial_states=states, best_trial=chosen.trial,
        seed=problem.streams.seed, allocation=allocation, budget=space.total, expected_conversion_rate=chosen.value,
        baseline_expected_conversion_rate=problem.baseline, conversion_stage=problem.model.conversion_stage,
        horizon_days=sc.horizon_days, customers=customers, simulation=simulation,
        investments=investments_record(sc, allocation, space), quantum=space.quantum, notes=list(notes or []))
    if problem.draws:
        record.objective = objective_section(objective, chosen, problem.draws)
        record.uncertainty = uncertainty_record(objective, space, chosen.spends, draws=problem.draws,
                                                streams=problem.streams)
    if not objective.plain or has_values(objective.model_with({})):
        money = money_record(objective, space, chosen.spends, chosen.trial_value)
        record.investment_returns = money.pop("investment_returns", {})
        record.money = money
    if sc.capacity:
        record.expected_note = ("the optimizer's objective ignores [capacity] limits (queues and patience); "
                                "check the split with `journey simulate best.toml`")
    if front is not None:
        record.pareto, record.pareto_method = front, pareto_method(per_level)
    return record


def objective_section(objective: Objective, chosen: Chosen, draws: int) -> dict[str, Any]:
    """best.json's objective keys (with --draws): what the trials maximised and the best trial's value."""
    out: dict[str, Any] = {"objective": objective.spec.label, "objective_method": objective.spec.describe(draws)}
    if objective.spec.uses_draws:
        out["objective_draws"] = objective.spec.draws_used(draws)
        out["objective_value"] = _r(chosen.trial_value)
        out["objective_baseline"] = _r(objective({}))
    return out


def investments_record(scenario: Scenario, allocation: dict[str, float], space: SpendSpace) -> list[dict[str, Any]]:
    """Each investment with its bounds, its chosen spend, and the effect and factor that spend buys."""
    out = []
    for inv in scenario.investment:
        spend = allocation[inv.name]
        out.append({"name": inv.name, "touchpoint": inv.touchpoint, "stage": inv.stage, "persona": inv.persona,
                    "lever": inv.lever, "max_effect": inv.max_effect, "half_saturation": inv.half_saturation,
                    "min_spend": inv.min_spend, "max_spend": inv.max_spend, "fixed": inv.name in space.fixed,
                    "spend": spend, "effect": _r(inv.effect(spend)), "factor": _r(inv.factor(spend))})
    return out


def simulate_split(objective: Objective, spends: dict[str, float], *, customers: int, streams: Streams
                   ) -> dict[str, Any]:
    """The best split and the baseline simulated with the same random numbers (fast engine)."""
    from sim.simulate import run_replications
    from sim.summary import summarize

    sc = objective.scenario
    out: dict[str, Any] = {}
    rates = {}
    for key, sp in (("best", spends), ("baseline", {})):
        model = objective.model_with(sp)
        results = run_replications(model, customers, streams.stream("replications"), REPLICATIONS, engine="fast",
                                   horizon_days=sc.horizon_days,
                                   arrival_days=sc.arrival_days)
        summary = summarize(model, results, evaluate(model, horizon_days=sc.horizon_days), customers=customers,
                            seed=streams.seed, engine="fast", horizon_days=sc.horizon_days)
        out[key] = summary
        rates[key] = np.array([r.conversions / max(r.n, 1) for r in results])
    diff = rates["best"] - rates["baseline"]
    return {"conversion_rate": out["best"]["conversion_rate"], "conversion_rate_ci": out["best"]["conversion_rate_ci"],
            "baseline_conversion_rate": out["baseline"]["conversion_rate"],
            "uplift": _r(diff.mean()), "uplift_ci": mean_ci(diff),
            "ci_method": f"t over {REPLICATIONS} replications (uplift: paired, common random numbers)"}
