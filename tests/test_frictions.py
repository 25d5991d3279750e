"""Frictions a new user meets (issue 19): help text, plain words on screen, hints, tables at 80 columns."""
from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


# ---- help and usage lines ------------------------------------------------------------------------------
@pytest.mark.parametrize("command, usage", [
    ("compare", "journey compare [OPTIONS] BASE SCENARIO..."),
    ("calibrate", "journey calibrate [OPTIONS] EVENTS"),
    ("report", "journey report [OPTIONS] DIR..."),
])
def test_usage_lines_show_plain_argument_names(command, usage):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.strip() == f"Usage: {usage}", first
    # no Typer-internal spellings: braces, doubled dots, Python types of list arguments
    for junk in ("{", "......", "list[", "<list"):
        assert junk not in result.output, (junk, result.output)


@pytest.mark.parametrize("command", ["calibrate", "backtest"])
def test_stages_default_is_not_split_mid_name(command):
    for width in ("80", "100", "60"):
        out = runner.invoke(app, [command, "--help"], env={"COLUMNS": width}).output
        for stage in ("awareness", "consideration", "decision", "retention", "advocacy"):
            assert re.search(rf"\b{stage}\b", out), (width, stage, out)


def test_missing_argument_names_it_plainly():
    result = runner.invoke(app, ["compare"])
    assert result.exit_code == 2
    assert "journey compare [OPTIONS] BASE SCENARIO..." in result.output
    assert "Missing argument 'BASE'" in result.output


# ---- result tables in an 80-column terminal ---------------------------------------------------------------
def comparison_record(with_data: bool = True, long_name: bool = False) -> dict:
    def sc(name, conv, up, lo, hi, ex, verdict, tell, p):
        return {"name": name, "conversion_rate": conv, "uplift": up, "uplift_interval": [lo, hi],
                "uplift_ci": [lo, hi], "expected_uplift": ex, "verdict": verdict, "customers_to_tell": tell,
                "probability_positive": p, "relative_uplift": up / 0.4466, "significant": verdict != "cannot tell",
                "notes": []}
    first = "a rather long scenario name for the checkout fix" if long_name else "checkout fix"
    return {"customers": 20000, "replications": 5, "seed": 1, "engine": "fast", "conversion_stage": "decision",
            "horizon_days": None,
            "data_uncertainty": {"draws": 200, "customers_behind_model": 6000} if with_data else {},
            "base": {"name": "baseline", "conversion_rate": 0.44659, "conversion_rate_ci": [0.4425, 0.4507],
                     "expected_conversion_rate_interval": [0.43342, 0.45970]},
            "scenarios": [sc(first, 0.46443, 0.01784, 0.016394, 0.019512, 0.018336, "gain", None, 1.0),
                          sc("double email", 0.44488, -0.00171, -0.005112, 0.001032, -0.00138, "cannot tell",
                             21000, 0.2),
                          sc("drop ads", 0.41249, -0.0341, -0.03955, -0.02945, -0.03378, "loss", None, 0.0)]}


def comparison_numbers(c: dict, with_data: bool) -> list[str]:
    lo, hi = c["base"]["expected_conversion_rate_interval"]
    nums = [f"{100 * c['base']['conversion_rate']:.2f}", f"[{100 * lo:.1f}-{100 * hi:.1f}]"]
    for s in c["scenarios"]:
        nums += [f"{100 * s['conversion_rate']:.2f}", f"{100 * s['uplift']:+.2f}", f"{100 * s['expected_uplift']:+.2f}",
                 *(f"{100 * x:+.2f}" for x in s["uplift_interval"])]
        if with_data:
            nums.append(f"{100 * s['probability_positive']:.0f} %")
            if s["customers_to_tell"]:
                nums.append(f"{s['customers_to_tell']:,}")
        else:
            nums.append(f"{100 * s['relative_uplift']:+.1f} %")
    return nums


def rendered(monkeypatch, render, record, width=80) -> str:
    import io

    from rich.console import Console

    import application.terminal as terminal

    buf = io.StringIO()
    monkeypatch.setattr(terminal, "table_console", lambda: Console(width=width, file=buf))
    # consoles made without a file (the screen) write into buf; the module's own probes keep theirs
    monkeypatch.setattr(terminal, "Console", lambda *a, **k: Console(*a, **{"width": width, "file": buf, **k}))
    render(record)
    return buf.getvalue()


