"""Hostile and careless input (issue 19): each case exits 2 with exactly one line naming the file, row or
key and the value, and writes nothing; or, where the input is odd but valid, it works.

Grouped by class: files, numbers, structure, sizes, names.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from conftest import DEMO_MODEL

runner = CliRunner()
HEADER = "customer_id,timestamp,touchpoint,stage\n"
GOOD = (HEADER + "c1,2024-01-01T10:00:00,email,awareness\nc1,2024-01-03T10:00:00,web,consideration\n"
        "c2,2024-01-02T10:00:00,email,awareness\nc2,2024-02-20T10:00:00,checkout,decision\n")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def refused(result, *fragments: str) -> str:
    """Exit 2, exactly one line on stderr holding every fragment, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def model_with(tmp_path: Path, edit, name: str = "model.json") -> Path:
    data = json.loads(DEMO_MODEL.read_text())
    edit(data)
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False))
    return path


@pytest.fixture
def good(tmp_path) -> Path:
    path = tmp_path / "good.csv"
    path.write_text(GOOD)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("runs") / "sim"
    result = invoke("simulate", DEMO_MODEL, "--customers", 2000, "--draws", 0, "--seed", 1, "-q", "--out", d)
    assert result.exit_code == 0, result.output
    return d


# ---- files: pipes, devices, permissions, nesting ---------------------------------------------------
class TestFiles:
    def test_fifo_log_is_refused_not_waited_on(self, tmp_path):
        fifo = tmp_path / "events.csv"
        os.mkfifo(fifo)
        refused(invoke("calibrate", fifo, "--out", tmp_path / "m.json"), "events.csv", "not a regular file")
        assert not (tmp_path / "m.json").exists()

    @pytest.mark.parametrize("command", [["calibrate", "/dev/zero", "--out", "{o}"], ["simulate", "/dev/zero"],
                                         ["compare", "/dev/zero", "/dev/zero"], ["hotspots", "/dev/zero"]])
    def test_dev_zero_is_refused(self, tmp_path, command):
        args = [a.replace("{o}", str(tmp_path / "m.json")) for a in command]
        refused(invoke(*args), "/dev/zero", "not a regular file")

    def test_fifo_model_scenario_and_mapping(self, tmp_path, good):
        for name in ("m.json", "s.toml", "map.toml"):
            os.mkfifo(tmp_path / name)
        refused(invoke("simulate", tmp_path / "m.json", "--draws", 0), "m.json", "not a regular file")
        refused(invoke("simulate", tmp_path / "s.toml", "--draws", 0), "s.toml", "not a regular file")
        refused(invoke("calibrate", good, "--mapping", tmp_path / "map.toml", "--out", tmp_path / "o.json"),
                "map.toml", "not a regular file")

    def test_unreadable_file_is_one_line(self, tmp_path, good, monkeypatch):
        monkeypatch.setattr("sim.limits.os.access", lambda path, mode: False)  # root reads every file
        refused(invoke("calibrate", good, "--out", tmp_path / "m.json"), "good.csv", "permission denied")
        refused(invoke("simulate", DEMO_MODEL, "--draws", 0), "model.json", "permission denied")

    def test_deeply_nested_json_model(self, tmp_path):
        path = tmp_path / "deep.json"
        path.write_text("[" * 100_000 + "]" * 100_000)
        refused(invoke("simulate", path, "--draws", 0), "deep.json", "nested too deeply")

    def test_deeply_nested_toml_scenario_and_mapping(self, tmp_path, good):
        path = tmp_path / "deep.toml"
        path.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
        refused(invoke("simulate", path, "--draws", 0), "deep.toml", "nested too deeply")
        refused(invoke("calibrate", good, "--mapping", path, "--out", tmp_path / "m.json"), "deep.toml", "nested")

    def test_deeply_nested_run_result(self, tmp_path):
        run = tmp_path / "run"
        run.mkdir()
        (run / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
        refused(invoke("report", run, "--out", tmp_path / "r.html"), "summary.json", "nested too deeply")
        assert not (tmp_path / "r.html").exists()


# ---- numbers: nan, inf, absurd sizes ---------------------------------------------------------------
class TestNumbers:
    @pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
    def test_inactivity_days_not_finite(self, tmp_path, good, value):
        refused(invoke("calibrate", good, "--out", tmp_path / "m.json", "--inactivity-days", value),
                "--inactivity-days", "finite", value)
        refused(invoke("backtest", good, "--split", "2024-01-10", "--inactivity-days", value,
                       "--out", tmp_path / "bt"), "--inactivity-days", "finite")
        assert not (tmp_path / "m.json").exists() and not (tmp_path / "bt").exists()

    @pytest.mark.parametrize("value", ["nan", "inf"])
    def test_horizon_days_not_finite(self, tmp_path, value):
        refused(invoke("simulate", DEMO_MODEL, "--horizon-days", value, "--draws", 0, "--out", tmp_path / "o"),
                "--horizon-days", "finite", value)
        assert not (tmp_path / "o").exists()

    @pytest.mark.parametrize("key", ["horizon_days = inf", "horizon_days = nan", "arrival_days = inf",
                                     "customers = 1000000000000"])
    def test_scenario_numbers(self, tmp_path, key):
        path = tmp_path / "s.toml"
        path.write_text(f'model = "{DEMO_MODEL}"\n{key}\n')
        refused(invoke("simulate", path, "--draws", 0, "--out", tmp_path / "o"), "s.toml", key.split()[0])
        assert not (tmp_path / "o").exists()

    def test_customers_beyond_the_limit_refused_at_once(self, tmp_path):
        line = refused(invoke("simulate", DEMO_MODEL, "--customers", 10**12, "--draws", 0, "--out", tmp_path / "o"),
                       "--customers", "1,000,000,000", str(10**12))
        assert "replication" in line
        refused(invoke("compare", DEMO_MODEL, DEMO_MODEL, "--customers", 10**12, "--draws", 0,
                       "--out", tmp_path / "c"), "--customers", "1,000,000,000")
        assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()

    def test_replications_beyond_the_limit_refused_at_once(self, tmp_path):
        refused(invoke("simulate", DEMO_MODEL, "--customers", 10, "--replications", 10**9, "--draws", 0,
                       "--out", tmp_path / "o"), "--replications", "10,000", str(10**9))
        refused(invoke("simulate", DEMO_MODEL, "--customers", 10**8, "--replications", 1000, "--draws", 0,
                       "--out", tmp_path / "o"), "10,000,000,000")
        assert not (tmp_path / "o").exists()

    def test_drift_alpha_nan(self, tmp_path):
        refused(invoke("drift", DEMO_MODEL, DEMO_MODEL, "--alpha", "nan", "--out", tmp_path / "d"), "--alpha")

    def test_model_with_a_number_of_10000_digits(self, tmp_path):
        path = tmp_path / "long.json"
        path.write_text('{"kind": "journey.model", "x": 1' + "0" * 10_000 + "}")
        refused(invoke("simulate", path, "--draws", 0), "long.json", "too long")


# ---- structure: headers, rows, types in model files and run directories ----------------------------
class TestStructure:
    def test_duplicate_header_name(self, tmp_path):
        path = tmp_path / "dup.csv"
        path.write_text("customer_id,timestamp,touchpoint,stage,stage\nc1,2024-01-01,email,awareness,awareness\n")
        refused(invoke("calibrate", path, "--out", tmp_path / "m.json"), "dup.csv", "'stage'", "more than once")
        assert not (tmp_path / "m.json").exists()

    def test_duplicate_ignored_column_works(self, tmp_path):
        path = tmp_path / "dup.csv"
        head, *rows = GOOD.splitlines()
        path.write_text("\n".join([head + ",note,note"] + [r + ",a,b" for r in rows]) + "\n")
        result = invoke("calibrate", path, "--out", tmp_path / "m.json")
        assert result.exit_code == 0, result.output

    def test_row_with_an_extra_field_names_the_row(self, tmp_path):
        path = tmp_path / "extra.csv"
        path.write_text(HEADER + "c1,2024-01-01,email,awareness\nc1,2024-02-01,web,decision,oops\n")
        refused(invoke("calibrate", path, "--out", tmp_path / "m.json"), "extra.csv", "row 2", "5 fields", "4")

    @pytest.mark.parametrize("key,value,shown", [("stages", "awareness", "'awareness'"), ("touchpoints", 5, "5"),
                                                 ("personas", ["a"], "list"), ("journey", "x", "'x'"),
                                                 ("stages", [1, 2], "list")])
    def test_model_container_of_the_wrong_type(self, tmp_path, key, value, shown):
        path = model_with(tmp_path, lambda d: d.update({key: value}))
        refused(invoke("simulate", path, "--draws", 0), "model.json", key, shown)

    @pytest.mark.parametrize("edit,fragments", [
        (lambda s: s.update(conversion_rate="high"), ["conversion_rate", "number", "'high'"]),
        (lambda s: s.update(conversion_rate_ci=[0.1]), ["conversion_rate_ci", "interval"]),
        (lambda s: s.update(conversion_rate_ci=[0.5, 0.1]), ["conversion_rate_ci", "low end"]),
        (lambda s: s.update(stages=[1, 2]), ["stages", "object"]),
        (lambda s: s["stages"]["awareness"].update(reached="x"), ["stages.awareness.reached", "'x'"]),
        (lambda s: s.update(customers=-4), ["customers", "-4"]),
        (lambda s: s.update(customers=True), ["customers", "True"]),
        (lambda s: s.update(personas={"deal_seeker": 3}), ["personas.deal_seeker", "object"]),
    ])
    def test_tampered_run_directory(self, tmp_path, run_dir, edit, fragments):
        d = tmp_path / "tampered"
        d.mkdir()
        summary = json.loads((run_dir / "summary.json").read_text())
        edit(summary)
        (d / "summary.json").write_text(json.dumps(summary))
        refused(invoke("report", d, "--out", tmp_path / "r.html"), "summary.json", *fragments)
        assert not (tmp_path / "r.html").exists()

    def test_tampered_best_and_backtest(self, tmp_path):
        d = tmp_path / "opt"
        d.mkdir()
        (d / "best.json").write_text(json.dumps({"allocation": {"a": "ten"}, "expected_conversion_rate": 0.4,
                                                 "baseline_expected_conversion_rate": 0.3, "expected_uplift": 0.1}))
        refused(invoke("report", d, "--out", tmp_path / "r.html"), "best.json", "allocation.a", "'ten'")
        (d / "best.json").unlink()
        (d / "backtest.json").write_text(json.dumps({"split": "2024-01-01", "predicted": {"decision": 7},
                                                     "observed": {}, "naive": {}}))
        refused(invoke("report", d, "--out", tmp_path / "r.html"), "backtest.json", "predicted.decision", "0 to 1")


# ---- sizes: long fields, big files, many stages and touchpoints ------------------------------------
class TestSizes:
    def test_one_mib_field_is_read(self, tmp_path):
        path = tmp_path / "big.csv"
        path.write_text("customer_id,timestamp,touchpoint,stage,notes\n"
                        f"c1,2024-01-01,email,awareness,{'x' * (1 << 20)}\nc1,2024-02-01,web,decision,y\n"
                        "c2,2024-01-05,email,awareness,z\n")
        result = invoke("calibrate", path, "--out", tmp_path / "m.json")
        assert result.exit_code == 0, result.output

    def test_model_file_beyond_the_size_limit_is_not_read(self, tmp_path):
        path = tmp_path / "huge.json"
        with path.open("wb") as fh:  # sparse: 300 MiB on paper, nothing on disk
            fh.write(b'{"kind": "journey.model", "x": 1')
            fh.truncate(300 * 2**20)
        refused(invoke("simulate", path, "--draws", 0), "huge.json", "too large", "256 MiB")

    def test_two_hundred_stages(self, tmp_path):
        rng = np.random.default_rng(3)
        stages = [f"s{i}" for i in range(200)]
        rows = []
        for c in range(1500):
            s, t = 0, pd.Timestamp("2024-01-01")
            rows.append((f"c{c}", t, f"tp{rng.integers(4)}", "s0"))
            while s < 199 and rng.random() < 0.97:
                s, t = s + 1, t + pd.Timedelta(hours=float(rng.exponential(6)))
                rows.append((f"c{c}", t, f"tp{rng.integers(4)}", f"s{s}"))
        path = tmp_path / "s200.csv"
        pd.DataFrame(rows, columns=HEADER.strip().split(",")).to_csv(path, index=False)
        result = invoke("calibrate", path, "--stages", ",".join(stages), "--conversion-stage", "s150",
                        "--out", tmp_path / "m.json")
        assert result.exit_code == 0, result.output
        result = invoke("simulate", tmp_path / "m.json", "--customers", 20000, "--draws", 0, "-q",
                        "--out", tmp_path / "run")
        assert result.exit_code == 0, result.output
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        reached = summary["stages"]["s199"]["reached_rate"]
        assert 0 < reached < 0.2
        assert abs(reached - summary["stages"]["s199"]["expected_reached_rate"]) < 0.02

    def test_a_stage_nobody_leaves_does_not_crash_the_engine(self, tmp_path):
        def stuck(d):
            for persona in d["journey"].values():
                for cell in persona["retention"]["touchpoints"].values():
                    cell["drop_off"] = 0.0
                    cell["advance"] = {k: 0.0 for k in cell["advance"]}
        path = model_with(tmp_path, stuck)
        for extra in ([], ["--horizon-days", "400"]):
            result = invoke("simulate", path, "--customers", 200_000, "--draws", 0, "-q", "--out",
                            tmp_path / f"run{len(extra)}", *extra)
            assert result.exit_code == 0, result.output

    def test_a_stage_never_reached_draws_its_funnel(self, tmp_path):
        def unreachable(d):
            for persona in d["journey"].values():
                for stage in persona.values():
                    for cell in stage["touchpoints"].values():
                        if "advocacy" in cell["advance"]:
                            cell["drop_off"] += cell["advance"]["advocacy"]
                            cell["advance"]["advocacy"] = 0.0
        path = model_with(tmp_path, unreachable)
        result = invoke("simulate", path, "--customers", 2_000_000, "--draws", 0, "-q", "--out", tmp_path / "run")
        assert result.exit_code == 0, result.output
        assert (tmp_path / "run" / "funnel.png").stat().st_size > 0
        result = invoke("report", tmp_path / "run", "--out", tmp_path / "r.html")
        assert result.exit_code == 0, result.output

    def test_wilson_ends_are_exact(self):
        from sim.summary import wilson

        for n in (1, 7, 10_000, 2_000_000):
            assert wilson(0, n)[0] == 0.0 and wilson(n, n)[1] == 1.0


# ---- names: NA and None as ids, emoji and CJK ------------------------------------------------------
class TestNames:
    def test_na_and_none_are_customer_ids(self, tmp_path):
        path = tmp_path / "na.csv"
        path.write_text(HEADER + "NA,2024-01-01,email,awareness\nNA,2024-02-01,web,decision\n"
                        "None,2024-01-01,email,awareness\nNone,2024-03-01,NA,consideration\n"
                        "null,2024-01-02,email,awareness\n")
        result = invoke("calibrate", path, "--out", tmp_path / "m.json")
        assert result.exit_code == 0, result.output
        model = json.loads((tmp_path / "m.json").read_text())
        assert model["log"]["customers"] == 3
        assert "NA" in model["touchpoints"]

    def test_na_ids_in_parquet(self, tmp_path):
        path = tmp_path / "na.parquet"
        pd.DataFrame({"customer_id": ["NA", "NA", "None"], "timestamp": ["2024-01-01", "2024-02-01", "2024-01-03"],
                      "touchpoint": ["email", "web", "email"],
                      "stage": ["awareness", "decision", "awareness"]}).to_parquet(path)
        result = invoke("calibrate", path, "--out", tmp_path / "m.json")
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "m.json").read_text())["log"]["customers"] == 2

    def test_empty_id_is_still_refused(self, tmp_path):
        path = tmp_path / "empty.csv"
        path.write_text(HEADER + "c1,2024-01-01,email,awareness\n,2024-01-02,email,awareness\n")
        refused(invoke("calibrate", path, "--out", tmp_path / "m.json"), "empty.csv", "row 2", "customer_id")

    def test_emoji_and_cjk_names_draw_without_warnings(self, tmp_path):
        names = {"deal_seeker": "🛒 買い物客", "loyalist": "常客 ⭐", "researcher": "연구자 🔬"}

        def rename(d):
            d["personas"] = {names[k]: v for k, v in d["personas"].items()}
            d["journey"] = {names[k]: v for k, v in d["journey"].items()}
        path = model_with(tmp_path, rename)
        result = invoke("simulate", path, "--customers", 5000, "--draws", 10, "-q", "--out", tmp_path / "run")
        assert result.exit_code == 0, result.output
        assert result.stderr.strip() == ""
        result = invoke("report", tmp_path / "run", "--out", tmp_path / "r.html")
        assert result.exit_code == 0 and result.stderr.strip() == "", result.stderr
