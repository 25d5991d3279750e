"""Touch sequences (``--touch-order 1``): the next touchpoint depends on the last one in the stage.

Real multi-touch logs repeat channels (a customer who met social meets social again), and first-order
Markov attribution credits channels by such sequences. With touch sequences journey's model is that
chain within each stage, so:
  * on the true model of tests/test_attribution.py's world with strong repeats, journey's exact
    removal effects are the Markov attribution of the true transition matrix (to 1e-9);
  * calibrated with --touch-order 1 from a log of those paths, its removal effects are within 0.03 of
    the Markov attribution counted from the same paths (and the default model, drawing every
    touchpoint afresh, misses by far more: the option matters);
  * every engine (walk, SimPy, the event writer) matches the exact answer, with and without a horizon.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_attribution import (
    CHANNELS,
    W,
    markov_attribution,
    read_paths,
    simulate_paths,
    transition_matrix,
    true_matrix,
    true_model,
    write_log,
)
from typer.testing import CliRunner

from application.context import RunContext
from cli import app
from sim.engines import agents, events, fast
from sim.exact import evaluate
from sim.hotspots import attribution
from sim.model import Model
from sim.scenario import Scenario, apply
from sim.uncertainty import parameter_draws
from worlds import make_world

runner = CliRunner()
REPEAT = 0.6  # P(the next channel is the last one); else drawn by share
Z = 4.5


def repeat_matrix(repeat: float = REPEAT) -> np.ndarray:
    return repeat * np.eye(len(W)) + (1.0 - repeat) * np.tile(W, (len(W), 1))


def sequence_world(seed: int = 11) -> Model:
    """make_world's journey with strong repeats of the last touchpoint in every stage."""
    world = make_world(seed)
    T = world.n_touchpoints
    world.follow = REPEAT * np.eye(T)[None, None] + (1 - REPEAT) * np.array(world.next_rates())
    world.follow[:, -1] = 0.0
    world.check()
    return world


def test_exact_removal_effects_are_markov_attribution_of_the_true_chain():
    model = true_model()
    model.follow = repeat_matrix()[None, None].repeat(2, axis=1)
    model.follow[:, 1] = 0.0
    model.check()
    states, M = true_matrix()
    T = len(CHANNELS)
    M[1:T + 1, 1:T + 1] = (M[1:T + 1, 1:T + 1].sum(1, keepdims=True)) * repeat_matrix()  # stay x P(next | last)
    effect, share = markov_attribution(states, M, CHANNELS)
    rows = {r["touchpoint"]: r for r in attribution(model)}
    for c in CHANNELS:
        assert rows[c]["removal_effect"] == pytest.approx(effect[c], abs=1e-9)
        assert rows[c]["attributed_share"] == pytest.approx(share[c], abs=1e-9)


