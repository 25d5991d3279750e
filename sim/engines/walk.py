"""Journeys walked interaction by interaction, vectorised over customers: the engine for touch sequences.

With touch sequences (``Model.follow``) the next touchpoint depends on the last one, so a stay in a
stage can no longer be drawn in one go as the fast engine does; this engine steps every customer
through its interactions together, in numpy. Each step draws one uniform per customer of the cohort
for each of touchpoint, outcome, lapse and gap (used or not), so customer i meets the same luck at
its k-th interaction in every scenario: common random numbers hold. The whole journey is walked;
reach and drop-offs count only within the horizon, interactions over the whole journey (as
``sim.exact``'s expected interactions do).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sim.engines.result import EngineResult
from sim.engines.tables import sequence_tables
from sim.model import Model

CHUNK = 1 << 17
MAX_STEPS = 100_000  # a guard: a journey this long means a stage customers (almost) never leave


def run(model: Model, n_customers: int, seed: np.random.SeedSequence | int, *,
        horizon_days: float | None = None, arrival_days: float | None = None,
        chunk: int = CHUNK, progress: Callable[[int], None] | None = None) -> EngineResult:
    """Simulate ``n_customers`` journeys; the seed sequence fixes every random number."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    arrival = float(arrival_days if arrival_days is not None else model.arrival_days)
    horizon = np.inf if horizon_days is None else float(horizon_days)
    tables = Tables(model)
    result = EngineResult.empty(model.n_personas, model.n_stages, model.n_touchpoints, model.conversion_index)
    n_chunks = max(1, -(-n_customers // chunk))
    for i, child in enumerate(ss.spawn(n_chunks)):
        size = min(chunk, n_customers - i * chunk)
        if size <= 0:
            break
        result = result + _aggregate(model, walk(model, tables, size, np.random.default_rng(child), horizon, arrival))
        if progress is not None:
            progress(size)
    return result


class Tables:
    """Cumulative tables for the draws, computed once per model."""

    def __init__(self, model: Model) -> None:
        seq = sequence_tables(model)
        self.entry_cum = seq.entry_cum  # [P, S, T]
        self.next_cum = seq.next_cum  # [P, S, T, T]
        self.next_total = seq.next_total  # [P, S, T]
        self.outcome_cum = seq.outcome_cum  # [P, S, T, 2 + S]: drop, move to u, stay
        self.persona_cum = np.cumsum(model.persona_share)
        self.final = model.n_stages - 1


def walk(model: Model, tb: Tables, n: int, rng: np.random.Generator, horizon: float, arrival_days: float,
         *, keep_rows: bool = False, cut_at_horizon: bool = False) -> dict[str, np.ndarray | list]:
    """Walk ``n`` journeys; returns per-customer outcomes and, with ``keep_rows``, one row per interaction."""
    P, S, T = model.n_personas, model.n_stages, model.n_touchpoints
    final, conv = S - 1, model.conversion_index
    persona = np.minimum(np.searchsorted(tb.persona_cum, rng.random(n), side="right"), P - 1)
    arrive = rng.random(n) * arrival_days
    stage = np.zeros(n, dtype=np.int64)
    last = np.full(n, -1, dtype=np.int64)  # the last staying touchpoint in the stage; -1: none yet
    clock = arrive.copy()
    highest = np.zeros(n, dtype=np.int64)  # within the horizon
    ended_in = np.full(n, -1, dtype=np.int64)  # the stage a journey ended in within the horizon
    conv_time = np.full(n, np.nan)
    inter = np.zeros(P * S * T, dtype=np.int64)
    drops = np.zeros(P * S * T, dtype=np.int64)
    rows: dict[str, list] = {"customer": [], "time": [], "touchpoint": [], "stage": []}
    idx = np.arange(n)
    for _ in range(MAX_STEPS):
        if not idx.size:
            break
        u = rng.random((4, n))  # touchpoint, outcome, lapse, gap: one each per customer of the cohort
        p, s, lt = persona[idx], stage[idx], last[idx]
        first = lt < 0
        cum = np.where(first[:, None], tb.entry_cum[p, s], tb.next_cum[p, s, np.maximum(lt, 0)])
        t = np.minimum((u[0, idx][:, None] >= cum).sum(1), T - 1)
        k = (u[1, idx][:, None] >= tb.outcome_cum[p, s, t]).sum(1)  # 0 drop, 1 + target, 1 + S stay
        cell = (p * S + s) * T + t
        inter += np.bincount(cell, minlength=P * S * T)
        within = clock[idx] - arrive[idx] <= horizon
        if keep_rows:
            rows["customer"].append(idx)
            rows["time"].append(clock[idx].copy())
            rows["touchpoint"].append(t)
            rows["stage"].append(np.where((k >= 1) & (k <= S), k - 1, s))
        dropped = k == 0
        drops += np.bincount(cell[dropped], minlength=P * S * T)
        ended_in[idx[dropped & within]] = s[dropped & within]
        moved = (k >= 1) & (k <= S)
        target = k - 1
        hit = moved & within
        highest[idx[hit]] = target[hit]
        reach_conv = hit & (s < conv) & (target >= conv)
        conv_time[idx[reach_conv]] = clock[idx[reach_conv]]
        stage[idx[moved]] = target[moved]
        last[idx[moved]] = -1
        stayed = ~dropped & ~moved
        last[idx[stayed]] = t[stayed]
        entered = moved & (target < final)
        lapsed = entered & (u[2, idx] < model.lapse[p, np.minimum(target, final)])
        ended_in[idx[lapsed & within]] = target[lapsed & within]
        done = dropped | lapsed | (moved & (target == final))
        idx = idx[~done]
        if idx.size:
            p, s, lt = persona[idx], stage[idx], last[idx]
            speed = np.where(lt < 0, 1.0, tb.next_total[p, s, np.maximum(lt, 0)])
            clock[idx] += -np.log1p(-u[3, idx]) / (model.rate[p, s] * speed)
            if cut_at_horizon:
                idx = idx[clock[idx] - arrive[idx] <= horizon]
    else:
        raise RuntimeError("a journey ran past the step limit: a stage that customers (almost) never leave")
    out: dict[str, np.ndarray | list] = {"persona": persona, "arrive": arrive, "highest": highest,
                                         "ended_in": ended_in, "conv_time": conv_time,
                                         "interactions": inter.reshape(P, S, T), "drop_offs": drops.reshape(P, S, T)}
    if keep_rows:
        out["rows"] = rows
    return out


def _aggregate(model: Model, w: dict) -> EngineResult:
    """One chunk's walked journeys as engine counts."""
    P, S = model.n_personas, model.n_stages
    persona, highest, ended_in = w["persona"], w["highest"], w["ended_in"]
    at_highest = np.zeros((P, S), dtype=np.int64)
    np.add.at(at_highest, (persona, highest), 1)
    reached = np.cumsum(at_highest[:, ::-1], axis=1)[:, ::-1].copy()
    dropped = np.zeros((P, S), dtype=np.int64)
    ok = ended_in >= 0
    np.add.at(dropped, (persona[ok], ended_in[ok]), 1)
    conv_time = w["conv_time"][np.isfinite(w["conv_time"])]
    week_arr = (w["arrive"] / 7.0).astype(np.int64)
    week_conv = (conv_time / 7.0).astype(np.int64)
    weeks = int(max(week_arr.max(initial=0), week_conv.max(initial=0))) + 1
    return EngineResult(customers=np.bincount(persona, minlength=P), reached=reached, dropped=dropped,
                        interactions=w["interactions"], drop_offs=w["drop_offs"],
                        weekly_arrivals=np.bincount(week_arr, minlength=weeks),
                        weekly_conversions=np.bincount(week_conv, minlength=weeks),
                        conversion_index=model.conversion_index)

