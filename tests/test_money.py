"""Money (issue 17): the value column, expected revenue, revenue uplift and the profit objective, measured
against a world whose values are known: conversion values drawn per persona on the row that converts,
small repeat values on retention rows that do not move the customer on."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reference_optimizer import reference_optimum
from typer.testing import CliRunner

from cli import app
from sim.exact import evaluate
from sim.model import Model
from sim.optimize import Objective, SpendSpace
from sim.scenario import apply, load_scenario

runner = CliRunner()
WORLD_SEED = 1717  # used by no other test
CONV_MEAN = {"deal_seeker": 60.0, "loyalist": 150.0, "researcher": 110.0}
REPEAT_MEAN = 8.0

FIX_TOML = """
model = "model.json"
customers = 100000
[[change]]
touchpoint = "checkout"
stage = "consideration"
drop_off = 0.5
"""

PROFIT_TOML = """
name = "profit"
model = "model.json"
customers = 100000

[objective]
maximize = "profit"

[[investment]]
name = "checkout_fix"
touchpoint = "checkout"
stage = "consideration"
lever = "drop_off"
max_effect = 0.6
half_saturation = 40000.0
max_spend = 300000.0

[[investment]]
name = "sales_boost"
touchpoint = "sales_chat"
lever = "advance"
max_effect = 0.5
half_saturation = 60000.0
max_spend = 300000.0

[[investment]]
name = "email_program"
touchpoint = "email"
lever = "exposure"
max_effect = 1.0
half_saturation = 30000.0
max_spend = 200000.0

