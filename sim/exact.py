"""Exact answers from the absorbing chain: no sampling noise.

Without a horizon the stage chain only moves forward, so one pass over the stages gives every
reach probability. With a horizon the journey is a continuous-time Markov chain (exponential gaps)
and the reach rates within the horizon come from the matrix exponential. Its states are (stage, way
out, phase): a customer's way out of a stage is drawn on entering it, so a way-out-specific leave
speed stays Markov, and a phase-type stay is its chain of phases (sim/phases.py). The phases change
only when a customer leaves, never where to: answers without a horizon are the same.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.model import Model
from sim.phases import exit_probs, n_phases

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
        """P(reaching the conversion stage) per persona."""
        return self.reach[:, self.conversion_index]

    @property
    def conversion_rate(self) -> float:
        """P(reaching the conversion stage), personas weighted by their shares."""
        return float(self.persona_share @ self.conversion_by_persona)

    @property
    def reach_overall(self) -> np.ndarray:
        """P(reaching stage s) [S], personas weighted by their shares."""
        return self.persona_share @ self.reach


def evaluate(model: Model, horizon_days: float | None = None) -> Exact:
    """Expected reach of every stage (within ``horizon_days`` of arrival if given)."""
    if horizon_days is not None:
        return _evaluate_horizon(model, float(horizon_days))
    if model.sequences:
        return _evaluate_sequences(model)
    S = model.n_stages
    stay, out = model.stage_kernel()
    q, way = model.way_out()
    active, dropped, flow, reach = _stage_flow(model, way)
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


def _stage_flow(model: Model, way: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One forward pass over the stages, given P(way out | a visit) [P, S, 1 + S]: P(active in s: entered
    and interacting) [P, S], P(journey ended in s) [P, S], P(leaving s by each way) [P, S, 1 + S], reach."""
    P, S = model.n_personas, model.n_stages
    dropped = np.zeros((P, S))
    active = np.zeros((P, S))
    flow = np.zeros((P, S, 1 + S))
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
    return active, dropped, flow, reach


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

    States: per live stage s < S - 1 and way out o, one per phase of the stay (one if exponential;
    ways out a stage does not have keep one idle state), then ended-in-s, then final. ``stage_of``
    gives each state's stage.
    """

    Q: np.ndarray  # generator
    start: np.ndarray  # distribution right after the interaction at arrival
    stage_of: np.ndarray  # stage of each state
    ended: np.ndarray  # [S - 1] index of the ended-in-s states


def _generator(model: Model, p: int) -> Chain:
    """States: per live stage s and way out o, one state per phase of the stay (one if exponential)."""
    S = model.n_stages
    K = 1 + S
    q, way = model.way_out()
    lam = model.phase_rates()
    live = S - 1
    weights = model.phases[p] if model.phases is not None else np.ones((S, K, 1))
    # [S, K] phases of each (stage, way out), also of ways the stage does not take (idle states): the
    # state space depends on the shapes only, so a scenario's chain has the base's states (forecast)
    count = n_phases(weights).astype(np.int64)
    count[live:] = 0
    first = np.concatenate([[0], np.cumsum(count.ravel())])[:-1].reshape(S, K)  # first phase's state
    n_live = int(count.sum())
    n = n_live + live + 1
    ended = np.arange(n_live, n_live + live)
    final = n - 1
    stage_of = np.concatenate([np.repeat(np.arange(S), count.sum(1)), np.arange(live), [S - 1]])

    def enter(u: int) -> np.ndarray:
        """Distribution over states right after moving into stage u (the first phase of its way out)."""
        vec = np.zeros(n)
        if u == S - 1:
            vec[final] = 1.0
            return vec
        vec[ended[u]] = model.lapse[p, u]
        vec[first[u]] += (1.0 - model.lapse[p, u]) * way[p, u]
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
            done = exit_probs(weights[s, o])
            for j in range(int(count[s, o])):
                i = first[s, o] + j
                Q[i] += lam[p, s, o] * done[j] * leave(s, o)
                if j + 1 < count[s, o]:
                    Q[i, i + 1] += lam[p, s, o] * (1.0 - done[j])
                Q[i, i] -= lam[p, s, o]
    # the interaction at arrival leaves the first stage at once with probability q
    start = np.zeros(n)
    start[first[0]] = (1.0 - q[p, 0]) * way[p, 0]
    for o in range(K):
        if way[p, 0, o] > 0:
            start += q[p, 0] * way[p, 0, o] * leave(0, o)
    return Chain(Q=Q, start=start, stage_of=stage_of, ended=ended)


def generator(model: Model, p: int) -> Chain:
    """The continuous-time chain of persona p's journey (with touch sequences if the model has them)."""
    return _sequence_generator(model, p) if model.sequences else _generator(model, p)