@pytest.mark.parametrize("with_data", [True, False])
@pytest.mark.parametrize("long_name", [False, True])
def test_comparison_table_folds_at_80_columns_and_keeps_every_number(monkeypatch, with_data, long_name):
    from application.terminal import render_comparison

    record = comparison_record(with_data, long_name)
    out = rendered(monkeypatch, render_comparison, record)
    assert "…" not in out, out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    words = set(out.split())
    for number in comparison_numbers(record, with_data):
        assert number in out, (number, out)
    for sc in record["scenarios"]:
        for word in sc["name"].split():
            assert word in words, (word, out)
    # wide enough: the one-line layout, as before
    wide = rendered(monkeypatch, render_comparison, record, width=200)
    assert "95 % interval pp" in wide and "+1.64 to +1.95" in wide


def backtest_record(stage_names=("awareness", "consideration", "decision", "retention", "advocacy")) -> dict:
    stages = list(stage_names)
    obs, pred = [1, 0.7601, 0.3921, 0.2469, 0.1332], [1, 0.7552, 0.3918, 0.2581, 0.1379]
    naive = [1, 0.756, 0.393, 0.255, 0.136]
    return {"split": "2024-04-01", "conversion_stage": stages[2], "customers": {"fit": 3107, "later": 2893},
            "predicted": dict(zip(stages, pred)), "observed": dict(zip(stages, obs)), "naive": dict(zip(stages, naive)),
            "error": {s: abs(p - o) for s, p, o in zip(stages, pred, obs)},
            "naive_error": {s: abs(n - o) for s, n, o in zip(stages, naive, obs)}}


@pytest.mark.parametrize("names", [None, ("A_SUBMITTED", "W_Complete_application_offer_long", "O_ACCEPTED_BY_CUSTOMER",
                                          "A_PENDING_AND_THEN_SOME", "Z")])
def test_backtest_table_fits_80_columns_in_plain_words(monkeypatch, names):
    from application.terminal import render_backtest

    record = backtest_record(names) if names else backtest_record()
    out = rendered(monkeypatch, render_backtest, record)
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80, out
    assert "naive" not in out and "earlier" in out
    for s in record["observed"]:
        for key in ("predicted", "observed", "naive"):
            assert f"{100 * record[key][s]:.1f}%" in out, (s, key, out)
        for key in ("error", "naive_error"):
            assert f"{100 * record[key][s]:.1f} pts" in out


# ---- plain words on screen ------------------------------------------------------------------------------
def test_drift_headline_says_false_alarms_not_fdr(monkeypatch):
    from application.terminal import render_drift

    out = rendered(monkeypatch, render_drift, {"significant": 0, "tests": 12, "alpha": 0.05, "changes": [],
                                               "old_expected_conversion_rate": 0.4,
                                               "new_expected_conversion_rate": 0.41})
    assert "FDR" not in out and "5 % of those flagged may be chance" in " ".join(out.split())


def test_hotspots_header_says_rank_by_gain(monkeypatch):
    from application.terminal import render_hotspots

    out = rendered(monkeypatch, render_hotspots, {"name": "m", "expected_conversion_rate": 0.4, "hotspots": [],
                                                  "lapsed_per_1000": {}, "lost_per_1000_total": 0.0}, width=200)
    assert "gain #" not in out and "rank by gain" in out


