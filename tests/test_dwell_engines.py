"""Way-out-specific dwell (``Model.leave_speed``) in the fast and SimPy engines and the simulated event log.

A world whose drop-offs linger (speed 0.4..0.7) and whose moves on are quick (1.5..2.5). Without a
horizon, speeds change no reach rate, only how many staying interactions happen; within a horizon
they change who gets how far in time, and in the event log every stay's length is visible. Each
check is also run against the plain model (all speeds 1) and must fail there: the speeds matter.

Tolerances come from the sample sizes as in test_engines.py: binomial standard errors for rates,
a Student t bound on replication means for interaction counts, the sample standard deviation for
mean dwell times. Seeds are fixed; Z keeps a correct engine from failing by bad luck.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sim.engines.events import simulate_rows
from sim.exact import evaluate
from sim.simulate import run_replications
from tests.worlds import make_world

Z = 4.5
HORIZON = 10.0


def speedy_world(seed: int = 3):
    model = make_world(seed)
    rng = np.random.default_rng(seed + 100)
    P, S = model.n_personas, model.n_stages
    for s in range(S - 1):  # ways out of s: 0 drop-off, 1 + u moved to u > s
        model.leave_speed[:, s, 0] = rng.uniform(0.4, 0.7, P)
        model.leave_speed[:, s, s + 2:] = rng.uniform(1.5, 2.5, (P, S - s - 1))
    model.check()
    plain = model.copy()
    plain.leave_speed[:] = 1.0
    return model, plain


MODEL, PLAIN = speedy_world()
EXACT, EXACT_H = evaluate(MODEL), evaluate(MODEL, horizon_days=HORIZON)
PLAIN_EXACT, PLAIN_H = evaluate(PLAIN), evaluate(PLAIN, horizon_days=HORIZON)


# ---- helpers: each returns None when the sample agrees, else what went wrong --------------------
def off_rate(k: float, n: float, p: float, what: str) -> str | None:
    """k successes out of n agree with probability p within Z binomial standard errors."""
    se = math.sqrt(max(p * (1 - p), 1e-12) / n)
    return None if abs(k / n - p) <= Z * se else f"{what}: {k / n:.5f} vs {p:.5f} (se {se:.5f})"


def off_mean(values: np.ndarray, expected: float, what: str, *, t_bound: bool = False) -> str | None:
    """The mean of independent values agrees with ``expected`` (Z SEs, or a 1e-5 t bound for few values)."""
    values = np.asarray(values, dtype=float)
    se = max(values.std(ddof=1) / math.sqrt(values.size), 1e-12)
    bound = (stats.t.ppf(1 - 0.5e-5, values.size - 1) if t_bound else Z) * se
    ok = abs(values.mean() - expected) <= bound
    return None if ok else f"{what}: {values.mean():.5f} vs {expected:.5f} (se {se:.5f})"


def failures(*checks: str | None) -> list[str]:
    return [c for c in checks if c is not None]


def total(results):
    out = results[0]
    for r in results[1:]:
        out = out + r
    return out


# ---- the SimPy engine ------------------------------------------------------------------------------
def simpy_checks(results, exact) -> list[str]:
    tot = total(results)
    n = tot.n
    out = []
    for s in range(1, MODEL.n_stages):
        out.append(off_rate(tot.reached[:, s].sum(), n, exact.reach_overall[s], f"reach {MODEL.stages[s]}"))
        out.append(off_rate(tot.dropped[:, s].sum(), n, exact.persona_share @ exact.dropped[:, s],
                            f"dropped in {MODEL.stages[s]}"))
    for p, name in enumerate(MODEL.personas):
        out.append(off_rate(tot.reached[p, MODEL.conversion_index], tot.customers[p],
                            exact.conversion_by_persona[p], f"conversion of {name}"))
    return failures(*out)


def interaction_checks(results, exact) -> list[str]:
    per_customer = np.einsum("p,pst->st", exact.persona_share, exact.interactions)
    drops = np.einsum("p,pst->t", exact.persona_share, exact.drop_offs)
    tot = total(results)
    out = []
    for s, name in enumerate(MODEL.stages[:-1]):
        out.append(off_mean([r.interactions[:, s].sum() / r.n for r in results], per_customer[s].sum(),
                            f"interactions in {name}", t_bound=True))
    for t, name in enumerate(MODEL.touchpoints):
        out.append(off_mean([r.interactions[:, :, t].sum() / r.n for r in results], per_customer[:, t].sum(),
                            f"interactions at {name}", t_bound=True))
        out.append(off_rate(tot.drop_offs[:, :, t].sum(), tot.n, drops[t], f"drop-offs at {name}"))
    return failures(*out)


def test_speeds_change_only_time_and_stays():
    """The premise of the checks below: same reach without a horizon, different within one."""
    assert np.allclose(EXACT.reach, PLAIN_EXACT.reach)
    assert EXACT_H.conversion_rate > PLAIN_H.conversion_rate + 0.05
    assert EXACT.interactions[:, 0].sum() < PLAIN_EXACT.interactions[:, 0].sum() - 0.1


def test_simpy_engine_matches_exact():
    results = run_replications(MODEL, 1_500, 31, 16, engine="simpy")
    assert failures(*simpy_checks(results, EXACT), *interaction_checks(results, EXACT)) == []
    # the staying interactions follow the speeds: against the plain model's counts the same runs fail
    assert interaction_checks(results, PLAIN_EXACT)


def test_simpy_engine_matches_exact_within_horizon():
    results = run_replications(MODEL, 1_500, 32, 16, engine="simpy", horizon_days=HORIZON)
    assert simpy_checks(results, EXACT_H) == []
    # the timing is what the horizon sees: the plain model's reach within it is far off
    assert any(f.startswith("reach") for f in simpy_checks(results, PLAIN_H))


# ---- the fast engine ---------------------------------------------------------------------------------
def test_fast_engine_matches_exact():
    """Without a horizon, stages after conversion take the untimed path (negative binomial stays per way out)."""
    results = run_replications(MODEL, 100_000, 41, 16, engine="fast")
    assert failures(*simpy_checks(results, EXACT), *interaction_checks(results, EXACT)) == []
    assert interaction_checks(results, PLAIN_EXACT)


def test_fast_engine_matches_exact_within_horizon():
    results = run_replications(MODEL, 100_000, 42, 8, engine="fast", horizon_days=HORIZON)
    assert failures(*simpy_checks(results, EXACT_H), *interaction_checks(results, EXACT_H)) == []
    assert any(f.startswith("reach") for f in simpy_checks(results, PLAIN_H))


# ---- the simulated event log ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rows():
    return simulate_rows(MODEL, 60_000, np.random.SeedSequence(41))


def leaving_rows(rows):
    """For every interaction that left a stage after the arrival: persona, stage, way out, days in the stage."""
    cust, time, after = rows["customer"], rows["time"], rows["stage"]
    first = np.r_[True, cust[1:] != cust[:-1]]
    last = np.r_[cust[1:] != cust[:-1], True]
    before = np.where(first, 0, np.r_[0, after[:-1]])
    moved = after > before
    # a journey ends at a drop-off, or right after a move (lapse, final stage): a last row that did not move
    dropped = last & ~moved
    # the stage before row i was entered at the latest row < i that entered one (the arrival row or a move)
    mark = np.where(first | moved, np.arange(cust.size), -1)
    entered_at = np.r_[-1, np.maximum.accumulate(mark)[:-1]]
    pick = (moved | dropped) & ~first  # leaving at the interaction at arrival takes no time
    way = np.where(moved, 1 + after, 0)
    return (rows["persona"][pick], before[pick], way[pick], time[pick] - time[entered_at[pick]],
            first, moved | dropped, rows["persona"][first])


def dwell_checks(rows, model) -> tuple[list[str], int]:
    persona, stage, way, days, *_ = leaving_rows(rows)
    mu = model.leave_rates()
    out, cells = [], 0
    for p in range(MODEL.n_personas):
        for s in range(MODEL.n_stages - 1):
            for o in range(1 + MODEL.n_stages):
                sample = days[(persona == p) & (stage == s) & (way == o)]
                if sample.size < 300:  # too few for a normal bound on the mean
                    continue
                cells += 1
                out.append(off_mean(sample, 1.0 / mu[p, s, o], f"{MODEL.personas[p]} leaving "
                                    f"{MODEL.stages[s]} by way {o}, mean days"))
    return failures(*out), cells


def test_event_rows_dwell_follows_way_out(rows):
    bad, cells = dwell_checks(rows, MODEL)
    assert cells >= 20 and bad == []
    # with every speed 1 the expected stays are rate * q for every way out: each cell is off
    bad_plain, _ = dwell_checks(rows, PLAIN)
    assert len(bad_plain) == cells


def test_event_rows_first_interaction_leaves_with_q(rows):
    *_, first, left, first_persona = leaving_rows(rows)
    q, _ = MODEL.way_out()
    counts = np.bincount(first_persona, minlength=MODEL.n_personas)
    gone = np.bincount(first_persona[left[first]], minlength=MODEL.n_personas)
    for p, name in enumerate(MODEL.personas):
        assert off_rate(gone[p], counts[p], q[p, 0], f"{name} leaves at arrival") is None


def test_event_rows_reach_within_horizon():
    n = 40_000
    rows = simulate_rows(MODEL, n, np.random.SeedSequence(42), horizon=HORIZON)
    first = np.full(n, np.inf)
    np.minimum.at(first, rows["customer"], rows["time"])
    assert np.all(rows["time"] - first[rows["customer"]] <= HORIZON)
    highest = np.zeros(n, dtype=np.int64)
    np.maximum.at(highest, rows["customer"], rows["stage"])

    def checks(exact):
        return failures(*(off_rate(np.count_nonzero(highest >= s), n, exact.reach_overall[s],
                                   f"log reach {MODEL.stages[s]}") for s in range(1, MODEL.n_stages)))

    assert checks(EXACT_H) == []
    assert len(checks(PLAIN_H)) >= 3
