"""journey optimize under the data's uncertainty: best.json's intervals, --objective, stability, words."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from application.context import RunContext
from cli import app
from conftest import ROOT
from sim.model import Model
from sim.optimize import POINT, ObjectiveSpec, fingerprint, make_objective
from sim.scenario import load_scenario

runner = CliRunner()
BUDGET_TOML = ROOT / "scenarios" / "examples" / "budget.toml"
NEW_KEYS = {"objective", "objective_method", "objective_draws", "objective_value", "objective_baseline",
            "expected_uplift_interval", "probability_beats_baseline", "probability_beats_even_split", "even_split",
            "even_split_expected_uplift", "even_split_expected_uplift_interval", "stability", "data_uncertainty"}


def invoke(*args):
    return runner.invoke(app, ["optimize", *[str(a) for a in args]])


def ok(*args) -> dict:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return json.loads((Path(args[args.index("--out") + 1]) / "best.json").read_text())


def test_best_json_says_how_sure_the_data_is_and_is_reproducible(tmp_path):
    args = (BUDGET_TOML, "--trials", 20, "--seed", 2, "--customers", 1000, "-q")
    best = ok(*args, "--out", tmp_path / "a")
    ok(*args, "--out", tmp_path / "b")
    assert (tmp_path / "a" / "best.json").read_bytes() == (tmp_path / "b" / "best.json").read_bytes()
    assert NEW_KEYS - {"objective_draws", "objective_value", "objective_baseline"} <= set(best)
    assert best["objective"] == "point" and "objective_value" not in best
    lo, hi = best["expected_uplift_interval"]
    assert lo <= best["expected_uplift"] <= hi and lo > 0  # 150 k on these levers is a sure gain
    elo, ehi = best["even_split_expected_uplift_interval"]
    assert elo <= best["even_split_expected_uplift"] <= ehi
    for key in ("probability_beats_baseline", "probability_beats_even_split"):
        assert 0.0 <= best[key] <= 1.0
    assert best["probability_beats_baseline"] == 1.0
    assert best["expected_uplift"] > best["even_split_expected_uplift"]
    assert best["data_uncertainty"]["draws"] == 200 and best["data_uncertainty"]["customers_behind_model"] == 6000
    # the even split is the study's first trial (one rule, one owner)
    with (tmp_path / "a" / "trials.csv").open() as fh:
        first = next(csv.DictReader(fh))
    assert {k: float(first[f"spend_{k}"]) for k in best["even_split"]} == best["even_split"]
    st = best["stability"]
    assert st["draws"] == 20 and 0.0 <= st["share_of_draws_near_best"] <= 1.0
    assert set(st["best_spend_range"]) == set(best["allocation"])
    for a, b in st["best_spend_range"].values():
        assert 0.0 <= a <= b <= 150.0
    # the checkout fix carries most of the best splits: its range is well away from nothing
    assert st["best_spend_range"]["checkout_fix"][0] > 50.0


def test_draws_0_adds_nothing(tmp_path):
    best = ok(BUDGET_TOML, "--trials", 8, "--seed", 2, "--customers", 1000, "--draws", 0, "-q", "--out", tmp_path / "a")
    assert not NEW_KEYS & set(best)
    with_draws = ok(BUDGET_TOML, "--trials", 8, "--seed", 2, "--customers", 1000, "--draws", 30, "-q",
                    "--out", tmp_path / "b")
    assert {k: v for k, v in with_draws.items() if k not in NEW_KEYS} == best
    assert with_draws["data_uncertainty"]["draws"] == 30


def test_mean_and_q10_objectives_run_are_recorded_and_workers_rebuild_them(tmp_path):
    mean = ok(BUDGET_TOML, "--trials", 12, "--seed", 2, "--customers", 1000, "--objective", "mean", "-q",
              "--out", tmp_path / "m")
    assert mean["objective"] == "mean" and mean["objective_draws"] == 40
    # the trials' values are the objective's; best.json's conversions stay the calibrated model's
    assert mean["objective_value"] == pytest.approx(float(max(
        r["value"] for r in csv.DictReader((tmp_path / "m" / "trials.csv").open()))), rel=1e-9)
    q10 = ok(BUDGET_TOML, "--trials", 12, "--seed", 2, "--customers", 1000, "--objective", "q10", "--workers", 2,
             "-q", "--out", tmp_path / "q")
    assert q10["objective"] == "q10" and q10["trials"] == 12
    sc = load_scenario(BUDGET_TOML)
    obj = make_objective(Model.load(sc.model_path), sc, ObjectiveSpec.parse("q10"), 200, RunContext(2))
    spends = {k: v for k, v in q10["allocation"].items()}
    assert q10["objective_value"] == pytest.approx(obj(spends), rel=1e-9)  # the workers' objective is this one
    assert 0 < q10["objective_value"] < q10["expected_uplift"]  # a low percentile of the uplift
    assert q10["objective_baseline"] == 0.0


CHOICE_TOML = """name = "certain or not"
model = "model.json"