@pytest.fixture(scope="module")
def repeat_log(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sequences")
    rng = np.random.default_rng(4242)
    paths = simulate_paths(rng, 30_000, W, repeat_matrix())
    write_log(paths, rng, folder / "events.csv")
    return folder


def test_calibrated_touch_sequences_match_markov_attribution_on_the_same_paths(repeat_log):
    folder = repeat_log
    states, M = transition_matrix(read_paths(folder / "events.csv"), CHANNELS)
    effect, share = markov_attribution(states, M, CHANNELS)
    found = {}
    for order in (1, 0):
        out = folder / f"model{order}.json"
        res = runner.invoke(app, ["calibrate", str(folder / "events.csv"), "--stages", "visit,buy",
                                  "--conversion-stage", "buy", "--touch-order", str(order), "--out", str(out)])
        assert res.exit_code == 0, res.output
        found[order] = {r["touchpoint"]: r for r in attribution(Model.load(out))}
    errors = {c: abs(found[1][c]["removal_effect"] - effect[c]) for c in CHANNELS}
    assert max(errors.values()) < 0.03, errors
    assert max(abs(found[1][c]["attributed_share"] - share[c]) for c in CHANNELS) < 0.03
    assert sorted(CHANNELS, key=lambda c: -found[1][c]["removal_effect"]) == sorted(CHANNELS, key=lambda c: -effect[c])
    # drawing every touchpoint afresh overstates the removal effects of repeated channels
    assert max(abs(found[0][c]["removal_effect"] - effect[c]) for c in CHANNELS) > 0.1
    data = json.loads((folder / "model1.json").read_text())
    assert data["estimator"]["touch_order"] == 1
    cell = data["journey"]["all"]["visit"]["touchpoints"]["search"]
    assert cell["next_touchpoint"]["search"] == pytest.approx(REPEAT + (1 - REPEAT) * W[0], abs=0.03)
    assert sum(cell["counts"]["followed_by"].values()) > 1000


@pytest.fixture(scope="module")
def world():
    return sequence_world()


def _z(got: float, want: float, n: int) -> float:
    return abs(got - want) / max(np.sqrt(want * (1 - want) / n), 1e-12)


@pytest.mark.parametrize("horizon", [None, 12.0])
def test_every_engine_matches_the_exact_answer(world, horizon):
    exact = evaluate(world, horizon_days=horizon)
    plain = world.copy()
    plain.follow = None
    assert abs(evaluate(plain, horizon_days=horizon).conversion_rate - exact.conversion_rate) > 0.003  # it matters
    n = 150_000
    walked = fast.run(world, n, 7, horizon_days=horizon)
    assert np.all([_z(walked.reached[:, s].sum() / n, exact.reach_overall[s], n) < Z for s in range(world.n_stages)])
    k = 15_000
    queued = agents.run(world, k, np.random.SeedSequence(8), horizon_days=horizon)
    assert np.all([_z(queued.reached[:, s].sum() / k, exact.reach_overall[s], k) < Z for s in range(world.n_stages)])
    if horizon is None:  # interactions per stage x touchpoint, over the whole journey
        per = walked.interactions / n
        want = np.einsum("p,pst->st", exact.persona_share, exact.interactions)
        se = np.sqrt(np.maximum(want, 1e-3) / n) * 3  # counts per customer vary more than Poisson
        assert np.all(np.abs(per.sum(0) - want) < Z * se + 1e-9)
        rows = events.simulate_rows(world, 20_000, np.random.SeedSequence(9))
        total = len(rows["customer"]) / 20_000
        assert total == pytest.approx(want.sum(), rel=0.03)


def test_exposure_multiplies_own_rates_after_every_touchpoint(world):
    t = world.touchpoint_index("email")
    out = apply(world, Scenario.model_validate({"model": "m", "change": [{"touchpoint": "email", "exposure": 2.0}]}))
    before = world.rate[:, :-1, None, None] * world.follow[:, :-1]
    after = out.rate[:, :-1, None, None] * out.follow[:, :-1]
    others = np.arange(world.n_touchpoints) != t
    assert np.allclose(after[..., t], 2 * before[..., t], rtol=1e-12)
    assert np.allclose(after[..., others], before[..., others], rtol=1e-12)
    removed = apply(world, Scenario.model_validate({"model": "m", "change": [{"touchpoint": "ad", "remove": True}]}))
    assert np.all(removed.follow[..., world.touchpoint_index("ad")] == 0) and np.all(removed.share[..., 0] == 0)
    removed.check()
    with pytest.raises(Exception, match="touch sequences"):
        apply(world, Scenario.model_validate({"model": "m", "speed": [{"stage": "awareness", "factor": 2.0}]}))


def test_round_trip_draws_and_calibration_options(world, tmp_path):
    back = Model.from_dict(json.loads(world.to_json()))
    assert np.allclose(back.follow, world.follow, atol=1e-12)
    assert evaluate(back).conversion_rate == pytest.approx(evaluate(world).conversion_rate, abs=1e-12)
    plain = Model.from_dict(json.loads(make_world(11).to_json()))
    assert plain.follow is None and not plain.sequences
    # draws keep the sequences; rows sum to the calibrated rates
    calibrated = tmp_path / "m.json"
    from test_attribution import write_log as write  # the same log writer, a fresh log

    rng = np.random.default_rng(5)
    write(simulate_paths(rng, 3_000, W, repeat_matrix()), rng, tmp_path / "e.csv")
    res = runner.invoke(app, ["calibrate", str(tmp_path / "e.csv"), "--stages", "visit,buy", "--conversion-stage",
                              "buy", "--touch-order", "1", "--out", str(calibrated)])
    assert res.exit_code == 0, res.output
    model = Model.load(calibrated)
    assert model.sequences and model.plain_dwell
    draws = parameter_draws(model, 20, RunContext(1).stream("draws"))
    assert all(d.sequences for d in draws)
    assert np.allclose(np.mean([d.follow for d in draws], axis=0), model.follow, atol=0.05)
    bad = runner.invoke(app, ["calibrate", str(tmp_path / "e.csv"), "--touch-order", "2", "--out",
                              str(tmp_path / "x.json")])
    assert bad.exit_code == 2 and not (tmp_path / "x.json").exists()


def test_hotspots_say_when_the_model_ignores_the_log_s_sequences(repeat_log):
    for order in (0, 1):  # the calibration test above writes them; on its own this test does
        if not (repeat_log / f"model{order}.json").exists():
            assert runner.invoke(app, ["calibrate", str(repeat_log / "events.csv"), "--stages", "visit,buy",
                                       "--conversion-stage", "buy", "--touch-order", str(order), "--out",
                                       str(repeat_log / f"model{order}.json")]).exit_code == 0
    res = runner.invoke(app, ["hotspots", str(repeat_log / "model0.json"), "--draws", "0"])
    assert res.exit_code == 0, res.output
    assert "--touch-order 1" in res.stdout
    model = Model.load(repeat_log / "model0.json")
    assert [f for f in model.estimator["fallbacks"] if f["kind"] == "touch_order"]
    quiet = runner.invoke(app, ["hotspots", str(repeat_log / "model1.json"), "--draws", "0"])
    assert quiet.exit_code == 0 and "--touch-order 1" not in quiet.stdout
