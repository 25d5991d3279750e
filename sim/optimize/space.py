"""The search space: each free investment's spend, repaired to a feasible split of the budget.

Each free investment's parameter is its spend drawn from [min, max] widened by 10 % of the range on
both sides and clipped back, so the bounds themselves (spend nothing extra on a lever that hurts, or
all it can take) have prior mass; if the spends above the minimums add up to more than the budget
left, they are scaled down to it. Every trial is feasible; the repaired spends are the trial's user
attributes and what is evaluated, reported and written.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import InputError
from sim.scenario import Scenario

CLIP = 0.1  # parameter ranges reach this share of [min, max] beyond each bound (clipped back)


@dataclass(frozen=True)
class SpendSpace:
    """Free investments with their bounds; maps Optuna parameters to feasible spends."""

    names: tuple[str, ...]  # investments Optuna chooses, in file order
    lo: np.ndarray
    hi: np.ndarray
    fixed: dict[str, float]  # investments with a fixed spend (or min_spend == max_spend)
    order: tuple[str, ...]  # every investment, in file order
    total: float  # the budget

    @classmethod
    def from_scenario(cls, scenario: Scenario, total: float | None = None) -> SpendSpace:
        """The free investments of the scenario's [[investment]] tables, within its [budget]."""
        file = scenario.source
        if not scenario.investment:
            raise InputError("the scenario has no [[investment]] to optimise", file=file, where="investment",
                             hint="add [[investment]] tables with name, touchpoint, lever, max_effect, "
                                  "half_saturation and max_spend (see docs/optimize.md)")
        if scenario.budget is None:
            raise InputError("the scenario has no [budget]", file=file, where="budget",
                             hint="add `[budget]` with `total = ...` (the most the spends may add up to)")
        names, lo, hi, fixed = [], [], [], {}
        for inv in scenario.investment:
            if inv.spend is not None:
                fixed[inv.name] = float(inv.spend)
            elif inv.max_spend - inv.min_spend <= 0:
                fixed[inv.name] = float(inv.min_spend)
            else:
                names.append(inv.name)
                lo.append(inv.min_spend)
                hi.append(inv.max_spend)
        if not names:
            raise InputError("every investment has a fixed spend: nothing to optimise", file=file,
                             where="investment", hint="remove `spend = ...` from the investments Optuna may choose")
        return cls(names=tuple(names), lo=np.array(lo, dtype=float), hi=np.array(hi, dtype=float), fixed=fixed,
                   order=tuple(inv.name for inv in scenario.investment),
                   total=float(scenario.budget.total if total is None else total))

    def with_budget(self, total: float) -> SpendSpace:
        """The same space with another budget."""
        return SpendSpace(self.names, self.lo, self.hi, self.fixed, self.order, float(total))

    @property
    def floor(self) -> float:
        """The least any split spends: fixed spends plus the minimums."""
        return float(sum(self.fixed.values()) + self.lo.sum())

    @property
    def free_budget(self) -> float:
        """Budget left above the floor, capped by what the investments can take."""
        return float(max(0.0, min(self.total - self.floor, (self.hi - self.lo).sum())))

    @property
    def quantum(self) -> float:
        """Spends are rounded down to this grid (1e-6 of the budget's order of magnitude)."""
        return 10.0 ** (math.floor(math.log10(max(self.total, 1e-300))) - 6) if self.total > 0 else 1e-6

    def param_range(self, i: int) -> tuple[float, float]:
        """Investment i's parameter range: [min, max] widened by CLIP of the range on both sides."""
        width = self.hi[i] - self.lo[i]
        return float(self.lo[i] - CLIP * width), float(self.hi[i] + CLIP * width)

    def suggest(self, trial: Any) -> dict[str, float]:
        """A trial's feasible spends from the parameters Optuna suggests."""
        raw = [trial.suggest_float(name, *self.param_range(i)) for i, name in enumerate(self.names)]
        return self.spends(raw)

    def spends(self, raw: list[float] | np.ndarray) -> dict[str, float]:
        """Feasible spends of the free investments from raw parameters (clip, scale to budget, round down)."""
        extra = np.clip(np.asarray(raw, dtype=float), self.lo, self.hi) - self.lo
        room = max(0.0, self.total - self.floor)
        if extra.sum() > room:
            extra *= room / extra.sum()
        out = {name: self._down(min(self.lo[i] + extra[i], self.hi[i]), i) for i, name in enumerate(self.names)}
        # the budget check adds the spends in file order, as the scenario's validation does: never above it
        while sum(self.allocation(out).values()) > self.total:
            i = int(np.argmax([out[n] - self.lo[k] for k, n in enumerate(self.names)]))
            if out[self.names[i]] <= self.lo[i]:
                break
            out[self.names[i]] = self._down(out[self.names[i]] - self.quantum, i)
        return out

    def _down(self, x: float, i: int) -> float:
        """X rounded down to the quantum grid, kept within [min, max] of investment i."""
        q = self.quantum
        digits = max(0, -math.floor(math.log10(q)))
        k = math.floor(x / q + 1e-9)  # 0.3 / 1e-4 is 2999.99..., not one quantum less
        v = round(k * q, digits)
        if v > x:
            v = round((k - 1) * q, digits)
        return float(min(max(v, self.lo[i]), self.hi[i]))

    def even_params(self) -> dict[str, float]:
        """Raw parameters of an even split of the free budget (a sensible first trial)."""
        share = self.free_budget / len(self.names)
        return {name: float(self.lo[i] + min(share, self.hi[i] - self.lo[i])) for i, name in enumerate(self.names)}

    def even_split(self) -> dict[str, float]:
        """The spends of the even split, as the study's first trial evaluates them."""
        params = self.even_params()
        return self.spends([params[name] for name in self.names])

    def allocation(self, spends: dict[str, float]) -> dict[str, float]:
        """Every investment's spend (fixed ones included), in file order."""
        return {name: float(spends[name]) if name in spends else self.fixed[name] for name in self.order}

    def on_grid(self, name: str, x: float) -> float:
        """A spend SLSQP found, on the spends' grid (no 1e-17 for nothing)."""
        return self._down(x + self.quantum / 2, self.names.index(name)) if name in self.names else x