[[investment]]
name = "certain"
touchpoint = "checkout"
stage = "consideration"
persona = "deal_seeker"
lever = "drop_off"
max_effect = 0.3
half_saturation = 1000.0
max_spend = 100.0

[[investment]]
name = "uncertain"
touchpoint = "web"
stage = "consideration"
persona = "deal_seeker"
lever = "drop_off"
max_effect = {effect}
half_saturation = 1000.0
max_spend = 100.0

[budget]
total = 100.0
"""


def test_q10_prefers_the_certain_lever_to_a_slightly_better_uncertain_one(tmp_path):
    # the demo model, with the evidence behind one cell (deal seekers on the web while considering) cut
    # to 0.5 %: its calibrated numbers stay, its posterior becomes wide
    model = Model.load(ROOT / "scenarios" / "demo" / "model.json")
    p, s, t = model.personas.index("deal_seeker"), model.stages.index("consideration"), model.touchpoints.index("web")
    for key in ("interactions", "decided", "dropped", "stayed", "advanced"):
        counts = model.counts[key].astype(float)
        counts[p, s, t] *= 0.005
        model.counts[key] = counts
    (tmp_path / "model.json").write_text(model.to_json())
    toml = tmp_path / "s.toml"
    # the uncertain lever's effect such that it gains 10 % more than the certain one on the calibrated model
    lo, hi = 0.01, 1.0
    for _ in range(25):
        mid = (lo + hi) / 2
        toml.write_text(CHOICE_TOML.format(effect=mid))
        sc = load_scenario(toml)
        point = make_objective(Model.load(sc.model_path), sc, POINT, 0, RunContext(0))
        a = point({"certain": 100.0, "uncertain": 0.0}) - point.baseline
        b = point({"certain": 0.0, "uncertain": 100.0}) - point.baseline
        lo, hi = (mid, hi) if b < 1.1 * a else (lo, mid)
    toml.write_text(CHOICE_TOML.format(effect=round(mid, 4)))
    sc = load_scenario(toml)
    cautious = make_objective(Model.load(sc.model_path), sc, ObjectiveSpec.parse("q10"), 200, RunContext(5))
    all_certain, all_uncertain = {"certain": 100.0, "uncertain": 0.0}, {"certain": 0.0, "uncertain": 100.0}
    assert point(all_uncertain) > point(all_certain)
    assert cautious(all_certain) > cautious(all_uncertain)
    # and the searches follow
    common = ("--trials", 50, "--seed", 5, "--customers", 1000, "-q")
    chosen_point = ok(toml, *common, "--out", tmp_path / "p")["allocation"]
    best_q10 = ok(toml, *common, "--objective", "q10", "--out", tmp_path / "q")
    assert chosen_point["uncertain"] > chosen_point["certain"]
    assert best_q10["allocation"]["certain"] > best_q10["allocation"]["uncertain"]
    # the cautious split is surer: its interval is narrower
    p_lo, p_hi = ok(toml, *common, "--out", tmp_path / "p2")["expected_uplift_interval"]
    q_lo, q_hi = best_q10["expected_uplift_interval"]
    assert q_hi - q_lo < p_hi - p_lo and q_lo > p_lo


def test_a_study_resumed_with_another_objective_is_refused(tmp_path):
    out = tmp_path / "r"
    ok(BUDGET_TOML, "--trials", 5, "--seed", 1, "--customers", 1000, "-q", "--out", out)
    for extra in (("--objective", "q10"), ("--objective", "mean")):
        result = invoke(BUDGET_TOML, "--trials", 8, "--seed", 1, *extra, "--out", out)
        assert result.exit_code == 2, result.output
        line = result.output.strip()
        assert "\n" not in line and "another objective (point)" in line and "--study" in line
    ok(BUDGET_TOML, "--trials", 10, "--seed", 1, "--customers", 1000, "-q", "--objective", "q10",
       "--out", tmp_path / "q")
    for extra in (("--draws", 100), ("--seed", 2), ("--objective", "q20")):
        args = {"--seed": 1, "--draws": 200, "--objective": "q10"} | {extra[0]: extra[1]}
        result = invoke(BUDGET_TOML, "--trials", 12, *[x for kv in args.items() for x in kv],
                        "--out", tmp_path / "q")
        assert result.exit_code == 2 and "another objective (q10 over 200 draws, seed 1)" in result.output, extra
    assert ok(BUDGET_TOML, "--trials", 12, "--seed", 1, "--customers", 1000, "-q", "--objective", "q10",
              "--out", tmp_path / "q")["trials"] == 12  # the same objective resumes


@pytest.mark.parametrize("value", ["q0", "q100", "median", "q5.5", "q", "q-5", "p10", ""])
def test_bad_objective_is_one_line_exit_2_and_writes_nothing(value, tmp_path):
    result = invoke(BUDGET_TOML, "--objective", value, "--out", tmp_path / "x")
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and "--objective" in line and repr(value) in line and "q10" in line
    assert not (tmp_path / "x").exists()


def test_objectives_over_draws_need_draws(tmp_path):
    result = invoke(BUDGET_TOML, "--objective", "mean", "--draws", 0, "--out", tmp_path / "x")
    assert result.exit_code == 2 and "--objective" in result.output and "--draws" in result.output
    assert not (tmp_path / "x").exists()


def test_objective_spec_and_fingerprint():
    assert ObjectiveSpec.parse("Q05").label == "q5" and ObjectiveSpec.parse("q99").q == 99
    assert ObjectiveSpec.parse("mean").draws_used(200) == 40 and ObjectiveSpec.parse("mean").draws_used(7) == 7
    sc = load_scenario(BUDGET_TOML)
    today = fingerprint(sc, "abc")
    assert fingerprint(sc, "abc", POINT, 200, 1) == today  # point studies resume as before
    prints = {fingerprint(sc, "abc", ObjectiveSpec.parse(o), d, s)
              for o, d, s in (("mean", 200, 1), ("q10", 200, 1), ("q20", 200, 1), ("q10", 100, 1), ("q10", 200, 2))}
    assert len(prints) == 5 and today not in prints


# ---- words: terminal and report ----------------------------------------------------------------
def _best(interval: list[float], **extra) -> dict:
    return {"scenario": "q3", "trials": 5, "allocation": {"a": 90.0, "b": 60.0}, "spend": 150.0, "budget": 150.0,
            "expected_conversion_rate": 0.47, "baseline_expected_conversion_rate": 0.44, "expected_uplift": 0.03,
            "study": "q3", "storage": "study.log", "investments": [],
            "expected_uplift_interval": interval, "probability_beats_baseline": 0.8,
            "probability_beats_even_split": 0.6, "even_split_expected_uplift": 0.02,
            "stability": {"draws": 20, "share_of_draws_near_best": 0.75, "best_spend_range": {"a": [70.0, 110.0],
                                                                                             "b": [60.0, 60.0]}},
            "data_uncertainty": {"draws": 200, "customers_behind_model": 6000}, "objective": "point", **extra}


def test_terminal_lines_lead_with_the_interval_in_plain_words():
    from application.terminal import best_lines

    unsure = best_lines(_best([-0.01, 0.07]))
    assert "+3.00 points" in unsure[0] and "-1.00 to +7.00" in unsure[0] and "6,000 real customers" in unsure[0]
    assert "the data cannot tell yet" in unsure[0]
    assert "80 %" in unsure[1] and "60 %" in unsure[1] and "even split" in unsure[1]
    assert "15 of 20" in unsure[2] and "a 70-110" in unsure[2] and " b " not in unsure[2]
    assert "a real gain" in best_lines(_best([0.01, 0.05]))[0]
    q = best_lines(_best([0.01, 0.05], objective="q10", objective_draws=40))
    assert "90 % of 40 plausible versions" in q[-1]
    for line in unsure + q:
        for jargon in ("posterior", "draw", "percentile", "quantile", "SLSQP"):
            assert jargon not in line
    assert best_lines({k: v for k, v in _best([0.0, 0.1]).items() if k not in NEW_KEYS}) == []


def test_report_says_the_interval_and_when_the_data_cannot_tell(tmp_path):
    from application.report import build_report
    from present.report_headline import headline_data
    from present.report_runs import load_runs

    for name, interval in (("unsure", [-0.01, 0.07]), ("sure", [0.01, 0.05])):
        d = tmp_path / name
        d.mkdir()
        (d / "best.json").write_text(json.dumps(_best(interval)))
        text = headline_data(load_runs([d]))["text"]
        assert f"{100 * interval[0]:+.2f} pts to {100 * interval[1]:+.2f} pts" in text
        assert ("the data cannot tell yet" in text) == (name == "unsure")
        assert "6,000 real customers" in text
        page = build_report([d], tmp_path / f"{name}.html").read_text()
        assert "95% interval of the gain" in page and "15 of 20 plausible versions" in page
        assert ("the data cannot tell yet" in page) == (name == "unsure")
    old = tmp_path / "old"
    old.mkdir()
    (old / "best.json").write_text(json.dumps({k: v for k, v in _best([0, 1]).items() if k not in NEW_KEYS}))
    assert "cannot tell" not in headline_data(load_runs([old]))["text"]


def test_stability_is_quick_on_the_demo_budget():
    import time

    from application.context import RunContext
    from sim.optimize import SpendSpace, stability
    from sim.uncertainty import parameter_draws

    sc = load_scenario(BUDGET_TOML)
    model = Model.load(sc.model_path)
    spends = {"checkout_fix": 96.43, "sales_chat_staff": 33.22, "email_program": 0.0, "support_training": 20.35}
    models = parameter_draws(model, 200, RunContext(1).stream("draws"))[:20]
    start = time.perf_counter()
    st = stability(models, sc, SpendSpace.from_scenario(sc), spends, None)
    assert time.perf_counter() - start < 15  # ~1 s alone; a loaded CI machine is slower
    assert st["share_of_draws_near_best"] == 1.0  # near the calibrated optimum: near every draw's
    far = stability(models[:5], sc, SpendSpace.from_scenario(sc),
                    {"checkout_fix": 0.0, "sales_chat_staff": 0.0, "email_program": 100.0,
                     "support_training": 50.0}, None)
    assert far["share_of_draws_near_best"] == 0.0
    assert np.isclose(sum(np.mean(v) for v in st["best_spend_range"].values()), 150.0, rtol=0.05)
