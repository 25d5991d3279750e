"""Phase-type stays (``--dwell phases``) against known-truth worlds with non-exponential stays.

The worlds come from tests/worlds.py: ``with_phases`` gives every stay an Erlang-mixture shape and
``simulate_log`` then walks each journey by drawing the whole stay on entering a stage (gamma draws
from the arrays alone, not sim.phases or sim.exact); ``lognormal_sigma`` makes stays that are not
phase-type at all. Tolerances: binomial standard errors (Z = 4.5 per checked number) for rates
against the exact answer; the recovered shapes within stated relative errors (a fit of 20 k
censored customers; skip ways, thin and shrunk toward the plain model, are left out).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from calibration.estimate import estimate
from calibration.load import load_events
from sim import phases as ph
from sim.engines import agents, fast
from sim.engines.events import simulate_rows
from sim.errors import InputError, ModelError
from sim.exact import evaluate, generator
from sim.model import Model
from sim.scenario import Scenario, apply
from sim.uncertainty import describe, parameter_draws
from worlds import make_world, simulate_log, with_leave_speeds, with_phases

Z = 4.5
SHAPE = [0.2, 0.0, 0.3, 0.0, 0.5]  # 20 % exponential stays, 30 % Erlang-3, 50 % Erlang-5
WORLD = with_phases(with_leave_speeds(make_world(301), seed=301), SHAPE)


def _exponential(model: Model) -> Model:
    out = model.copy()
    out.phases = None
    return out


WAY_OUT = _exponential(WORLD)


def _off(got: np.ndarray, want: np.ndarray, n: int) -> np.ndarray:
    """|got - want| in binomial standard errors of n customers."""
    se = np.sqrt(np.maximum(want * (1 - want), 1e-12) / n)
    return np.abs(got - want) / se


# ---- the shape itself ---------------------------------------------------------------------------
def test_phase_math_matches_scipy_gamma_mixture():
    """cdf, quantiles and the fast engine's table are the Erlang mixture's (scipy's gamma)."""
    w = np.array(SHAPE)
    mean = 7.0
    lam = ph.kbar(w) / mean
    t = np.array([0.1, 1.0, 5.0, 7.0, 20.0, 60.0])
    want = sum(wk * stats.gamma.cdf(t, k + 1, scale=1 / lam) for k, wk in enumerate(w))
    assert np.allclose(ph.cdf(w, t, mean), want, atol=1e-12)
    for p in (0.01, 0.1, 0.5, 0.9, 0.999):
        q = ph.quantile(w, p, mean)
        assert abs(ph.cdf(w, q, mean) - p) < 1e-4, p
    # the table maps the exponential quantile e to the stay with P(stay > t) = exp(-e)
    table = ph.unit_table(w) * mean
    e = ph.grid()[1::200]
    assert np.allclose(1 - ph.cdf(w, table[1::200], mean), np.exp(-e), rtol=1e-6, atol=1e-12)
    assert np.array_equal(ph.unit_table(np.array([1.0])), ph.grid())  # one phase: e itself
    # the fast engine's lookup is np.interp on the geometric grid, per way out's row
    tables = np.stack([table, ph.grid() * 3.0])
    e = np.random.default_rng(1).exponential(size=10_000)
    rows = np.arange(e.size) % 2
    want = np.where(rows == 0, np.interp(np.minimum(e, ph.E_MAX), ph.grid(), table), 3.0 * np.minimum(e, ph.E_MAX))
    assert np.allclose(ph.lookup(tables, rows, e), want, rtol=1e-12, atol=1e-12)
    assert np.allclose(ph.exit_probs(w), [0.2, 0.0, 0.375, 0.0, 1.0])


def test_eventual_answers_are_the_way_out_models():
    """Phases change when customers leave, never where to: no-horizon answers are identical."""
    a, b = evaluate(WORLD), evaluate(WAY_OUT)
    for name in ("reach", "dropped", "interactions", "drop_offs", "flow"):
        assert np.allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-15), name
    # a long horizon reaches the same end points through the phase chain
    assert np.allclose(evaluate(WORLD, horizon_days=5000).reach, a.reach, atol=1e-8)
    # and the horizon answers differ: a dead time before leaving
    assert evaluate(WORLD, horizon_days=3).conversion_rate < evaluate(WAY_OUT, horizon_days=3).conversion_rate - 0.02


def test_generator_states_keep_their_stage():
    """Chain(Q, start, stage_of): rows sum to 0, start sums to 1, each phase state belongs to its stage."""
    chain = generator(WORLD, 0)
    assert np.allclose(chain.Q.sum(1), 0.0, atol=1e-12)
    assert abs(chain.start.sum() - 1.0) < 1e-12
    live = chain.stage_of < WORLD.n_stages - 1
    assert chain.Q.shape[0] > WAY_OUT.n_stages * (1 + WAY_OUT.n_stages)  # phases expand the states
    assert set(chain.stage_of[live][:-len(chain.ended)]) <= set(range(WORLD.n_stages - 1))


