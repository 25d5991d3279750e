"""The SimPy engine: every customer is a process; touchpoints with limited staff are queues.

Use it when time and capacity matter (a scenario's ``[capacity.<touchpoint>]``); without
capacity it gives the same answers as the fast engine, about a thousand times slower.

A customer arrives, takes a persona and walks the journey one interaction at a time (model time is
in days). On entering a stage it is bound for one way out ``o`` (drop-off or a later stage, drawn
with the stage's way-out probabilities); while there, the gap to its next interaction is exponential
of rate ``rate * (1 - q) + mu[o]`` (staying interactions plus the leaving one, see Model) and an
interaction is the leaving one with probability ``mu[o] / that rate``. The interaction at arrival
leaves the first stage with probability q. With phase-type stays ``mu[o]`` is the phase rate and
such an event ends one phase: the stay ends (it is the leaving interaction) only after the last
one, else the next phase begins silently (sim/engines/tables.py). An interaction with a capacitated touchpoint asks for
one of its servers: if none frees up within the customer's patience (exponential) the customer gives
up and the journey ends there (a drop-off of that touchpoint in that stage); otherwise the service
(exponential) is done and the interaction's outcome applies.

Random numbers: customer ``i`` (the i-th to arrive) owns a row of uniforms (persona and way out of
the first stage, then seven per interaction: touchpoint, outcome, gap, lapse, way out of the stage
entered, patience, service), and its j-th interaction always uses the same seven, whatever happened
before. So the same customer meets the same luck in every scenario (common random numbers), and
capacity that never binds changes nothing but the clock.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from sim.engines.result import EngineResult
from sim.engines.tables import sequence_tables, way_out_tables
from sim.model import Model

MINUTES_PER_DAY = 1440.0
BLOCK = 4096  # customers whose uniforms are drawn together
HEAD = 2  # uniforms at the start of a row: persona, way out of the first stage
SLOTS = 7  # uniforms per interaction: touchpoint, outcome, gap, lapse, way out, patience, service
PREDRAWN = 20  # interactions per customer drawn in bulk; later ones come from the customer's own stream

# spawn keys of the streams below the run's seed sequence
_ARRIVALS, _BLOCKS, _OVERFLOW = 0, 1, 2


@dataclass(frozen=True)
class Desk:
    """A capacitated touchpoint: ``servers`` in parallel, exponential service and patience."""

    touchpoint: int
    name: str
    servers: int
    service_minutes: float
    patience_minutes: float


def parse_capacity(model: Model, capacity: Mapping[str, Any] | None, *, file: object = None) -> dict[int, Desk]:
    """The desks of ``{touchpoint: {servers, service_minutes, patience_minutes}}``, checked by the
    scenario file's rule (sim.scenario.check_capacity); InputError names the bad key."""
    from sim.scenario import check_capacity

    desks: dict[int, Desk] = {}
    for name, spec in check_capacity(model, capacity, file=file).items():
        t = model.touchpoints.index(name)
        desks[t] = Desk(t, name, int(spec.servers), float(spec.service_minutes), float(spec.patience_minutes))
    return desks


