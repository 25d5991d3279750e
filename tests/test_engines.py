"""Engines against the exact evaluator and each other; capacity; replications; the event log round trip.

Tolerances come from the sample sizes: binomial standard errors for rates (every customer reaches a
stage or not, ends in a stage or not, drops off at a touchpoint or not), and the spread across
replications (batch means, Student t) for interaction counts. Seeds are fixed, so a run either
passes or fails for good; Z keeps a correct engine from failing by bad luck (about 1 in 10^5 per
comparison) while a biased one fails.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy import stats
from typer.testing import CliRunner

from application.events_out import write_event_log
from calibration.calibrate import calibrate
from cli import app
from sim.engines import agents, fast
from sim.engines.events import simulate_rows
from sim.errors import InputError
from sim.exact import evaluate
from sim.simulate import run_replications
from sim.summary import summarize
from tests.worlds import make_world

Z = 4.5
HORIZON = 20.0

MODEL = make_world(3)
EXACT = evaluate(MODEL)
EXACT_H = evaluate(MODEL, horizon_days=HORIZON)


def tp_index(name: str) -> int:
    return MODEL.touchpoints.index(name)


# ---- helpers --------------------------------------------------------------------------------
def assert_rate(k: float, n: float, p: float, what: str, z: float = Z) -> None:
    """k successes out of n agree with probability p within z binomial standard errors."""
    se = math.sqrt(max(p * (1 - p), 1e-12) / n)
    assert abs(k / n - p) <= z * se, f"{what}: {k / n:.5f} vs exact {p:.5f} (se {se:.5f})"


def assert_batch_mean(values: np.ndarray, expected: float, what: str) -> None:
    """Replication values agree with ``expected`` within a t bound on their mean (1e-5 two-sided)."""
    values = np.asarray(values, dtype=float)
    r = values.size
    se = values.std(ddof=1) / math.sqrt(r)
    bound = stats.t.ppf(1 - 0.5e-5, r - 1) * max(se, 1e-12)
    assert abs(values.mean() - expected) <= bound, f"{what}: {values.mean():.5f} vs exact {expected:.5f} (se {se:.5f})"


def total(results):
    out = results[0]
    for r in results[1:]:
        out = out + r
    return out


def check_against_exact(results, exact, *, horizon: bool) -> None:
    tot = total(results)
    n = tot.n
    reach = exact.reach_overall
    for s, name in enumerate(MODEL.stages[1:], start=1):
        assert_rate(tot.reached[:, s].sum(), n, reach[s], f"reach {name}")
        assert_rate(tot.dropped[:, s].sum(), n, exact.persona_share @ exact.dropped[:, s], f"dropped in {name}")
    for p, name in enumerate(MODEL.personas):
        assert_rate(tot.reached[p, MODEL.conversion_index], tot.customers[p], exact.conversion_by_persona[p],
                    f"conversion of {name}")
    assert_rate(tot.customers[0], n, MODEL.persona_share[0], "persona mix")
    # touchpoint counts follow whole journeys, horizon or not (as in the exact evaluator)
    per_customer = exact.persona_share @ exact.interactions.reshape(MODEL.n_personas, -1)
    per_customer = per_customer.reshape(MODEL.n_stages, MODEL.n_touchpoints)
    drops = np.einsum("p,pst->t", exact.persona_share, exact.drop_offs)
    for t, name in enumerate(MODEL.touchpoints):
        assert_batch_mean([r.interactions[:, :, t].sum() / r.n for r in results], per_customer[:, t].sum(),
                          f"interactions at {name}")
        assert_rate(tot.drop_offs[:, :, t].sum(), n, drops[t], f"drop-offs at {name}")
    for s, name in enumerate(MODEL.stages[:-1]):
        assert_batch_mean([r.interactions[:, s].sum() / r.n for r in results], per_customer[s].sum(),
                          f"interactions in {name}")
    assert tot.weekly_arrivals.sum() == n
    if not horizon:
        assert tot.weekly_conversions.sum() == tot.conversions


# ---- fixtures: one set of runs shared by several tests -------------------------------------------
@pytest.fixture(scope="module")
def fast_runs():
    return run_replications(MODEL, 20_000, 11, 20, engine="fast")


@pytest.fixture(scope="module")
def agent_runs():
    return run_replications(MODEL, 1_000, 12, 20, engine="simpy")


# ---- engines vs the exact evaluator ------------------------------------------------------------------
def test_fast_engine_matches_exact(fast_runs):
    check_against_exact(fast_runs, EXACT, horizon=False)


def test_fast_engine_matches_exact_within_horizon():
    results = run_replications(MODEL, 20_000, 13, 20, engine="fast", horizon_days=HORIZON)
    check_against_exact(results, EXACT_H, horizon=True)
    # the horizon really binds: fewer conversions than without it
    assert EXACT_H.conversion_rate < EXACT.conversion_rate - 0.05


def test_simpy_engine_matches_exact(agent_runs):
    check_against_exact(agent_runs, EXACT, horizon=False)


def test_simpy_engine_matches_exact_within_horizon():
    results = run_replications(MODEL, 1_000, 14, 20, engine="simpy", horizon_days=HORIZON)
    check_against_exact(results, EXACT_H, horizon=True)


def test_simpy_without_capacity_agrees_with_fast(fast_runs, agent_runs):
    a, f = total(agent_runs), total(fast_runs)
    for s in range(1, MODEL.n_stages):
        pa_, pf = a.reached[:, s].sum() / a.n, f.reached[:, s].sum() / f.n
        se = math.sqrt(pa_ * (1 - pa_) / a.n + pf * (1 - pf) / f.n)
        assert abs(pa_ - pf) <= Z * se, (MODEL.stages[s], pa_, pf)
    assert a.extras == {} and f.extras == {}


# ---- capacity ---------------------------------------------------------------------------------
def test_ample_capacity_changes_nothing_but_the_clock():
    """Common random numbers: a queue that never forms leaves every customer's journey as it was."""
    free = agents.run(MODEL, 3_000, 5)
    ample = agents.run(MODEL, 3_000, 5, capacity={"ad": {"servers": 10_000, "service_minutes": 1.0,
                                                         "patience_minutes": 5.0}})
    for field in ("customers", "reached", "dropped", "interactions", "drop_offs"):
        assert np.array_equal(getattr(free, field), getattr(ample, field)), field
    q = ample.extras["capacity"]["ad"]
    assert q["abandoned"] == 0 and q["waited"] == 0 and q["max_queue"] == 0
    assert q["requests"] == q["served"] == ample.interactions[:, :, tp_index("ad")].sum()


