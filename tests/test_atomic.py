"""Atomic output and reproducibility: a run appears complete or not at all, and the same seed gives the same bytes."""
from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import numpy
import pandas
import pytest
from typer.testing import CliRunner

import application.rundir
import application.simulate
from application.rundir import run_directory, write_text_atomic
from cli import app
from conftest import DEMO_EVENTS, DEMO_MODEL
from sim._version import __version__
from sim.errors import InputError

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[1] / "scenarios" / "examples"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".partial-" in p.name or ".old-" in p.name
                  or p.name.endswith(".tmp"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- interrupted runs ------------------------------------------------------------------------------
@pytest.mark.parametrize("exc, code", [(KeyboardInterrupt, 130), (RuntimeError, 1)])
def test_a_run_interrupted_after_summary_json_leaves_nothing(tmp_path, monkeypatch, exc, code):
    seen = {}

    def fail_after_summary(results):
        # summary.json is already in the temporary run folder when the next file fails
        partial = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
        seen["summary"] = [p / "summary.json" for p in partial if (p / "summary.json").is_file()]
        raise exc()

    monkeypatch.setattr(application.simulate, "weekly_csv", fail_after_summary)
    out = tmp_path / "run"
    result = invoke("simulate", DEMO_MODEL, "--customers", 2000, "--seed", 1, "--out", out)
    assert result.exit_code == code, result.output
    assert len(seen["summary"]) == 1, "the failure did not happen after summary.json was written"
    assert not out.exists()
    assert leftovers(tmp_path) == [] and list(tmp_path.iterdir()) == []


def test_a_failed_rerun_keeps_the_previous_complete_run(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert invoke("simulate", DEMO_MODEL, "--customers", 2000, "--seed", 1, "--out", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(results):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(application.simulate, "weekly_csv", boom)
    assert invoke("simulate", DEMO_MODEL, "--customers", 3000, "--seed", 2, "--out", out).exit_code == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert leftovers(tmp_path) == []


def test_rerunning_into_an_existing_out_replaces_it_completely(tmp_path):
    out = tmp_path / "run"
    assert invoke("simulate", DEMO_MODEL, "--customers", 1000, "--seed", 3, "--out", out).exit_code == 0
    # a file an older version wrote (its manifest lists it) and this one no longer does
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "files": [*manifest["files"], "stale.txt"]}))
    (out / "stale.txt").write_text("from an older run")
    result = invoke("simulate", DEMO_MODEL, "--customers", 2000, "--seed", 4, "--out", out)
    assert result.exit_code == 0, result.output
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "summary.json").read_text())["customers"] == 2000
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted({*manifest["files"], "manifest.json"})
    assert leftovers(tmp_path) == []


def test_run_directory_removes_its_partial_folder_on_any_failure(tmp_path):
    final = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with run_directory("simulate", final, {}, []) as run:
            run.json("summary.json", {"customers": 1})
            assert (run.path / "summary.json").is_file() and run.path != final
            raise KeyboardInterrupt
    assert not final.exists() and list(tmp_path.iterdir()) == []


# ---- atomic files ----------------------------------------------------------------------------------------
class _HalfWriter:
    """A file whose write puts half the bytes down, then fails as a full disk would."""

    def __init__(self, fh):
        self.fh = fh

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def write(self, data):
        self.fh.write(data[: len(data) // 2])
        self.fh.flush()
        raise OSError(28, "No space left on device")


def test_write_text_atomic_never_leaves_a_partial_target(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text('{"old": true}\n')
    real_fdopen = os.fdopen
    monkeypatch.setattr(application.rundir.os, "fdopen", lambda fd, mode: _HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(InputError, match="(?i)no space left"):
        write_text_atomic(target, '{"new": "x"}\n' * 1000)
    assert target.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    new = tmp_path / "new.json"
    with pytest.raises(InputError):
        write_text_atomic(new, "{}")
    assert not new.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_write_text_atomic_interrupted_before_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "model.json"

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(application.rundir.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(target, "{}\n")
    assert list(tmp_path.iterdir()) == []


def test_calibrate_failing_mid_write_leaves_no_model(tmp_path, monkeypatch):
    real_fdopen = os.fdopen
    monkeypatch.setattr(application.rundir.os, "fdopen", lambda fd, mode: _HalfWriter(real_fdopen(fd, mode)))
    out = tmp_path / "model.json"
    result = invoke("calibrate", DEMO_EVENTS, "--out", out)
    assert result.exit_code == 2 and "no space left" in result.stderr.lower()
    assert list(tmp_path.iterdir()) == []


# ---- reproducibility --------------------------------------------------------------------------------------
def test_same_seed_same_bytes_across_jobs(tmp_path):
    outs = []
    for jobs in (1, 2, 1):
        out = tmp_path / f"jobs{jobs}-{len(outs)}"
        result = invoke("simulate", EXAMPLES / "checkout_fix.toml", "--customers", 20_000, "--seed", 11,
                        "--replications", 4, "--jobs", jobs, "--out", out, "--quiet")
        assert result.exit_code == 0, result.output
        outs.append(out)
    first = (outs[0] / "summary.json").read_bytes()
    assert all((o / "summary.json").read_bytes() == first for o in outs[1:])
    assert all((o / "weekly.csv").read_bytes() == (outs[0] / "weekly.csv").read_bytes() for o in outs[1:])
    reps = json.loads(first)["replication_conversion_rates"]
    assert len(reps) == 4 and len(set(reps)) > 1  # four different replications, not one repeated


def test_compare_same_seed_same_bytes_across_jobs(tmp_path):
    outs = []
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        result = invoke("compare", DEMO_MODEL, EXAMPLES / "checkout_fix.toml", EXAMPLES / "drop_ads.toml",
                        "--customers", 10_000, "--seed", 5, "--replications", 2, "--jobs", jobs, "--out", out,
                        "--quiet")
        assert result.exit_code == 0, result.output
        outs.append((out / "comparison.json").read_bytes())
    assert outs[0] == outs[1]


def test_manifest_records_versions_and_input_hashes(tmp_path):
    scenario = EXAMPLES / "checkout_fix.toml"
    out = tmp_path / "run"
    assert invoke("simulate", scenario, "--customers", 2000, "--seed", 3, "--out", out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "simulate" and manifest["seed"] == 3
    assert manifest["journey_version"] == __version__
    assert (manifest["numpy"], manifest["pandas"], manifest["python"]) == (
        numpy.__version__, pandas.__version__, platform.python_version())
    inputs = {Path(p).resolve(): h for p, h in manifest["inputs"].items()}
    model = (scenario.parent / "../demo/model.json").resolve()
    assert set(inputs) == {scenario.resolve(), model}
    assert inputs[scenario.resolve()] == sha256(scenario) and inputs[model] == sha256(model)
    assert manifest["started"] <= manifest["finished"]
    # result JSON holds no times or varying paths: those live in the manifest only
    summary = (out / "summary.json").read_text()
    assert manifest["started"] not in summary and str(tmp_path) not in summary


def test_model_provenance_records_the_log_hash(tmp_path):
    out = tmp_path / "model.json"
    assert invoke("calibrate", DEMO_EVENTS, "--out", out).exit_code == 0
    prov = json.loads(out.read_text())["provenance"]
    assert prov["inputs"] == {str(DEMO_EVENTS): sha256(DEMO_EVENTS)}
    assert prov["journey_version"] == __version__ and prov["numpy"] == numpy.__version__
