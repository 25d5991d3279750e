"""Way-out-specific dwell ("leave speed") against known-truth worlds walked interaction by interaction.

The worlds come from tests/worlds.py: ``with_leave_speeds`` makes moving on 1.2-2.5 times and
dropping off 0.4-0.8 times as fast as the plain model, and ``simulate_log`` walks such a world
one interaction at a time without the product's engines or sim.exact.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from calibration.backtest import backtest
from calibration.estimate import DEFAULT_POOLING, estimate
from calibration.load import load_events
from sim.errors import ModelError
from sim.exact import evaluate
from sim.model import Model
from worlds import make_world, simulate_log, with_leave_speeds

Z = 4.5  # |z| bound per checked cell: over ~100 cells a false alarm has probability < 1e-3
SPLIT = "2024-05-30"  # day 150 of a log that starts 2024-01-01


def _plain(model: Model) -> Model:
    out = model.copy()
    out.leave_speed[:] = 1.0
    return out


# ---- the exact answers against walked journeys -----------------------------------------------------
@pytest.fixture(scope="module")
def walked():
    """40 k journeys of a world with leave speeds, followed to their end (no censoring)."""
    world = with_leave_speeds(make_world(301), seed=301)
    assert not world.plain_dwell
    return world, simulate_log(world, 40_000, seed=401, arrival_days=1.0, observe_days=1e9)


def test_exact_horizon_matches_walked_journeys(walked):
    """evaluate(model, horizon_days=h) is P(reach s within h days of arrival): compare per persona."""
    world, journeys = walked
    reach_days = journeys.reach_days
    assert np.array_equal(np.isfinite(reach_days), journeys.highest[:, None] >= np.arange(world.n_stages))
    plain_misses = 0
    for h in (1.0, 5.0, 15.0, 45.0, 120.0, None):
        exact, plain = evaluate(world, horizon_days=h), evaluate(_plain(world), horizon_days=h)
        for p in range(world.n_personas):
            mine = journeys.persona == p
            k = int(mine.sum())
            reached = np.isfinite(reach_days[mine]) if h is None else reach_days[mine] <= h
            observed = reached.mean(axis=0)
            want = exact.reach[p]
            tol = Z * np.sqrt(want * (1 - want) / k) + 1e-12
            assert np.all(np.abs(observed - want) < tol), (h, p, observed, want)
            plain_misses += int((np.abs(observed - plain.reach[p]) >= tol).sum())
    # the check has power: the plain model's horizon answers (same end points, other timing) fail it
    assert plain_misses >= 20


def test_exact_interactions_and_drop_offs_match_walked_journeys(walked):
    """Expected interactions and drop-offs per stage x touchpoint: stays come at rate * (1 - q)."""
    world, journeys = walked
    S, T = world.n_stages, world.n_touchpoints
    ev = journeys.events
    cid = ev["customer_id"].str.slice(1).astype(np.int64).to_numpy()
    order = np.argsort(cid, kind="stable")  # rows are in time order: keep it within a customer
    cid = cid[order]
    after = ev["stage"].map({name: i for i, name in enumerate(world.stages)}).to_numpy()[order]
    tp = ev["touchpoint"].map({name: i for i, name in enumerate(world.touchpoints)}).to_numpy()[order]
    first = np.r_[True, cid[1:] != cid[:-1]]
    last = np.r_[cid[1:] != cid[:-1], True]
    before = np.where(first, 0, np.r_[0, after[:-1]])
    live = before < S - 1
    n = journeys.persona.size
    cell = before * T + tp
    per_customer = np.zeros((n, S * T))
    np.add.at(per_customer, (cid[live], cell[live]), 1.0)
    dropped = np.zeros((n, S * T))
    ends = last & live & (after == before)  # a last interaction that did not move on ended the journey
    np.add.at(dropped, (cid[ends], cell[ends]), 1.0)
    exact = evaluate(world)
    for got, want in ((per_customer, exact.interactions), (dropped, exact.drop_offs)):
        for p in range(world.n_personas):
            mine = got[journeys.persona == p]
            w = want[p].ravel()
            # sample SE, at least the Poisson one of the expected count (a rare cell may show no rows)
            se = np.maximum(mine.std(axis=0), np.sqrt(w)) / np.sqrt(len(mine))
            mean = mine.mean(axis=0)
            assert np.all(np.abs(mean - w) < Z * se + 1e-12), np.round((mean - w) / np.maximum(se, 1e-12), 1)
    # power: the plain model's expected interactions differ (dwell changes how many stays happen)
    plain = evaluate(_plain(world)).interactions[0].ravel()
    mine = per_customer[journeys.persona == 0]
    assert np.any(np.abs(mine.mean(axis=0) - plain) > Z * mine.std(axis=0) / np.sqrt(len(mine)))


# ---- the estimator on a censored semi-Markov world -----------------------------------------------
@pytest.fixture(scope="module")
def dwell_world(tmp_path_factory):
    """40 k customers arriving over 180 days, log cut at day 180 (many journeys in progress).

    make_world's three personas, stage skips and checkout pain point, with way-out speeds.
    """
    world = with_leave_speeds(make_world(302), seed=302)
    path = tmp_path_factory.mktemp("dwell") / "events.csv"
    simulate_log(world, 40_000, seed=402, arrival_days=180.0, observe_days=180.0).events.to_csv(path, index=False)
    log = load_events(path)
    fitted, plain = estimate(log), estimate(log, dwell="plain")
    assert fitted.personas == world.personas and fitted.stages == world.stages
    assert fitted.log_summary["customers_in_progress"] > 2_000
    return world, fitted, plain


def _shrunk(truth_rate: np.ndarray, events: np.ndarray, prior: np.ndarray, m: float = DEFAULT_POOLING) -> np.ndarray:
    """What the estimator aims at: the true rate after shrinking toward ``prior`` with m pseudo-exits."""
    with np.errstate(divide="ignore", invalid="ignore"):  # the final stage has no rates: never checked
        return truth_rate * (events + m) / (events + m * truth_rate / prior)


def test_leave_rates_and_speed_ratios_recovered_under_censoring(dwell_world):
    """Per way out, the leave rate rate * q * speed is what a log shows: recovered to ~1/sqrt(exits).

    The speeds alone are not: in a stage entered by a move, (rate, q, speed) and (rate', q', speed')
    with equal rate * (1 - q) and rate * q * speed give the same journeys, so the speeds are checked
    as ratios within a stage (= ratios of leave rates), with relative SE sqrt(1/e_o + 1/e_drop).
    """
    world, fitted, plain = dwell_world
    S = world.n_stages
    events = fitted.counts["leave_events"]
    _, way = world.way_out()
    q_fit, _ = fitted.way_out()
    prior = (fitted.rate * q_fit)[..., None]
    target = _shrunk(world.leave_rates(), events, prior)
    cells = (way > 0) & (events >= 200)
    cells[:, S - 1] = False
    assert cells.sum() >= 25
    rel = fitted.leave_rates() / target - 1.0
    z = rel[cells] * np.sqrt(events[cells])
    assert np.all(np.abs(z) < Z), np.round(z, 2)

    # speed ratio to the drop-off way of the same stage
    pairs = cells & cells[..., :1]
    pairs[..., 0] = False
    assert pairs.sum() >= 15
    tol = Z * np.sqrt(1.0 / np.maximum(events, 1.0) + 1.0 / np.maximum(events[..., :1], 1.0))

    def ratio_error(model: Model) -> np.ndarray:
        got = model.leave_speed / model.leave_speed[..., :1]
        want = target / target[..., :1]
        return np.abs(got / want - 1.0)

    assert np.all(ratio_error(fitted)[pairs] < tol[pairs]), np.round(ratio_error(fitted)[pairs] / tol[pairs], 2)
    # the check has power: speeds of 1 (dwell="plain") miss in most cells
    assert np.all(plain.leave_speed == 1.0)
    assert (ratio_error(plain)[pairs] >= tol[pairs]).mean() > 0.8


@pytest.fixture(scope="module")
def plain_world(tmp_path_factory):
    """A world without way-out speeds, its censored log fitted both ways: (truth, way_out fit, plain fit)."""
    world = make_world(303)
    assert world.plain_dwell
    path = tmp_path_factory.mktemp("plain") / "plain.csv"
    simulate_log(world, 30_000, seed=403, arrival_days=180.0, observe_days=180.0).events.to_csv(path, index=False)
    log = load_events(path)
    return world, estimate(log), estimate(log, dwell="plain")


def test_plain_world_gives_speeds_of_one(plain_world):
    world, fitted, _ = plain_world
    events = fitted.counts["leave_events"]
    _, way = world.way_out()
    cells = (way > 0) & (events >= 200)
    cells[:, -1] = False
    assert cells.sum() >= 20
    # speed = leave rate / (rate * q), both estimated: relative SE from the exits and the stage's gaps
    gaps = fitted.counts["gaps"][..., None] * np.ones_like(events)
    tol = Z * np.sqrt(1.0 / np.maximum(events, 1) + 1.0 / np.maximum(gaps, 1))
    err = np.abs(fitted.leave_speed - 1.0)
    assert np.all(err[cells] < tol[cells]), np.round(err[cells] / tol[cells], 2)
    assert np.all((fitted.leave_speed > 0.5) & (fitted.leave_speed < 2.0))  # thin cells stay near 1


def test_conversion_by_age_from_a_semi_markov_log(dwell_world):
    """Reach within 14, 30, 60 days of arrival: the default fit is close to the truth, dwell="plain" is not.

    Tolerance 4.5 binomial SEs of 40 k customers (~0.011 at p = 0.45); fitted from the complete
    version of this log (observed to day 2000) they stay within 0.006.
    """
    world, fitted, plain = dwell_world
    n = fitted.log_summary["customers"]
    conv = world.conversion_index
    plain_off = []
    for h in (14.0, 30.0, 60.0):
        truth = evaluate(world, horizon_days=h).reach_overall
        tol = Z * np.sqrt(truth * (1 - truth) / n) + 1e-12
        err = evaluate(fitted, horizon_days=h).reach_overall - truth
        assert np.all(np.abs(err[1:]) < tol[1:]), (h, np.round(err, 4), np.round(tol, 4))
        plain_off.append(abs(evaluate(plain, horizon_days=h).reach_overall[conv] - truth[conv]) / tol[conv])
    assert max(plain_off) > 1.0, plain_off  # the test can fail: ignoring way-out dwell misses


# ---- what the model's probabilities mean -----------------------------------------------------------
WHAT_IFS = [
    {"touchpoint": "checkout", "stage": "consideration", "drop_off": 0.7},
    {"touchpoint": "web", "advance": 1.2},
    {"touchpoint": "email", "exposure": 2.0},
    {"touchpoint": "ad", "remove": True},
    {"touchpoint": "ad", "lose_journeys": True},
    {"touchpoint": "email", "drop_off": 10.0},  # reaches the cap: depends on what drop_off means
]


def _per_interaction(model: Model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the model implies per interaction: (share, P(ends the journey), P(moves on)) per cell."""
    ex = evaluate(model)
    inter = ex.interactions
    with np.errstate(divide="ignore", invalid="ignore"):
        share = inter / inter.sum(-1, keepdims=True)
        drop = ex.drop_offs / inter
        flow_tp = np.einsum("pso,psto->pst", ex.flow[..., 1:], _exit_split(model)[..., 1:])
        adv = flow_tp / inter
    return share, drop, adv


def _exit_split(model: Model) -> np.ndarray:
    from sim.exact import touchpoint_split

    return touchpoint_split(model)[1]


def test_stored_probabilities_are_per_interaction_under_every_dwell_model(walked, tmp_path):
    """share, drop_off and advance in the model are P(touchpoint), P(an interaction ends the journey) and
    P(it moves the customer on), whatever the dwell model: what the model implies per interaction is
    exactly what it stores, and both match the frequencies of a fully observed log of a way-out world."""
    world, journeys = walked
    path = tmp_path / "walked.csv"
    journeys.events.to_csv(path, index=False)
    log = load_events(path)
    S, T = world.n_stages, world.n_touchpoints
    persona = log.persona_of_customer[log.customer]
    first = np.r_[True, log.customer[1:] != log.customer[:-1]]
    last = np.r_[log.customer[1:] != log.customer[:-1], True]
    after = log.stage.astype(np.int64)
    before = np.where(first, 0, np.r_[0, after[:-1]])
    live = before < S - 1
    cell = (persona * S + before) * T + log.touchpoint
    n = np.bincount(cell[live], minlength=world.n_personas * S * T).reshape(world.n_personas, S, T)
    ended = live & last & (after == before)
    drops = np.bincount(cell[ended], minlength=n.size).reshape(n.shape)
    observed = drops / np.maximum(n, 1)
    cells = n >= 1000
    cells[:, S - 1] = False
    assert cells.sum() >= 40
    for dwell in ("way_out", "plain"):
        model = estimate(log, dwell=dwell)
        share, drop, adv = _per_interaction(model)
        met = model.share[:, :-1] > 0
        assert np.allclose(share[:, :-1][met], model.share[:, :-1][met], rtol=1e-9, atol=1e-12), dwell
        assert np.allclose(drop[:, :-1][met], model.drop[:, :-1][met], rtol=1e-9, atol=1e-12), dwell
        assert np.allclose(adv[:, :-1][met], model.advance[:, :-1][met].sum(-1), rtol=1e-9, atol=1e-12), dwell
        # and they are the log's own per-interaction frequencies (sampling error plus the pooling's pull)
        tol = Z * np.sqrt(observed * (1 - observed) / np.maximum(n, 1)) + DEFAULT_POOLING / np.maximum(n, 1)
        err = np.abs(model.drop - observed)
        assert np.all(err[cells] < tol[cells]), (dwell, np.round((err / tol)[cells].max(), 2))


def test_what_ifs_give_the_same_eventual_answer_under_both_dwell_models(plain_world, dwell_world):
    """A what-if acts on per-interaction probabilities, so leave speeds change when, never whether."""
    from sim.scenario import Scenario, apply

    def conversion(model: Model, change: dict) -> float:
        scenario = Scenario.model_validate({"model": "m.json", "change": [change]})
        return evaluate(apply(model, scenario)).conversion_rate

    for _, fitted, _ in (plain_world, dwell_world):
        assert not fitted.plain_dwell
        for change in WHAT_IFS:  # the same fit with its speeds set to 1: exactly the same answer
            assert conversion(fitted, change) == pytest.approx(conversion(_plain(fitted), change), abs=1e-12)
    # a world without speeds fitted both ways: the same answers up to estimation noise
    world, way_out, plain = plain_world
    for change in WHAT_IFS:
        truth = conversion(world, change)
        a, b = conversion(way_out, change), conversion(plain, change)
        assert abs(a - b) < 0.004, (change, a, b, truth)
        assert abs(a - truth) < 0.02, (change, a, truth)


# ---- backtest on a world no other test uses --------------------------------------------------------
def test_backtest_predicts_the_later_cohort_of_a_semi_markov_world(tmp_path):
    """The issue's done-when: fit before day 150 of 240, predict the later cohort's conversion within 0.015."""
    world = with_leave_speeds(make_world(304), seed=304)
    path = tmp_path / "events.csv"
    simulate_log(world, 30_000, seed=404, arrival_days=240.0, observe_days=240.0).events.to_csv(path, index=False)
    result, model = backtest(path, split=SPLIT)
    assert not model.plain_dwell
    n_later = result.customers["later"]
    obs = result.observed["decision"]
    assert 0.015 > 3 * np.sqrt(obs * (1 - obs) / n_later)  # the bound is over 3 standard errors
    assert abs(result.predicted["decision"] - obs) < 0.015, result.error
    # the test can fail: ignoring how long each later customer was observable misses by far more
    assert abs(result.fitted_expected_conversion_rate - obs) > 0.03


# ---- model files --------------------------------------------------------------------------------------
def test_leave_speed_json_round_trip(dwell_world):
    world, fitted, _ = dwell_world
    for model in (world, fitted):
        back = Model.from_dict(json.loads(model.to_json()))
        assert np.abs(back.leave_speed - model.leave_speed).max() < 1e-9
        assert np.abs(back.leave_rates() - model.leave_rates()).max() < 1e-9
    data = json.loads(world.to_json())
    for persona in data["journey"].values():
        for stage in persona.values():
            del stage["leave_speed"]
    old = Model.from_dict(data)
    assert old.plain_dwell and old.leave_speed.shape == world.leave_speed.shape
    assert np.allclose(evaluate(old, horizon_days=30).reach, evaluate(_plain(world), horizon_days=30).reach,
                       atol=1e-9)


@pytest.mark.parametrize("persona, stage, way", [("loyalist", "awareness", "drop_off"),
                                                 ("researcher", "consideration", "retention")])
def test_negative_leave_speed_is_a_model_error(tmp_path, persona, stage, way):
    data = json.loads(with_leave_speeds(make_world(305), seed=305).to_json())
    data["journey"][persona][stage]["leave_speed"][way] = -0.5
    path = tmp_path / "model.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError) as info:
        Model.load(path)
    line = str(info.value)
    assert "\n" not in line
    assert f"journey.{persona}.{stage}.leave_speed.{way}" in line and "-0.5" in line


# ---- drift of a leave speed ----------------------------------------------------------------------
def test_drift_finds_a_planted_leave_speed_change_and_nothing_in_two_samples(tmp_path):
    """Approval-bound customers leave consideration twice as fast in the new log; conversion is the same."""
    from calibration.drift import drift

    world = with_leave_speeds(make_world(306), seed=306)
    changed = world.copy()
    s, u = world.stages.index("consideration"), world.stages.index("decision")
    changed.leave_speed[:, s, 1 + u] *= 2.0

    def fit(model: Model, seed: int) -> Model:
        path = tmp_path / f"w{seed}.csv"
        simulate_log(model, 30_000, seed=seed, arrival_days=180.0, observe_days=400.0).events.to_csv(path, index=False)
        return estimate(load_events(path))

    old, same, new = fit(world, 1), fit(world, 2), fit(changed, 3)
    found = drift(old, new).to_dict()
    speed = sorted((c for c in found["changes"] if c["kind"] == "leave_speed"), key=lambda c: c["p_value"])
    planted = [c for c in speed if (c["stage"], c["way_out"]) == ("consideration", "decision")]
    assert {c["persona"] for c in planted} == set(world.personas), speed
    assert speed[:len(planted)] == planted  # the most significant timing changes
    # faster by more than noise; less than 2x since speeds are relative to the stage's plain leave rate,
    # which the faster approvals raise too (other per-interaction estimates shift with it)
    assert all(c["new_estimate"] / c["old_estimate"] > 1.3 for c in planted), planted
    assert abs(found["conversion_change"]) < 0.02  # timing only: the same conversion without a horizon
    assert drift(old, same).significant <= 1
