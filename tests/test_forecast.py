"""journey forecast: the daily chain recurrence against direct computations, arrivals' fit, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import expm
from typer.testing import CliRunner

from cli import app
from sim import arrivals as arr
from sim.exact import generator, reach_by_age
from sim.forecast import Plan, project
from sim.model import Model
from sim.scenario import Scenario, apply
from worlds import make_world, simulate_log, with_leave_speeds

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "scenarios" / "demo" / "model.json"
EXAMPLES = ROOT / "scenarios" / "examples"
WEEKDAY = np.array([1.0, 1.1, 0.5, 0.4, 1.3, 1.2, 1.15])  # by epoch day % 7 (0 = Thursday)


@pytest.fixture(scope="module")
def world() -> Model:
    return with_leave_speeds(make_world(31), 5)


def _fixed(world: Model) -> Model:
    """The world with the checkout fixed (same states, another generator)."""
    sc = Scenario.model_validate({"model": "x.json", "change": [{"touchpoint": "checkout", "drop_off": 0.3}]})
    return apply(world, sc)


def _direct(model_before: Model, model_after: Model, rate: np.ndarray, rollout: int, sub: int = 24) -> np.ndarray:
    """Expected conversions per day, computed cohort by cohort with matrix exponentials (no recurrence):
    arrivals uniform within each day (``sub`` points a day), before the rollout under ``model_before``
    until the rollout, then under ``model_after``."""
    H = rate.size
    cum = np.zeros(H + 1)
    for p in range(model_before.n_personas):
        cb, ca = generator(model_before, p), generator(model_after, p)
        conv = (cb.stage_of >= model_before.conversion_index).astype(float)
        for k in range(1, H + 1):
            total = 0.0
            for d in range(k):
                for u in (np.arange(sub) + 0.5) / sub:
                    a = d + u
                    if a < rollout <= k:  # in progress at the rollout: carried over
                        dist = cb.start @ expm(cb.Q * (rollout - a)) @ expm(ca.Q * (k - rollout))
                    elif a >= rollout:
                        dist = ca.start @ expm(ca.Q * (k - a))
                    else:
                        dist = cb.start @ expm(cb.Q * (k - a))
                    total += rate[d] * (dist @ conv) / sub
            cum[k] += model_before.persona_share[p] * total
    return np.diff(cum)


def test_weekly_conversions_match_the_exact_cohort_sum(world):
    """The recurrence against the cohort sum over reach_by_age (midpoint rule, 100 points a day)."""
    H = 56
    rate = 80.0 * WEEKDAY[np.arange(H) % 7]
    got = project([world], None, rate[None], None, np.zeros(H)).conversions[0]
    u = (np.arange(100) + 0.5) / 100
    cum = np.zeros(H + 1)
    for p in range(world.n_personas):
        for k in range(1, H + 1):
            ages = (k - np.arange(k)[:, None] - u[None, :]).ravel()
            R = reach_by_age(world, p, ages)[:, world.conversion_index].reshape(k, u.size).mean(1)
            cum[k] += world.persona_share[p] * (rate[:k] * R).sum()
    want = np.diff(cum)
    assert np.abs(got - want).max() < 1e-4 * want.max()
    # and it can fail: ignoring the weekday pattern of arrivals moves the weekly sums of the first weeks
    flat = project([world], None, np.full((1, H), rate.mean()), None, np.zeros(H)).conversions[0]
    assert np.abs(flat - want).max() > 0.05 * want.max()


def test_rollout_carries_customers_in_progress_over(world):
    fixed = _fixed(world)
    H, r = 12, 5
    rate = np.full(H, 50.0)
    share = Plan(start_day=0, weeks=2, rollout_day=r).share_under_change(np.arange(H))
    got = project([world], [fixed], rate[None], None, share).conversions[0]
    want = _direct(world, fixed, rate, r, sub=8)
    assert np.abs(got - want).max() < 1e-4 * want.max()  # midpoint rule on 8 points a day: 5e-6
    # it can fail: starting only the new cohorts under the fix (no carry-over) differs after the rollout
    new_only = _direct(world, world, rate, H + 1, sub=8)
    assert np.abs(got - new_only)[r:].max() > 0.01 * want.max()


def test_a_ramp_is_the_mean_of_rollouts_on_each_ramp_day(world):
    fixed = _fixed(world)
    H, r = 40, 7
    days = np.arange(H)
    rate = np.full((1, H), 40.0)
    ramp = project([world], [fixed], rate, None, Plan(0, 6, r, ramp_weeks=1).share_under_change(days))
    each = [project([world], [fixed], rate, None, Plan(0, 6, r + j).share_under_change(days)).conversions[0]
            for j in range(7)]
    assert np.allclose(ramp.conversions[0], np.mean(each, axis=0), rtol=1e-10, atol=1e-10)


def test_forecast_matches_a_simulated_log_with_a_weekday_pattern(world):
    """Customers arriving by a known Poisson pattern, walked interaction by interaction: each week's
    conversions within 4 Poisson standard deviations of the forecast, the 6 weeks' total within 3."""
    rng = np.random.default_rng(11)
    H = 42
    first = 19723  # 2024-01-01, a Monday: epoch day % 7 == 4
    rate = 700.0 * WEEKDAY[(first + np.arange(H)) % 7]
    n = rng.poisson(rate)
    times = np.concatenate([d + rng.random(k) for d, k in enumerate(n)])
    journeys = simulate_log(world, times.size, seed=12, arrival_times=times, arrival_days=float(H))
    conv_day = times + journeys.reach_days[:, world.conversion_index]
    observed = np.histogram(conv_day[np.isfinite(conv_day)], bins=np.arange(0, H + 1, 7))[0]
    expected = project([world], None, rate[None], None, np.zeros(H)).conversions[0].reshape(6, 7).sum(1)
    z = (observed - expected) / np.sqrt(expected)
    assert np.abs(z).max() < 4
    assert abs(observed.sum() - expected.sum()) < 3 * np.sqrt(expected.sum())