# ---- the exact horizon answer against walked journeys and every engine -------------------------------
@pytest.fixture(scope="module")
def walked():
    """30 k journeys of WORLD, followed to their end, their stays drawn whole (gamma) by the generator."""
    return simulate_log(WORLD, 30_000, seed=411, arrival_days=1.0, observe_days=1e9)


def test_exact_horizon_matches_walked_journeys(walked):
    misses = 0
    for h in (2.0, 6.0, 15.0, 45.0):
        exact, expo = evaluate(WORLD, horizon_days=h), evaluate(WAY_OUT, horizon_days=h)
        for p in range(WORLD.n_personas):
            mine = walked.persona == p
            got = (walked.reach_days[mine] <= h).mean(axis=0)
            assert np.all(_off(got, exact.reach[p], int(mine.sum())) < Z), (h, p, got, exact.reach[p])
            misses += int((_off(got, expo.reach[p], int(mine.sum())) >= Z).sum())
    assert misses >= 10  # power: exponential stays of the same means fail it


@pytest.mark.parametrize("h", [3.0, 12.0])
def test_fast_engine_matches_exact_horizon(h):
    n = 300_000
    r = fast.run(WORLD, n, 21, horizon_days=h)
    got = r.reached.sum(0) / n
    assert np.all(_off(got, evaluate(WORLD, horizon_days=h).reach_overall, n) < Z)
    assert np.any(_off(got, evaluate(WAY_OUT, horizon_days=h).reach_overall, n) >= Z)


def test_fast_engine_without_horizon_matches_exact_counts():
    """No horizon: reach as the way-out model, and staying interactions (Poisson given the time) per stage."""
    n = 300_000
    r = fast.run(WORLD, n, 22)
    exact = evaluate(WORLD)
    assert np.all(_off(r.reached.sum(0) / n, exact.reach_overall, n) < Z)
    per_stage = r.interactions.sum((0, 2)) / n
    want = (WORLD.persona_share @ exact.interactions.sum(-1))
    assert np.all(np.abs(per_stage - want) < 0.01 * want + 1e-9), (per_stage, want)


def test_simpy_engine_matches_exact_horizon():
    n, h = 8_000, 10.0
    r = agents.run(WORLD, n, 23, horizon_days=h)
    got = r.reached.sum(0) / n
    assert np.all(_off(got, evaluate(WORLD, horizon_days=h).reach_overall, n) < Z), got


def test_event_writer_matches_exact_horizon():
    n, h = 60_000, 8.0
    rows = simulate_rows(WORLD, n, np.random.SeedSequence(24), horizon=h)
    highest = np.zeros(n, dtype=np.int64)
    np.maximum.at(highest, rows["customer"], rows["stage"])
    got = np.array([(highest >= s).mean() for s in range(WORLD.n_stages)])
    assert np.all(_off(got, evaluate(WORLD, horizon_days=h).reach_overall, n) < Z), got
    assert np.any(_off(got, evaluate(WAY_OUT, horizon_days=h).reach_overall, n) >= Z)


def test_engines_reproducible_with_phases():
    a, b = fast.run(WORLD, 50_000, 5, horizon_days=4.0), fast.run(WORLD, 50_000, 5, horizon_days=4.0)
    assert np.array_equal(a.reached, b.reached) and np.array_equal(a.interactions, b.interactions)


# ---- the estimator on censored worlds ------------------------------------------------------------------
def _fit(tmp_path_factory, world: Model, name: str, **kw) -> tuple[Model, Model]:
    path = tmp_path_factory.mktemp(name) / "events.csv"
    simulate_log(world, 20_000, seed=412, arrival_days=180.0, observe_days=180.0, **kw).events.to_csv(path, index=False)
    log = load_events(path)
    return estimate(log, dwell="phases"), estimate(log, dwell="way_out")


@pytest.fixture(scope="module")
def erlang_fit(tmp_path_factory):
    """An Erlang-4 world (three personas, speeds per way out), 20 k customers over 180 days, cut at day 180."""
    world = with_phases(with_leave_speeds(make_world(302), seed=302), 4)
    return (world, *_fit(tmp_path_factory, world, "erlang"))


def _main_ways(world: Model):
    """(p, s, o) of ways out taken by at least 15 % of a stage's visits, skips left out."""
    _, way = world.way_out()
    for p in range(world.n_personas):
        for s in range(world.n_stages - 1):
            for o in (0, s + 2):
                if way[p, s, o] >= 0.15:
                    yield p, s, o


