"""The objective: a split's value (exact conversion, revenue or profit), on the calibrated model or
over parameter draws, and the fingerprint a study remembers of it."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from sim.errors import InputError
from sim.exact import evaluate
from sim.model import Model
from sim.scenario import Scenario, apply
from sim.simulate import Streams

SPACE_VERSION = 1  # bump when the parametrisation changes: old studies cannot be resumed
OBJECTIVE_DRAWS = 40  # K = min(--draws, this): a trial evaluates K models
DEFAULT_CUSTOMERS = 100_000  # a scenario without `customers` (profit needs it: sim/scenario.py)


@dataclass(frozen=True)
class ObjectiveSpec:
    """--objective: what a trial's value is. point: the calibrated model's exact conversion; mean: the
    mean exact conversion over the first K parameter draws; qNN: the NNth percentile over those draws
    of the uplift against the baseline on the same draw (a cautious choice)."""

    kind: str  # "point", "mean" or "quantile"
    q: int | None = None  # 1..99 for "quantile"

    @classmethod
    def parse(cls, text: str) -> ObjectiveSpec:
        """--objective's text: point, mean or qNN (NN from 1 to 99)."""
        t = str(text).strip().lower()
        if t in ("point", "mean"):
            return cls(t)
        digits = t[1:]
        if t.startswith("q") and digits.isascii() and digits.isdigit() and 1 <= int(digits) <= 99:
            return cls("quantile", int(digits))
        raise InputError("unknown objective", where="--objective", value=text,
                         hint="use point (the calibrated model), mean (the average over the data's "
                              "uncertainty) or qNN with NN a whole number from 1 to 99 (q10: the uplift "
                              "reached in 90 % of the plausible models)")

    @property
    def label(self) -> str:
        """The objective as --objective spells it."""
        return f"q{self.q}" if self.kind == "quantile" else self.kind

    @property
    def uses_draws(self) -> bool:
        """Whether a trial evaluates parameter draws."""
        return self.kind != "point"

    def draws_used(self, draws: int) -> int:
        """K: the parameter draws one trial evaluates (few, for speed)."""
        return min(int(draws), OBJECTIVE_DRAWS) if self.uses_draws else 0

    def tag(self, draws: int, seed: int) -> str:
        """What a study remembers of its objective (said when a resume is refused)."""
        return self.label if not self.uses_draws else f"{self.label} over {draws} draws, seed {seed}"

    def describe(self, draws: int) -> str:
        """best.json's objective_method: the objective in words."""
        k = self.draws_used(draws)
        return {"point": "the calibrated model's exact expected conversion",
                "mean": f"the mean exact expected conversion over {k} parameter draws",
                "quantile": f"the {self.q}th percentile over {k} parameter draws of the exact uplift against "
                            "the baseline on the same draw"}[self.kind]


POINT = ObjectiveSpec("point")


