"""The chosen split under the data's uncertainty: paired intervals on parameter draws, and how stable
the best split is from one plausible version of the data to another (each draw's own best by SLSQP)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sim.model import Model
from sim.money import has_values
from sim.optimize.objective import Objective, draw_conversions
from sim.optimize.space import SpendSpace
from sim.scenario import Scenario, apply
from sim.simulate import Streams
from sim.summary import round_sig as _r

STABILITY_DRAWS = 20  # draws on which each draw's own best split is searched (SLSQP, two starts each)
NEAR_BEST = 0.01  # "near its best": within this share of the draw's best uplift


def even_start(space: SpendSpace) -> np.ndarray:
    """The even split as a start of the SLSQP search (spends above the minimums, as shares of the ranges)."""
    width = np.maximum(space.hi - space.lo, 1e-12)
    return np.minimum(space.free_budget / len(space.names) / width, 1.0)


def start_of(space: SpendSpace, spends: dict[str, float]) -> np.ndarray:
    """A split as a start of the SLSQP search."""
    width = np.maximum(space.hi - space.lo, 1e-12)
    return np.array([(spends[nm] - space.lo[i]) / width[i] for i, nm in enumerate(space.names)])


def slsqp_best(objective: Callable[[dict[str, float]], float], space: SpendSpace, inits: list[np.ndarray], *,
               ftol: float = 1e-9) -> tuple[float, dict[str, float]]:
    """The best split SLSQP reaches from the starts ``inits`` on the exact objective (no rounding)."""
    from scipy.optimize import minimize

    lo, hi = space.lo, space.hi
    width = np.maximum(hi - lo, 1e-12)
    room = max(0.0, space.total - space.floor)
    base = objective({})

    def spends_of(u: np.ndarray) -> dict[str, float]:
        x = lo + np.clip(u, 0.0, 1.0) * width
        extra = x - lo
        if extra.sum() > room:
            x = lo + extra * room / extra.sum()
        return {n: float(v) for n, v in zip(space.names, x)}

    scale = float(getattr(objective, "scale", 1e4))  # uplifts of conversion are small numbers; money is not

    def loss(u: np.ndarray) -> float:
        return -(objective(spends_of(u)) - base) * scale

    n = len(space.names)
    best: tuple[float, dict[str, float]] | None = None
    cons = [{"type": "ineq", "fun": lambda u: room - float(((np.clip(u, 0, 1)) * width).sum())}]
    for u0 in inits:
        res = minimize(loss, u0, method="SLSQP", bounds=[(0.0, 1.0)] * n, constraints=cons,
                       options={"ftol": ftol, "maxiter": 200})
        spends = spends_of(res.x)
        value = objective(spends)
        if best is None or value > best[0]:
            best = (value, spends)
    if best is None:
        raise ValueError("SLSQP needs at least one start")
    return best


def uncertainty_record(objective: Objective, space: SpendSpace, spends: dict[str, float], *, draws: int,
                       streams: Streams) -> dict[str, Any]:
    """The chosen split, the even split and the baseline on the same parameter draws (exact, paired)."""
    from sim.summary import no_evidence_note
    from sim.uncertainty import Interval, describe, has_evidence, parameter_draws

    model, sc, horizon = objective.model, objective.scenario, objective.horizon
    if not has_evidence(model):
        return {"data_uncertainty": no_evidence_note(draws)}
    models = parameter_draws(model, draws, streams.stream("draws"))
    even = space.even_split()
    chosen = draw_conversions(models, sc, spends, horizon)
    base = draw_conversions(models, sc, {}, horizon)
    even_conv = draw_conversions(models, sc, even, horizon)
    uplift = Interval(chosen - base)
    return {
        **_money_intervals(objective, models, spends),
        "expected_uplift_interval": [_r(x) for x in uplift.bounds],
        "probability_beats_baseline": _r(uplift.probability_positive),
        "probability_beats_even_split": _r(Interval(chosen - even_conv).probability_positive),
        "even_split": space.allocation(even),
        "even_split_expected_uplift": _r(objective.point(even) - objective.baseline),
        "even_split_expected_uplift_interval": [_r(x) for x in Interval(even_conv - base).bounds],
        "stability": stability(models[:STABILITY_DRAWS], sc, space, spends, horizon),
        "data_uncertainty": describe(model, draws),
    }


def _money_intervals(objective: Objective, models: list[Model], spends: dict[str, float]) -> dict[str, Any]:
    """The revenue uplift's and the profit's 95 % data intervals, on the draws of the conversion uplift's."""
    from sim.money import revenue_per_customer
    from sim.uncertainty import Interval

    if not has_values(objective.model_with({})):
        return {}
    sc, n = objective.scenario, objective.customers
    diff = np.array([revenue_per_customer(apply(m, sc, spends=spends)) - revenue_per_customer(apply(m, sc, spends={}))
                     for m in models])
    spent = float(sum(spends.values()))
    profit = Interval(n * diff - spent)
    return {"expected_revenue_uplift_interval": [_r(n * x) for x in Interval(diff).bounds],
            "expected_profit_interval": [_r(x) for x in profit.bounds],
            "probability_profitable": _r(profit.probability_positive)}


def stability(models: list[Model], scenario: Scenario, space: SpendSpace, spends: dict[str, float],
              horizon: float | None) -> dict[str, Any]:
    """Each draw's own best split, the spread of its spends, and how often the chosen split is near it."""
    bests, near = [], 0
    for m in models:
        obj = Objective(m, scenario)
        base, mine = obj({}), obj(spends)  # the objective's own value of spending nothing
        # ftol 1e-7 (on 1e4 x uplift): a quarter of the evaluations of 1e-9 for the same uplift to 1e-9
        value, best = slsqp_best(obj, space, [even_start(space), start_of(space, spends)], ftol=1e-7)
        if mine >= value:  # SLSQP stops short now and then: the chosen split is a candidate too
            value, best = mine, spends
        near += bool(mine - base >= (1 - NEAR_BEST) * (value - base))
        bests.append(space.allocation(best))
    return {
        "draws": len(models),
        "share_of_draws_near_best": _r(near / len(models)),
        "best_spend_range": {name: [_r(space.on_grid(name, float(np.percentile([b[name] for b in bests], q))))
                                    for q in (5, 95)] for name in space.order},
        "method": (f"on each of the first {len(models)} parameter draws, the split best on that draw (SLSQP from "
                   "the even and the chosen split); best_spend_range: 5th to 95th percentile of those splits' "
                   f"spends; share_of_draws_near_best: draws on which the chosen split's uplift is within "
                   f"{100 * NEAR_BEST:g} % of that draw's best uplift"),
    }
