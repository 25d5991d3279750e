"""Exact answers from the absorbing chain: no sampling noise.

Without a horizon the stage chain only moves forward, so one pass over the stages gives every
reach probability. With a horizon the journey is a continuous-time Markov chain (exponential gaps)
and the reach rates within the horizon come from the matrix exponential. Its states are (stage, way
out): a customer's way out of a stage is drawn on entering it, so a way-out-specific leave speed
stays Markov.
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
    flow: np.ndarray  # [P, S, 1 + S] P(leaving stage s by way out o: 0 drop-off, 1 + u moved to u)
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
    q, way = model.way_out()
    dropped = np.zeros((P, S))
    active = np.zeros((P, S))  # P(customer is in s and will interact there at least once)
    flow = np.zeros((P, S, 1 + S))  # P(leaving stage s by each way out)
    active[:, 0] = 1.0
    for s in range(S - 1):
        flow[:, s] = active[:, s, None] * way[:, s]
        dropped[:, s] += flow[:, s, 0]
        for u in range(s + 1, S - 1):
            active[:, u] += flow[:, s, 1 + u] * (1.0 - model.lapse[:, u])
            dropped[:, u] += flow[:, s, 1 + u] * model.lapse[:, u]
    # "reached s" = highest stage >= s. Each journey crosses that threshold at most once,
    # by a jump from some a < s to some u >= s, so a skip over s counts as reaching s.
    reach = np.zeros((P, S))
    reach[:, 0] = 1.0
    for s in range(1, S):
        reach[:, s] = flow[:, :s, 1 + s:].sum(axis=(1, 2))
    # staying interactions come at rate * (1 - q) while the customer is in the stage (mean time
    # sum_o way_o / leave_rate_o); in the first stage only after the interaction at arrival stayed
    rates = model.leave_rates()
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_days = np.where(way > 0, way / np.maximum(rates, 1e-300), 0.0).sum(axis=-1)  # [P, S]
    stays = model.rate * np.clip(stay, 0.0, 1.0) * mean_days
    stays[:, 0] = np.clip(stay[:, 0], 0.0, 1.0) * (1.0 + stays[:, 0])
    stays[:, S - 1] = 0.0
    q_stay, q_exit = touchpoint_split(model)
    interactions = (active * stays)[:, :, None] * q_stay + np.einsum("pso,psto->pst", flow, q_exit)
    drop_offs = flow[:, :, 0, None] * q_exit[..., 0]
    return Exact(reach=reach, dropped=dropped, interactions=interactions, drop_offs=drop_offs, flow=flow,
                 persona_share=model.persona_share.copy(), conversion_index=model.conversion_index)


def touchpoint_split(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """Touchpoint of a staying interaction [P, S, T], and of a leaving one by way out [P, S, T, 1 + S]."""
    share = model.share
    w_stay = share * model.stay
    q_stay = w_stay / np.maximum(w_stay.sum(-1, keepdims=True), 1e-300)
    w_exit = np.concatenate([(share * model.drop)[..., None], share[..., None] * model.advance], -1)
    q_exit = w_exit / np.maximum(w_exit.sum(2, keepdims=True), 1e-300)
    return q_stay, q_exit


@dataclass
class Chain:
    """Continuous-time chain of one persona's journey; time only moves through leaving a stage.

    States: (live stage s, way out o) for s < S - 1 and o in 0..S, then ended-in-s, then final.
    """

    Q: np.ndarray  # generator
    start: np.ndarray  # distribution right after the interaction at arrival
    stage_of: np.ndarray  # stage of each state
    ended: np.ndarray  # [S - 1] index of the ended-in-s states


def _generator(model: Model, p: int) -> Chain:
    S = model.n_stages
    K = 1 + S
    q, way = model.way_out()
    rates = model.leave_rates()
    live = S - 1
    n = live * K + live + 1
    ended = np.arange(live * K, live * K + live)
    final = n - 1
    stage_of = np.concatenate([np.repeat(np.arange(live), K), np.arange(live), [S - 1]])

    def enter(u: int) -> np.ndarray:
        """Distribution over states right after moving into stage u."""
        vec = np.zeros(n)
        if u == S - 1:
            vec[final] = 1.0
            return vec
        vec[ended[u]] = model.lapse[p, u]
        vec[u * K:(u + 1) * K] = (1.0 - model.lapse[p, u]) * way[p, u]
        return vec

    def leave(s: int, o: int) -> np.ndarray:
        if o == 0:
            vec = np.zeros(n)
            vec[ended[s]] = 1.0
            return vec
        return enter(o - 1)

    Q = np.zeros((n, n))
    for s in range(live):
        for o in range(K):
            if way[p, s, o] <= 0:
                continue
            i = s * K + o
            Q[i] += rates[p, s, o] * leave(s, o)
            Q[i, i] -= rates[p, s, o]
    # the interaction at arrival leaves the first stage at once with probability q
    start = np.zeros(n)
    start[:K] = (1.0 - q[p, 0]) * way[p, 0]
    for o in range(K):
        if way[p, 0, o] > 0:
            start += q[p, 0] * way[p, 0, o] * leave(0, o)
    return Chain(Q=Q, start=start, stage_of=stage_of, ended=ended)


def _evaluate_horizon(model: Model, horizon: float) -> Exact:
    from scipy.linalg import expm  # lazy: only horizon runs pay for importing scipy.linalg

    P, S = model.n_personas, model.n_stages
    full = evaluate(model)
    reach = np.zeros((P, S))
    dropped = np.zeros((P, S))
    for p in range(P):
        chain = _generator(model, p)
        dist = chain.start @ expm(chain.Q * horizon)
        for s in range(S):
            reach[p, s] = dist[chain.stage_of >= s].sum()
        dropped[p, :S - 1] = dist[chain.ended]
    reach[:, 0] = 1.0
    return Exact(reach=reach, dropped=dropped, interactions=full.interactions, drop_offs=full.drop_offs,
                 flow=full.flow, persona_share=model.persona_share.copy(), conversion_index=model.conversion_index)
