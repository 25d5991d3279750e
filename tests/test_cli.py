"""The command line end to end: calibrate, simulate, demo; exit codes and reproducibility."""
from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from cli import app
from conftest import DEMO_EVENTS, DEMO_MODEL
from sim.model import Model

runner = CliRunner()

SUMMARY_KEYS = {"customers", "seed", "replications", "conversion_stage", "conversion_rate",
                "conversion_rate_ci", "expected_conversion_rate", "stages", "personas", "touchpoints"}
MANIFEST_KEYS = {"command", "arguments", "seed", "journey_version", "inputs", "started", "finished"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_calibrate_writes_a_readable_versioned_model(tmp_path):
    out = tmp_path / "model.json"
    result = invoke("calibrate", DEMO_EVENTS, "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["schema_version"] == 1 and data["kind"] == "journey.model"
    assert data["estimator"]["censoring"] == "cure model"
    cell = data["journey"]["deal_seeker"]["consideration"]["touchpoints"]["checkout"]
    assert {"share", "advance", "drop_off", "rate_per_day", "counts", "pooled"} <= set(cell)
    assert data["provenance"]["inputs"][str(DEMO_EVENTS)]
    Model.load(out)  # round trip


def test_bundled_demo_model_matches_its_log(tmp_path):
    out = tmp_path / "model.json"
    assert invoke("calibrate", DEMO_EVENTS, "--out", out).exit_code == 0
    fresh, bundled = json.loads(out.read_text()), json.loads(DEMO_MODEL.read_text())
    for data in (fresh, bundled):
        data.pop("provenance")
        data["log"].pop("source")
    assert fresh == bundled, "regenerate scenarios/demo/model.json with journey calibrate"


def test_calibrate_readers_and_a_local_dask_cluster_give_the_same_model(tmp_path):
    """`--reader memory`, the default stream and `--scheduler local` (Parquet) write the same model."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    parquet = tmp_path / "events.parquet"
    pq.write_table(pacsv.read_csv(DEMO_EVENTS), parquet)
    models = {}
    for name, extra in (("memory", ["--reader", "memory"]), ("stream", []),
                        ("dask", ["--scheduler", "local", "--workers", "2"])):
        out = tmp_path / f"{name}.json"
        result = invoke("calibrate", parquet, "--out", out, *extra)
        assert result.exit_code == 0, result.output
        data = json.loads(out.read_text())
        assert data["provenance"]["arguments"].get("reader", "stream") == ("memory" if name == "memory" else "stream")
        data.pop("provenance")
        models[name] = data
    assert models["memory"] == models["stream"] == models["dask"]
    bad = invoke("calibrate", parquet, "--out", tmp_path / "x.json", "--reader", "disk")
    assert bad.exit_code == 2 and "--reader" in bad.stderr and not (tmp_path / "x.json").exists()
    out = tmp_path / "url.json"
    result = invoke("calibrate", f"file://{parquet}", "--out", out)  # a URL without a cluster: the stream reads it
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    inputs = data.pop("provenance")["inputs"]
    assert inputs == {f"file://{parquet}": data["log"]["sha256"]}
    assert data["log"].pop("source") == f"file://{parquet}"
    assert data == {**models["stream"], "log": {k: v for k, v in models["stream"]["log"].items() if k != "source"}}
    out = tmp_path / "csv-url.json"
    result = invoke("calibrate", f"file://{DEMO_EVENTS.resolve()}", "--out", out)  # a CSV.gz URL streams too
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    data.pop("provenance")
    assert data["log"].pop("source") == f"file://{DEMO_EVENTS.resolve()}"
    assert data["log"].pop("sha256") == hashlib.sha256(DEMO_EVENTS.read_bytes()).hexdigest()  # file:// is hashed
    assert data == {**models["stream"], "log": {k: v for k, v in models["stream"]["log"].items()
                                                if k not in ("source", "sha256")}}
    csv_cluster = invoke("calibrate", DEMO_EVENTS, "--out", tmp_path / "x.json", "--scheduler", "local")
    assert csv_cluster.exit_code == 2 and "the cluster reads Parquet, not CSV; drop --scheduler" in csv_cluster.stderr
    url = invoke("calibrate", "nosuch://bucket/log/", "--out", tmp_path / "x.json")  # one line, the URL intact
    assert url.exit_code == 2 and "nosuch://bucket/log/: cannot open the URL: Protocol not known" in url.stderr
    assert not (tmp_path / "x.json").exists()


def test_simulate_summary_manifest_and_interval(tmp_path):
    out = tmp_path / "run"
    result = invoke("simulate", DEMO_MODEL, "--customers", 50_000, "--seed", 3, "--replications", 4, "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["customers"] == 50_000 and summary["replications"] == 4
    lo, hi = summary["conversion_rate_ci"]
    assert lo <= summary["expected_conversion_rate"] <= hi
    assert lo < summary["conversion_rate"] < hi
    for rec in summary["stages"].values():
        assert {"reached", "reached_rate", "dropped"} <= set(rec)
    for rec in summary["personas"].values():
        assert {"customers", "conversion_rate", "expected_conversion_rate"} <= set(rec)
    for rec in summary["touchpoints"].values():
        assert {"interactions", "drop_offs"} <= set(rec)
    manifest = json.loads((out / "manifest.json").read_text())
    assert MANIFEST_KEYS <= set(manifest)
    assert manifest["seed"] == 3 and str(DEMO_MODEL) in manifest["inputs"]
    assert (out / "weekly.csv").read_text().startswith("week,arrivals,conversions")


def test_binomial_interval_with_one_replication(tmp_path):
    out = tmp_path / "run"
    assert invoke("simulate", DEMO_MODEL, "--customers", 100_000, "--seed", 5, "--out", out).exit_code == 0
    s = json.loads((out / "summary.json").read_text())
    lo, hi = s["conversion_rate_ci"]
    p, n = s["conversion_rate"], s["customers"]
    assert hi - lo == pytest.approx(2 * 1.96 * (p * (1 - p) / n) ** 0.5, rel=0.02)
    assert lo <= s["expected_conversion_rate"] <= hi


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    runs = []
    for name, seed in (("a", 9), ("b", 9), ("c", 10)):
        out = tmp_path / name
        assert invoke("simulate", DEMO_MODEL, "--customers", 20_000, "--seed", seed, "--replications", 2,
                      "--out", out).exit_code == 0
        runs.append((out / "summary.json").read_bytes())
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_default_run_directory_and_recorded_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("simulate", DEMO_MODEL, "--customers", 1000).exit_code == 0
    (run,) = list((tmp_path / "results").iterdir())
    assert run.name.startswith("simulate-")
    summary = json.loads((run / "summary.json").read_text())
    assert isinstance(summary["seed"], int)  # a fresh seed is recorded so the run can be repeated


@pytest.mark.parametrize("args, fragment", [
    (["simulate", "missing.json"], "not found"),
    (["simulate", "{bad}", "--customers", "10"], "malformed JSON"),
    (["simulate", "{foreign}"], "schema version"),
    (["calibrate", "missing.csv", "--out", "{out}/m.json"], "not found"),
    (["calibrate", str(DEMO_EVENTS), "--out", "{out}/m.json", "--conversion-stage", "purchase"], "purchase"),
    (["backtest", "s3://bucket/log.parquet", "--split", "2024-01-10", "--out", "{out}"],
     "s3://bucket/log.parquet: a URL is read by journey calibrate"),  # the URL intact, not s3:/bucket
])
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, args, fragment):
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "journey.model", "schema_version": 1, "stages": [')
    foreign = tmp_path / "foreign.json"
    data = json.loads(DEMO_MODEL.read_text())
    data["schema_version"] = 99
    foreign.write_text(json.dumps(data))
    out = tmp_path / "out"
    args = [a.format(bad=bad, foreign=foreign, out=out) for a in args] + (
        ["--out", str(out)] if args[0] == "simulate" else [])
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


def test_usage_errors_exit_2(tmp_path):
    assert invoke("simulate", DEMO_MODEL, "--customers", 0).exit_code == 2
    assert invoke("simulate", DEMO_MODEL, "--replications", -1).exit_code == 2
    assert invoke("calibrate", DEMO_EVENTS).exit_code == 2  # --out is required


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = invoke("demo", "--out", out, "--customers", 20_000, "--quiet")
    assert result.exit_code == 0, result.output
    assert (out / "model.json").is_file()
    assert (out / "simulate" / "summary.json").is_file()


def test_version():
    from sim import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"journey {__version__}"


def test_simulate_and_compare_on_a_local_dask_cluster_write_the_same_records(tmp_path):
    """--scheduler local runs the replications on two workers: the same summary.json and comparison.json;
    the manifest says where they ran; --jobs with --scheduler is refused before anything is written."""
    pytest.importorskip("distributed")
    fix = DEMO_MODEL.parents[1] / "examples" / "checkout_fix.toml"
    for name, extra in (("here", []), ("there", ["--scheduler", "local", "--workers", "2"])):
        assert invoke("simulate", DEMO_MODEL, "--customers", "4000", "--replications", "3", "--seed", "1",
                      "--out", tmp_path / f"sim-{name}", "--quiet", *extra).exit_code == 0
        assert invoke("compare", DEMO_MODEL, fix, "--customers", "4000", "--replications", "2", "--seed", "1",
                      "--out", tmp_path / f"cmp-{name}", "--quiet", *extra).exit_code == 0
    for run, record in (("sim", "summary.json"), ("cmp", "comparison.json")):
        assert (tmp_path / f"{run}-here" / record).read_bytes() == (tmp_path / f"{run}-there" / record).read_bytes()
        manifest = json.loads((tmp_path / f"{run}-there" / "manifest.json").read_text())
        assert manifest["arguments"]["scheduler"] == "local" and manifest["arguments"]["workers"] == 2
        assert "scheduler" not in json.loads((tmp_path / f"{run}-here" / "manifest.json").read_text())["arguments"]
    both = invoke("simulate", DEMO_MODEL, "--jobs", "2", "--scheduler", "local", "--out", tmp_path / "x")
    assert both.exit_code == 2 and "--jobs" in both.stderr and not (tmp_path / "x").exists()