def test_phases_recover_erlang_shape(erlang_fit):
    """Mean and median of each main way's stay within 10 % (median error over the ways within 3 %)."""
    world, fitted, _ = erlang_fit
    with np.errstate(divide="ignore"):  # ways a stage does not have: rate 0
        true_mean, fit_mean = 1 / world.leave_rates(), 1 / fitted.leave_rates()
    errs = []
    for p, s, o in _main_ways(world):
        for q in (None, 0.5):
            want = true_mean[p, s, o] if q is None else ph.quantile(world.phases[p, s, o], q, true_mean[p, s, o])
            got = fit_mean[p, s, o] if q is None else ph.quantile(fitted.phases[p, s, o], q, fit_mean[p, s, o])
            errs.append(abs(got / want - 1))
    assert len(errs) >= 20
    assert max(errs) < 0.10 and float(np.median(errs)) < 0.03, np.round(errs, 3)
    # the phase count BIC chose for the main ways is the truth's (4) or a mixture close to it
    assert 3.0 <= float(np.median([ph.kbar(fitted.phases[c]) for c in _main_ways(world)])) <= 6.0


def test_phases_horizon_answers_match_the_truth(erlang_fit):
    """P(conversion within h days): the phase fit within 0.015 of the truth; exponential stays miss early.

    0.015: on the same world with exponential stays, --dwell way_out itself misses by up to 0.009 at
    1-3 days (20 k customers, seeds 412 and 413), an error the shapes do not add to.
    """
    world, fitted, way_out = erlang_fit
    for h in (3.0, 10.0, 30.0, 90.0):
        truth = evaluate(world, horizon_days=h).conversion_rate
        assert abs(evaluate(fitted, horizon_days=h).conversion_rate - truth) < 0.015, h
    truth3 = evaluate(world, horizon_days=3.0).conversion_rate
    assert evaluate(way_out, horizon_days=3.0).conversion_rate - truth3 > 0.04
    assert abs(evaluate(fitted).conversion_rate - evaluate(world).conversion_rate) < 0.01


def test_phases_approximate_lognormal_stays(tmp_path_factory):
    """Stays that are no phase-type (lognormal, sigma 0.6): horizon answers within 0.015 of a
    100 k-journey walk of the same world; the exponential fit misses the early ones."""
    world = with_leave_speeds(make_world(303), seed=303)
    fitted, way_out = _fit(tmp_path_factory, world, "lognormal", lognormal_sigma=0.6)
    truth = simulate_log(world, 100_000, seed=413, arrival_days=1.0, observe_days=1e9, lognormal_sigma=0.6)
    conv = world.conversion_index
    for h in (3.0, 10.0, 30.0):
        want = float((truth.reach_days[:, conv] <= h).mean())
        assert abs(evaluate(fitted, horizon_days=h).conversion_rate - want) < 0.015, h
    want3 = float((truth.reach_days[:, conv] <= 3.0).mean())
    assert evaluate(way_out, horizon_days=3.0).conversion_rate - want3 > 0.03


def test_phase_fit_keeps_per_interaction_meaning(erlang_fit):
    """share, drop_off and advance stay the per-interaction probabilities: eventual answers as way_out's."""
    _, fitted, way_out = erlang_fit
    assert abs(evaluate(fitted).conversion_rate - evaluate(way_out).conversion_rate) < 0.005
    assert fitted.estimator["dwell"].startswith("phases")
    assert fitted.estimator["dwell_phases"]


# ---- the model file, scenarios, parameter draws, options ---------------------------------------------
def test_model_json_keeps_shapes_readable_and_reads_them_back(erlang_fit, tmp_path):
    _, fitted, _ = erlang_fit
    data = json.loads(fitted.to_json())
    rec = data["journey"][fitted.personas[0]][fitted.stages[0]]["dwell_shape"]["drop_off"]
    assert set(rec) == {"phases", "weights", "mean_days", "p10_days", "p50_days", "p90_days"}
    assert rec["p10_days"] < rec["p50_days"] < rec["p90_days"] and len(rec["weights"]) == rec["phases"]
    back = Model.from_dict(data)
    K = back.phases.shape[-1]
    assert np.allclose(back.phases, fitted.phases[..., :K], atol=1e-11)
    assert abs(evaluate(back, horizon_days=7).conversion_rate - evaluate(fitted, horizon_days=7).conversion_rate) < 1e-9
    # old files have no dwell_shape: exponential stays, as before
    for stages in data["journey"].values():
        for st in stages.values():
            st.pop("dwell_shape")
    assert Model.from_dict(data).phases is None
    bad = json.loads(fitted.to_json())
    bad["journey"][fitted.personas[0]][fitted.stages[0]]["dwell_shape"]["drop_off"]["weights"] = [0.5, 0.2]
    with pytest.raises(ModelError, match="dwell_shape.drop_off.weights"):
        Model.from_dict(bad)