def test_funnel_caption_and_backtest_figure_in_plain_words():
    from present.figures.backtest import backtest_data, draw_backtest
    from present.figures.common import figure
    from present.figures.funnel import funnel_data

    summary = {"stages": {"a": {"reached": 100, "reached_rate": 1.0}, "b": {"reached": 40, "reached_rate": 0.4}},
               "conversion_stage": "b", "customers": 100, "replications": 1, "conversion_rate_ci": [0.3, 0.5],
               "ci_method": "Wilson binomial"}
    note = funnel_data(summary).ci_note
    assert "Wilson" not in note and "binomial" not in note and "95 %" in note
    fig = figure(11, 4.0)
    ax = fig.add_subplot()
    draw_backtest(backtest_data(backtest_record()), ax)
    texts = [t.get_text() for t in ax.texts] + [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts and not any("naive" in t for t in texts), texts
    # labels of neighbouring stages stand apart: a clear gap, a quarter of the distance between stages
    # (one long line per stage left 7 %, which reads as one run-on sentence)
    fig.canvas.draw()
    boxes = sorted((t.get_window_extent() for t in ax.texts), key=lambda b: b.x0)
    step = (boxes[-1].x0 + boxes[-1].x1 - boxes[0].x0 - boxes[0].x1) / 2 / (len(boxes) - 1)
    assert all(b.x0 - a.x1 > 0.25 * step for a, b in zip(boxes, boxes[1:])), [(b.x0, b.x1) for b in boxes]


# ---- optimize: each run counts its own trials -----------------------------------------------------------
def test_two_runs_on_one_journal_count_only_their_own_trials(tmp_path):
    import json
    import subprocess
    import sys
    from collections import Counter

    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from conftest import ROOT

    budget = ROOT / "scenarios" / "examples" / "budget.toml"
    log = tmp_path / "shared.log"

    def start(k: int, workers: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "cli", "optimize", str(budget), "--trials", "120", "--seed", str(k),
               "--customers", "1000", "--draws", "0", "--storage", str(log), "--study", "shared",
               "--workers", str(workers), "--out", str(tmp_path / f"run{k}"), "-q"]
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = [start(1, 1), start(2, 2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=JournalStorage(JournalFileBackend(str(log))))
    complete = Counter(t.state.name for t in study.trials)["COMPLETE"]
    manifests = [json.loads((tmp_path / f"run{k}" / "manifest.json").read_text())["optimize"] for k in (1, 2)]
    ran = [m["trials_this_run"] for m in manifests]
    # together the two runs completed the study's trials, each counted once (a run used to count all)
    assert sum(ran) == complete and all(0 <= r <= 120 for r in ran), (ran, complete)
    for k, m in zip((1, 2), manifests):
        best = json.loads((tmp_path / f"run{k}" / "best.json").read_text())
        # the study as it stood when best.json was written: at least what was there when the search ended
        assert m["complete_before"] + m["trials_this_run"] <= best["trials"] <= complete


# ---- --jobs that cannot help says so ----------------------------------------------------------------------
def test_jobs_note_says_why_more_processes_will_not_help():
    from sim.simulate import jobs_note

    assert jobs_note(1, 10, cores=1) is None
    assert jobs_note(2, 10, cores=8) is None
    assert "one" in jobs_note(4, 1, cores=8)
    two = jobs_note(2, 5, cores=2)
    assert "2 cores" in two and "--jobs 1" in two


def test_simulate_prints_the_jobs_note_once_on_stderr_and_not_in_the_json(tmp_path, monkeypatch):
    import json

    import sim.simulate
    from conftest import DEMO_MODEL

    monkeypatch.setattr(sim.simulate, "usable_cores", lambda: 2)
    args = ["simulate", str(DEMO_MODEL), "--customers", "500", "--replications", "2", "--seed", "3", "-q"]
    two = runner.invoke(app, [*args, "--jobs", "2", "--out", str(tmp_path / "a")])
    one = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert two.exit_code == 0 and one.exit_code == 0, two.output
    assert two.stderr.count("note: --jobs 2 will not help here") == 1, two.stderr
    assert "--jobs" not in one.stderr
    assert (tmp_path / "a" / "summary.json").read_bytes() == (tmp_path / "b" / "summary.json").read_bytes()
    assert "will not help" not in json.dumps(json.loads((tmp_path / "a" / "summary.json").read_text()))


# ---- report and figures ---------------------------------------------------------------------------------
def test_staffing_uplift_figure_draws_no_expected_zero_and_says_why():
    from present.figures.common import figure
    from present.figures.uplift import draw_uplift, uplift_data

    record = comparison_record()
    for sc in record["scenarios"]:
        sc["expected_uplift"] = 0.0
        sc["expected_note"] = "expected_conversion_rate ignores capacity limits (queues and patience)"
    data = uplift_data(record)
    fig = figure(9, 3.0)
    ax = fig.add_subplot()
    draw_uplift(data, ax)
    assert not [line for line in ax.get_lines() if line.get_marker() == "D"]  # no diamond at a made-up 0
    assert "capacity" in ax.get_xlabel() and "diamond" not in ax.get_xlabel()


def test_provenance_says_not_used_for_a_missing_seed():
    from present.report_sections import seed_text

    assert seed_text(None) == "not used" and seed_text("") == "not used" and seed_text(7) == "7"


def test_demo_report_includes_the_staffing_comparison(tmp_path, monkeypatch):
    import application.demo

    seen = {}

    def fake_report(dirs, out):
        seen["dirs"] = [p.name for p in dirs]
        raise KeyboardInterrupt  # stop here: the runs before the report are what the demo does anyway

    monkeypatch.setattr("application.report.build_report", fake_report)
    with pytest.raises(KeyboardInterrupt):
        list(application.demo.run_demo(tmp_path / "demo", customers=1000, quiet=True))
    assert "capacity" in seen["dirs"] and (tmp_path / "demo" / "capacity" / "comparison.json").exists()


# ---- docs point users at files they can get ---------------------------------------------------------------
def test_docs_and_mapping_files_name_no_folder_of_the_development_machine():
    from conftest import ROOT

    shipped = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "scenarios").rglob("*.toml")]
    offenders = [str(p.relative_to(ROOT)) for p in shipped if "/work/" in p.read_text(encoding="utf-8")]
    assert not offenders, offenders
    for name in ("bpic2012_mapping.toml", "helpdesk_mapping.toml"):
        head = (ROOT / "scenarios" / "mappings" / name).read_text(encoding="utf-8")[:600]
        assert "doi:" in head and "docs/mapping.md" in head