def run(model: Model, n_customers: int, seed: np.random.SeedSequence | int, *,
        horizon_days: float | None = None, arrival_days: float | None = None,
        capacity: Mapping[str, Any] | None = None) -> EngineResult:
    """Simulate ``n_customers`` journeys as SimPy processes; the seed fixes every random number."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    desks = parse_capacity(model, capacity)
    arrival = float(arrival_days if arrival_days is not None else model.arrival_days)
    horizon = math.inf if horizon_days is None else float(horizon_days)
    return _Simulation(model, int(n_customers), ss, horizon, arrival, desks).run()


def _stream(ss: np.random.SeedSequence, *key: int) -> np.random.Generator:
    """A child stream fixed by ``key`` alone (not by how often ``ss`` was spawned before)."""
    child = np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, *key), pool_size=ss.pool_size)
    return np.random.default_rng(child)


class _Simulation:
    def __init__(self, model: Model, n: int, ss: np.random.SeedSequence, horizon: float,
                 arrival_days: float, desks: dict[int, Desk]) -> None:
        P, S, T = model.n_personas, model.n_stages, model.n_touchpoints
        self.P, self.S, self.T = P, S, T
        self.n, self.ss, self.horizon, self.arrival_days = n, ss, horizon, arrival_days
        self.conv, self.final = model.conversion_index, S - 1
        self.desks = desks
        # Python lists: scalar work per interaction is much cheaper on them than on numpy arrays
        pc = np.cumsum(model.persona_share)
        pc[-1] = 1.0
        self.persona_cum = pc.tolist()
        # a stay in stage s bound for way out o: see sim.engines.tables.way_out_tables
        way = way_out_tables(model)
        self.gap_mean = way.gap_mean.tolist()  # [P][S][1 + S]
        self.leave_p = way.leave_p.tolist()
        self.q_first = way.q[:, 0].tolist()  # the interaction at arrival leaves with probability q
        self.phase_exit = way.phase_exit.tolist()  # [P][S][1 + S][K] P(the stay ends | a phase ended)
        self.shaped = model.shaped
        self.way_cum = way.way_cum.tolist()
        self.stay_cum = way.stay_cum.tolist()  # [P][S][T]
        self.exit_cum = way.exit_cum.tolist()  # [P][S][1 + S][T]
        self.lapse = model.lapse.tolist()
        self.sequences = model.sequences
        if self.sequences:  # touch sequences: the touchpoint first (from the last one), then its outcome
            seq = sequence_tables(model)
            total = seq.next_total
            self.entry_cum = seq.entry_cum.tolist()  # [P][S][T]
            self.next_cum = seq.next_cum.tolist()  # [P][S][T][T]
            self.outcome_cum = seq.outcome_cum.tolist()  # [P][S][T][2 + S]: drop, move to u, stay
            with np.errstate(divide="ignore"):
                entry_gap = np.where(model.rate > 0, 1.0 / model.rate, 0.0)
                next_gap = np.where(model.rate[..., None] * total > 0, 1.0 / (model.rate[..., None] * total), 0.0)
            self.entry_gap, self.next_gap = entry_gap.tolist(), next_gap.tolist()
        # tallies, flat Python lists
        self.interactions = [0] * (P * S * T)
        self.drop_offs = [0] * (P * S * T)
        self.dropped = [0] * (P * S)
        self.at_highest = [0] * (P * S)
        self.conv_times: list[float] = []
        self.queue_stats = {t: {"requests": 0, "served": 0, "abandoned": 0, "waited": 0, "wait_days_served": 0.0,
                                "wait_days_abandoned": 0.0, "busy_days": 0.0, "busy_days_in_window": 0.0,
                                "max_queue": 0} for t in desks}

    # ---- the run ---------------------------------------------------------------------
    def run(self) -> EngineResult:
        P, S, T, n = self.P, self.S, self.T, self.n
        arrive = np.sort(_stream(self.ss, _ARRIVALS).random(n)) * self.arrival_days
        env = simpy.Environment()
        self.resources = {t: simpy.Resource(env, capacity=d.servers) for t, d in self.desks.items()}
        env.process(self._source(env, arrive))
        env.run()
        customers = np.zeros(P, dtype=np.int64)
        at_highest = np.array(self.at_highest, dtype=np.int64).reshape(P, S)
        customers[:] = at_highest.sum(axis=1)
        reached = np.cumsum(at_highest[:, ::-1], axis=1)[:, ::-1].copy()
        week_arr = np.floor(arrive / 7.0).astype(np.int64)
        week_conv = np.floor(np.asarray(self.conv_times) / 7.0).astype(np.int64)
        weeks = int(max(week_arr.max(initial=0), week_conv.max(initial=0))) + 1
        return EngineResult(
            customers=customers, reached=reached,
            dropped=np.array(self.dropped, dtype=np.int64).reshape(P, S),
            interactions=np.array(self.interactions, dtype=np.int64).reshape(P, S, T),
            drop_offs=np.array(self.drop_offs, dtype=np.int64).reshape(P, S, T),
            weekly_arrivals=np.bincount(week_arr, minlength=weeks),
            weekly_conversions=np.bincount(week_conv, minlength=weeks),
            conversion_index=self.conv, extras=self._extras(),
        )

    def _extras(self) -> dict[str, Any]:
        if not self.desks:
            return {}
        out = {}
        for t, d in self.desks.items():
            rec: dict[str, Any] = {"settings": {"servers": d.servers, "service_minutes": d.service_minutes,
                                                "patience_minutes": d.patience_minutes}}
            rec.update(self.queue_stats[t])
            rec["open_days_in_window"] = d.servers * self.arrival_days  # server-days while customers arrive
            out[d.name] = rec
        return {"capacity": out}

    def _source(self, env: simpy.Environment, arrive: np.ndarray):
        width = HEAD + PREDRAWN * SLOTS
        rows: list[list[float]] = []
        for i, at in enumerate(arrive.tolist()):
            if i % BLOCK == 0:
                size = min(BLOCK, self.n - i)
                rows = _stream(self.ss, _BLOCKS, i // BLOCK).random((size, width)).tolist()
            if at > env.now:
                yield env.timeout(at - env.now)
            walker = self._customer_sequences if self.sequences else self._customer
            env.process(walker(env, i, rows[i % BLOCK]))

    def _slots(self, u: list[float], i: int, j: int) -> tuple[list[float], list[float]]:
        """The seven uniforms of customer i's j-th interaction (and the row they come from): the
        predrawn row first, then, for a long journey, the customer's own overflow streams."""
        r = j % PREDRAWN
        if r == 0 and j:
            u = [0.0] * HEAD + _stream(self.ss, _OVERFLOW, i, j // PREDRAWN).random(PREDRAWN * SLOTS).tolist()
        k = HEAD + r * SLOTS
        return u, u[k:k + SLOTS]

    def _customer(self, env: simpy.Environment, i: int, u: list[float]):
        S, T, conv, final = self.S, self.T, self.conv, self.final
        p = min(bisect_right(self.persona_cum, u[0]), self.P - 1)
        # this persona's tables and the tallies as locals: this loop is the engine's hot path
        way_cum, stay_cum, exit_cum = self.way_cum[p], self.stay_cum[p], self.exit_cum[p]
        leave_p, gap_mean, lapse = self.leave_p[p], self.gap_mean[p], self.lapse[p]
        phase_exit, shaped = self.phase_exit[p], self.shaped
        interactions, dropped, desks = self.interactions, self.dropped, self.desks
        timeout, log1p = env.timeout, math.log1p
        limit = env.now + self.horizon
        s = highest = 0
        o = bisect_right(way_cum[0], u[1])  # the way out of the first stage
        e = self.q_first[p]  # P(this interaction leaves the stage)
        gap, e_next, scum, xcum = gap_mean[0][o], leave_p[0][o], stay_cum[0], exit_cum[0][o]
        xs, ph = phase_exit[0][o], 0  # phase-type stays: P(the stay ends | phase ph ended), phases done
        j = 0
        while True:
            u, (ut, uo, ug, ul, ud, up, us) = self._slots(u, i, j)
            j += 1
            leave = uo < e
            if shaped and leave and j > 1 and uo >= e * xs[min(ph, len(xs) - 1)]:
                ph += 1  # a phase of the stay ended, no interaction: the next phase begins
                yield timeout(-log1p(-ug) * gap)
                continue
            t = min(bisect_right(xcum if leave else scum, ut), T - 1)
            cell = (p * S + s) * T + t
            interactions[cell] += 1
            if desks and t in desks:
                served = yield from self._queue(env, desks[t], up, us)
                if not served:  # patience ran out: the journey ends at this touchpoint
                    self._lost(cell, p * S + s, env.now <= limit)
                    break
            if leave:
                if o == 0:  # drop-off
                    self._lost(cell, p * S + s, env.now <= limit)
                    break
                target = o - 1
                if env.now <= limit:
                    if s < conv <= target:
                        self.conv_times.append(env.now)
                    highest = target
                s = target
                if s == final:
                    break
                if ul < lapse[s]:  # left on entering the stage
                    if env.now <= limit:
                        dropped[p * S + s] += 1
                    break
                o = bisect_right(way_cum[s], ud)
                gap, e_next, scum, xcum = gap_mean[s][o], leave_p[s][o], stay_cum[s], exit_cum[s][o]
                xs, ph = phase_exit[s][o], 0
            e = e_next
            yield timeout(-log1p(-ug) * gap)
        self.at_highest[p * S + highest] += 1

    def _customer_sequences(self, env: simpy.Environment, i: int, u: list[float]):
        """A customer's journey when the next touchpoint depends on the last one (same uniforms per slot)."""
        S, T, conv, final = self.S, self.T, self.conv, self.final
        p = min(bisect_right(self.persona_cum, u[0]), self.P - 1)
        entry_cum, next_cum, outcome_cum = self.entry_cum[p], self.next_cum[p], self.outcome_cum[p]
        entry_gap, next_gap, lapse = self.entry_gap[p], self.next_gap[p], self.lapse[p]
        interactions, dropped, desks = self.interactions, self.dropped, self.desks
        timeout, log1p = env.timeout, math.log1p
        limit = env.now + self.horizon
        s = highest = 0
        last = -1  # the last staying touchpoint in the stage
        j = 0
        while True:
            u, (ut, uo, ug, ul, _ud, up, us) = self._slots(u, i, j)
            j += 1
            t = min(bisect_right(entry_cum[s] if last < 0 else next_cum[s][last], ut), T - 1)
            cell = (p * S + s) * T + t
            interactions[cell] += 1
            if desks and t in desks:
                served = yield from self._queue(env, desks[t], up, us)
                if not served:  # patience ran out: the journey ends at this touchpoint
                    self._lost(cell, p * S + s, env.now <= limit)
                    break
            outcome = bisect_right(outcome_cum[s][t], uo)  # 0 drop, 1 + u moved to u, 1 + S stayed
            if outcome == 0:
                self._lost(cell, p * S + s, env.now <= limit)
                break
            if outcome <= S:
                target = outcome - 1
                if env.now <= limit:
                    if s < conv <= target:
                        self.conv_times.append(env.now)
                    highest = target
                s, last = target, -1
                if s == final:
                    break
                if ul < lapse[s]:
                    if env.now <= limit:
                        dropped[p * S + s] += 1
                    break
                yield timeout(-log1p(-ug) * entry_gap[s])
            else:
                last = t
                yield timeout(-log1p(-ug) * next_gap[s][t])
        self.at_highest[p * S + highest] += 1

    def _lost(self, cell: int, persona_stage: int, within: bool) -> None:
        """The journey ended at this interaction (dropped off, or out of patience at a desk)."""
        self.drop_offs[cell] += 1
        if within:  # within the horizon: it counts among the stage's losses
            self.dropped[persona_stage] += 1

    def _queue(self, env: simpy.Environment, desk: Desk, up: float, us: float):
        """Wait for a server (at most the patience), then be served; True if served."""
        res = self.resources[desk.touchpoint]
        st = self.queue_stats[desk.touchpoint]
        st["requests"] += 1
        if len(res.queue) + 1 > st["max_queue"] and res.count >= res.capacity:
            st["max_queue"] = len(res.queue) + 1
        asked = env.now
        req = res.request()
        yield req | env.timeout(-math.log1p(-up) * desk.patience_minutes / MINUTES_PER_DAY)
        wait = env.now - asked
        if not req.triggered:
            req.cancel()
            st["abandoned"] += 1
            st["wait_days_abandoned"] += wait
            return False
        st["served"] += 1
        st["wait_days_served"] += wait
        if wait > 0:
            st["waited"] += 1
        begin = env.now
        service = -math.log1p(-us) * desk.service_minutes / MINUTES_PER_DAY
        yield env.timeout(service)
        res.release(req)
        st["busy_days"] += service
        st["busy_days_in_window"] += max(0.0, min(begin + service, self.arrival_days) - max(begin, 0.0))
        return True