def test_tight_capacity_lowers_conversion_and_records_abandonment():
    cap = {"ad": {"servers": 1, "service_minutes": 120.0, "patience_minutes": 10.0}}
    results = run_replications(MODEL, 2_000, 6, 2, engine="simpy", capacity=cap)
    tot = total(results)
    p = EXACT.conversion_rate
    assert tot.conversion_rate < p - Z * math.sqrt(p * (1 - p) / tot.n)
    q = tot.extras["capacity"]["ad"]
    t = tp_index("ad")
    assert q["abandoned"] > 0
    assert q["requests"] == q["served"] + q["abandoned"] == tot.interactions[:, :, t].sum()
    assert tot.drop_offs[:, :, t].sum() >= q["abandoned"]
    assert q["settings"] == {"servers": 1, "service_minutes": 120.0, "patience_minutes": 10.0}
    summary = summarize(MODEL, results, EXACT, customers=2_000, seed=6, engine="simpy")
    cs = summary["capacity"]["ad"]
    assert cs["servers"] == 1 and cs["abandoned"] == q["abandoned"]
    assert 0 < cs["utilisation"] <= 1.0 and 0 < cs["abandonment_rate"] < 1 and cs["max_queue"] >= 1
    # exponential service: its sample mean agrees with the setting within sampling error
    assert q["busy_days"] * 1440 / q["served"] == pytest.approx(120.0, rel=Z / math.sqrt(q["served"]))
    # who gave up waited their patience (mean 10), given it ran out before a server freed up: with the
    # server's remaining service Exp(1/120) that mean is 1 / (1/10 + 1/120); more people ahead, closer to 10
    tol = Z / math.sqrt(q["abandoned"])
    assert 1 / (1 / 10 + 1 / 120) * (1 - tol) <= cs["mean_wait_minutes_abandoned"] <= 10.0 * (1 + tol)