def test_speed_scenario_scales_every_phase_rate():
    sc = Scenario.model_validate({"model": "model.json", "speed": [{"stage": "consideration", "factor": 2.0}]})
    out = apply(WORLD, sc)
    s = WORLD.stage_index("consideration")
    ways = WORLD.ways(s)
    assert np.allclose(out.phase_rates()[:, s, ways], 2.0 * WORLD.phase_rates()[:, s, ways])
    assert np.array_equal(out.phases, WORLD.phases)
    assert evaluate(out, horizon_days=5).conversion_rate > evaluate(WORLD, horizon_days=5).conversion_rate
    assert abs(evaluate(out).conversion_rate - evaluate(WORLD).conversion_rate) < 1e-12


def test_parameter_draws_draw_the_shapes_within_the_fitted_phase_counts(erlang_fit):
    _, fitted, _ = erlang_fit
    draws = parameter_draws(fitted, 4, np.random.default_rng(3))
    assert all(d.phases.shape == fitted.phases.shape and np.all(d.phases[fitted.phases == 0] == 0) for d in draws)
    assert not all(np.array_equal(d.phases, fitted.phases) for d in draws)
    values = [evaluate(d, horizon_days=10).conversion_rate for d in draws]
    assert np.std(values) > 0 and all(math.isfinite(v) for v in values)
    assert "phase-type" in describe(fitted, 4)["not_included"]


def test_touch_sequences_refuse_phases(erlang_fit, tmp_path):
    path = tmp_path / "tiny.csv"
    simulate_log(make_world(5), 300, seed=5).events.to_csv(path, index=False)
    with pytest.raises(InputError, match="--dwell"):
        estimate(load_events(path), dwell="phases", touch_order=1)
    _, fitted, _ = erlang_fit
    seq = fitted.copy()
    seq.follow = np.broadcast_to(seq.share[:, :, None, :], seq.share.shape[:2] + (seq.n_touchpoints,) * 2).copy()
    seq.leave_speed[:] = 1.0
    with pytest.raises(ModelError, match="one phase"):
        seq.check()


def test_cli_dwell_phases(tmp_path):
    """`calibrate --dwell phases` writes shapes; with --touch-order 1 it is one line, exit 2, nothing written."""
    from typer.testing import CliRunner

    from cli import app
    from conftest import DEMO_EVENTS

    runner = CliRunner()
    out = tmp_path / "m.json"
    bad = runner.invoke(app, ["calibrate", str(DEMO_EVENTS), "--out", str(out), "--dwell", "phases",
                              "--touch-order", "1"])
    assert bad.exit_code == 2 and not out.exists()
    assert "--dwell" in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output
    ok = runner.invoke(app, ["calibrate", str(DEMO_EVENTS), "--out", str(out), "--dwell", "phases"])
    assert ok.exit_code == 0, ok.output
    model = Model.load(out)
    assert model.phases is not None and model.estimator["dwell"].startswith("phases")
    assert model.provenance["arguments"]["dwell"] == "phases"
    seq = runner.invoke(app, ["calibrate", str(DEMO_EVENTS), "--out", str(tmp_path / "s.json"), "--touch-order", "1"])
    assert seq.exit_code == 0 and Model.load(tmp_path / "s.json").sequences  # no --dwell: plain, as before


def test_a_scenario_chain_keeps_the_base_states():
    """A what-if that closes a way out keeps the state space (customers in progress carry over)."""
    out = WORLD.copy()
    out.drop[:, 0] = 0.0  # nobody drops off in the first stage any more: that way out is not taken
    assert (out.way_out()[1][:, 0, 0] == 0).all()
    for p in range(WORLD.n_personas):
        a, b = generator(WORLD, p), generator(out, p)
        assert a.Q.shape == b.Q.shape and np.array_equal(a.stage_of, b.stage_of)


def test_quiet_rows_weighed_in_blocks_give_the_same_model(tmp_path, monkeypatch):
    """The phase fit weighs quiet rows a block at a time (bounded memory); any block size, the same model."""
    from calibration import phases as phase_fit

    world = with_phases(with_leave_speeds(make_world(302), seed=302), 4)
    path = tmp_path / "events.csv"
    simulate_log(world, 3_000, seed=5, arrival_days=90.0, observe_days=90.0).events.to_csv(path, index=False)
    log = load_events(path)
    whole = estimate(log, dwell="phases")
    monkeypatch.setattr(phase_fit, "QUIET_BLOCK", 97)
    assert estimate(log, dwell="phases").to_dict() == whole.to_dict()
    assert whole.phases.shape[-1] > 1  # the shapes were fitted, not the exponential shortcut
