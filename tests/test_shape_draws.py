"""Phase-type shapes in the parameter draws (issue 16): the phase weights are drawn, not kept.

Each parameter draw of a ``--dwell phases`` model also draws the phase weights of every persona x
stage x way out (sim.uncertainty.phase_draws: the pooled shape, then each persona's given it, with
the timed exits behind the cell plus the m pooling pseudo-visits as concentration). Checked here:
the draws are centred on the fitted weights and spread like 1 / sqrt(exits + m); the drawn mean stay
is the drawn leave speed's; a model without shapes draws exactly the numbers it drew before; and
on known Erlang-mixture worlds (tests/worlds.py) the 95 % interval of P(converted within h days)
covers the truth about 95 % of the time.
"""
from __future__ import annotations

import numpy as np
import pytest

from calibration.estimate import estimate
from calibration.load import load_events
from sim import phases as ph
from sim.exact import reach_by_age
from sim.model import Model
from sim.uncertainty import describe, parameter_draws, phase_draws
from worlds import make_world, simulate_log, with_leave_speeds, with_phases

SHAPE = [0.2, 0.0, 0.3, 0.0, 0.5]  # 20 % exponential stays, 30 % Erlang-3, 50 % Erlang-5
STAGES = ["awareness", "consideration", "decision"]


def _evidenced(model: Model, n: float = 400.0) -> Model:
    """``model`` with counts as if ``n`` interactions per persona x stage had been seen (deterministic)."""
    m = model.copy()
    seen = n * m.share
    m.counts = {"interactions": seen, "stayed": seen * m.stay, "dropped": seen * m.drop,
                "advanced": seen[..., None] * m.advance, "entered": np.full(m.lapse.shape, n / 2),
                "lapsed": n / 2 * m.lapse, "gaps": np.full(m.rate.shape, n), "customers": 3 * n * m.persona_share,
                "leave_events": np.full(m.leave_speed.shape, n / 4)}
    return m


def _summary(d: Model) -> list[float]:
    """One number per parameter block of a draw (weighted sums: any change of a value moves them)."""
    return [float(d.persona_share @ np.arange(1, 1 + d.n_personas)), float(d.share.sum()),
            float((d.share * np.arange(d.n_touchpoints)).sum()), float(d.drop.sum()),
            float((d.advance * np.arange(d.n_stages)).sum()), float(d.lapse.sum()), float(d.rate.sum()),
            float(d.leave_speed.sum())]


# recorded on main (4210a1e, before shape draws) from _evidenced(with_leave_speeds(make_world(701), seed=701)),
# parameter_draws(model, 5, np.random.default_rng(2024)), _summary of each draw
BEFORE = [
    [1.7332894313764267, 12.0, 42.97029327686525, 7.101658763694411, 63.09106530809889, 1.9438347066615966,
     3.330841444779261, 107.14582429714237],
    [1.709906149443987, 12.0, 42.059157740960416, 6.9100511990631714, 57.63933618447287, 2.0262001150322972,
     3.4173767107648527, 103.42896738847604],
    [1.7464611461993873, 12.0, 42.75954226259837, 7.44611654647141, 60.0256323883784, 2.0977286955292507,
     3.4017907025496883, 104.29102914968465],
    [1.6961044205098206, 12.0, 42.8761225484945, 8.24060770707521, 62.751760776992725, 1.880661939524327,
     3.401542742833221, 105.38508662335411],
    [1.6971480421610663, 12.0, 42.413016745028465, 7.340156244645375, 60.73649766628197, 1.9523179020307688,
     3.2894460533410053, 105.20248677404447],
]


# ---- (c) models without shapes: the draws of before ---------------------------------------------------
def test_models_without_shapes_draw_what_they_drew_before():
    """Same seed, same numbers as main before shape draws (rtol 1e-13: the same stream, the same sums)."""
    model = _evidenced(with_leave_speeds(make_world(701), seed=701))
    draws = parameter_draws(model, 5, np.random.default_rng(2024))
    np.testing.assert_allclose([_summary(d) for d in draws], BEFORE, rtol=1e-13, atol=0)
    assert all(d.phases is None for d in draws)