def _evaluate_horizon(model: Model, horizon: float) -> Exact:
    from scipy.linalg import expm  # lazy: only horizon runs pay for importing scipy.linalg

    P, S = model.n_personas, model.n_stages
    full = evaluate(model)
    reach = np.zeros((P, S))
    dropped = np.zeros((P, S))
    for p in range(P):
        chain = generator(model, p)
        dist = chain.start @ expm(chain.Q * horizon)
        for s in range(S):
            reach[p, s] = dist[chain.stage_of >= s].sum()
        dropped[p, :S - 1] = dist[chain.ended]
    reach[:, 0] = 1.0
    return Exact(reach=reach, dropped=dropped, interactions=full.interactions, drop_offs=full.drop_offs,
                 flow=full.flow, persona_share=model.persona_share.copy(), conversion_index=model.conversion_index)


# ---- touch sequences: the next touchpoint depends on the last one in the stage ---------------------
def next_touchpoint(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """P(next touchpoint | last) [P, S, T, T] and each row's relative rate F_l [P, S, T]."""
    rates = model.next_rates()
    total = rates.sum(-1)
    probs = np.where(total[..., None] > 0, rates / np.where(total > 0, total, 1.0)[..., None], 0.0)
    return probs, total


def stage_visits(model: Model) -> np.ndarray:
    """Expected interactions at each touchpoint in one visit of a stage, from its first [P, S, T].

    The touchpoints of a visit form an absorbing chain: the first is drawn by ``share``, each that
    stays is followed by one drawn from its row; v = share (I - M)^-1 with M[l, t] = stay_l P(t | l).
    """
    P, S, T = model.n_personas, model.n_stages, model.n_touchpoints
    probs, _ = next_touchpoint(model)
    stay = model.stay
    visits = np.zeros((P, S, T))
    eye = np.eye(T)
    for p in range(P):
        for s in range(S - 1):
            m = stay[p, s][:, None] * probs[p, s]
            visits[p, s] = np.linalg.solve((eye - m).T, model.share[p, s])
    return visits


def _evaluate_sequences(model: Model) -> Exact:
    """``evaluate`` without a horizon for a model with touch sequences (plain dwell)."""
    S = model.n_stages
    visits = stage_visits(model)
    exits = np.concatenate([(visits * model.drop)[..., None], visits[..., None] * model.advance], -1)  # [P,S,T,1+S]
    active, dropped, flow, reach = _stage_flow(model, exits.sum(2))  # each visit leaves once
    interactions = active[:, :, None] * visits
    interactions[:, S - 1] = 0.0
    drop_offs = interactions * model.drop
    return Exact(reach=reach, dropped=dropped, interactions=interactions, drop_offs=drop_offs, flow=flow,
                 persona_share=model.persona_share.copy(), conversion_index=model.conversion_index)


def _sequence_generator(model: Model, p: int) -> Chain:
    """The continuous-time chain of one persona's journey with touch sequences.

    States: per live stage s, "entered, first interaction to come" then "last interaction at l" for
    every touchpoint l; then ended-in-s; then final. An interaction happens on leaving a state: its
    touchpoint is drawn from the state's row, then its outcome.
    """
    S, T = model.n_stages, model.n_touchpoints
    live = S - 1
    block = 1 + T
    n = live * block + live + 1
    ended = np.arange(live * block, live * block + live)
    final = n - 1
    stage_of = np.concatenate([np.repeat(np.arange(live), block), np.arange(live), [S - 1]])
    probs, total = next_touchpoint(model)

    def enter(u: int) -> np.ndarray:
        vec = np.zeros(n)
        if u == S - 1:
            vec[final] = 1.0
            return vec
        vec[ended[u]] = model.lapse[p, u]
        vec[u * block] = 1.0 - model.lapse[p, u]
        return vec

    def event(s: int, pi: np.ndarray) -> np.ndarray:
        """Where an interaction in stage s with touchpoint distribution ``pi`` takes the customer."""
        vec = np.zeros(n)
        vec[s * block + 1:(s + 1) * block] += pi * model.stay[p, s]
        vec[ended[s]] += pi @ model.drop[p, s]
        for u in range(s + 1, S):
            w = pi @ model.advance[p, s, :, u]
            if w > 0:
                vec += w * enter(u)
        return vec

    Q = np.zeros((n, n))
    for s in range(live):
        r = model.rate[p, s]
        rows = [(s * block, model.share[p, s], r)]
        rows += [(s * block + 1 + l, probs[p, s, l], r * total[p, s, l]) for l in range(T)]
        for i, pi, rate in rows:
            if rate <= 0 or pi.sum() <= 0:
                continue
            Q[i] += rate * event(s, pi)
            Q[i, i] -= rate
    start = event(0, model.share[p, 0])  # the interaction at arrival
    return Chain(Q=Q, start=start, stage_of=stage_of, ended=ended)


# ---- reach by age: many horizons at once (backtest, forecast) -------------------------------------
_BATCH = 4096  # ages per batched matrix exponential (bounds memory: BATCH x n x n floats)
_MAX_GRID = 1 << 20  # grid points of reach_by_age (memory: points x states floats)


def reach_by_age(model: Model, persona: int, ages: np.ndarray) -> np.ndarray:
    """P(reach each stage within ``age`` days of arrival) [n, S] for one persona, exact.

    Same chain as ``evaluate(model, horizon_days=age)``, evaluated at many ages at once:
    the state distribution on a grid of step h (h * |Q| <= 1) by repeated doubling of
    expm(Q h), then from the grid point below each age a Taylor series of expm(Q r), r < h
    (terms up to order 20: truncation below 1e-18).
    """
    from scipy.linalg import expm  # lazy, as in _evaluate_horizon

    ages = np.asarray(ages, dtype=float)
    chain = generator(model, persona)
    Q, start, stage_of = chain.Q, chain.start, chain.stage_of
    S = model.n_stages
    member = (stage_of[:, None] >= np.arange(S)[None, :]).astype(float)  # [states, S]
    norm = float(np.abs(Q).sum(axis=1).max())
    top = float(ages.max()) if ages.size else 0.0
    h = 1.0 / norm if norm > 0 else top + 1.0
    steps = int(top / h) + 1
    if steps > _MAX_GRID:  # a very fast chain over a long age range: one batched expm per age instead
        dist = np.concatenate([np.einsum("i,kij->kj", start, expm(Q[None] * ages[lo:lo + _BATCH, None, None]))
                               for lo in range(0, ages.size, _BATCH)] or [np.zeros((0, start.size))])
    else:
        grid = start[None, :]
        step = expm(Q * h)
        while grid.shape[0] < steps:
            grid = np.concatenate([grid, grid @ step])
            step = step @ step
        k = np.minimum((ages / h).astype(np.int64), grid.shape[0] - 1)
        r = ages - k * h
        term = grid[k]
        dist = term.copy()
        for j in range(1, 21):
            term = (term @ Q) * (r / j)[:, None]
            dist += term
    out = dist @ member
    out[:, 0] = 1.0
    return np.clip(out, 0.0, 1.0)
