"""Money (docs/optimize.md, "Money"): best.json's revenue, profit and ROI, each investment's ROI and
marginal return, and its revenue response curve (all exact)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sim.money import has_values
from sim.optimize.objective import Objective
from sim.optimize.space import SpendSpace
from sim.summary import round_sig as _r

MARGINAL_STEP = 1e-3  # of an investment's spend range: the step of its marginal return
RESPONSE_POINTS = 25  # per investment: each point is one exact revenue evaluation


def money_record(objective: Objective, space: SpendSpace, spends: dict[str, float], trial_value: float
                 ) -> dict[str, Any]:
    """best.json's money keys: revenue, profit, ROI, and per investment its ROI and marginal return."""
    from sim.money import currency, revenue_per_customer

    sc, n = objective.scenario, objective.customers
    out: dict[str, Any] = {"maximize": objective.maximize}
    if objective.target is not None:
        uplift = objective.point(spends) - objective.baseline
        out["target_uplift"] = objective.target
        out["target_reached"] = bool(uplift >= objective.target - 1e-12)
    chosen = objective.model_with(spends)
    if not has_values(chosen):
        return out
    allocation = space.allocation(spends)

    def rev(sp: dict[str, float]) -> float:
        return revenue_per_customer(objective.model_with(sp))

    base, mine = rev({}), rev(spends)
    spent = float(sum(spends.values()))
    profit = n * (mine - base) - spent
    out.update({
        "currency": currency(chosen),
        "profit_customers": n,
        "expected_revenue_per_customer": _r(mine),
        "baseline_expected_revenue_per_customer": _r(base),
        "expected_revenue_uplift_per_customer": _r(mine - base),
        "expected_revenue_uplift": _r(n * (mine - base)),
        "optimised_spend": _r(spent),
        "expected_profit": _r(profit),
        "roi": _r(profit / spent) if spent > 0 else None,
        "money_method": ("profit = profit_customers x revenue uplift per customer against the baseline - the spend "
                         "on the investments optimised (fixed spends are in the baseline, effect and cost); roi = "
                         "profit / that spend; per investment: roi = (revenue lost without it - its spend) / its "
                         "spend, marginal_return = revenue per unit of one more unit of spend there (1 = break even)"),
    })
    if objective.maximize == "profit" and not objective.spec.uses_draws:
        out["objective_value"] = _r(trial_value)
    per = {}
    for inv in sc.investment:
        spend = allocation[inv.name]
        without = {**spends, inv.name: 0.0}
        gain = n * (mine - rev(without)) if spend > 0 else 0.0
        h = MARGINAL_STEP * max(inv.max_spend - inv.min_spend, 1e-9)
        lo, hi = max(spend - h, inv.min_spend), min(spend + h, inv.max_spend)
        if hi <= lo:
            marginal = None
        else:
            marginal = n * (rev({**spends, inv.name: hi}) - rev({**spends, inv.name: lo})) / (hi - lo)
        per[inv.name] = {"roi": _r((gain - spend) / spend) if spend > 0 else None,
                         "marginal_return": _r(marginal) if marginal is not None else None}
    out["investment_returns"] = per
    out["response_curves"] = response_curves(objective, space, spends, rev)
    unspent = space.total - sum(allocation.values())
    if objective.maximize == "profit" and unspent > len(space.names) * space.quantum:
        full = [name for i, name in enumerate(space.names) if allocation[name] >= space.hi[i] - space.quantum]
        low = [name for name in space.names if name not in full]
        out["unspent_reason"] = (
            f"{_r(unspent):g} of the budget is left unspent: "
            + (f"{', '.join(low)} return less than they cost on the next unit (marginal return below 1)"
               if low else "")
            + ("; " if low and full else "")
            + (f"{', '.join(full)} are at their max_spend" if full else ""))
    return out

def response_curves(objective: Objective, space: SpendSpace, spends: dict[str, float],
                    rev: Callable[[dict[str, float]], float]) -> dict[str, dict[str, list[float]]]:
    """Each free investment's revenue contribution over its spend range, the others at their chosen spends
    (exact): revenue_uplift = customers x (revenue with that spend - revenue with none there)."""
    n, out = objective.customers, {}
    for inv in objective.scenario.investment:
        if inv.name not in space.names:
            continue  # a fixed spend has no choice to draw
        without = rev({**spends, inv.name: 0.0})
        # denser at low spends, where saturating curves bend most
        grid = inv.min_spend + (inv.max_spend - inv.min_spend) * np.linspace(0.0, 1.0, RESPONSE_POINTS) ** 2
        out[inv.name] = {"spend": [_r(x) for x in grid],
                         "revenue_uplift": [_r(n * (rev({**spends, inv.name: float(x)}) - without)) for x in grid]}
    return out

