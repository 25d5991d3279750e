"""The presentation layer: figure data on numbers, drawings smoke-tested, the HTML report end to end."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from typer.testing import CliRunner

from application.report import build_report
from calibration.experience import satisfaction_by_cell
from calibration.load import load_events
from cli import app
from present.figures.backtest import backtest_data, draw_backtest
from present.figures.common import PERSONA_COLOURS, figure, palette, pct
from present.figures.evidence import draw_evidence, dwell_rows, evidence_data
from present.figures.funnel import draw_funnel, funnel_data
from present.figures.journey_map import draw_emotion_curve, draw_journey_map, journey_map_data
from present.figures.optimization import (
    allocation_data,
    draw_allocation,
    draw_history,
    draw_response,
    history_data,
    response_data,
)
from present.figures.uplift import draw_uplift, persona_uplift_data, uplift_data
from present.report_headline import headline_data
from present.report_runs import load_runs
from sim.exact import evaluate
from sim.model import Model

runner = CliRunner()

SCENARIOS = {
    "checkout fix": '[[change]]\ntouchpoint = "checkout"\nstage = "consideration"\ndrop_off = 0.7\n',
    "drop ads": '[[change]]\ntouchpoint = "ad"\nremove = true\n',
}


# ---- fixtures: real simulate / compare runs, contract-shaped optimize / backtest results -----------
@pytest.fixture(scope="module")
def runs(demo_model_path, tmp_path_factory):
    from application.simulate import run_simulate

    root = tmp_path_factory.mktemp("runs")
    tomls = []
    for name, body in SCENARIOS.items():
        path = root / f"{name.replace(' ', '_')}.toml"
        path.write_text(f'name = "{name}"\nmodel = "{demo_model_path}"\n{body}')
        tomls.append(path)
    sim_dir, _ = run_simulate(demo_model_path, customers=20_000, seed=1, replications=2, engine="fast",
                              out=root / "simulate")
    scen_dir, _ = run_simulate(tomls[0], customers=5_000, seed=1, replications=1, engine="fast",
                               out=root / "simulate_fix")
    from application.compare import run_compare

    cmp_dir, _ = run_compare(demo_model_path, tomls, customers=5_000, seed=1, replications=2, out=root / "compare",
                             quiet=True)
    opt_dir = root / "optimize"
    opt_dir.mkdir()
    investments = [
        {"name": "checkout_fix", "lever": "drop_off", "max_effect": 0.6, "half_saturation": 40.0,
         "min_spend": 0.0, "max_spend": 150.0, "spend": 90.0},
        {"name": "email_program", "lever": "exposure", "max_effect": 1.0, "half_saturation": 30.0,
         "min_spend": 0.0, "max_spend": 100.0, "spend": 60.0},
    ]
    (opt_dir / "best.json").write_text(json.dumps({
        "allocation": {"checkout_fix": 90.0, "email_program": 60.0}, "spend": 150.0,
        "expected_conversion_rate": 0.47, "baseline_expected_conversion_rate": 0.44, "expected_uplift": 0.03,
        "trials": 5, "study": "q3", "storage": "sqlite:///study.db", "investments": investments}))
    (opt_dir / "trials.csv").write_text(
        "number,value,state,spend_checkout_fix,spend_email_program\n"
        "0,0.45,COMPLETE,10,10\n1,,PRUNED,5,5\n2,0.44,COMPLETE,50,0\n3,0.47,COMPLETE,90,60\n4,0.46,COMPLETE,80,70\n")
    (opt_dir / "manifest.json").write_text(json.dumps({"command": "optimize", "arguments": {"scenario": str(tomls[0])},
                                                       "seed": 3, "journey_version": "0.1.0", "inputs": {}}))
    bt_dir = root / "backtest"
    bt_dir.mkdir()
    stages = ["awareness", "consideration", "decision", "retention", "advocacy"]
    obs, pred, naive = [1, 0.78, 0.41, 0.27, 0.15], [1, 0.8, 0.43, 0.29, 0.17], [1, 0.7, 0.33, 0.2, 0.1]
    (bt_dir / "backtest.json").write_text(json.dumps({
        "split": "2024-05-01", "predicted": dict(zip(stages, pred)), "observed": dict(zip(stages, obs)),
        "naive": dict(zip(stages, naive)), "error": {s: abs(p - o) for s, p, o in zip(stages, pred, obs)},
        "naive_error": {s: abs(n - o) for s, n, o in zip(stages, naive, obs)}}))
    return {"simulate": sim_dir, "simulate_fix": scen_dir, "compare": cmp_dir, "optimize": opt_dir,
            "backtest": bt_dir, "model": demo_model_path, "root": root}


@pytest.fixture(scope="module")
def model(runs):
    return Model.load(runs["model"])


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    build_report([runs["simulate"], runs["compare"], runs["optimize"], runs["backtest"]], out)
    return out


# ---- figure data on numbers ----------------------------------------------------------------------
def test_journey_map_of_one_persona_is_its_parameters(model):
    S1 = model.n_stages - 1
    for p, name in enumerate(model.personas):
        d = journey_map_data(model, name)
        assert d.stages == model.stages[:S1] and d.touchpoints == model.touchpoints
        np.testing.assert_allclose(np.array(d.share).T, model.share[p, :S1], atol=1e-12)
        np.testing.assert_allclose(np.array(d.drop_off).T, model.drop[p, :S1], atol=1e-12)
        np.testing.assert_allclose(np.array(d.advance).T, model.advance[p, :S1].sum(-1), atol=1e-12)
        np.testing.assert_allclose(d.lapse[1:], model.lapse[p, 1:S1], atol=1e-12)


def test_mixed_journey_map_adds_up_to_the_expected_drop_offs(model):
    """Mixing personas by expected interactions keeps share x drop-off x traffic = expected journeys lost.

    Exact with one time to leave per stage; way-out-specific speeds change the mix of staying and
    leaving interactions, so the identity is checked on the plain-dwell version of the model."""
    model = model.copy()
    model.leave_speed[:] = 1.0
    S1 = model.n_stages - 1
    d = journey_map_data(model)
    ex = evaluate(model)
    lost = np.einsum("p,pst->st", model.persona_share, ex.drop_offs)[:S1]
    inter = np.einsum("p,pst->st", model.persona_share, ex.interactions)[:S1]
    np.testing.assert_allclose(np.array(d.lost_per_1000).T, 1000 * lost, rtol=1e-9)
    np.testing.assert_allclose(np.array(d.drop_off).T * inter, lost, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(np.array(d.share).T, inter / inter.sum(axis=1, keepdims=True), rtol=1e-9)
    np.testing.assert_allclose(d.reach, ex.reach_overall[:S1], rtol=1e-12)
    # each mixed rate lies within the personas' range
    for arr, mixed in ((model.drop, d.drop_off), (model.advance.sum(-1), d.advance)):
        m = np.array(mixed).T
        assert np.all(m >= arr[:, :S1].min(axis=0) - 1e-12) and np.all(m <= arr[:, :S1].max(axis=0) + 1e-12)


def test_top_risk_points_are_the_largest_expected_drop_off_cells(model):
    d = journey_map_data(model, top=3)
    lost = np.einsum("p,pst->st", model.persona_share, evaluate(model).drop_offs)[:-1]
    want = np.argsort(-lost, axis=None)[:3]
    got = [(model.stages.index(r["stage"]), model.touchpoints.index(r["touchpoint"])) for r in d.risk]
    assert got == [tuple(int(i) for i in np.unravel_index(k, lost.shape)) for k in want]
    assert [r["rank"] for r in d.risk] == [1, 2, 3]
    assert d.risk[0]["lost_per_1000"] >= d.risk[1]["lost_per_1000"] >= d.risk[2]["lost_per_1000"] > 0


def test_funnel_data_matches_the_summary_and_the_model(runs, model):
    summary = json.loads((runs["simulate"] / "summary.json").read_text())
    d = funnel_data(summary, model)
    ex = evaluate(model)
    for p, name in enumerate(model.personas):
        np.testing.assert_allclose(d.expected[name], ex.reach[p], rtol=1e-12)
        assert d.expected[name][model.conversion_index] == pytest.approx(
            summary["personas"][name]["expected_conversion_rate"], abs=1e-9)
    assert d.simulated == [summary["stages"][s]["reached_rate"] for s in model.stages]
    for sim, (lo, hi) in zip(d.simulated, d.simulated_ci):
        assert lo <= sim <= hi
    assert d.simulated_ci[model.conversion_index] == summary["conversion_rate_ci"]
    # Wilson half-width ~ 1.96 sqrt(p(1-p)/n) over the 40 000 simulated customers
    s = 1
    half = (d.simulated_ci[s][1] - d.simulated_ci[s][0]) / 2
    p = d.simulated[s]
    assert half == pytest.approx(1.96 * np.sqrt(p * (1 - p) / 40_000), rel=0.02)


def test_funnel_of_a_scenario_run_uses_the_changed_model(runs):
    from present.report_runs import resolve_model

    run = [r for r in load_runs([runs["simulate_fix"]])][0]
    ref = resolve_model(run)
    assert ref is not None and ref.applied is not None
    d = funnel_data(run.data, ref.applied)
    conv = run.data["conversion_stage"]
    assert d.expected_overall[d.stages.index(conv)] == pytest.approx(run.data["expected_conversion_rate"], abs=1e-9)


def test_uplift_and_persona_uplift_data_follow_the_comparison(runs):
    comparison = json.loads((runs["compare"] / "comparison.json").read_text())
    d = uplift_data(comparison)
    assert d.names == [s["name"] for s in comparison["scenarios"]] == list(SCENARIOS)
    assert d.uplift == [s["uplift"] for s in comparison["scenarios"]]
    assert d.ci == [s["uplift_ci"] for s in comparison["scenarios"]]
    assert set(d.colours) == set(d.names) and len(set(d.colours.values())) == len(d.names)
    pu = persona_uplift_data(comparison)
    if "personas" in comparison["scenarios"][0]:  # an extra of compare, used only when present
        assert pu is not None and pu.personas == sorted(comparison["scenarios"][0]["personas"])


def test_headline_names_the_best_scenario_with_its_interval(runs):
    loaded = load_runs([runs["compare"]])
    comparison = loaded[0].data
    best = max(comparison["scenarios"], key=lambda s: s["uplift"])
    h = headline_data(loaded)
    assert best["name"] in h["text"]
    assert f"{100 * best['uplift']:+.2f} pts" in h["text"]
    lo, hi = best["uplift_ci"]
    assert f"{100 * lo:+.2f} pts to {100 * hi:+.2f} pts" in h["text"]
    sim = headline_data(load_runs([runs["simulate"]]))
    summary = loaded and json.loads((runs["simulate"] / "summary.json").read_text())
    assert f"{100 * summary['conversion_rate']:.1f}%" in sim["text"]


def test_palette_is_fixed_by_sorted_names():
    a = palette(["loyalist", "deal_seeker", "researcher"])
    b = palette(["researcher", "loyalist", "deal_seeker", "loyalist"])
    assert a == b and a["deal_seeker"] == PERSONA_COLOURS[0]


def test_history_keeps_completed_trials_and_the_best_so_far():
    rows = [{"number": "0", "value": "0.45", "state": "COMPLETE"}, {"number": "1", "value": "", "state": "PRUNED"},
            {"number": "2", "value": "0.44", "state": "COMPLETE"},
            {"number": "3", "value": "0.47", "state": "COMPLETE"}, {"number": "4", "value": "0.5", "state": "FAIL"}]
    h = history_data(rows)
    assert h.number == [0, 2, 3] and h.best_so_far == [0.45, 0.45, 0.47] and h.skipped == 2
    assert history_data([{"number": "0", "value": "", "state": "RUNNING"}]) is None
    assert history_data(rows, maximize=False).best_so_far == [0.45, 0.44, 0.44]


def test_response_curves_follow_the_saturating_effect():
    inv = [{"name": "a", "max_effect": 0.6, "half_saturation": 40.0, "max_spend": 150.0, "lever": "drop_off"},
           {"name": "no curve"}]
    d = response_data(inv, {"a": 40.0})
    assert d.names == ["a"] and d.chosen_effect == [pytest.approx(0.3)]
    x, y = np.array(d.spend_grid[0]), np.array(d.effect[0])
    assert x[0] == 0 and x[-1] == 150 and np.all(np.diff(y) > 0)
    np.testing.assert_allclose(y, 0.6 * x / (x + 40.0))
    assert response_data([{"name": "x"}]) is None


def test_evidence_flags_the_sparse_cells(model):
    d = evidence_data(model)
    S1 = model.n_stages - 1
    sparse = model.estimator["sparse_below"]
    for p, name in enumerate(model.personas):
        np.testing.assert_array_equal(np.array(d.decided[name]).T, model.counts["decided"][p, :S1])
        np.testing.assert_array_equal(np.array(d.pooled[name]).T, model.counts["decided"][p, :S1] < sparse)
    assert d.n_pooled == int((model.counts["decided"][:, :S1] < sparse).sum()) and d.n_cells == model.share[:, :S1].size


def test_dwell_rows_mix_personas_by_who_leaves_each_way(model):
    """Per stage: shares of leavers sum to 1; mean days are the leave rates mixed by leavers."""
    m = model.copy()
    m.leave_speed[:, 1, 0] = 0.5  # drop-offs leave consideration at half the plain speed
    rows = dwell_rows(m)
    for stage in m.stages[:-1]:
        assert sum(r[2] for r in rows if r[0] == stage) == pytest.approx(1.0, abs=1e-9)
    ex, days = evaluate(m), 1.0 / m.leave_rates()[:, 1, 0]
    w = m.persona_share * ex.flow[:, 1, 0]
    (row,) = [r for r in rows if r[:2] == [m.stages[1], "drop_off"]]
    assert row[3] == pytest.approx(float(w @ days / w.sum()), rel=1e-12)
    assert row[4] == pytest.approx(0.5, rel=1e-12) and row[3] > max(r[3] for r in rows if r[0] == m.stages[1]
                                                                    and r[1] != "drop_off")


def test_backtest_data_reads_the_contract_keys(runs):
    bt = json.loads((runs["backtest"] / "backtest.json").read_text())
    d = backtest_data(bt)
    assert d.stages == list(bt["observed"]) and d.error == [bt["error"][s] for s in d.stages]


# ---- emotions --------------------------------------------------------------------------------------
def test_satisfaction_is_averaged_per_stage_before_the_interaction(tmp_path):
    log = tmp_path / "events.csv"
    log.write_text(
        "customer_id,timestamp,touchpoint,stage,satisfaction\n"
        "a,2024-01-01,email,awareness,2\n"
        "a,2024-01-02,web,consideration,4\n"    # scored in awareness: the stage before the row
        "a,2024-01-03,email,consideration,5\n"
        "b,2024-01-01,email,awareness,\n"       # no score: not counted
        "b,2024-01-02,email,awareness,3\n"
        "b,2024-01-03,web,decision,1\n")
    got = satisfaction_by_cell(load_events(log))
    assert got == {"awareness": {"email": {"mean": 2.5, "n": 2}, "web": {"mean": 2.5, "n": 2}},
                   "consideration": {"email": {"mean": 5.0, "n": 1}}}


def test_calibrated_experience_round_trips_and_draws_the_emotion_curve(tmp_path):
    import pandas as pd

    from application.calibrate import run_calibrate
    from conftest import DEMO_EVENTS

    df = pd.read_csv(DEMO_EVENTS)
    rng = np.random.default_rng(0)
    df["satisfaction"] = np.where(rng.random(len(df)) < 0.5, rng.integers(1, 6, len(df)).astype(float), np.nan)
    events = tmp_path / "events.csv"
    df.to_csv(events, index=False)
    model = run_calibrate(events, tmp_path / "model.json")
    again = Model.load(tmp_path / "model.json")
    assert again.extras["experience"] == model.extras["experience"]
    n_scores = int(df["satisfaction"].notna().sum())
    exp = again.extras["experience"]
    assert sum(c["n"] for row in exp.values() for c in row.values()) == n_scores
    d = journey_map_data(again)
    S1 = again.n_stages - 1
    for s in range(S1):
        cells = exp[again.stages[s]].values()
        n = sum(c["n"] for c in cells)
        assert d.emotion_n[s] == n and d.emotion[s] == pytest.approx(sum(c["mean"] * c["n"] for c in cells) / n)
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw_emotion_curve(d, ax)
    assert len(ax.lines) >= 1
    # a log without scores leaves no experience section in the model file
    assert "experience" not in json.loads(Path(DEMO_EVENTS.parent / "model.json").read_text())


# ---- drawings (smoke; the report test renders them all to PNG) ------------------------------------
def test_every_drawing_lays_out_its_data(runs, model):
    summary = json.loads((runs["simulate"] / "summary.json").read_text())
    comparison = json.loads((runs["compare"] / "comparison.json").read_text())
    best = json.loads((runs["optimize"] / "best.json").read_text())
    bt = json.loads((runs["backtest"] / "backtest.json").read_text())
    cases = [
        (draw_funnel, funnel_data(summary, model)),
        (draw_journey_map, journey_map_data(model)),
        (draw_evidence, evidence_data(model)),
        (draw_uplift, uplift_data(comparison)),
        (draw_allocation, allocation_data(best)),
        (draw_history, history_data([{"number": "0", "value": "0.4", "state": "COMPLETE"}])),
        (draw_response, response_data(best["investments"], best["allocation"])),
        (draw_backtest, backtest_data(bt)),
    ]
    for draw, data in cases:
        fig = figure(6, 4)
        ax = fig.add_subplot()
        draw(data, ax)
        assert ax.has_data() or ax.images, draw.__name__


# ---- the report ----------------------------------------------------------------------------------
def test_report_is_self_contained_small_and_complete(report, runs):
    text = report.read_text(encoding="utf-8")
    imgs = re.findall(r"<img[^>]*>", text)
    assert len(imgs) >= 3
    assert all('src="data:image/png;base64,' in i for i in imgs)
    assert 'alt="Journey map' in text
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "<script" not in text and "url(" not in text
    srcs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert all(s.startswith("data:") or s.startswith("#") for s in srcs)
    assert report.stat().st_size < 5_000_000
    for name in SCENARIOS:
        assert name in text
    for section in ("Uplift per scenario", "Funnel per persona", "Journey map", "Optimization", "Backtest",
                    "Model evidence", "Provenance"):
        assert section in text
    # every inlined figure is a PNG, also saved beside the report with its data
    figs = report.parent / "report_figures"
    for src in re.findall(r'src="data:image/png;base64,([^"]*)"', text):
        assert base64.b64decode(src)[:4] == b"\x89PNG"
    assert len(list(figs.glob("*.png"))) == len(imgs) == len(list(figs.glob("*.json"))) - 1  # + manifest.json
    assert json.loads((figs / "journey-map.json").read_text())["risk"]
    # the run directories are left as they were
    assert sorted(p.name for p in runs["backtest"].iterdir()) == ["backtest.json"]


def test_report_cli_accepts_a_folder_of_runs(runs, tmp_path):
    folder = tmp_path / "results"
    for kind in ("optimize", "backtest"):
        shutil.copytree(runs[kind], folder / kind)
    (folder / "optimize" / "manifest.json").unlink()  # no model to find: fewer figures, a faster test
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    text = out.read_text()
    assert "Optimization" in text and "Backtest" in text and text.count("<img") == 4
    assert "The best budget split found" in text  # headline without a comparison


@pytest.mark.parametrize("case", ["missing", "empty", "malformed", "incomplete"])
def test_bad_run_directory_is_one_line_exit_2_and_writes_nothing(case, tmp_path, runs):
    bad = tmp_path / "bad"
    if case != "missing":
        bad.mkdir()
    if case == "malformed":
        (bad / "comparison.json").write_text("{not json")
    if case == "incomplete":
        data = json.loads((runs["compare"] / "comparison.json").read_text())
        del data["scenarios"][0]["uplift_ci"]
        (bad / "comparison.json").write_text(json.dumps(data))
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", str(runs["simulate"]), str(bad), "--out", str(out)])
    assert result.exit_code == 2
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and str(bad) in lines[0]
    if case == "incomplete":
        assert "scenarios[0].uplift_ci" in lines[0]
    assert not out.exists() and not (tmp_path / "r_figures").exists()


def test_report_without_the_model_still_renders(runs, tmp_path):
    """A run whose model has moved away: the report says so and shows what it can."""
    moved = tmp_path / "sim"
    shutil.copytree(runs["simulate"], moved)
    man = json.loads((moved / "manifest.json").read_text())
    man["arguments"]["target"] = str(tmp_path / "gone.json")
    man["inputs"] = {str(tmp_path / "gone.json"): "0" * 64}
    (moved / "manifest.json").write_text(json.dumps(man))
    out = build_report([moved], tmp_path / "r.html")
    text = out.read_text()
    assert "was not found" in text and "Journey map" not in text and text.count("<img") >= 1


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not on PATH (Debian: apt-get install chromium) - cannot render the page")
def test_report_renders_in_headless_chromium(report, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,3000",
           report.resolve().as_uri()]
    run = subprocess.run([*cmd[:-1], "--enable-logging=stderr", "--v=0", cmd[-1]], capture_output=True,
                         timeout=120, check=False, text=True)
    assert shot.is_file(), "chromium wrote no screenshot"
    # no script or resource error on the page (a self-contained page loads nothing from outside)
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Failed to load resource" in line]
    assert not [line for line in console if "rror" in line or "Failed" in line], console
    img = imread(shot)[..., :3]
    assert img.shape[0] >= 2000 and img.shape[1] >= 1000
    # not blank: many pixels differ from the page background, with real contrast (text, figures)
    grey = img.mean(axis=-1)
    assert grey.std() > 0.05
    assert (grey < 0.5).mean() > 0.01


def test_report_shows_what_each_touchpoint_is_credited(report, model):
    """The attribution table: one row per touchpoint, largest removal effect first, the record's numbers."""
    from sim.hotspots import attribution

    text = report.read_text(encoding="utf-8")
    assert "Removal effect (as in Markov attribution)" in text
    credit = attribution(model)
    assert len(credit) == model.n_touchpoints
    cells = [f'<td>{a["touchpoint"]}</td><td class="n">{pct(a["removal_effect"])}</td>'
             f'<td class="n">{pct(a["attributed_share"])}</td>' for a in credit]
    at = [text.find(c) for c in cells]
    assert all(i > 0 for i in at) and at == sorted(at)
