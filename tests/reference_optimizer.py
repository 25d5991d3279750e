"""The reference optimizer of the tests and benchmarks: multi-start SLSQP on the exact objective."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sim.optimize.robust import even_start, slsqp_best, start_of
from sim.optimize.space import SpendSpace


def reference_optimum(objective: Callable[[dict[str, float]], float], space: SpendSpace, *, starts: int = 8,
                      seed: int = 0, extra_starts: list[dict[str, float]] | None = None, corners: bool = True,
                      ftol: float = 1e-9
                      ) -> tuple[float, dict[str, float]]:
    """The best split by SLSQP from several starts on the same exact objective (no rounding).

    Starts: the even split, all the room on each lever in turn (``corners``), ``starts`` random splits
    and ``extra_starts``. Measures how close the Optuna search gets.
    """
    width = np.maximum(space.hi - space.lo, 1e-12)
    room = max(0.0, space.total - space.floor)
    rng = np.random.default_rng(seed)
    n = len(space.names)
    inits = [even_start(space)]
    for i in range(n if corners else 0):
        u = np.zeros(n)
        u[i] = min(1.0, room / width[i])
        inits.append(u)
    while len(inits) < starts + (n + 1 if corners else 1):
        w = rng.dirichlet(np.ones(n)) * room * rng.uniform(0.5, 1.0)
        inits.append(np.minimum(w / width, 1.0))
    inits.extend(start_of(space, s) for s in extra_starts or [])
    return slsqp_best(objective, space, inits, ftol=ftol)
