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
Phase-type stays (``Model.phases``) map the same exponential draw e through the way's stay
distribution (t with P(stay > t) = exp(-e), tabulated by sim.phases.unit_table and interpolated):
one uniform per stay as before, so common random numbers hold. Staying tries are still Poisson
given the time; such stays are always timed (their tries are not geometric).

Common random numbers: each chunk of customers has its own stream, and every scenario consumes
the same uniforms in the same order (inverse-CDF draws: persona, arrival, and per stage one for
the lapse on entering it or else the way out, one for the time), so a customer meets the same
luck in the base and in a what-if.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sim import phases
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
        # phase-type stays: per persona x stage with a shaped way out, a table per way out of the stay
        # in days at the exponential quantiles of sim.phases.grid (sim.phases.unit_table x the mean)
        self.shaped = np.zeros((P, S), dtype=bool)
        self.stay_table: dict[tuple[int, int], np.ndarray] = {}
        if model.shaped:
            for p in range(P):
                for s in range(S - 1):
                    if phases.is_exponential(model.phases[p, s]).all():
                        continue
                    self.shaped[p, s] = True
                    with np.errstate(divide="ignore"):
                        mean = np.where(self.way_rate[p, s] > 0, 1.0 / self.way_rate[p, s], 0.0)
                    self.stay_table[(p, s)] = np.stack(
                        [phases.unit_table(model.phases[p, s, o]) * mean[o] for o in range(1 + S)])
        self.persona_cum = np.cumsum(model.persona_share)
        self.persona_cum[-1] = 1.0
        # touchpoint distributions for the aggregate counts: [P,S,T] staying, [P,S,T,1+S] leaving
        self.q_stay, self.q_exit = touchpoint_split(model)


def _run_chunk(model: Model, tb: _Tables, n: int, ss: np.random.SeedSequence,
               horizon: float | None, arrival_days: float) -> EngineResult:
    """One chunk of ``n`` customers: draws, the stage walk, then the touchpoint counts."""
    main_ss, count_ss, agg_ss = ss.spawn(3)
    chunk = _Chunk(model, tb, n, np.random.default_rng(main_ss), np.random.default_rng(count_ss),
                   horizon, arrival_days)
    for p in range(model.n_personas):
        chunk.walk_persona(p)
    interactions, drop_offs = _touchpoint_counts(np.random.default_rng(agg_ss), tb, chunk.stay_total,
                                                 chunk.exits, model.n_touchpoints)
    return chunk.result(interactions, drop_offs)


