"""Backtest (fit the early cohort, predict the later one) and drift (what changed between calibrations)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from calibration.backtest import backtest, naive_reach, parse_split
from calibration.drift import benjamini_hochberg, drift
from calibration.estimate import estimate
from calibration.load import load_events
from cli import app
from sim.errors import InputError
from sim.exact import evaluate, reach_by_age
from worlds import make_world, simulate_log

runner = CliRunner()
BACKTEST_KEYS = {"split", "predicted", "observed", "naive", "error", "naive_error"}
SPLIT = "2024-05-30"  # day 150 of a log that starts 2024-01-01


def write_log(journeys, path: Path) -> Path:
    journeys.events.to_csv(path, index=False)
    return path


# ---- backtest on a known world ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def censored_world(tmp_path_factory):
    """A world no other test uses: 30 k customers arriving over 240 days, the log cut at day 240.

    The ~11 k customers who start after day 150 are followed 0-90 days: many are still in progress.
    """
    world = make_world(107)
    journeys = simulate_log(world, 30_000, seed=207, arrival_days=240.0, observe_days=240.0)
    return world, write_log(journeys, tmp_path_factory.mktemp("bt") / "events.csv")


def test_backtest_predicts_the_later_cohort_on_a_censored_world(censored_world):
    _, path = censored_world
    result = backtest(path, split=SPLIT)[0].to_dict()
    assert BACKTEST_KEYS <= set(result)
    n_later = result["customers"]["later"]
    assert n_later > 10_000
    obs = result["observed"]["decision"]
    se = np.sqrt(obs * (1 - obs) / n_later)  # ~0.0046: 0.015 is over 3 standard errors
    assert 0.015 > 3 * se
    assert abs(result["predicted"]["decision"] - obs) < 0.015
    for stage in result["observed"]:
        assert result["error"][stage] <= result["naive_error"][stage] + 0.01
        assert result["error"][stage] == pytest.approx(abs(result["predicted"][stage] - result["observed"][stage]),
                                                       abs=1e-5)
    # the test can fail: ignoring how long each later customer was observable misses by far more
    assert abs(result["fitted_expected_conversion_rate"] - obs) > 0.03
    assert sum(p["customers"] for p in result["personas"].values()) == n_later


def test_only_rows_before_the_split_are_fitted(tmp_path):
    world = make_world(108)
    events = simulate_log(world, 4_000, seed=208, arrival_days=200.0, observe_days=220.0).events
    after = pd.to_datetime(events["timestamp"]) >= pd.Timestamp(SPLIT, tz="UTC")
    assert 0 < after.mean() < 1
    corrupt_after = events.copy()
    corrupt_after.loc[after, "stage"] = "advocacy"  # every later row claims the final stage
    corrupt_after.loc[after, "touchpoint"] = "review"
    corrupt_before = events.copy()
    corrupt_before.loc[~after, "stage"] = "advocacy"
    runs = {}
    for name, frame in (("clean", events), ("after", corrupt_after), ("before", corrupt_before)):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        record, model = backtest(tmp_path / f"{name}.csv", split=SPLIT)
        runs[name] = record.to_dict(), model
    (r_clean, m_clean), (r_after, m_after), (_, m_before) = runs["clean"], runs["after"], runs["before"]
    for name in ("share", "advance", "drop", "lapse", "rate", "persona_share"):
        assert np.array_equal(getattr(m_clean, name), getattr(m_after, name)), name
    assert m_clean.counts["interactions"].sum() == m_after.counts["interactions"].sum()
    assert r_after["naive"] == r_clean["naive"] and r_after["predicted"] == r_clean["predicted"]
    assert r_after["observed"]["advocacy"] == 1.0 != r_clean["observed"]["advocacy"]  # later rows were read
    assert not np.array_equal(m_clean.drop, m_before.drop)  # and earlier rows do matter


def test_fit_is_censored_at_the_split(tmp_path):
    """The split is the fitted log's end: quiet since more than the window before it = ended."""
    (tmp_path / "e.csv").write_text("customer_id,timestamp,touchpoint,stage\n"
                                    "a,2024-01-01,web,awareness\na,2024-01-03,web,consideration\n"
                                    "b,2024-01-04,web,awareness\n"
                                    "c,2024-02-10,web,awareness\nc,2024-02-11,web,decision\n")
    _, model = backtest(tmp_path / "e.csv", split="2024-02-05")
    assert model.log_summary["last_timestamp"].startswith("2024-02-05")
    assert model.log_summary["customers_ended"] == 2  # 32 and 31 days quiet at the split
    at_last_row = estimate(load_events(tmp_path / "e.csv", before=parse_split("2024-02-05")))
    assert at_last_row.log_summary["customers_in_progress"] == 2  # what cutting at the last row would say