def test_the_arrival_fit_recovers_a_weekday_pattern_and_skips_what_it_cannot_tell():
    rng = np.random.default_rng(3)
    first = 19723
    days = first + np.arange(140)
    counts = rng.poisson(60.0 * WEEKDAY[days % 7])
    fit = arr.fit(counts, first, source="test")
    assert fit.components == ["level", "weekly"]
    assert fit.reasons["yearly"].startswith("not fitted: the log spans 140 days")
    assert fit.reasons["trend"].startswith("not fitted: leaving it out lowers the quasi-BIC")
    got = fit.mean(days[:7]) / fit.mean(days[:7]).mean()
    want = WEEKDAY[days[:7] % 7] / WEEKDAY[days[:7] % 7].mean()
    assert np.abs(got - want).max() < 0.06  # ~8,400 arrivals: each weekday's share to a few percent
    # a short log: weekly seasonality is not even tried
    short = arr.fit(counts[:14], first, source="test")
    assert short.components == ["level"] and short.reasons["weekly"].startswith("not fitted: the log spans 14")


def test_a_trend_is_found_and_its_forecast_interval_covers():
    """A log-linear trend: found; the weekly arrivals' 95 % interval covers the truth in ~95 % of logs."""
    rng = np.random.default_rng(4)
    first, n_hist = 19723, 112
    future = first + n_hist + np.arange(28)
    trend = 0.8  # log per year
    mean = lambda d: 50.0 * np.exp(trend * (d - first - n_hist / 2) / 365.25)  # noqa: E731
    hits, found = 0, 0
    reps = 120
    for _ in range(reps):
        counts = rng.poisson(mean(first + np.arange(n_hist)))
        fit = arr.fit(counts, first, source="test")
        found += "trend" in fit.components
        paths = fit.paths(future, rng, 400).reshape(400, 4, 7).sum(-1)
        truth = rng.poisson(mean(future)).reshape(4, 7).sum(-1)
        lo, hi = np.quantile(paths, [0.025, 0.975], axis=0)
        hits += int(((truth >= lo) & (truth <= hi)).sum())
    assert found > 0.8 * reps
    coverage = hits / (4 * reps)
    assert 0.9 <= coverage <= 0.99


def test_model_arrivals_keep_daily_counts_and_old_models_fall_back_to_weeks():
    model = Model.load(DEMO)
    daily = model.arrivals["daily"]
    assert daily["first_day"] == "2024-01-01" and sum(daily["counts"]) <= 6000
    fit = arr.from_model_arrivals(model.arrivals)
    assert fit.source == "log daily counts" and fit.history.size == len(daily["counts"])
    old = {k: v for k, v in model.arrivals.items() if k != "daily"}
    weekly = arr.from_model_arrivals(old)
    assert weekly.source == "log weekly counts" and "weekly counts only" in weekly.reasons["weekly"]
    assert abs(weekly.history.sum() - sum(model.arrivals["per_week"])) < 1.0