@pytest.mark.parametrize("capacity, where", [
    ({"chat": {"servers": 1, "service_minutes": 1.0, "patience_minutes": 1.0}}, "capacity.chat"),
    ({"ad": {"servers": 0, "service_minutes": 1.0, "patience_minutes": 1.0}}, "capacity.ad.servers"),
    ({"ad": {"servers": 2, "service_minutes": -1.0, "patience_minutes": 1.0}}, "capacity.ad.service_minutes"),
    ({"ad": {"servers": 2, "service_minutes": 1.0, "patience_minutes": 1.0, "patience": 1.0}}, "capacity.ad.patience"),
    # the scenario file's rule: patience is required
    ({"ad": {"servers": 2, "service_minutes": 1.0}}, "capacity.ad.patience_minutes"),
])
def test_bad_capacity_is_input_error(capacity, where):
    with pytest.raises(InputError) as err:
        agents.run(MODEL, 10, 1, capacity=capacity)
    assert err.value.where == where


# ---- replications ---------------------------------------------------------------------------------
@pytest.mark.parametrize("engine, n, capacity", [
    ("fast", 5_000, None),
    ("simpy", 400, {"ad": {"servers": 1, "service_minutes": 60.0, "patience_minutes": 10.0}}),
])
def test_parallel_replications_identical(engine, n, capacity):
    one = run_replications(MODEL, n, 21, 3, engine=engine, capacity=capacity, jobs=1)
    two = run_replications(MODEL, n, 21, 3, engine=engine, capacity=capacity, jobs=2)
    for a, b in zip(one, two, strict=True):
        for field in ("customers", "reached", "dropped", "interactions", "drop_offs", "weekly_arrivals",
                      "weekly_conversions"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field
        assert a.extras == b.extras
    assert one[0].conversions != one[1].conversions or not np.array_equal(one[0].reached, one[1].reached)


def test_same_seed_same_result_for_either_engine():
    for run in (fast.run, agents.run):
        a, b = run(MODEL, 500, 3), run(MODEL, 500, 3)
        assert np.array_equal(a.reached, b.reached) and np.array_equal(a.interactions, b.interactions)


# ---- the simulated event log -------------------------------------------------------------------------
def _highest(rows: dict[str, np.ndarray], n: int) -> np.ndarray:
    highest = np.zeros(n, dtype=np.int64)
    np.maximum.at(highest, rows["customer"], rows["stage"])
    return highest


def test_event_rows_match_exact():
    n = 30_000
    rows = simulate_rows(MODEL, n, np.random.SeedSequence(8))
    highest = _highest(rows, n)
    for s in range(1, MODEL.n_stages):
        assert_rate(np.count_nonzero(highest >= s), n, EXACT.reach_overall[s], f"log reach {MODEL.stages[s]}")
    counts = np.bincount(rows["customer"], minlength=n)
    assert counts.min() >= 1  # the first interaction happens at arrival
    expected = float(EXACT.persona_share @ EXACT.interactions.sum(axis=(1, 2)))
    assert abs(counts.mean() - expected) <= Z * counts.std(ddof=1) / math.sqrt(n)
    # stages never move back within a journey, rows are in time order
    same = rows["customer"][1:] == rows["customer"][:-1]
    assert np.all(rows["stage"][1:][same] >= rows["stage"][:-1][same])
    assert np.all(rows["time"][1:][same] >= rows["time"][:-1][same])


def test_event_rows_cut_at_horizon():
    n = 30_000
    rows = simulate_rows(MODEL, n, np.random.SeedSequence(9), horizon=HORIZON)
    first = np.full(n, np.inf)
    np.minimum.at(first, rows["customer"], rows["time"])
    assert np.all(rows["time"] - first[rows["customer"]] <= HORIZON)
    highest = _highest(rows, n)
    for s in range(1, MODEL.n_stages):
        assert_rate(np.count_nonzero(highest >= s), n, EXACT_H.reach_overall[s], f"log reach {MODEL.stages[s]}")


def test_event_log_file(tmp_path):
    path = write_event_log(MODEL, 3_000, 4, tmp_path / "sub" / "events.parquet", horizon_days=60.0)
    table = pq.read_table(path)
    assert table.column_names == ["customer_id", "timestamp", "touchpoint", "stage", "persona"]
    assert pa.types.is_timestamp(table.schema.field("timestamp").type)
    assert pc.count_distinct(table["customer_id"]).as_py() == 3_000
    ts = table["timestamp"].cast(pa.int64()).to_numpy() / 86_400e9 - np.datetime64("2024-01-01", "D").astype(int)
    assert ts.min() >= 0 and ts.max() <= MODEL.arrival_days + 60.0
    assert set(pc.unique(table["stage"].cast(pa.string())).to_pylist()) <= set(MODEL.stages)
    assert sorted(p.name for p in path.parent.iterdir()) == ["events.parquet"]  # no temporary left behind
    again = write_event_log(MODEL, 3_000, 4, tmp_path / "again.parquet", horizon_days=60.0)
    assert pq.read_table(again).equals(table)


@pytest.mark.parametrize("name", ["events.csv", "blocker/events.parquet"])
def test_event_log_bad_path(tmp_path, name):
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(InputError) as err:
        write_event_log(MODEL, 100, 1, tmp_path / name)
    assert err.value.where == "--events-out"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_cli_events_out(tmp_path):
    model = tmp_path / "model.json"
    model.write_text(MODEL.to_json())
    runner = CliRunner()
    res = runner.invoke(app, ["simulate", str(model), "--customers", "2000", "--seed", "3", "--quiet",
                              "--events-out", str(tmp_path / "ev.parquet"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert pq.read_table(tmp_path / "ev.parquet").num_rows > 2000
    bad = runner.invoke(app, ["simulate", str(model), "--customers", "100", "--seed", "3", "--quiet",
                              "--events-out", str(tmp_path / "ev.txt"), "--out", str(tmp_path / "run2")])
    assert bad.exit_code == 2 and "--events-out" in bad.output
    assert not (tmp_path / "run2").exists() and not (tmp_path / "ev.txt").exists()


def test_cli_capacity_scenario_runs_simpy(tmp_path):
    (tmp_path / "model.json").write_text(MODEL.to_json())
    (tmp_path / "s.toml").write_text('name = "thin chat"\nmodel = "model.json"\n\n[capacity.ad]\n'
                                     'servers = 1\nservice_minutes = 90.0\npatience_minutes = 15.0\n')
    res = CliRunner().invoke(app, ["simulate", str(tmp_path / "s.toml"), "--customers", "1500", "--seed", "2",
                                   "--quiet", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["engine"] == "simpy"
    assert summary["capacity"]["ad"]["abandoned"] > 0
    assert summary["conversion_rate"] < summary["expected_conversion_rate"]


def test_round_trip_event_log_to_model(tmp_path):
    """Simulate a log, cut it at a common end (journeys still running are censored), calibrate it."""
    n = 20_000
    path = write_event_log(MODEL, n, 17, tmp_path / "full.parquet")
    table = pq.read_table(path)
    days = table["timestamp"].cast(pa.int64()).to_numpy() / 86_400e9 - np.datetime64("2024-01-01", "D").astype(int)
    cut = table.filter(pa.array(days <= MODEL.arrival_days))
    assert cut.num_rows < table.num_rows  # some journeys really are censored
    pq.write_table(cut, tmp_path / "cut.parquet")
    fitted = calibrate(tmp_path / "cut.parquet")
    assert fitted.personas == MODEL.personas and fitted.stages == MODEL.stages
    got = evaluate(fitted)
    # the fitted model's answer carries the sampling error of n journeys (plus censoring): 4.5 binomial SE
    p = EXACT.conversion_rate
    assert abs(got.conversion_rate - p) <= Z * math.sqrt(p * (1 - p) / n)
    for i, name in enumerate(MODEL.personas):
        p_i, n_i = EXACT.conversion_by_persona[i], n * MODEL.persona_share[i]
        assert abs(got.conversion_by_persona[i] - p_i) <= Z * math.sqrt(p_i * (1 - p_i) / n_i), name
    # the parts, too: the checkout pain point (drop-off 0.35 in consideration) and the gaps between interactions
    c, k = fitted.touchpoints.index("checkout"), MODEL.stage_index("consideration")
    decided = fitted.counts["decided"][:, k, c]
    assert np.all(np.abs(fitted.drop[:, k, c] - 0.35) <= Z * np.sqrt(0.35 * 0.65 / decided))
    gaps = fitted.counts["gaps"][:, :-1]
    assert np.all(np.abs(fitted.rate[:, :-1] / MODEL.rate[:, :-1] - 1) <= Z / np.sqrt(gaps))