def test_reach_by_age_matches_the_exact_evaluator():
    model = make_world(109)
    ages = np.array([0.0, 1e-6, 0.3, 2.0, 17.5, 60.0, 365.0])
    for p in range(model.n_personas):
        got = reach_by_age(model, p, ages)
        want = np.array([evaluate(model, horizon_days=a).reach[p] for a in ages])
        assert np.abs(got - want).max() < 1e-9
    assert np.all(np.diff(got, axis=0) >= -1e-12)  # reach only grows with age


def test_naive_baseline_by_hand():
    ages_early = np.array([10.0, 20.0, 30.0])
    reach_early = np.array([[0.0, 5.0], [0.0, np.inf], [0.0, 25.0]])  # days to reach stage 1
    got = naive_reach(np.array([5.0, 15.0, 25.0, 40.0]), ages_early, reach_early)
    # a=5: all 3 observable, 1 reached within 5; a=15: the two observable >= 15 had not;
    # a=25: only the 30-day one is observable that long, it reached at 25; a=40: capped at 30
    assert got[:, 1].tolist() == [1 / 3, 0.0, 1.0, 1.0]
    assert got[:, 0].tolist() == [1.0] * 4


def test_naive_baseline_matches_a_direct_count():
    rng = np.random.default_rng(3)
    ages_early = rng.uniform(0, 50, 300)
    t = rng.uniform(0, 60, (300, 3))
    t[t > ages_early[:, None]] = np.inf  # reached only while observable
    a = rng.uniform(0, 70, 50)
    got = naive_reach(a, ages_early, t)
    for i, ai in enumerate(a):
        ai = min(ai, ages_early.max())
        risk = ages_early >= ai
        assert np.allclose(got[i], (t[risk] <= ai).mean(axis=0))


@pytest.mark.parametrize("split, message", [
    ("2024-13-45", "not a date"),
    ("soon", "not a date"),
    ("2023-01-01", "outside the log's time range"),
    ("2030-01-01", "outside the log's time range"),
])
def test_bad_split_is_input_error(censored_world, split, message):
    _, path = censored_world
    with pytest.raises(InputError, match=message):
        backtest(path, split=split)


def test_split_after_the_last_arrival_has_nothing_to_predict(tmp_path):
    (tmp_path / "e.csv").write_text("customer_id,timestamp,touchpoint,stage\n"
                                    "a,2024-01-01,web,awareness\nb,2024-01-02,web,awareness\n"
                                    "a,2024-03-01,web,decision\n")
    with pytest.raises(InputError, match="no customer starts on or after the split"):
        backtest(tmp_path / "e.csv", split="2024-02-01")