# ---- the command ----------------------------------------------------------------------------------------
def _forecast(tmp_path: Path, *args: str, out: str = "fc"):
    return runner.invoke(app, ["forecast", str(DEMO), *args, "--out", str(tmp_path / out)])


def test_forecast_command_on_the_demo_with_scenarios(tmp_path):
    args = [str(EXAMPLES / "checkout_fix.toml"), str(EXAMPLES / "drop_ads.toml"), "--start", "2024-07-01",
            "--weeks", "8", "--rollout", "2024-07-15", "--ramp-weeks", "2", "--draws", "40", "--seed", "3"]
    res = _forecast(tmp_path, *args)
    assert res.exit_code == 0, res.output
    run = tmp_path / "fc"
    assert {"forecast.json", "forecast.csv", "forecast.png", "manifest.json"} <= {p.name for p in run.iterdir()}
    fc = json.loads((run / "forecast.json").read_text())
    assert [t["name"] for t in fc["targets"]] == ["baseline", "checkout fix", "drop ads"]
    base, fix = fc["targets"][0], fc["targets"][1]
    assert len(base["weeks"]) == 8 and base["weeks"][2]["start"] == "2024-07-15"
    assert fix["weeks"][0]["uplift"] == 0 and fix["weeks"][1]["uplift"] == 0  # before the rollout
    assert fix["weeks"][2]["share_under_change"] == pytest.approx(4 / 14)  # 1..7 of 14 ramp days
    assert fix["weeks"][4]["share_under_change"] == 1.0
    assert fix["total"]["uplift_interval"][0] > 0  # the fix converts more: the whole interval above 0
    for w in base["weeks"]:
        lo, hi = w["conversions_interval"]
        assert lo <= w["conversions"] <= hi
    assert "arrivals" in fc and fc["arrivals"]["components"][0] == "level"
    assert "week of" in res.output and "arrivals: log daily counts" in res.output
    assert (run / "forecast.csv").read_text().splitlines()[0].startswith("target,week,start,arrivals")
    # same seed, same JSON
    again = _forecast(tmp_path, *args, out="fc2")
    assert again.exit_code == 0
    assert (run / "forecast.json").read_bytes() == (tmp_path / "fc2" / "forecast.json").read_bytes()
    # the report shows it
    rep = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "r.html")])
    assert rep.exit_code == 0, rep.output
    assert 'id="forecast"' in (tmp_path / "r.html").read_text()


def test_scenario_and_option_arrivals(tmp_path):
    sc = tmp_path / "push.toml"
    sc.write_text(f'name = "push"\nmodel = "{DEMO}"\narrivals_per_week = 400\n')
    res = _forecast(tmp_path, str(sc), "--start", "2024-07-01", "--weeks", "4", "--draws", "0",
                    "--arrivals-per-week", "200")
    assert res.exit_code == 0, res.output
    fc = json.loads((tmp_path / "fc" / "forecast.json").read_text())
    base, push = fc["targets"]
    assert base["weeks"][0]["arrivals"] == pytest.approx(200.0)
    assert push["weeks"][0]["arrivals"] == pytest.approx(400.0)
    assert push["total"]["uplift"] > 0 and "conversions_interval" not in base["weeks"][0]
    assert fc["arrivals"]["source"] == "--arrivals-per-week" and push["arrivals_source"].startswith("scenario")


@pytest.mark.parametrize("args, words", [
    (["--start", "01/07/2024", "--weeks", "4"], "--start"),
    (["--start", "2024-07-01", "--weeks", "0"], "--weeks"),
    (["--start", "2024-07-01", "--weeks", "4", "--rollout", "2024-06-01"], "--rollout"),
    (["--start", "2024-07-01", "--weeks", "4", "--ramp-weeks", "-1"], "--ramp-weeks"),
    (["--start", "2024-07-01", "--weeks", "4", "--arrivals-per-week", "0"], "--arrivals-per-week"),
    (["--start", "2023-01-01", "--weeks", "4"], "--start"),
])
def test_bad_forecast_input_is_one_line_exit_2(tmp_path, args, words):
    res = _forecast(tmp_path, *args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0] and lines[0].startswith("error:")
    assert not (tmp_path / "fc").exists()