class _Chunk:
    """One chunk's uniforms and the tallies of its customers' walk through the stages."""

    def __init__(self, model: Model, tb: _Tables, n: int, rng: np.random.Generator, crng: np.random.Generator,
                 horizon: float | None, arrival_days: float) -> None:
        P, S = model.n_personas, model.n_stages
        self.model, self.tb, self.crng = model, tb, crng  # crng: the stays' counts, in walk order
        self.timed = horizon is not None  # with a horizon every stay is timed; without, only the way to conversion
        self.H = np.inf if horizon is None else float(horizon)
        # Personas as contiguous blocks of customers: the count below each cumulative share, from the
        # same uniforms in every scenario, so a changed mix moves only the customers at the borders.
        u_persona = rng.random(n, dtype=np.float32)
        self.bounds = np.zeros(P + 1, dtype=np.int64)
        self.bounds[1:] = [np.count_nonzero(u_persona < c) for c in tb.persona_cum[:-1]] + [n]
        self.arrive = rng.random(n) * arrival_days
        # the same uniforms for every scenario: [stage, customer] for the lapse or way out, and the time
        self.u_exit = rng.random((S - 1, n), dtype=np.float32)
        self.u_time = rng.random((S - 1, n), dtype=np.float32)
        # the stage a customer is in (or ended in): stages are processed in order, so a customer moved
        # on to stage u is picked up when stage u's turn comes. Without a horizon it is also the highest.
        self.code = np.int8 if S + 1 < 127 else np.int16  # int8 while it holds every outcome code: faster scans
        self.cur = np.zeros(n, dtype=self.code)
        self.highest = np.zeros(n, dtype=self.code) if self.timed else self.cur  # highest stage within the horizon
        self.age = np.zeros(n)  # days since arrival at the customer's latest timed interaction
        self.stay_total = np.zeros((P, S), dtype=np.int64)
        self.exits = np.zeros((P, S, 1 + S), dtype=np.int64)
        self.dropped = np.zeros((P, S), dtype=np.int64)
        self.conv_times: list[np.ndarray] = []

    def walk_persona(self, p: int) -> None:
        """Persona p's block of customers through the stages, in order."""
        lo, hi = int(self.bounds[p]), int(self.bounds[p + 1])
        if hi <= lo:
            return
        model, tb = self.model, self.tb
        block = self.cur[lo:hi]
        for s in range(model.n_stages - 1):
            entered = self._entered(p, s, lo, hi, block)
            if entered is None:
                continue
            idx, u, m = entered
            outcome, counts = self._ways_out(p, s, u, m)
            self.exits[p, s] += counts
            if self.timed or s < model.conversion_index or (s == 0 and not tb.plain[p, s]) or tb.shaped[p, s]:
                self._timed_stay(p, s, idx, outcome, counts)
            else:
                self._untimed_stay(p, s, m, counts)
            self.cur[idx] = np.maximum(outcome - 1, s)

    def _entered(self, p: int, s: int, lo: int, hi: int, block: np.ndarray
                 ) -> tuple[slice | np.ndarray, np.ndarray, int] | None:
        """The customers in stage s who did not lapse on entering it, their way-out uniforms, and how many."""
        if s == 0:  # everyone at first (a slice: cheaper than an index)
            return slice(lo, hi), self.u_exit[s, lo:hi], hi - lo
        idx = np.flatnonzero(block == s) + lo
        if idx.size == 0:
            return None
        u = self.u_exit[s, idx]
        lapsed = u < self.model.lapse[p, s]  # left on entering the stage, with no interaction there
        if lapsed.any():
            self.dropped[p, s] += (np.count_nonzero(self.age[idx[lapsed]] <= self.H) if self.timed
                                   else np.count_nonzero(lapsed))
            kept = ~lapsed
            idx, u = idx[kept], u[kept]
        if idx.size == 0:
            return None
        return idx, u, idx.size

    def _ways_out(self, p: int, s: int, u: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Each customer's way out (0 drop, 1 + u moved to u: thresholds passed) and the count per way."""
        outcome = np.zeros(m, dtype=self.code)
        at_least = np.zeros(2 + self.model.n_stages, dtype=np.int64)  # at_least[j]: customers with outcome >= j
        at_least[0] = m
        for j, c in enumerate(self.tb.exit_thr[p][s], start=1):
            passed = u >= c
            outcome += passed
            at_least[j] = np.count_nonzero(passed)
        return outcome, at_least[:-1] - at_least[1:]

    def _timed_stay(self, p: int, s: int, idx: slice | np.ndarray, outcome: np.ndarray, counts: np.ndarray) -> None:
        """A timed stay: the time to the leaving try, the staying tries before it, the horizon, conversions."""
        tb, conv = self.tb, self.model.conversion_index
        moved = outcome > 0
        target = outcome - 1
        # time to the leaving try: exponential; in the first stage zero with probability q
        e = -np.log1p(-self.u_time[s, idx])
        if s == 0:
            e = np.maximum(e + tb.log_stay[p, s], 0.0)
        if tb.shaped[p, s]:  # phase-type: the same exponential quantile mapped through the way's stay
            tau = phases.lookup(tb.stay_table[(p, s)], outcome, e)
        else:
            rate = tb.leave_rate[p, s] if tb.plain[p, s] else tb.way_rate[p, s][outcome]
            tau = e / rate
        stays = np.count_nonzero(tau > 0) if s == 0 else 0  # the try at arrival stayed
        self.stay_total[p, s] += stays + _poisson(self.crng, tb.stay_rate[p, s] * float(tau.sum(dtype=np.float64)))
        t_at = tau if s == 0 else self.age[idx] + tau
        self.age[idx] = t_at
        if self.timed:
            within = t_at <= self.H
            self.dropped[p, s] += np.count_nonzero(within & ~moved)
            ok = moved & within
            self.highest[_pick(idx, ok)] = target[ok]
        else:
            self.dropped[p, s] += counts[0]
            ok = moved
        if s < conv:
            c = ok & (target >= conv)
            self.conv_times.append(self.arrive[_pick(idx, c)] + t_at[c])

    def _untimed_stay(self, p: int, s: int, m: int, counts: np.ndarray) -> None:
        """An untimed stay (past conversion, no horizon): the staying tries of m customers are negative binomial."""
        tb = self.tb
        self.dropped[p, s] += counts[0]
        if tb.plain[p, s]:
            self.stay_total[p, s] += _negative_binomial(self.crng, m, tb.leave[p, s])
        else:  # per way out: stays before leaving at rate mu_o are geometric
            odds = tb.way_rate[p, s] / (tb.way_rate[p, s] + tb.stay_rate[p, s])
            self.stay_total[p, s] += sum(_negative_binomial(self.crng, int(k), odds[o])
                                         for o, k in enumerate(counts) if k)

    def result(self, interactions: np.ndarray, drop_offs: np.ndarray) -> EngineResult:
        """The chunk's counts: reach from the highest stages, weekly arrivals and conversions."""
        P, S, bounds = self.model.n_personas, self.model.n_stages, self.bounds
        at_highest = np.stack([np.bincount(self.highest[bounds[p]:bounds[p + 1]], minlength=S) for p in range(P)])
        reached = np.cumsum(at_highest[:, ::-1], axis=1)[:, ::-1]  # highest >= s
        conv_time = np.concatenate(self.conv_times) if self.conv_times else np.zeros(0)
        week_arr = (self.arrive * (1 / 7.0)).astype(np.int64)  # truncation = floor: times are >= 0
        week_conv = (conv_time * (1 / 7.0)).astype(np.int64)
        weeks = int(max(week_arr.max(initial=0), week_conv.max(initial=0))) + 1
        return EngineResult(customers=np.diff(bounds), reached=reached, dropped=self.dropped,
                            interactions=interactions, drop_offs=drop_offs,
                            weekly_arrivals=np.bincount(week_arr, minlength=weeks),
                            weekly_conversions=np.bincount(week_conv, minlength=weeks),
                            conversion_index=self.model.conversion_index)


def _touchpoint_counts(arng: np.random.Generator, tb: _Tables, stay_total: np.ndarray, exits: np.ndarray,
                       T: int) -> tuple[np.ndarray, np.ndarray]:
    """Touchpoint totals (interactions, drop-offs), drawn in aggregate (same distribution as per interaction)."""
    P, S = stay_total.shape
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
    return interactions, drop_offs


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
    """A Poisson count, its mean itself where numpy cannot draw it."""
    if lam < 1e15:
        return int(rng.poisson(lam))
    return int(min(lam, _MAX_STAYS))  # relative sd below 1e-7: the mean itself


def _pick(idx: slice | np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The customers of ``idx`` (a slice or an index array) where ``mask`` holds."""
    if isinstance(idx, slice):
        return idx.start + np.flatnonzero(mask)
    return idx[mask]