def test_cli_backtest_writes_reproducible_json_model_and_plot(tmp_path):
    world = make_world(110)
    path = write_log(simulate_log(world, 3_000, seed=210, arrival_days=200.0, observe_days=200.0),
                     tmp_path / "events.csv")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        result = runner.invoke(app, ["backtest", str(path), "--split", SPLIT, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "observed" in result.output and "earlier" in result.output and "naive" not in result.output
    data = json.loads((outs[0] / "backtest.json").read_text())
    assert BACKTEST_KEYS <= set(data) and data["split"] == SPLIT
    assert set(data["predicted"]) == set(world.stages)
    assert (outs[0] / "backtest.json").read_bytes() == (outs[1] / "backtest.json").read_bytes()
    assert (outs[0] / "backtest.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((outs[0] / "model.json").read_text())["log"]["last_timestamp"].startswith(SPLIT)
    assert json.loads((outs[0] / "manifest.json").read_text())["command"] == "backtest"


def test_cli_bad_split_exits_2_and_writes_nothing(tmp_path, censored_world):
    _, path = censored_world
    out = tmp_path / "bt"
    result = runner.invoke(app, ["backtest", str(path), "--split", "2024-02-30", "--out", str(out)])
    assert result.exit_code == 2
    assert "--split" in result.output and "not a date" in result.output and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".bt*"))


# ---- drift -----------------------------------------------------------------------------------------
def fitted(world, seed: int, tmp_path: Path, n: int = 20_000):
    """A model calibrated from a nearly complete log of ``world`` (arrivals over 180 days, cut at 400)."""
    path = write_log(simulate_log(world, n, seed=seed, arrival_days=180.0, observe_days=400.0),
                     tmp_path / f"w{seed}.csv")
    return estimate(load_events(path))


@pytest.fixture(scope="module")
def drift_models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drift")
    world = make_world(121)
    changed = world.copy()
    checkout, consideration = world.touchpoints.index("checkout"), world.stages.index("consideration")
    changed.drop[:, consideration, checkout] = 0.20  # the pain point was 0.35: a fix was rolled out
    return fitted(world, 1, tmp), fitted(world, 2, tmp), fitted(changed, 3, tmp)


def test_drift_finds_the_planted_change_first(drift_models):
    old, _, new = drift_models
    result = drift(old, new, alpha=0.05).to_dict()
    planted = [c for c in result["changes"]
               if (c["kind"], c["stage"], c["touchpoint"]) == ("drop_off", "consideration", "checkout")]
    assert {c["persona"] for c in planted} == set(old.personas)  # found in every persona
    assert {c["rank"] for c in planted} == set(range(1, len(planted) + 1))  # and ranked first
    assert all(0.15 < c["new"] < 0.25 and 0.3 < c["old"] < 0.4 and c["conversion_effect"] > 0 for c in planted)
    assert len(result["changes"]) - len(planted) <= 1  # at most one false discovery
    assert result["conversion_change"] > 0.01


def test_drift_finds_nothing_in_two_samples_of_one_world(drift_models):
    old, same, _ = drift_models
    result = drift(old, same, alpha=0.05).to_dict()
    assert result["tests"] > 200
    assert result["significant"] <= 1


def test_benjamini_hochberg_by_hand():
    q = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5]))
    # sorted 0.01, 0.03, 0.04, 0.5 -> x4/1, x4/2, x4/3, x4/4 = 0.04, 0.06, 0.0533, 0.5; then running minimum
    assert np.allclose(q, [0.04, 0.0533333, 0.0533333, 0.5])