@pytest.mark.parametrize("body, words", [
    ("arrivals_per_weak = 300\n", "arrivals_per_weak"),
    ("arrivals_per_week = -5\n", "arrivals_per_week"),
])
def test_bad_scenario_arrivals_are_one_line_exit_2(tmp_path, body, words):
    sc = tmp_path / "bad.toml"
    sc.write_text(f'model = "{DEMO}"\n' + body)
    res = _forecast(tmp_path, str(sc), "--start", "2024-07-01", "--weeks", "4")
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0]


def test_a_model_without_arrival_counts_needs_a_number(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(make_world(1).to_json())
    res = runner.invoke(app, ["forecast", str(path), "--start", "2024-07-01", "--weeks", "2"])
    assert res.exit_code == 2 and "--arrivals-per-week" in res.output
    ok = runner.invoke(app, ["forecast", str(path), "--start", "2024-07-01", "--weeks", "2", "--arrivals-per-week",
                             "100", "--out", str(tmp_path / "fc")])
    assert ok.exit_code == 0, ok.output
    assert "warm-up" in ok.output


def test_revenue_is_booked_at_conversion(tmp_path):
    sc = tmp_path / "valued.toml"
    sc.write_text(f'name = "valued"\nmodel = "{DEMO}"\n[value]\nper_conversion = 100.0\n')
    res = _forecast(tmp_path, str(sc), "--start", "2024-07-01", "--weeks", "3", "--draws", "20", "--seed", "1")
    assert res.exit_code == 0, res.output
    fc = json.loads((tmp_path / "fc" / "forecast.json").read_text())
    valued = fc["targets"][1]
    assert "revenue" not in fc["targets"][0]["weeks"][0]  # the demo model has no values
    for w in valued["weeks"]:
        assert w["revenue"] == pytest.approx(100.0 * w["conversions"], rel=1e-5)
        assert w["revenue_interval"][0] <= w["revenue"] <= w["revenue_interval"][1]
    assert valued["total"]["revenue"] == pytest.approx(100.0 * valued["total"]["conversions"], rel=1e-5)


def test_end_to_end_a_fitted_forecast_covers_a_simulated_log(tmp_path):
    """Fit model and arrivals on 18 weeks of a simulated log (weekday pattern), forecast the next 8:
    the observed weekly conversions fall inside the 95 % intervals and close to the forecast."""
    from dataclasses import replace

    from calibration.estimate import estimate
    from calibration.load import load_events
    from sim.forecast import TargetInput, build
    from sim.uncertainty import parameter_draws

    world = make_world(41)
    rng = np.random.default_rng(41)
    first, H = 19723, 182  # 2024-01-01, 26 weeks
    rate = 150.0 * WEEKDAY[(first + np.arange(H)) % 7]
    n = rng.poisson(rate)
    times = np.concatenate([d + rng.random(k) for d, k in enumerate(n)])
    journeys = simulate_log(world, times.size, seed=42, arrival_times=times, arrival_days=float(H))
    path = tmp_path / "events.csv"
    journeys.events.to_csv(path, index=False)
    split = first + 126
    log = replace(load_events(path, before=float(split)), end=float(split))
    model = estimate(log)
    arrivals = arr.from_model_arrivals(model.arrivals)
    assert arrivals.components == ["level", "weekly"], arrivals.reasons
    draws = parameter_draws(model, 100, np.random.SeedSequence(1))
    fc = build(model, [TargetInput("baseline", model, draws, is_base=True)], arrivals, Plan(split, 8, split),
               seed=1, draws=100, stream=np.random.SeedSequence(2)).to_dict()
    conv_day = first + times + journeys.reach_days[:, world.conversion_index]
    observed = np.histogram(conv_day[np.isfinite(conv_day)], bins=split + 7 * np.arange(9))[0]
    weeks = fc["targets"][0]["weeks"]
    inside = sum(w["conversions_interval"][0] <= o <= w["conversions_interval"][1] for w, o in zip(weeks, observed))
    assert inside >= 6  # 8 weeks at 95 %: 6 or fewer has probability < 0.01
    forecast = np.array([w["conversions"] for w in weeks])
    assert np.abs(forecast - observed).mean() < 3 * np.sqrt(observed.mean())
