"""The fast agent engine: every customer is a row in numpy arrays, each stage drawn directly.

Inside a stage the interactions are a Poisson process (rate ``rate[p, s]``) of independent tries,
each of which leaves the stage with probability ``q`` (drop-off or a move on). Thinning splits it
into two independent Poisson processes: leaving tries at rate ``rate * q`` and staying tries at rate
``rate * (1 - q)``. So a customer's stay in a stage is drawn in one go: the time to leave is
exponential (inverse CDF of one uniform), the way out is categorical (one uniform) and independent
of the time, and the staying tries before leaving are Poisson given the time; summed over the
customers of a persona and stage that is one Poisson draw with the summed time. (In the first
stage the first try happens at arrival and leaves at once with probability ``q``.) Touchpoint
counts are needed only in aggregate, so they are drawn as multinomials per persona and stage. Same
joint distribution as walking the journey interaction by interaction, at a fraction of the cost.
Without a horizon, time matters only on the way to the conversion stage (the weekly conversion
series), so stays after it are not timed and their tries are one negative binomial draw.

Way-out-specific leave speeds (``Model.leave_speed``) only change the time: the way out is drawn
first, then the time to leave at that way's rate; stays still come at ``rate * (1 - q)``.

Common random numbers: each chunk of customers has its own stream, and every scenario consumes
the same uniforms in the same order (inverse-CDF draws: persona, arrival, and per stage one for
the lapse on entering it or else the way out, one for the time), so a customer meets the same
luck in the base and in a what-if.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sim.engines.result import EngineResult
from sim.exact import touchpoint_split
from sim.limits import run_size
from sim.model import Model

CHUNK = 1 << 17  # small enough to stay in cache: 2^17 runs ~1.5x faster than 2^20


def run(model: Model, n_customers: int, seed: np.random.SeedSequence | int, *,
        horizon_days: float | None = None, arrival_days: float | None = None,
        chunk: int = CHUNK, progress: Callable[[int], None] | None = None) -> EngineResult:
    """Simulate ``n_customers`` journeys; the seed sequence fixes every random number."""
    run_size(n_customers, 1)  # one seed per chunk: 10^12 customers would spawn millions of them
    if model.sequences:  # the next touchpoint depends on the last: stays cannot be drawn in one go
        from sim.engines import walk

        return walk.run(model, n_customers, seed, horizon_days=horizon_days, arrival_days=arrival_days,
                        chunk=chunk, progress=progress)
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
    """Per persona × stage tables, computed once per model."""

    def __init__(self, model: Model) -> None:
        P, S = model.n_personas, model.n_stages
        stay, _ = model.stage_kernel()
        # q: P(a try leaves the stage), kept above 0 so a stage nobody leaves still ends; the way out
        # given it leaves [P, S, 1+S]: drop, advance to u
        self.leave, exit_p = model.way_out()
        exit_cum = np.cumsum(exit_p, axis=-1)
        # One uniform per customer and stage decides the lapse on entering the stage (below lapse)
        # and otherwise the way out: float32 thresholds (the final 1 left out) for float32 uniforms.
        lapse = model.lapse.copy()
        lapse[:, 0] = 0.0  # nobody enters the first stage
        self.exit_thr = [[(lapse[p, s] + (1.0 - lapse[p, s]) * exit_cum[p, s, :-1]).astype(np.float32)
                          for s in range(S)] for p in range(P)]
        with np.errstate(divide="ignore"):  # stay = 0 -> log = -inf -> the first try leaves
            self.log_stay = np.log(np.clip(stay, 0.0, 1.0 - 1e-15))
        self.leave_rate = model.rate * self.leave  # rate of leaving tries [P, S]
        # way-out-specific leave rates, only where some speed differs from 1 (else one rate per stage)
        self.plain = np.all(model.leave_speed == 1.0, axis=-1)  # [P, S]
        self.way_rate = model.leave_rates()  # [P, S, 1+S]
        self.stay_rate = model.rate * np.clip(stay, 0.0, 1.0)  # rate of staying tries [P, S]
        self.persona_cum = np.cumsum(model.persona_share)
        self.persona_cum[-1] = 1.0
        # touchpoint distributions for the aggregate counts: [P,S,T] staying, [P,S,T,1+S] leaving
        self.q_stay, self.q_exit = touchpoint_split(model)


def _run_chunk(model: Model, tb: _Tables, n: int, ss: np.random.SeedSequence,
               horizon: float | None, arrival_days: float) -> EngineResult:
    P, S, T = model.n_personas, model.n_stages, model.n_touchpoints
    conv = model.conversion_index
    timed = horizon is not None  # with a horizon every stay is timed; without, only the way to conversion
    H = np.inf if horizon is None else float(horizon)
    main_ss, count_ss, agg_ss = ss.spawn(3)
    rng = np.random.default_rng(main_ss)
    crng = np.random.default_rng(count_ss)
    arng = np.random.default_rng(agg_ss)

    # Personas as contiguous blocks of customers: the count below each cumulative share, from the
    # same uniforms in every scenario, so a changed mix moves only the customers at the borders.
    u_persona = rng.random(n, dtype=np.float32)
    bounds = np.zeros(P + 1, dtype=np.int64)
    bounds[1:] = [np.count_nonzero(u_persona < c) for c in tb.persona_cum[:-1]] + [n]
    arrive = rng.random(n) * arrival_days
    # the same uniforms for every scenario: [stage, customer] for the lapse or way out, and the time
    u_exit = rng.random((S - 1, n), dtype=np.float32)
    u_time = rng.random((S - 1, n), dtype=np.float32)

    # the stage a customer is in (or ended in): stages are processed in order, so a customer moved
    # on to stage u is picked up when stage u's turn comes. Without a horizon it is also the highest.
    code = np.int8 if S + 1 < 127 else np.int16  # int8 while it holds every outcome code: the faster scans
    cur = np.zeros(n, dtype=code)
    highest = np.zeros(n, dtype=code) if timed else cur  # highest stage reached within the horizon
    age = np.zeros(n)  # days since arrival at the customer's latest timed interaction
    stay_total = np.zeros((P, S), dtype=np.int64)
    exits = np.zeros((P, S, 1 + S), dtype=np.int64)
    dropped = np.zeros((P, S), dtype=np.int64)
    conv_times = []
    for p in range(P):
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        if hi <= lo:
            continue
        block = cur[lo:hi]
        for s in range(S - 1):
            # the customers in stage s: everyone at first (a slice: cheaper than an index), then an index
            if s == 0:
                idx: slice | np.ndarray = slice(lo, hi)
                m = hi - lo
            else:
                idx = np.flatnonzero(block == s) + lo
                if idx.size == 0:
                    continue
            u = u_exit[s, idx]
            if s > 0:  # lapse: left on entering the stage, with no interaction there
                lapsed = u < model.lapse[p, s]
                if lapsed.any():
                    dropped[p, s] += np.count_nonzero(age[idx[lapsed]] <= H) if timed else np.count_nonzero(lapsed)
                    kept = ~lapsed
                    idx, u = idx[kept], u[kept]
                m = idx.size
                if m == 0:
                    continue
            outcome = np.zeros(m, dtype=code)  # 0 drop, 1 + u moved to u: thresholds passed
            at_least = np.zeros(2 + S, dtype=np.int64)  # at_least[j]: customers with outcome >= j
            at_least[0] = m
            for j, c in enumerate(tb.exit_thr[p][s], start=1):
                passed = u >= c
                outcome += passed
                at_least[j] = np.count_nonzero(passed)
            counts = at_least[:-1] - at_least[1:]
            exits[p, s] += counts
            moved = outcome > 0
            target = outcome - 1
            plain = tb.plain[p, s]
            if timed or s < conv or (s == 0 and not plain):
                # time to the leaving try: exponential; in the first stage zero with probability q
                e = -np.log1p(-u_time[s, idx])
                if s == 0:
                    e = np.maximum(e + tb.log_stay[p, s], 0.0)
                rate = tb.leave_rate[p, s] if plain else tb.way_rate[p, s][outcome]
                tau = e / rate
                stays = np.count_nonzero(tau > 0) if s == 0 else 0  # the try at arrival stayed
                stay_total[p, s] += stays + _poisson(crng, tb.stay_rate[p, s] * float(tau.sum(dtype=np.float64)))
                t_at = tau if s == 0 else age[idx] + tau
                age[idx] = t_at
                if timed:
                    within = t_at <= H
                    dropped[p, s] += np.count_nonzero(within & ~moved)
                    ok = moved & within
                    highest[_pick(idx, ok)] = target[ok]
                else:
                    dropped[p, s] += counts[0]
                    ok = moved
                if s < conv:
                    c = ok & (target >= conv)
                    conv_times.append(arrive[_pick(idx, c)] + t_at[c])
            else:  # untimed: the staying tries of m customers are negative binomial
                dropped[p, s] += counts[0]
                if plain:
                    stay_total[p, s] += _negative_binomial(crng, m, tb.leave[p, s])
                else:  # per way out: stays before leaving at rate mu_o are geometric
                    odds = tb.way_rate[p, s] / (tb.way_rate[p, s] + tb.stay_rate[p, s])
                    stay_total[p, s] += sum(_negative_binomial(crng, int(k), odds[o])
                                            for o, k in enumerate(counts) if k)
            cur[idx] = np.maximum(target, s)

    at_highest = np.stack([np.bincount(highest[bounds[p]:bounds[p + 1]], minlength=S) for p in range(P)])
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
    week_arr = (arrive * (1 / 7.0)).astype(np.int64)  # truncation = floor: times are >= 0
    week_conv = (conv_time * (1 / 7.0)).astype(np.int64)
    weeks = int(max(week_arr.max(initial=0), week_conv.max(initial=0))) + 1
    return EngineResult(customers=customers, reached=reached, dropped=dropped, interactions=interactions,
                        drop_offs=drop_offs, weekly_arrivals=np.bincount(week_arr, minlength=weeks),
                        weekly_conversions=np.bincount(week_conv, minlength=weeks), conversion_index=conv)


# a stage almost nobody leaves: numpy refuses a negative binomial whose mean passes ~9e18; the count is
# then capped here so that sums over chunks and replications stay within int64
_MAX_STAYS = 1 << 53


def _negative_binomial(rng: np.random.Generator, n: int, p: float) -> int:
    """Staying tries of ``n`` customers who each leave with probability ``p`` per try."""
    if n * (1.0 - p) / p < 1e15:
        return int(rng.negative_binomial(n, p))
    # gamma-Poisson mixture; at this size the Poisson adds nothing (relative sd below 1e-7)
    return int(min(rng.gamma(n, (1.0 - p) / p), _MAX_STAYS))


def _poisson(rng: np.random.Generator, lam: float) -> int:
    if lam < 1e15:
        return int(rng.poisson(lam))
    return int(min(lam, _MAX_STAYS))  # relative sd below 1e-7: the mean itself


def _pick(idx: slice | np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The customers of ``idx`` (a slice or an index array) where ``mask`` holds."""
    if isinstance(idx, slice):
        return idx.start + np.flatnonzero(mask)
    return idx[mask]
