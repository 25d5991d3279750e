"""Issue 13: a history shorter than the inactivity window, and saying where the data cannot tell."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from application.report import build_report
from calibration.backtest import backtest
from calibration.estimate import estimate
from calibration.load import load_events
from cli import app
from sim.errors import InputError
from worlds import make_world, simulate_log

runner = CliRunner()
WEEK = "2024-01-08"  # day 7 of a log that starts 2024-01-01


@pytest.fixture(scope="module")
def week_log(tmp_path_factory):
    """100 k customers arriving over 60 days, log to day 60: the fit before day 7 sees one week."""
    path = tmp_path_factory.mktemp("week") / "events.csv"
    simulate_log(make_world(501), 100_000, seed=601, arrival_days=60.0, observe_days=60.0).events.to_csv(
        path, index=False)
    return path


@pytest.mark.parametrize("inactivity", [3.0, 10.0])
def test_one_week_of_history_predicts_later_conversion(week_log, inactivity):
    """The done-when: within 0.03 of the later customers' conversion, window 3 or 10 days."""
    result, model = backtest(week_log, split=WEEK, inactivity_days=inactivity)
    obs, pred = result.observed["decision"], result.predicted["decision"]
    assert 0.03 > 5 * np.sqrt(obs * (1 - obs) / result.customers["later"])  # the bound is not noise
    assert abs(pred - obs) < 0.03, (pred, obs)
    assert model.estimator["inactivity_days"] == inactivity
    # every row before the split entered the estimates, whatever the window
    assert model.counts["decided"].sum() == model.counts["interactions"].sum()
    assert model.log_summary["undecided_rows"] == 0


def test_cure_estimates_do_not_depend_on_the_window(week_log):
    a, m3 = backtest(week_log, split=WEEK, inactivity_days=3.0)
    b, m10 = backtest(week_log, split=WEEK, inactivity_days=10.0)
    assert a.predicted == b.predicted
    for name in ("share", "advance", "drop", "lapse", "rate", "leave_speed"):
        assert np.array_equal(getattr(m3, name), getattr(m10, name)), name


def test_window_shorter_than_the_history_is_an_input_error(week_log):
    with pytest.raises(InputError) as err:
        backtest(week_log, split=WEEK, inactivity_days=10.0, censoring="window")
    text = str(err.value)
    assert "--inactivity-days" in text and "history is 7 days" in text and "--censoring cure" in text
    # the window estimator at 3 days runs, and says how much of the history it left out
    _, model = backtest(week_log, split=WEEK, inactivity_days=3.0, censoring="window")
    kinds = [f["kind"] for f in model.estimator["fallbacks"]]
    assert "window" in kinds


def test_cli_backtest_window_error_exits_2_one_line(week_log, tmp_path):
    res = runner.invoke(app, ["backtest", str(week_log), "--split", WEEK, "--inactivity-days", "10",
                              "--censoring", "window", "--out", str(tmp_path / "bt")])
    assert res.exit_code == 2
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "shorter --inactivity-days" in lines[0]
    assert not (tmp_path / "bt").exists()


def test_unreached_stage_is_reported_and_warned(tmp_path):
    """One day of history: nobody reached retention, and the model, terminal and report say so."""
    path = tmp_path / "day.csv"
    simulate_log(make_world(502), 20_000, seed=602, arrival_days=30.0, observe_days=30.0).events.to_csv(
        path, index=False)
    out = tmp_path / "bt"
    res = runner.invoke(app, ["backtest", str(path), "--split", "2024-01-02", "--inactivity-days", "0.5",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    fallbacks = json.loads((out / "backtest.json").read_text())["fallbacks"]
    stages = {f.get("stage") for f in fallbacks if f["kind"] == "stage"}
    assert "retention" in stages
    warnings = [x for x in res.output.splitlines() if x.startswith("warning: ")]
    assert len(warnings) == len(fallbacks) and any("'retention'" in w for w in warnings)
    model = json.loads((out / "model.json").read_text())
    assert model["estimator"]["fallbacks"] == fallbacks
    html = build_report([out], tmp_path / "report.html").read_text()
    assert "class='warn'" in html
    assert "stage &#x27;retention&#x27;" in html or "stage 'retention'" in html


def test_well_observed_world_has_no_stage_fallback(world_model):
    assert [f for f in world_model.estimator["fallbacks"] if f["kind"] in ("stage", "touchpoints")] == []


def test_no_known_outcome_at_all_is_an_input_error(tmp_path):
    """Every customer seen once, nobody moved on: nothing to estimate under the cure model either."""
    path = tmp_path / "e.csv"
    path.write_text("customer_id,timestamp,touchpoint,stage\n"
                    "a,2024-01-01,web,awareness\nb,2024-01-02,web,awareness\nc,2024-01-03,web,awareness\n")
    with pytest.raises(InputError, match="known outcome"):
        estimate(load_events(path, stages="awareness,consideration,decision"))