def test_cli_drift_writes_ranked_changes_and_rejects_other_models(tmp_path, drift_models):
    old, _, new = drift_models
    (tmp_path / "old.json").write_text(old.to_json())
    (tmp_path / "new.json").write_text(new.to_json())
    result = runner.invoke(app, ["drift", str(tmp_path / "old.json"), str(tmp_path / "new.json"),
                                 "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "d" / "drift.json").read_text())
    assert data["changes"][0]["kind"] == "drop_off" and data["changes"][0]["touchpoint"] == "checkout"
    assert "checkout" in result.output
    other = make_world(1, touchpoints=["ad", "email", "web", "store"])
    (tmp_path / "other.json").write_text(other.to_json())
    bad = runner.invoke(app, ["drift", str(tmp_path / "old.json"), str(tmp_path / "other.json"),
                              "--out", str(tmp_path / "d2")])
    assert bad.exit_code == 2 and "different touchpoints" in bad.output and "store" in bad.output
    assert not (tmp_path / "d2").exists()


def test_drift_needs_the_counts(tmp_path):
    bare = make_world(1)  # a model written by hand: no counts behind its estimates
    (tmp_path / "a.json").write_text(bare.to_json())
    result = runner.invoke(app, ["drift", str(tmp_path / "a.json"), str(tmp_path / "a.json"),
                                 "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "no counts" in result.output


# ---- backtest over time -------------------------------------------------------------------------------
def test_backtest_over_time_on_a_censored_world(censored_world):
    """Reach by age and weekly conversions after the split, against what the log shows."""
    _, path = censored_world
    result = backtest(path, split=SPLIT)[0].to_dict()
    ages = result["reach_by_age"]
    assert [a["age_days"] for a in ages][:4] == [1.0, 2.0, 3.0, 5.0] and ages[-1]["age_days"] <= 90
    for a in ages:
        se = np.sqrt(a["observed"] * (1 - a["observed"]) / a["customers"])
        assert abs(a["predicted"] - a["observed"]) < 4 * se + 0.01, a
    assert all(x["observed"] <= y["observed"] for x, y in zip(ages, ages[1:]))  # cumulative
    wk = result["weekly_conversions"]
    assert wk["start"] == SPLIT and wk["weeks"] == 12 and len(wk["rows"]) == 12
    assert wk["baseline"].startswith("seasonal naive: the last full week before the split repeated")
    for row in wk["rows"]:  # the journey model alone, given the weeks' arrivals: within Poisson noise
        assert abs(row["predicted_given_arrivals"] - row["observed"]) < 4 * np.sqrt(row["observed"]) + 5, row
    mae = wk["mae"]
    assert mae["predicted"] == pytest.approx(np.mean([abs(r["predicted"] - r["observed"]) for r in wk["rows"]]),
                                             abs=1e-4)
    assert mae["predicted"] < 3 * np.sqrt(wk["mean_observed"])  # about the Poisson noise of a week
    assert wk["arrivals"]["components"] == ["level"]  # uniform arrivals: no trend, no weekday pattern


def test_seasonal_naive_goes_back_a_year_where_the_log_reaches_that_far(tmp_path):
    world = make_world(5)
    journeys = simulate_log(world, 6000, seed=9, arrival_days=420.0)
    path = write_log(journeys, tmp_path / "long.csv")
    wk = backtest(path, split="2025-02-04")[0].weekly_conversions  # day 400 of the log
    assert wk["baseline"] == "seasonal naive: the same weeks 52 weeks earlier"
    full = load_events(path)
    first = np.unique(full.customer, return_index=True)[1]
    t_first = full.time[first]
    conv = (full.stage >= full.conversion_index)
    ids, pos = np.unique(full.customer[conv], return_index=True)
    t_conv = full.time[conv][pos]
    lo = parse_split("2025-02-04") - 364
    assert wk["rows"][0]["seasonal_naive"] == ((t_conv >= lo) & (t_conv < lo + 7)).sum()
    assert t_first.min() < lo


# ---- intervals on the weekly predictions ---------------------------------------------------------------
WEEKDAY = np.array([1.0, 1.1, 0.5, 0.4, 1.3, 1.2, 1.15])  # by epoch day % 7 (0 = Thursday), as test_forecast's


@pytest.fixture(scope="module")
def weekday_log(tmp_path_factory):
    """32 weeks (and 2 days) of a known world with a known weekday arrival pattern (~150 a day); split after 16."""
    world = make_world(43)
    rng = np.random.default_rng(43)
    first, H = 19723, 226  # 2024-01-01; the log ends after day 224: 16 full weeks after the split
    n = rng.poisson(150.0 * WEEKDAY[(first + np.arange(H)) % 7])
    times = np.concatenate([d + rng.random(k) for d, k in enumerate(n)])
    journeys = simulate_log(world, times.size, seed=44, arrival_times=times, arrival_days=float(H))
    return write_log(journeys, tmp_path_factory.mktemp("btw") / "events.csv"), "2024-04-22"  # day 112


def _bt_seeds(seed: int):
    from application.context import RunContext

    ctx = RunContext(seed)
    return {"draw_stream": ctx.stream("draws"), "stream": ctx.stream("backtest")}


def test_weekly_intervals_cover_the_observed_weeks(weekday_log):
    """16 weeks after the split: the 95 % intervals of both predictions hold >= 13 of the observed weeks
    (Binomial(16, 0.95) gives 12 or fewer with probability 0.007), and they are no wider than the outcome
    noise and the fit's uncertainty make them."""
    path, split = weekday_log
    wk = backtest(path, split=split, draws=100, **_bt_seeds(1))[0].weekly_conversions
    assert wk["weeks"] == 16 and wk["draws"] == 100 and wk["seed"] == 1
    assert wk["arrivals"]["components"] == ["level", "weekly"]
    rows = wk["rows"]
    for key in ("predicted", "predicted_given_arrivals"):
        cov = wk["coverage"][key]
        inside = sum(r[f"{key}_interval"][0] <= r["observed"] <= r[f"{key}_interval"][1] for r in rows)
        assert cov == {"inside": inside, "weeks": 16}
        assert inside >= 13, (key, rows)
        assert all(r[f"{key}_interval"][0] <= r[key] <= r[f"{key}_interval"][1] for r in rows)
        # it can fail: Poisson noise alone is 3.92 sqrt(mean) wide; far wider would cover anything
        ratio = np.mean([(r[f"{key}_interval"][1] - r[f"{key}_interval"][0]) / (3.92 * np.sqrt(r[key]))
                         for r in rows])
        assert 0.9 < ratio < 1.6, (key, ratio)
    # the points are those of the backtest without draws
    plain = backtest(path, split=split)[0].weekly_conversions
    assert [r["predicted"] for r in plain["rows"]] == [r["predicted"] for r in rows]
    assert "coverage" not in plain and "draws" not in plain


def test_cli_backtest_intervals_are_seeded_and_draws_0_leaves_them_out(tmp_path):
    world = make_world(110)
    path = write_log(simulate_log(world, 3_000, seed=210, arrival_days=200.0, observe_days=200.0),
                     tmp_path / "events.csv")

    def run(name: str, *args: str) -> dict:
        res = runner.invoke(app, ["backtest", str(path), "--split", SPLIT, "--out", str(tmp_path / name), *args])
        assert res.exit_code == 0, res.output
        return res

    a = run("a", "--draws", "20", "--seed", "5")
    run("b", "--draws", "20", "--seed", "5")
    assert "inside the 95 % interval" in a.output and "[lo-hi]" in a.output
    data = (tmp_path / "a" / "backtest.json").read_bytes()
    assert data == (tmp_path / "b" / "backtest.json").read_bytes()
    run("c", "--draws", "20", "--seed", "6")
    run("none", "--draws", "0")
    wk = json.loads(data)["weekly_conversions"]
    other = json.loads((tmp_path / "c" / "backtest.json").read_text())["weekly_conversions"]
    none = json.loads((tmp_path / "none" / "backtest.json").read_text())["weekly_conversions"]
    assert wk["rows"] and all("predicted_interval" in r and "predicted_given_arrivals_interval" in r
                              for r in wk["rows"])
    assert set(wk["coverage"]) == {"predicted", "predicted_given_arrivals"} and wk["draws"] == 20
    assert [r["predicted_interval"] for r in other["rows"]] != [r["predicted_interval"] for r in wk["rows"]]
    assert [r["predicted"] for r in other["rows"]] == [r["predicted"] for r in wk["rows"]]
    assert not any(k.endswith("_interval") for r in none["rows"] for k in r)
    assert "coverage" not in none and "draws" not in none and "intervals" not in none["method"]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["arguments"]["draws"] == 20 and manifest["seed"] == 5
    from present.figures.backtest import over_time_data

    over = over_time_data(json.loads(data))
    assert len(over.predicted_lo) == len(wk["rows"]) and over.coverage == wk["coverage"]
    assert runner.invoke(app, ["backtest", str(path), "--split", SPLIT, "--draws", "-1"]).exit_code == 2