def test_shape_draws_leave_every_other_block_as_it_was():
    """The shapes are drawn after everything else: with shapes, all other parameters are the draws
    of the same model without shapes, bit for bit; only the weights differ."""
    plain = _evidenced(with_leave_speeds(make_world(701), seed=701))
    shaped = with_phases(plain, SHAPE)
    shaped.counts = plain.counts
    a = parameter_draws(plain, 5, np.random.default_rng(2024))
    b = parameter_draws(shaped, 5, np.random.default_rng(2024))
    for x, y in zip(a, b):
        for name in ("persona_share", "share", "advance", "drop", "lapse", "rate", "leave_speed"):
            assert np.array_equal(getattr(x, name), getattr(y, name)), name
    assert not all(np.array_equal(y.phases, shaped.phases) for y in b)
    # and a given seed gives the same shapes
    again = parameter_draws(shaped, 5, np.random.default_rng(2024))
    assert all(np.array_equal(x.phases, y.phases) for x, y in zip(b, again))


# ---- (a) centred on the fit, spread by the exits behind it ------------------------------------------------
@pytest.fixture(scope="module")
def synthetic():
    """A shaped world with 2,000, 200 and 5 timed exits per way out for its three personas, 4,000 shape draws."""
    world = with_phases(with_leave_speeds(make_world(701), seed=701), SHAPE)
    exits = np.zeros(world.leave_speed.shape)
    exits[0], exits[1], exits[2] = 2000.0, 200.0, 5.0
    world.counts = {"leave_events": exits}
    return world, exits, phase_draws(world, np.random.default_rng(5), 4000)


def test_drawn_weights_average_to_the_fitted_ones(synthetic):
    """Mean of 4,000 draws within 5 standard errors of the fitted weights in every cell (measured: at most
    3.9 over the 3 x 5 x 6 x 5 weights) and within 0.006 absolutely; draws are valid shapes."""
    world, _, w = synthetic
    mean, se = w.mean(0), w.std(0) / np.sqrt(w.shape[0])
    assert np.all(np.abs(mean - world.phases) <= 5 * se + 1e-12)
    assert np.abs(mean - world.phases).max() < 0.006
    assert np.allclose(w.sum(-1), 1.0, atol=1e-12) and (w >= 0).all()
    assert np.all(w[..., np.asarray(SHAPE) == 0] == 0)  # phase counts the fit left out stay out


def test_drawn_weights_vary_more_where_exits_are_few(synthetic):
    """Spread of each weight ~ sqrt(w (1 - w) / (exits + m + 1)), m = 10 pooling pseudo-visits (the pooled
    shape's own spread adds a little): within 15 % for 2,000, 200 and 5 exits, so the sparse cell
    spreads about 12 times as much as the rich one."""
    world, exits, w = synthetic
    sd = w.std(0)
    s, o = 1, 0
    on = np.asarray(SHAPE) > 0
    want = [np.sqrt(world.phases[p, s, o] * (1 - world.phases[p, s, o]) / (exits[p, s, o] + 11.0)) for p in range(3)]
    for p in range(3):
        ratio = sd[p, s, o, on] / want[p][on]
        assert np.all((0.85 < ratio) & (ratio < 1.15)), (p, ratio)
    assert np.all(sd[2, ..., on] > 5 * sd[0, ..., on])


def test_one_phase_stays_stay_exponential():
    """A way out whose stay the fit kept exponential is exponential in every draw (no weight appears)."""
    world = with_phases(with_leave_speeds(make_world(702), seed=702), SHAPE)
    world.phases[:, 0] = 0.0
    world.phases[:, 0, :, 0] = 1.0
    world.counts = {"leave_events": np.full(world.leave_speed.shape, 50.0)}
    w = phase_draws(world, np.random.default_rng(1), 200)
    assert np.all(w[:, :, 0, :, 0] == 1.0) and np.all(w[:, :, 0, :, 1:] == 0.0)


