"""The Pareto front: the best split found at budget levels from the least possible spend to the budget."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sim.optimize.objective import Objective
from sim.optimize.space import SpendSpace
from sim.optimize.study import Slots, make_sampler, run_trials
from sim.simulate import Streams
from sim.summary import round_sig as _r

PARETO_LEVELS = 10
PARETO_STREAM = 1 << 40  # sampler streams of the Pareto levels, apart from the study's


def per_level_trials(trials: int) -> int:
    """In-memory TPE trials at each level of the front, from the study's --trials."""
    return int(min(60, max(25, trials // 4)))


def pareto_method(per_level: int) -> str:
    """best.json's pareto_method: how the front was found."""
    return (f"best split found at {PARETO_LEVELS + 1} budget levels from the least possible "
            f"spend to the budget (in-memory TPE, {per_level} trials per level, starting "
            "from the even split and the best split scaled down; the top level is the "
            "study's best); a level keeps the level below's split where that is better")


def pareto_front(space: SpendSpace, objective: Objective, best_spends: dict[str, float], best_value: float, *,
                 streams: Streams, trials_per_level: int, levels: int = PARETO_LEVELS,
                 progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Best split found at budget levels from the floor to the budget (in-memory TPE at each level).

    A split found at a lower level is feasible at every higher one, so each level keeps the better of
    its own search and the level below: the front never falls as the budget grows.
    """
    import optuna

    lo_total, hi_total = space.floor, space.total
    front: list[dict[str, Any]] = []
    carry: tuple[float, dict[str, float]] | None = None
    for k in range(levels + 1):
        level = lo_total + (hi_total - lo_total) * k / levels
        if k == levels:
            found = (best_value, best_spends)
        elif k == 0 or space.with_budget(level).free_budget <= 0:
            spends = space.with_budget(level).spends(space.lo)
            found = (objective(spends), spends)
        else:
            sub = space.with_budget(level)
            study = optuna.create_study(direction="maximize", sampler=make_sampler(streams, PARETO_STREAM + k, 0))
            study.enqueue_trial(sub.even_params())
            # the best split shrunk to this level: the optimum moves smoothly with the budget
            shrink = sub.free_budget / space.free_budget if space.free_budget > 0 else 0.0
            study.enqueue_trial({n: space.lo[i] + (best_spends[n] - space.lo[i]) * shrink
                                 for i, n in enumerate(space.names)})
            run_trials(study, sub, objective, target=trials_per_level, slots=Slots(trials_per_level),
                       progress=progress)
            found = (study.best_value, study.best_trial.user_attrs["spends"])
        if carry is not None and carry[0] > found[0]:
            found = carry
        carry = found
        value, spends = found
        alloc = space.allocation(spends)
        front.append({"budget": _r(level), "spend": _r(sum(alloc.values())), "expected_conversion_rate": _r(value),
                      "allocation": alloc})
    return front

