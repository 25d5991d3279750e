"""Exact answers from the absorbing chain: no sampling noise.

Without a horizon the stage chain only moves forward, so one pass over the stages gives every
reach probability. With a horizon the journey is a continuous-time Markov chain (exponential gaps)
and the reach rates within the horizon come from the matrix exponential.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.model import Model

_EPS = 1e-12


@dataclass
class Exact:
    """Expected outcome per persona, and for the persona mix."""

    reach: np.ndarray  # [P, S] P(reach stage s)
    dropped: np.ndarray  # [P, S] P(journey ends in stage s without completing)
    interactions: np.ndarray  # [P, S, T] expected interactions per customer
    drop_offs: np.ndarray  # [P, S, T] expected journeys ended at (s, t) per customer
    persona_share: np.ndarray  # [P]
    conversion_index: int

    @property
    def conversion_by_persona(self) -> np.ndarray:
        return self.reach[:, self.conversion_index]

    @property
    def conversion_rate(self) -> float:
        return float(self.persona_share @ self.conversion_by_persona)

    @property
    def reach_overall(self) -> np.ndarray:
        return self.persona_share @ self.reach


def evaluate(model: Model, horizon_days: float | None = None) -> Exact:
    """Expected reach of every stage (within ``horizon_days`` of arrival if given)."""
    if horizon_days is not None:
        return _evaluate_horizon(model, float(horizon_days))
    P, S = model.n_personas, model.n_stages
    stay, out = model.stage_kernel()
    dropped = np.zeros((P, S))
    active = np.zeros((P, S))  # P(customer is in s and will interact there at least once)
    visits = np.zeros((P, S))  # expected interactions in s
    active[:, 0] = 1.0
    for s in range(S - 1):
        # the number of interactions in a stage is geometric: tries until one leaves it
        visits[:, s] = active[:, s] / np.maximum(1.0 - stay[:, s], _EPS)
        dropped[:, s] += visits[:, s] * out[:, s, 0]
        for u in range(s + 1, S - 1):
            flow = visits[:, s] * out[:, s, 1 + u]
            active[:, u] += flow * (1.0 - model.lapse[:, u])
            dropped[:, u] += flow * model.lapse[:, u]
    # "reached s" = highest stage >= s. Each journey crosses that threshold at most once,
    # by a jump from some a < s to some u >= s, so a skip over s counts as reaching s.
    reach = np.zeros((P, S))
    reach[:, 0] = 1.0
    for s in range(1, S):
        reach[:, s] = sum(visits[:, a] * out[:, a, 1 + s:].sum(axis=1) for a in range(s))
    interactions = visits[:, :, None] * model.share
    drop_offs = interactions * model.drop
    return Exact(reach=reach, dropped=dropped, interactions=interactions, drop_offs=drop_offs,
                 persona_share=model.persona_share.copy(), conversion_index=model.conversion_index)


def _generator(model: Model, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CTMC for persona p: states = active s (S-1), ended-in s (S-1), final (1).

    Returns (generator Q, initial distribution after the first interaction, stage of each state).
    """
    S = model.n_stages
    stay, out = model.stage_kernel()
    n = 2 * (S - 1) + 1
    active = list(range(S - 1))
    ended = [S - 1 + s for s in range(S - 1)]
    final = n - 1
    stage_of = np.array(list(range(S - 1)) + list(range(S - 1)) + [S - 1])

    def after_interaction(s: int) -> np.ndarray:
        """Distribution over states right after one interaction in stage s."""
        vec = np.zeros(n)
        vec[active[s]] += stay[p, s]
        vec[ended[s]] += out[p, s, 0]
        for u in range(s + 1, S):
            f = out[p, s, 1 + u]
            if u == S - 1:
                vec[final] += f
            else:
                vec[active[u]] += f * (1 - model.lapse[p, u])
                vec[ended[u]] += f * model.lapse[p, u]
        return vec

    Q = np.zeros((n, n))
    for s in range(S - 1):
        jump = after_interaction(s)
        Q[active[s], :] += model.rate[p, s] * jump
        Q[active[s], active[s]] -= model.rate[p, s]
    return Q, after_interaction(0), stage_of


def _evaluate_horizon(model: Model, horizon: float) -> Exact:
    from scipy.linalg import expm  # lazy: only horizon runs pay for importing scipy.linalg

    P, S = model.n_personas, model.n_stages
    full = evaluate(model)
    reach = np.zeros((P, S))
    dropped = np.zeros((P, S))
    for p in range(P):
        Q, start, stage_of = _generator(model, p)
        dist = start @ expm(Q * horizon)
        for s in range(S):
            reach[p, s] = dist[stage_of >= s].sum()
        n_live = S - 1
        dropped[p, :S - 1] = dist[n_live:2 * n_live]
    reach[:, 0] = 1.0
    return Exact(reach=reach, dropped=dropped, interactions=full.interactions, drop_offs=full.drop_offs,
                 persona_share=model.persona_share.copy(), conversion_index=model.conversion_index)