def test_drawn_mean_stay_is_the_drawn_speeds():
    """The weights are unit-free (phase rate = kbar x leave rate): the mean stay of every draw is
    1 / its drawn leave rate, whatever its weights; the speed draw owns the mean."""
    world = _evidenced(with_phases(with_leave_speeds(make_world(703), seed=703), SHAPE))
    for d in parameter_draws(world, 6, np.random.default_rng(8)):
        rates, lam = d.leave_rates(), d.phase_rates()
        on = rates > 0
        assert np.allclose(ph.kbar(d.phases)[on] / lam[on], 1.0 / rates[on], rtol=1e-12)
        assert not np.array_equal(d.phases, world.phases)
        # the mean by integration of the drawn shape's survival, one way out
        w, mean = d.phases[0, 1, 0], 1.0 / rates[0, 1, 0]
        t = np.linspace(0.0, 40.0 * mean, 40001)
        assert abs(np.trapezoid(1.0 - ph.cdf(w, t, mean), t) / mean - 1.0) < 1e-4


def test_describe_says_the_weights_are_drawn():
    world = with_phases(make_world(704), SHAPE)
    text = describe(world, 10)
    assert "the phase weights too" in text["method"]
    assert "phase counts of the phase-type stays" in text["not_included"]
    plain = describe(make_world(704), 10)  # models without shapes: the text of before
    assert "phase" not in plain["not_included"] and "phase" not in plain["method"]


# ---- (b) interval coverage on known worlds -----------------------------------------------------------------
def _conversion_by_age(model: Model, ages: np.ndarray) -> np.ndarray:
    """P(converted within each age) over the persona mix, exact."""
    conv = model.conversion_index
    return sum(model.persona_share[p] * reach_by_age(model, p, ages)[:, conv] for p in range(model.n_personas))


def _covered(world: Model, ages: np.ndarray, logs: int, customers: int, draws: int, tmp_path) -> np.ndarray:
    """[logs, ages]: does the 95 % interval of P(converted within h) of each log's phase fit hold the truth?"""
    truth = _conversion_by_age(world, ages)
    hits = []
    for i in range(logs):
        path = tmp_path / f"log{i}.csv"
        simulate_log(world, customers, seed=1600 + i, arrival_days=120.0).events.to_csv(path, index=False)
        fitted = estimate(load_events(path, stages=STAGES, conversion_stage="decision"), dwell="phases")
        assert fitted.shaped
        models = parameter_draws(fitted, draws, np.random.default_rng(i))
        values = np.array([_conversion_by_age(m, ages) for m in models])
        lo, hi = np.quantile(values, [0.025, 0.975], axis=0)
        hits.append((lo <= truth) & (truth <= hi))
    return np.array(hits)


ERLANG4 = with_phases(with_leave_speeds(make_world(601, personas=["p0"], stages=STAGES), seed=601), 4)


@pytest.mark.slow
def test_horizon_intervals_cover_the_truth_about_95_percent(tmp_path):
    """40 logs of 2,000 customers of an Erlang-4 world (one persona, three stages), 100 draws each: the 95 %
    interval of P(converted within 3, 4 and 8 days) holds the exact truth in at least 34 of 40 (a 95 %
    interval falls below that with probability 1.4 %); over the three, 0.88 to 1.

    Measured (see the report of the change): 36, 37 and 40 of 40 at 3, 4 and 8 days. Within 1 and 2
    days the fit itself is biased (BIC picks 3 phases for some ways, a heavier early tail: +0.003,
    1.3 times the spread over logs) and the interval holds the truth in only about 70 % of logs;
    that is the estimator's form, not parameter uncertainty, and shape draws do not mend it.
    """
    ages = np.array([3.0, 4.0, 8.0])
    covered = _covered(ERLANG4, ages, 40, 2000, 100, tmp_path).mean(0)
    assert np.all(covered >= 34 / 40), covered
    assert 0.88 <= covered.mean() <= 1.0, covered


def test_horizon_intervals_cover_the_truth_fast(tmp_path):
    """The fast variant: 10 logs, 60 draws each; at 4 and 8 days at least 8 of 10 intervals hold the truth
    (a 95 % interval falls below that with probability 1.2 %)."""
    covered = _covered(ERLANG4, np.array([4.0, 8.0]), 10, 2000, 60, tmp_path).sum(0)
    assert np.all(covered >= 8), covered
