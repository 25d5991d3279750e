"""The fast agent engine: every customer is a row in numpy arrays, each stage drawn directly.

Inside a stage the interactions are independent tries, so a customer's stay there is drawn in
one go: the number of interactions is geometric, the way out (drop-off or the stage moved to) is
categorical, and the time spent is a gamma sum of exponential gaps. Touchpoint counts are needed
only in aggregate, so they are drawn as multinomials per persona and stage. Same distribution as
walking the journey interaction by interaction, at a fraction of the cost.

Common random numbers: each chunk of customers has its own stream, and every scenario consumes
the same uniforms in the same order (inverse-CDF draws), so a customer meets the same luck in the
base and in a what-if.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sim.engines.result import EngineResult
from sim.model import Model

CHUNK = 1 << 20


def run(model: Model, n_customers: int, seed: np.random.SeedSequence | int, *,
        horizon_days: float | None = None, arrival_days: float | None = None,
        chunk: int = CHUNK, progress: Callable[[int], None] | None = None) -> EngineResult:
    """Simulate ``n_customers`` journeys; the seed sequence fixes every random number."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    arrival = float(arrival_days if arrival_days is not None else model.arrival_days)
    tables = _Tables(model)
    n_chunks = max(1, -(-n_customers // chunk))
    result = EngineResult.empty(model.n_personas, model.n_stages, model.n_touchpoints, model.conversion_index)
    for i, child in enumerate(ss.spawn(n_chunks)):
        size = min(chunk, n_customers - i * chunk)
        if size <= 0:
            break
        result = result + _run_chunk(model, tables, size, child, horizon_days, arrival)
        if progress is not None:
            progress(size)
    return result


class _Tables:
    """Per persona × stage cumulative tables, computed once per model."""

    def __init__(self, model: Model) -> None:
        S = model.n_stages
        stay, out = model.stage_kernel()
        self.stay = stay
        leave = np.maximum(1.0 - stay, 1e-300)
        exit_p = out / leave[..., None]  # [P, S, 1+S]: drop, advance to u
        self.exit_cum = np.cumsum(exit_p, axis=-1)
        self.exit_cum[..., -1] = 1.0
        with np.errstate(divide="ignore"):  # stay = 0 -> log = -inf -> exactly one try
            self.log_stay = np.log(np.clip(stay, 0.0, 1.0 - 1e-15))
        self.K = 1 + S
        self.persona_cum = np.cumsum(model.persona_share)
        self.persona_cum[-1] = 1.0
        # touchpoint distributions for the aggregate counts
        share, stay_t = model.share, model.stay
        w_stay = share * stay_t
        self.q_stay = w_stay / np.maximum(w_stay.sum(-1, keepdims=True), 1e-300)  # [P,S,T]
        w_exit = np.concatenate([(share * model.drop)[..., None], share[..., None] * model.advance], -1)
        self.q_exit = w_exit / np.maximum(w_exit.sum(2, keepdims=True), 1e-300)  # [P,S,T,1+S]
        self.scale = np.where(model.rate > 0, 1.0 / np.maximum(model.rate, 1e-300), 0.0)


def _run_chunk(model: Model, tb: _Tables, n: int, ss: np.random.SeedSequence,
               horizon: float | None, arrival_days: float) -> EngineResult:
    P, S, T = model.n_personas, model.n_stages, model.n_touchpoints
    final, conv = S - 1, model.conversion_index
    H = np.inf if horizon is None else float(horizon)
    main_ss, time_ss, agg_ss = ss.spawn(3)
    rng = np.random.default_rng(main_ss)
    trng = np.random.default_rng(time_ss)
    arng = np.random.default_rng(agg_ss)

    # Personas as contiguous blocks of customers: the count below each cumulative share, from the
    # same uniforms in every scenario, so a changed mix moves only the customers at the borders.
    u_persona = rng.random(n, dtype=np.float32)
    bounds = np.zeros(P + 1, dtype=np.int64)
    bounds[1:] = [np.count_nonzero(u_persona < c) for c in tb.persona_cum[:-1]] + [n]
    arrive = rng.random(n) * arrival_days
    # the same uniforms for every scenario: [stage, customer] for the way out, the count and the lapse
    u_exit = rng.random((S - 1, n), dtype=np.float32)
    u_count = rng.random((S - 1, n), dtype=np.float32)
    u_lapse = rng.random((S - 1, n), dtype=np.float32)

    highest = np.zeros(n, dtype=np.int8)  # highest stage reached within the horizon
    age = np.zeros(n)  # days since arrival at the customer's latest interaction
    stay_total = np.zeros((P, S), dtype=np.int64)
    exits = np.zeros((P, S, 1 + S), dtype=np.int64)
    dropped = np.zeros((P, S), dtype=np.int64)
    conv_times = []
    for p in range(P):
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        if hi <= lo:
            continue
        queue: list[list[np.ndarray]] = [[] for _ in range(S)]
        queue[0].append(np.arange(lo, hi))
        for s in range(S - 1):
            if not queue[s]:
                continue
            idx = np.concatenate(queue[s]) if len(queue[s]) > 1 else queue[s][0]
            if s > 0:  # lapse: left on entering the stage, with no interaction there
                lapsed = u_lapse[s, idx] < model.lapse[p, s]
                if lapsed.any():
                    dropped[p, s] += np.count_nonzero(age[idx[lapsed]] <= H)
                    idx = idx[~lapsed]
                if idx.size == 0:
                    continue
            k = 1 + np.floor(np.log1p(-u_count[s, idx]) / tb.log_stay[p, s]).astype(np.int64)
            stay_total[p, s] += int(k.sum()) - k.size
            outcome = np.searchsorted(tb.exit_cum[p, s], u_exit[s, idx], side="right")
            np.minimum(outcome, S, out=outcome)
            exits[p, s] += np.bincount(outcome, minlength=1 + S)
            gaps = k - 1 if s == 0 else k  # the first interaction happens at arrival
            t_at = age[idx] + trng.standard_gamma(gaps.astype(np.float64)) * tb.scale[p, s]
            age[idx] = t_at
            drop = outcome == 0
            if drop.any():
                dropped[p, s] += np.count_nonzero(t_at[drop] <= H)
            within = t_at <= H
            for u in range(s + 1, S):
                moved = outcome == 1 + u
                if not moved.any():
                    continue
                mi = idx[moved]
                ok = within[moved]
                highest[mi[ok]] = u
                if s < conv <= u:
                    ci = mi[ok]
                    conv_times.append(arrive[ci] + t_at[moved][ok])
                if u < final:
                    queue[u].append(mi)

    persona = np.repeat(np.arange(P), np.diff(bounds))
    at_highest = np.bincount(persona * S + highest, minlength=P * S).reshape(P, S)
    reached = np.cumsum(at_highest[:, ::-1], axis=1)[:, ::-1]  # highest >= s
    customers = np.diff(bounds)

    # touchpoint totals, drawn in aggregate (same distribution as per interaction)
    interactions = np.zeros((P, S, T), dtype=np.int64)
    drop_offs = np.zeros((P, S, T), dtype=np.int64)
    for pp in range(P):
        for s in range(S - 1):
            if stay_total[pp, s]:
                interactions[pp, s] += arng.multinomial(stay_total[pp, s], tb.q_stay[pp, s])
            for o in range(1 + S):
                if exits[pp, s, o]:
                    counts = arng.multinomial(exits[pp, s, o], tb.q_exit[pp, s, :, o])
                    interactions[pp, s] += counts
                    if o == 0:
                        drop_offs[pp, s] += counts

    conv_time = np.concatenate(conv_times) if conv_times else np.zeros(0)
    week_arr = np.floor(arrive / 7.0).astype(np.int64)
    week_conv = np.floor(conv_time / 7.0).astype(np.int64)
    weeks = int(max(week_arr.max(initial=0), week_conv.max(initial=0))) + 1
    return EngineResult(customers=customers, reached=reached, dropped=dropped, interactions=interactions,
                        drop_offs=drop_offs, weekly_arrivals=np.bincount(week_arr, minlength=weeks),
                        weekly_conversions=np.bincount(week_conv, minlength=weeks), conversion_index=conv)