[budget]
total = 400000.0
"""


def add_values(events: pd.DataFrame, model: Model, seed: int) -> pd.DataFrame:
    """The log with a `value` column: gamma conversion values (mean per persona) on the converting row,
    exponential repeat values on retention rows that stay in retention."""
    rng = np.random.default_rng(seed)
    ev = events.assign(_s=events["stage"].map({s: i for i, s in enumerate(model.stages)}).to_numpy(),
                       _o=np.arange(len(events)))
    ev = ev.sort_values(["customer_id", "_o"], kind="stable")
    high = ev.groupby("customer_id")["_s"].cummax()
    after = high.to_numpy()
    before = high.groupby(ev["customer_id"]).shift(1).fillna(0).to_numpy().astype(int)
    c, ret = model.conversion_index, model.stages.index("retention")
    conv = (before < c) & (after >= c)
    repeat = (before == ret) & (after == ret)
    mean = ev["persona"].map(CONV_MEAN).to_numpy()
    value = np.zeros(len(ev))
    value[conv] = rng.gamma(4.0, mean[conv] / 4.0)
    value[repeat] = rng.exponential(REPEAT_MEAN, int(repeat.sum()))
    ev["value"] = np.round(value, 2)
    return ev.sort_values("_o").drop(columns=["_s", "_o"])


def true_revenue(model: Model) -> float:
    """Expected revenue per customer of the true world, from its reach and retention interactions."""
    ex = evaluate(model)
    c, ret = model.conversion_index, model.stages.index("retention")
    staying = ex.interactions[:, ret].sum(-1) - ex.flow[:, ret, 1:].sum(-1)
    per = np.array([CONV_MEAN[p] for p in model.personas]) * ex.reach[:, c] + REPEAT_MEAN * staying
    return float(model.persona_share @ per)


def true_value_section(model: Model) -> dict:
    return {"currency": "EUR", "personas": {p: {"conversion": {"mean": CONV_MEAN[p]},
                                                "interaction": {"retention": {"mean": REPEAT_MEAN}}}
                                            for p in model.personas}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from worlds import make_world, simulate_log

    folder = tmp_path_factory.mktemp("money")
    truth = make_world(WORLD_SEED)
    events = add_values(simulate_log(truth, 30_000, seed=WORLD_SEED + 1).events, truth, WORLD_SEED + 2)
    events.to_csv(folder / "events.csv", index=False)
    result = runner.invoke(app, ["calibrate", str(folder / "events.csv"), "--out", str(folder / "model.json"),
                                 "--currency", "EUR"])
    assert result.exit_code == 0, result.output
    (folder / "base.toml").write_text('model = "model.json"\ncustomers = 100000\n')
    (folder / "fix.toml").write_text(FIX_TOML)
    (folder / "profit.toml").write_text(PROFIT_TOML)
    return folder, truth


def test_revenue_per_customer_recovered(world, tmp_path):
    folder, truth = world
    model = json.loads((folder / "model.json").read_text())
    assert model["value"]["currency"] == "EUR"
    assert model["value"]["personas"]["loyalist"]["conversion"]["n"] > 1000
    result = runner.invoke(app, ["simulate", str(folder / "base.toml"), "--customers", "2000", "--seed", "1",
                                 "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    truth_rev = true_revenue(truth)
    got = summary["expected_revenue_per_customer"]
    assert abs(got / truth_rev - 1) <= 0.03, (got, truth_rev)
    assert summary["expected_revenue"] == pytest.approx(got * 2000, rel=1e-9)
    assert summary["currency"] == "EUR"
    lo, hi = summary["expected_revenue_per_customer_interval"]
    assert lo < got < hi
    for name in truth.personas:
        assert summary["personas"][name]["expected_revenue_per_customer"] > 0
    assert "revenue" in result.output


def test_drop_off_fix_revenue_uplift(world, tmp_path):
    folder, truth = world
    result = runner.invoke(app, ["compare", str(folder / "base.toml"), str(folder / "fix.toml"), "--customers",
                                 "2000", "--seed", "2", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    rec = json.loads((tmp_path / "c" / "comparison.json").read_text())["scenarios"][0]
    true_uplift = true_revenue(apply(truth, load_scenario(folder / "fix.toml"))) - true_revenue(truth)
    got = rec["expected_revenue_uplift_per_customer"]
    assert abs(got / true_uplift - 1) <= 0.10, (got, true_uplift)
    assert rec["expected_revenue_uplift"] == pytest.approx(got * 2000, rel=1e-9)
    lo, hi = rec["expected_revenue_uplift_per_customer_interval"]
    assert lo < got < hi and lo > 0
    assert "revenue per 100 k customers" in result.output
    # comparison.csv carries the money columns, the numbers of comparison.json
    import csv

    row = next(csv.DictReader((tmp_path / "c" / "comparison.csv").open()))
    assert float(row["expected_revenue_uplift_per_customer"]) == rec["expected_revenue_uplift_per_customer"]
    assert float(row["expected_revenue_uplift"]) == rec["expected_revenue_uplift"]
    assert float(row["expected_revenue_per_customer"]) == rec["expected_revenue_per_customer"]
    assert [float(row["expected_revenue_uplift_interval_lo"]), float(row["expected_revenue_uplift_interval_hi"])
            ] == rec["expected_revenue_uplift_interval"]


def test_profit_split_earns_97_percent_of_the_true_best(world, tmp_path):
    folder, truth = world
    result = runner.invoke(app, ["optimize", str(folder / "profit.toml"), "--trials", "150", "--seed", "3",
                                 "--customers", "1000", "--draws", "0", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    best = json.loads((tmp_path / "o" / "best.json").read_text())
    assert best["maximize"] == "profit" and "objective" not in best  # --objective's key stays its own
    sc = load_scenario(folder / "profit.toml")
    space = SpendSpace.from_scenario(sc)
    valued = truth.copy()
    valued.extras["value"] = true_value_section(truth)
    true_obj = Objective(valued, sc)
    true_best, _ = reference_optimum(true_obj, space, starts=3)
    chosen = {k: v for k, v in best["allocation"].items() if k in space.names}
    assert true_obj(chosen) >= 0.97 * true_best, (true_obj(chosen), true_best)
    # the search against SLSQP on the model it optimised
    fitted = Objective(Model.load(folder / "model.json"), sc)
    fit_best, _ = reference_optimum(fitted, space, starts=3, extra_starts=[chosen])
    assert best["expected_profit"] >= 0.99 * fit_best
    assert best["expected_profit"] == pytest.approx(
        best["profit_customers"] * best["expected_revenue_uplift_per_customer"] - best["optimised_spend"], rel=1e-6)
    assert best["roi"] == pytest.approx(best["expected_profit"] / best["optimised_spend"], rel=1e-6)
    # profit leaves budget unspent and says why; at an interior optimum the next unit returns about 1
    assert best["unspent"] > 0 and "unspent" in best["unspent_reason"]
    for inv in best["investments"]:
        assert inv["roi"] is not None
        if 0 < inv["spend"] < inv["max_spend"]:
            assert inv["marginal_return"] == pytest.approx(1.0, abs=0.25), inv


def test_target_uplift_finds_a_cheap_split_that_reaches_it(world, tmp_path):
    folder, _ = world
    text = PROFIT_TOML.replace('maximize = "profit"', "target_uplift = 0.02")
    (folder / "target.toml").write_text(text)
    result = runner.invoke(app, ["optimize", str(folder / "target.toml"), "--trials", "120", "--seed", "4",
                                 "--customers", "1000", "--draws", "0", "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    best = json.loads((tmp_path / "t" / "best.json").read_text())
    assert best["target_reached"] and best["expected_uplift"] >= 0.02 - 1e-9
    assert best["spend"] < 0.5 * 400000.0  # far from the whole budget


@pytest.mark.parametrize("bad", ["-5", "NaN", "ten", "inf"])
def test_bad_values_exit_2_with_one_line(tmp_path, bad):
    rows = pd.DataFrame({"customer_id": ["a", "a", "b"], "timestamp": ["2024-01-01", "2024-01-02", "2024-01-03"],
                         "touchpoint": ["web", "checkout", "web"], "stage": ["awareness", "decision", "awareness"],
                         "value": ["", bad, "3.5"]})
    rows.to_csv(tmp_path / "e.csv", index=False)
    result = runner.invoke(app, ["calibrate", str(tmp_path / "e.csv"), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 2
    lines = [x for x in result.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "e.csv" in lines[0] and "row 2" in lines[0] and "'value'" in lines[0]
    assert bad in lines[0]
    assert not (tmp_path / "m.json").exists()


def test_mapping_names_the_value_column_and_the_currency(tmp_path):
    rows = pd.DataFrame({"cid": ["a", "a", "b", "b"],
                         "timestamp": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"],
                         "touchpoint": ["web", "checkout", "web", "web"],
                         "stage": ["awareness", "decision", "awareness", "awareness"],
                         "revenue": ["", "99.5", "", "1"]})
    rows.to_csv(tmp_path / "e.csv", index=False)
    (tmp_path / "map.toml").write_text('currency = "USD"\n[columns]\ncustomer_id = "cid"\nvalue = "revenue"\n')
    result = runner.invoke(app, ["calibrate", str(tmp_path / "e.csv"), "--out", str(tmp_path / "m.json"),
                                 "--mapping", str(tmp_path / "map.toml")])
    assert result.exit_code == 0, result.output
    model = Model.load(tmp_path / "m.json")
    section = model.extras["value"]
    assert section["currency"] == "USD"
    assert section["personas"]["all"]["conversion"] == {"mean": 99.5, "sd": 0.0, "n": 1}
    assert section["personas"]["all"]["interaction"]["awareness"]["n"] == 3
    assert Model.from_dict(json.loads(model.to_json())).to_json() == model.to_json()  # round trip


def test_models_without_values_behave_as_before(tmp_path):
    from worlds import make_world, simulate_log

    truth = make_world(WORLD_SEED + 10)
    simulate_log(truth, 3000, seed=5).events.to_csv(tmp_path / "e.csv", index=False)
    assert runner.invoke(app, ["calibrate", str(tmp_path / "e.csv"), "--out", str(tmp_path / "model.json")]
                         ).exit_code == 0
    assert "value" not in json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "fix.toml").write_text(FIX_TOML)
    result = runner.invoke(app, ["compare", str(tmp_path / "model.json"), str(tmp_path / "fix.toml"),
                                 "--customers", "500", "--seed", "1", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "c" / "comparison.json").read_text()
    assert "revenue" not in text and "currency" not in text and "money" not in result.output
    from sim.compare import CSV_COLUMNS

    header = (tmp_path / "c" / "comparison.csv").read_text().splitlines()[0]
    assert header == ",".join(CSV_COLUMNS)  # the columns of a comparison without money, as before
    # a scenario's [value] gives a model without values its money
    (tmp_path / "valued.toml").write_text(FIX_TOML + "[value]\nper_conversion = 120.0\n")
    result = runner.invoke(app, ["simulate", str(tmp_path / "valued.toml"), "--customers", "500", "--seed", "1",
                                 "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["expected_revenue_per_customer"] == pytest.approx(120.0 * summary["expected_conversion_rate"],
                                                                     rel=1e-9)


@pytest.mark.parametrize("table, words", [
    ("[value]\nper_conversion = -1\n", "value.per_conversion"),
    ("[value]\nper_conversion = true\n", "value.per_conversion"),
    ("[value]\nper_sale = 3\n", "per_sale"),
    ("[value.nobody]\nper_conversion = 3\n", "value.nobody"),
    ('[objective]\nmaximize = "money"\n', "objective.maximize"),
    ('[objective]\nmaximize = "profit"\ntarget_uplift = 0.01\n', "target_uplift"),
])
def test_bad_scenario_money_keys_exit_2(world, tmp_path, table, words):
    folder, _ = world
    path = folder / "bad.toml"
    path.write_text(f'model = "model.json"\ncustomers = 1000\n{table}')
    result = runner.invoke(app, ["simulate", str(path), "--customers", "100", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and words in result.output


def test_profit_needs_customers(world, tmp_path):
    folder, _ = world
    path = folder / "nocust.toml"
    path.write_text(PROFIT_TOML.replace("customers = 100000\n", ""))
    result = runner.invoke(app, ["optimize", str(path), "--trials", "2", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "customers" in result.output


def test_value_draws_leave_the_other_draws_alone(world):
    from application.context import RunContext
    from sim.uncertainty import parameter_draws

    folder, _ = world
    model = Model.load(Path(folder) / "model.json")
    bare = model.copy()
    bare.extras.pop("value")
    with_values = parameter_draws(model, 5, RunContext(1).stream("draws"))
    without = parameter_draws(bare, 5, RunContext(1).stream("draws"))
    for a, b in zip(with_values, without):
        assert np.array_equal(a.drop, b.drop) and np.array_equal(a.persona_share, b.persona_share)
    means = [m.extras["value"]["personas"]["loyalist"]["conversion"]["mean"] for m in with_values]
    assert len(set(means)) == 5
    assert np.mean(means) == pytest.approx(model.extras["value"]["personas"]["loyalist"]["conversion"]["mean"],
                                           rel=0.05)


def test_report_draws_each_investments_return_with_its_marginal_return(world, tmp_path):
    from application.report import build_report

    folder, _ = world
    result = runner.invoke(app, ["optimize", str(folder / "profit.toml"), "--trials", "20", "--seed", "5",
                                 "--customers", "500", "--draws", "10", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    best = json.loads((tmp_path / "o" / "best.json").read_text())
    curves = best["response_curves"]
    assert set(curves) == {inv["name"] for inv in best["investments"]}
    inside = 0
    for inv in best["investments"]:
        x, y = np.array(curves[inv["name"]]["spend"]), np.array(curves[inv["name"]]["revenue_uplift"])
        assert x[0] == inv["min_spend"] == 0 and x[-1] == inv["max_spend"] and y[0] == 0
        assert np.all(np.diff(y) > 0)
        # concave: the marginal return at the chosen spend lies between the slopes of the grid's segments
        # wholly left and wholly right of it
        i = int(np.searchsorted(x, inv["spend"]))  # x[i - 1] < spend <= x[i]
        if 2 <= i < len(x) - 1:
            slopes = np.diff(y) / np.diff(x)
            assert slopes[i] - 1e-9 <= inv["marginal_return"] <= slopes[i - 2] + 1e-9, inv
            inside += 1
    assert inside >= 1
    assert (tmp_path / "o" / "response_money.png").stat().st_size > 0
    # the money intervals, on the same draws: profit = revenue uplift - the spend, draw by draw
    lo, hi = best["expected_profit_interval"]
    assert lo < best["expected_profit"] < hi
    spent = best["optimised_spend"]
    assert [lo + spent, hi + spent] == pytest.approx(best["expected_revenue_uplift_interval"], rel=1e-9)
    assert 0 <= best["probability_profitable"] <= 1

    out = tmp_path / "report.html"
    build_report([tmp_path / "o"], out)
    text = out.read_text(encoding="utf-8")
    assert 'alt="Revenue back per investment"' in text
    for inv in best["investments"]:
        assert f"{inv['name']}: spend {inv['spend']:,.0f}, marginal return {inv['marginal_return']:.2f}" in text
    data = json.loads((tmp_path / "report_figures" / "response-money-o.json").read_text())
    assert data["marginal_return"] == [inv["marginal_return"] for inv in best["investments"]]
    assert data["chosen_spend"] == [inv["spend"] for inv in best["investments"]]


def test_hotspots_by_revenue_follow_the_value_of_a_conversion(tmp_path):
    """With one value per conversion and nothing else, revenue is that value x conversion: the revenue
    columns are the conversion gains in money."""
    from conftest import DEMO_MODEL
    from sim.hotspots import hotspot_cells
    from sim.scenario import with_drop_scaled

    model = Model.load(DEMO_MODEL)
    plain = hotspot_cells(model)
    assert all("revenue_lost_per_1000" not in c for c in plain)
    valued = model.copy()
    valued.extras["value"] = {"currency": "EUR", "personas": {p: {"conversion": {"mean": 80.0}}
                                                              for p in model.personas}}
    cells = hotspot_cells(valued)
    assert [{k: v for k, v in c.items() if not k.startswith("revenue")} for c in cells] == plain  # rest as it was
    for c in cells:
        assert c["revenue_gain_if_drop_cut_10pct"] == pytest.approx(80.0 * c["gain_if_drop_cut_10pct"],
                                                                    rel=1e-6, abs=1e-9)
        s, t = model.stages.index(c["stage"]), model.touchpoints.index(c["touchpoint"])
        none_there = with_drop_scaled(model, np.s_[:, s, t], 0.0)
        gained = evaluate(none_there).conversion_rate - evaluate(model).conversion_rate
        assert c["revenue_lost_per_1000"] == pytest.approx(80_000 * gained, rel=1e-6, abs=1e-9)
        if c["after_conversion"]:
            assert c["revenue_lost_per_1000"] == pytest.approx(0.0, abs=1e-6)
    by_revenue = hotspot_cells(valued, by="revenue")
    lost = [c["revenue_lost_per_1000"] for c in by_revenue]
    assert lost == sorted(lost, reverse=True) and [c["rank"] for c in by_revenue] == list(range(1, len(cells) + 1))
    assert lost != [c["revenue_lost_per_1000"] for c in cells]  # a different order from journeys lost

    # the command: the revenue column; --by revenue on a model without values is one line, exit 2
    path = tmp_path / "valued.json"
    path.write_text(valued.to_json())
    result = runner.invoke(app, ["hotspots", str(path), "--by", "revenue", "--top", "3", "--draws", "0",
                                 "--out", str(tmp_path / "h.json")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "h.json").read_text())
    assert record["ranked_by"] == "revenue lost" and record["currency"] == "EUR"
    assert [c["touchpoint"] for c in record["hotspots"]] == [c["touchpoint"] for c in by_revenue[:3]]
    assert "revenue lost" in result.output
    result = runner.invoke(app, ["hotspots", str(DEMO_MODEL), "--by", "revenue"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "--by" in result.output and "value column" in result.output
