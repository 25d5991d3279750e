"""The estimator recovers a known world, censoring included."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.estimate import estimate
from calibration.load import load_events
from sim.exact import evaluate
from worlds import make_world, simulate_log

Z = 4.5  # |z| bound for per-cell checks: a false alarm over ~100 cells has probability < 1e-3


def _aligned(truth, est):
    """The true arrays reordered to the estimated model's (sorted) touchpoint order."""
    tp = [truth.touchpoints.index(t) for t in est.touchpoints]
    assert est.personas == truth.personas and est.stages == truth.stages
    return truth.share[:, :, tp], truth.drop[:, :, tp], truth.advance[:, :, tp]


def test_conversion_recovered_overall_and_per_persona(world, world_model):
    truth, est = evaluate(world), evaluate(world_model)
    assert abs(est.conversion_rate - truth.conversion_rate) < 0.01
    assert np.all(np.abs(est.conversion_by_persona - truth.conversion_by_persona) < 0.02)
    assert np.all(np.abs(est.reach_overall - truth.reach_overall) < 0.015)


def test_cells_recovered_within_sampling_error(world, world_model):
    share, drop, advance = _aligned(world, world_model)
    c = world_model.counts
    n = c["decided"]
    big = n >= 200
    assert big.sum() > 40  # the check covers many cells
    se = np.sqrt(drop * (1 - drop) / np.maximum(n, 1))
    assert np.all(np.abs(world_model.drop - drop)[big] < Z * se[big] + 1e-9)
    adv_t, adv_e = advance.sum(-1), world_model.advance.sum(-1)
    se = np.sqrt(adv_t * (1 - adv_t) / np.maximum(n, 1))
    assert np.all(np.abs(adv_e - adv_t)[big] < Z * se[big] + 1e-9)
    live = slice(0, world.n_stages - 1)
    ni = c["interactions"].sum(-1, keepdims=True)
    se = np.sqrt(share * (1 - share) / np.maximum(ni, 1))
    assert np.all(np.abs(world_model.share - share)[:, live] < Z * se[:, live] + 1e-3)
    entered = c["entered"][:, 1:-1]
    se = np.sqrt(world.lapse[:, 1:-1] * (1 - world.lapse[:, 1:-1]) / np.maximum(entered, 1))
    assert np.all(np.abs(world_model.lapse[:, 1:-1] - world.lapse[:, 1:-1]) < Z * se)
    gaps = c["gaps"][:, live]
    se = world.rate[:, live] / np.sqrt(np.maximum(gaps, 1))
    assert np.all(np.abs(world_model.rate[:, live] - world.rate[:, live]) < Z * se)


def test_stage_skips_are_estimated(world, world_model):
    _, _, advance = _aligned(world, world_model)
    n = world_model.counts["decided"]
    skip_t, skip_e = advance[:, 0, :, 2], world_model.advance[:, 0, :, 2]
    big = n[:, 0] >= 500
    se = np.sqrt(skip_t * (1 - skip_t) / np.maximum(n[:, 0], 1))
    assert big.sum() > 5
    assert np.all(np.abs(skip_e - skip_t)[big] < Z * se[big] + 1e-9)
    assert world_model.counts["advanced"][:, 0, :, 2].sum() > 100  # skips were really seen


def test_censoring_blind_estimator_is_wrong(world, world_log):
    """Treating in-progress journeys as lost overstates drop-off: this must be visible."""
    log = load_events(world_log)
    blind = estimate(log, inactivity_days=0.0, censoring="window")
    truth = evaluate(world).conversion_rate
    assert truth - evaluate(blind).conversion_rate > 0.015
    assert abs(evaluate(estimate(log)).conversion_rate - truth) < 0.01


def test_log_summary_counts_noise_rows(world_model):
    log = world_model.log_summary
    assert log["customers"] == 40_000
    assert log["backward_rows"] > 1000  # 5 % of staying rows were logged with an earlier stage
    assert log["rows_after_final_stage"] > 100
    assert log["customers_in_progress"] > 1000
    assert log["customers_completed"] + log["customers_ended"] + log["customers_in_progress"] == 40_000


def test_sparse_cells_are_pooled_not_extreme(tmp_path):
    """A cell seen a handful of times gets neither 0 nor 1, and sits near the pooled rate."""
    world = make_world(5)
    events = simulate_log(world, 300, seed=6).events
    path = tmp_path / "small.csv"
    events.to_csv(path, index=False)
    model = estimate(load_events(path))
    c = model.counts["decided"]
    sparse = (c > 0) & (c < 5)
    assert sparse.any()
    assert np.all(model.drop[sparse] > 0) and np.all(model.drop[sparse] < 1)
    unpooled = estimate(load_events(path), pooling=0.0)
    assert np.any((unpooled.drop[sparse] == 0) | (unpooled.drop[sparse] == 1))


@pytest.mark.parametrize("seed", [21, 22])
def test_exact_matches_journeys_walked_one_by_one(seed):
    """The exact evaluator against the independent interaction-by-interaction generator."""
    world = make_world(seed)
    n = 60_000
    journeys = simulate_log(world, n, seed=seed, arrival_days=1.0, observe_days=1e9)
    exact = evaluate(world)
    for s in range(world.n_stages):
        observed = (journeys.highest >= s).mean()
        p = exact.reach_overall[s]
        assert abs(observed - p) < Z * np.sqrt(p * (1 - p) / n) + 1e-12


def test_long_gaps_need_the_cure_model(tmp_path):
    """Mean gaps of 16 days: many customers come back after 30 quiet days.

    The contract's plain inactivity rule then counts them as lost and understates conversion; the
    cure model weighs each quiet journey by the chance it is over and stays within 0.01.
    """
    world = make_world(41)
    world.rate[:, :-1] = 1.0 / 16.0
    path = tmp_path / "long.csv"
    simulate_log(world, 40_000, seed=48, arrival_days=180.0).events.to_csv(path, index=False)
    log = load_events(path)
    truth = evaluate(world).conversion_rate
    cure = estimate(log)
    assert cure.estimator["censoring"] == "cure model"
    assert abs(evaluate(cure).conversion_rate - truth) < 0.01
    assert truth - evaluate(estimate(log, censoring="window")).conversion_rate > 0.02
    dropped = cure.counts["dropped"]
    assert not np.allclose(dropped, np.round(dropped))  # expected counts, not whole journeys