class Objective:
    """Exact expected conversion of the model with the scenario and the spends applied; with parameter
    draws (``models``), the mean over them or a percentile of the paired uplift (``spec``)."""

    def __init__(self, model: Model, scenario: Scenario, spec: ObjectiveSpec = POINT,
                 models: list[Model] | None = None, maximize: str | None = None) -> None:
        self.model = model
        self.scenario = scenario
        self.horizon = scenario.horizon_days
        self.spec = spec
        self.models = list(models or [])
        if spec.uses_draws and not self.models:
            raise ValueError("an objective over parameter draws needs the draws")
        self._base_draws: np.ndarray | None = None
        # the scenario's [objective] (docs/optimize.md, "Money"); "conversion" without a target is today's
        self.maximize = maximize if maximize is not None else scenario.maximize
        table = scenario.objective
        self.target = table.target_uplift if table is not None and maximize is None else None
        self.customers = int(scenario.customers or DEFAULT_CUSTOMERS)
        self._base_measure: float | None = None

    @property
    def in_money(self) -> bool:
        """Whether the objective is revenue or profit."""
        return self.maximize in ("revenue", "profit")

    @property
    def plain(self) -> bool:
        """Today's objective: conversion, no target."""
        return self.maximize == "conversion" and self.target is None

    def measure(self, model: Model) -> float:
        """What the objective is made of on one model: conversion, or revenue per customer."""
        if self.in_money:
            from sim.money import revenue_per_customer

            return revenue_per_customer(model)
        return evaluate(model, horizon_days=self.horizon).conversion_rate

    def score(self, measure: float | np.ndarray, base: float | np.ndarray, spends: dict[str, float]
              ) -> float | np.ndarray:
        """A trial's value from the measure with the spends and without them (``base``)."""
        spent = float(sum(spends.values()))
        if self.maximize == "profit":
            return self.customers * (measure - base) - spent
        if self.maximize == "revenue":
            return measure
        # the cheapest split reaching the target: less spend is better; short of the target, a penalty
        # that grows with the shortfall (always below any split that reaches it)
        short = np.maximum(self.target - (measure - base), 0.0) / self.target
        return np.where(short > 0, -(self.scenario.budget.total if self.scenario.budget else spent) * (1.0 + short)
                        - spent, -spent)

    @property
    def scale(self) -> float:
        """The SLSQP search's loss scale: uplifts of conversion are small numbers, money ones are not."""
        if self.plain:
            return 1e4
        if self.maximize == "revenue":
            return 1e4 / max(self._base(), 1e-9)
        if self.maximize == "profit":
            return 1e4 / max(self.customers * self._base(), 1e-9)
        return 1e4 / max(self.scenario.budget.total if self.scenario.budget else 1.0, 1e-9)

    def _base(self) -> float:
        if self._base_measure is None:
            self._base_measure = self.measure(self.model_with({}))
        return self._base_measure

    def model_with(self, spends: dict[str, float]) -> Model:
        """The calibrated model with the scenario and the spends applied."""
        return apply(self.model, self.scenario, spends=spends)

    def point(self, spends: dict[str, float]) -> float:
        """The calibrated model's exact conversion (what best.json reports whatever the objective)."""
        return evaluate(self.model_with(spends), horizon_days=self.horizon).conversion_rate

    def on_draws(self, spends: dict[str, float]) -> np.ndarray:
        """Exact conversion on every draw of ``models``."""
        return draw_conversions(self.models, self.scenario, spends, self.horizon)

    def __call__(self, spends: dict[str, float]) -> float:
        """The split's value: what a trial reports."""
        if not self.plain:
            return self._money_call(spends)
        if self.spec.kind == "point":
            return self.point(spends)
        conv = self.on_draws(spends)
        if self.spec.kind == "mean":
            return float(conv.mean())
        if self._base_draws is None:
            self._base_draws = self.on_draws({})
        return float(np.percentile(conv - self._base_draws, self.spec.q))

    def _money_call(self, spends: dict[str, float]) -> float:
        """The [objective] table's value: on the calibrated model, or over the draws as --objective says."""
        if self.spec.kind == "point":
            return float(self.score(self.measure(self.model_with(spends)), self._base(), spends))
        on = np.array([self.measure(apply(m, self.scenario, spends=spends)) for m in self.models])
        if self._base_draws is None:
            self._base_draws = np.array([self.measure(apply(m, self.scenario, spends={})) for m in self.models])
        values = np.asarray(self.score(on, self._base_draws, spends), dtype=float)
        if self.spec.kind == "mean":
            return float(values.mean())
        if self.maximize == "revenue":  # qNN: a percentile of the paired uplift, as for conversion
            values = on - self._base_draws
        return float(np.percentile(values, self.spec.q))

    @property
    def baseline(self) -> float:
        """Nothing spent on the investments being optimised (changes and fixed spends kept)."""
        return self.point({})


def draw_conversions(models: list[Model], scenario: Scenario, spends: dict[str, float],
                     horizon: float | None) -> np.ndarray:
    """Exact conversion of each parameter draw with the scenario and the spends applied."""
    return np.array([evaluate(apply(m, scenario, spends=spends), horizon_days=horizon).conversion_rate
                     for m in models])


def make_objective(model: Model, scenario: Scenario, spec: ObjectiveSpec, draws: int, streams: Streams) -> Objective:
    """The objective of a run; workers rebuild it from the same (model, scenario, spec, draws, streams)."""
    if not spec.uses_draws:
        return Objective(model, scenario)
    from sim.uncertainty import parameter_draws

    # the first K of the run's draws: the same models best.json's intervals use
    models = parameter_draws(model, draws, streams.stream("draws"))[:spec.draws_used(draws)]
    return Objective(model, scenario, spec, models)


def fingerprint(scenario: Scenario, model_sha: str, objective: ObjectiveSpec = POINT, draws: int = 0,
                seed: int | None = None) -> str:
    """What the objective depends on: a study made for another scenario, model or objective must not be
    resumed; a draws-based objective also depends on the draws (their number and the run's seed)."""
    keys = ("personas", "change", "investment", "budget", "horizon_days")
    data = {k: scenario.model_dump(mode="json")[k] for k in keys}
    data["model_sha256"] = model_sha
    data["space_version"] = SPACE_VERSION
    for key in ("objective", "value"):  # only when set: studies without them resume as before
        if getattr(scenario, key) is not None:
            data[key] = scenario.model_dump(mode="json")[key]
    if objective.uses_draws:  # point studies keep today's fingerprint: they resume as before
        data["objective"] = {"kind": objective.label, "draws": draws, "seed": seed}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

