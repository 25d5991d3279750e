"""Hardening II, data loss and wrong results with exit 0: nothing of the user's is ever replaced,
intervals stay where the quantity can be, a kill leaves nothing behind, write errors name --out."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import application.rundir
import cli
from application.rundir import check_output_file, check_run_out, clean_stale, run_directory
from cli import app
from conftest import DEMO_EVENTS, DEMO_MODEL
from sim.errors import InputError
from sim.summary import mean_ci, rate_ci

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "scenarios" / "examples"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (links as their target's name)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = b"-> " + os.readlink(p).encode()
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def refused(result, *words: str) -> str:
    """Exit 2 with exactly one line on stderr that holds every word; returns the line."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def mydocs(tmp_path):
    """A folder of the user's own files."""
    d = tmp_path / "mydocs"
    (d / "sub").mkdir(parents=True)
    (d / "thesis.docx").write_bytes(b"\x00chapter one" * 100)
    (d / "sub" / "notes.txt").write_text("keep me")
    return d


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("earlier") / "run"
    result = invoke("simulate", DEMO_MODEL, "--customers", 500, "--seed", 1, "--out", out)
    assert result.exit_code == 0, result.output
    return out


# ---- --out of a run directory ----------------------------------------------------------------
class TestRunOut:
    @pytest.mark.parametrize("command", [
        ["simulate", DEMO_MODEL, "--customers", 500, "--seed", 1],
        ["compare", DEMO_MODEL, EXAMPLES / "checkout_fix.toml", "--customers", 500, "--seed", 1, "--quiet"],
        ["optimize", EXAMPLES / "budget.toml", "--trials", 2, "--seed", 1, "--customers", 500, "--quiet"],
        ["backtest", DEMO_EVENTS, "--split", "2024-04-01"],
        ["drift", DEMO_MODEL, DEMO_MODEL],
    ], ids=lambda c: c[0])
    def test_a_folder_of_the_users_files_is_refused_and_untouched(self, command, mydocs):
        before = tree(mydocs)
        line = refused(invoke(*command, "--out", mydocs), str(mydocs), "--out", "not a journey run directory")
        assert "give a new folder" in line
        assert tree(mydocs) == before  # optimize did not put its study.log there either
        assert sorted(p.name for p in mydocs.parent.iterdir()) == ["mydocs"]  # no partial beside it

    @pytest.mark.parametrize("where", [".", "~", ".."])
    def test_the_cwd_the_home_folder_and_above_are_refused(self, where, tmp_path, monkeypatch):
        home = tmp_path / "home"
        work = home / "work"
        work.mkdir(parents=True)
        (work / "data.csv").write_text("a,b\n")
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.chdir(work)
        out = str(Path(where).expanduser())
        before = tree(home)
        refused(invoke("simulate", DEMO_MODEL, "--customers", 200, "--out", out), "--out", "give a new folder")
        assert tree(home) == before
        assert not any(".partial-" in p.name for p in tmp_path.rglob("*"))

    def test_the_cwd_is_refused_even_when_empty(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        refused(invoke("simulate", DEMO_MODEL, "--customers", 200, "--out", "."), "is the current folder")
        assert list(tmp_path.iterdir()) == []

    def test_an_earlier_run_directory_is_replaced(self, earlier_run):
        result = invoke("simulate", DEMO_MODEL, "--customers", 600, "--seed", 2, "--out", earlier_run)
        assert result.exit_code == 0, result.output
        assert json.loads((earlier_run / "summary.json").read_text())["customers"] == 600

    def test_a_run_directory_holding_a_users_file_is_refused(self, tmp_path):
        out = tmp_path / "run"
        assert invoke("simulate", DEMO_MODEL, "--customers", 300, "--seed", 1, "--out", out).exit_code == 0
        (out / "my_analysis.ipynb").write_text("{}")
        before = tree(out)
        line = refused(invoke("simulate", DEMO_MODEL, "--customers", 300, "--seed", 2, "--out", out),
                       "my_analysis.ipynb", "files journey did not write")
        assert str(out) in line
        assert tree(out) == before

    def test_a_forged_manifest_is_not_a_run_directory(self, mydocs):
        (mydocs / "manifest.json").write_text('{"name": "my project"}')
        before = tree(mydocs)
        refused(invoke("simulate", DEMO_MODEL, "--customers", 300, "--out", mydocs), "not a journey run directory")
        assert tree(mydocs) == before

    def test_an_empty_folder_and_a_new_one_are_fine(self, tmp_path):
        (tmp_path / "empty").mkdir()
        for out in (tmp_path / "empty", tmp_path / "new" / "deeper"):
            result = invoke("simulate", DEMO_MODEL, "--customers", 300, "--out", out)
            assert result.exit_code == 0, result.output
            assert (out / "manifest.json").is_file()

    def test_a_link_to_a_users_folder_is_refused(self, mydocs, tmp_path):
        link = tmp_path / "link"
        link.symlink_to(mydocs, target_is_directory=True)
        before = tree(mydocs)
        refused(invoke("simulate", DEMO_MODEL, "--customers", 300, "--out", link), "not a journey run directory")
        assert tree(mydocs) == before and link.is_symlink()

    def test_a_folder_holding_an_input_is_refused(self, tmp_path):
        data = tmp_path / "data"
        data.mkdir()
        model = data / "model.json"
        model.write_bytes(DEMO_MODEL.read_bytes())
        before = tree(data)
        refused(invoke("simulate", model, "--customers", 300, "--out", data), "an input of this command")
        assert tree(data) == before

    def test_an_optimize_run_cut_short_keeps_its_folder_usable(self, tmp_path):
        out = tmp_path / "opt"
        out.mkdir()
        (out / "study.log").write_text("")  # the study journal optimize writes before its manifest
        assert check_run_out(out) == out

    def test_the_report_figures_folder_follows_the_same_rule(self, earlier_run, tmp_path):
        figs = tmp_path / "page_figures"
        figs.mkdir()
        (figs / "holiday.jpg").write_bytes(b"\xff\xd8 photo")
        before = tree(figs)
        refused(invoke("report", earlier_run, "--out", tmp_path / "page.html"), "page_figures",
                "not a journey run directory")
        assert tree(figs) == before and not (tmp_path / "page.html").exists()


# ---- output files ---------------------------------------------------------------------------
class TestOutputFile:
    def test_calibrate_never_writes_over_its_event_log(self, tmp_path):
        log = tmp_path / "ev.csv.gz"
        log.write_bytes(DEMO_EVENTS.read_bytes())
        refused(invoke("calibrate", log, "--out", log), str(log), "input of this command")
        assert log.read_bytes() == DEMO_EVENTS.read_bytes()

    @pytest.mark.parametrize("link", ["hard", "soft"])
    def test_nor_over_a_link_to_it(self, tmp_path, link):
        log = tmp_path / "ev.csv.gz"
        log.write_bytes(DEMO_EVENTS.read_bytes())
        alias = tmp_path / "model.json"
        os.link(log, alias) if link == "hard" else alias.symlink_to(log)
        refused(invoke("calibrate", log, "--out", alias), "input of this command")
        assert log.read_bytes() == DEMO_EVENTS.read_bytes()

    def test_nor_over_its_mapping_file(self, tmp_path):
        mapping = tmp_path / "map.toml"
        mapping.write_text('[columns]\ncustomer_id = "customer_id"\n')
        before = mapping.read_bytes()
        refused(invoke("calibrate", DEMO_EVENTS, "--mapping", mapping, "--out", mapping), "input of this command")
        assert mapping.read_bytes() == before

    def test_calibrate_refuses_a_file_it_did_not_write(self, tmp_path):
        other = tmp_path / "model.json"
        other.write_text('{"my": "settings"}\n')
        refused(invoke("calibrate", DEMO_EVENTS, "--out", other),
                "exists and was not written by journey", "choose another path or delete it")
        assert other.read_text() == '{"my": "settings"}\n'

    def test_calibrate_replaces_a_model_it_wrote(self, tmp_path):
        out = tmp_path / "model.json"
        out.write_bytes(DEMO_MODEL.read_bytes())
        assert invoke("calibrate", DEMO_EVENTS, "--out", out).exit_code == 0
        assert json.loads(out.read_text())["kind"] == "journey.model"

    def test_report_never_writes_over_a_runs_file(self, earlier_run):
        before = tree(earlier_run)
        refused(invoke("report", earlier_run, "--out", earlier_run / "summary.json"), "input of this command")
        assert tree(earlier_run) == before

    def test_report_refuses_a_users_page_and_replaces_its_own(self, earlier_run, tmp_path):
        page = tmp_path / "index.html"
        page.write_text("<html><body>my homepage</body></html>")
        refused(invoke("report", earlier_run, "--out", page), "not written by journey")
        assert page.read_text() == "<html><body>my homepage</body></html>"
        own = tmp_path / "report.html"
        for _ in range(2):  # the second run replaces the first one's page: it carries the marker
            result = invoke("report", earlier_run, "--out", own)
            assert result.exit_code == 0, result.output
        assert '<meta name="generator" content="journey ' in own.read_text()[:4096]

    def test_report_refuses_a_model_as_its_page(self, earlier_run, tmp_path):
        model = tmp_path / "model.json"
        model.write_bytes(DEMO_MODEL.read_bytes())
        refused(invoke("report", earlier_run, "--out", model), "not written by journey")
        assert model.read_bytes() == DEMO_MODEL.read_bytes()

    def test_hotspots_refuses_a_users_file_and_replaces_its_own(self, tmp_path):
        out = tmp_path / "ranking.json"
        out.write_text("[1, 2, 3]\n")
        refused(invoke("hotspots", DEMO_MODEL, "--draws", 0, "--out", out), "not written by journey")
        assert out.read_text() == "[1, 2, 3]\n"
        out.unlink()
        for _ in range(2):
            assert invoke("hotspots", DEMO_MODEL, "--draws", 0, "--out", out).exit_code == 0
        assert json.loads(out.read_text())["kind"] == "journey.hotspots"

    def test_events_out_refuses_a_users_parquet_and_replaces_its_own(self, tmp_path):
        import pandas as pd

        mine = tmp_path / "sales.parquet"
        pd.DataFrame({"order": [1, 2], "amount": [9.5, 3.0]}).to_parquet(mine)
        before = mine.read_bytes()
        refused(invoke("simulate", DEMO_MODEL, "--customers", 200, "--events-out", mine, "--out", tmp_path / "r"),
                "--events-out", "not written by journey")
        assert mine.read_bytes() == before and not (tmp_path / "r").exists()
        own = tmp_path / "sim.parquet"
        for i in range(2):
            result = invoke("simulate", DEMO_MODEL, "--customers", 200, "--seed", i, "--events-out", own,
                            "--out", tmp_path / f"r{i}")
            assert result.exit_code == 0, result.output
        import pyarrow.parquet as pq

        assert b"journey" in pq.read_schema(own).metadata

    def test_events_out_inside_out_is_refused(self, tmp_path):
        out = tmp_path / "run"
        refused(invoke("simulate", DEMO_MODEL, "--customers", 200, "--events-out", out / "ev.parquet",
                       "--out", out), "inside --out")
        assert list(tmp_path.iterdir()) == []

    def test_check_output_file_reads_only_the_head(self, tmp_path):
        big = tmp_path / "model.json"
        with big.open("w") as fh:  # a model-looking head, then garbage: recognised from the head
            fh.write('{\n  "kind": "journey.model",\n' + "x" * (1 << 20))
        assert check_output_file(big, "model") == big
        with pytest.raises(InputError, match="not written by journey"):
            check_output_file(big, "report")


# ---- intervals ------------------------------------------------------------------------------
class TestIntervals:
    def test_tiny_cohort_rate_intervals_stay_within_0_and_1(self, tmp_path):
        out = tmp_path / "run"
        result = invoke("simulate", DEMO_MODEL, "--customers", 20, "--replications", 2, "--seed", 3,
                        "--draws", 0, "--out", out)
        assert result.exit_code == 0, result.output
        s = json.loads((out / "summary.json").read_text())
        rates = np.array(s["replication_conversion_rates"])
        raw_half = 12.706 * rates.std(ddof=1) / np.sqrt(2)  # t(0.975, 1): what the interval was before
        assert rates.mean() - raw_half < 0 or rates.mean() + raw_half > 1, "the case does not test the cut"
        intervals = [s["conversion_rate_ci"], *(p["conversion_rate_ci"] for p in s["personas"].values())]
        for lo, hi in intervals:
            assert 0.0 <= lo <= hi <= 1.0

    def test_mean_ci_cuts_to_its_bounds(self):
        assert mean_ci(np.array([0.0, 0.5]), bounds=(0.0, 1.0))[0] == 0.0
        assert mean_ci(np.array([1.0, 0.5]), bounds=(0.0, 1.0))[1] == 1.0
        assert mean_ci(np.array([-0.9, 0.9])) == [-1.0, 1.0]  # differences of rates: within [-1, 1]
        lo, hi = mean_ci(np.array([0.40, 0.42, 0.44]))
        assert 0.3 < lo < 0.42 < hi < 0.54  # well inside: unchanged
        assert rate_ci(np.array([0, 10]), np.array([20, 20]))[0] == 0.0  # t interval would start at -2.9

    def test_tiny_cohort_uplift_intervals_stay_within_minus_1_and_1(self, tmp_path):
        out = tmp_path / "cmp"
        result = invoke("compare", DEMO_MODEL, EXAMPLES / "checkout_fix.toml", EXAMPLES / "drop_ads.toml",
                        "--customers", 5, "--replications", 2, "--seed", 5, "--quiet", "--out", out)
        assert result.exit_code == 0, result.output
        c = json.loads((out / "comparison.json").read_text())
        for sc in c["scenarios"]:
            for key in ("uplift_ci", "uplift_interval", "conversion_rate_ci"):
                if key in sc:
                    lo, hi = sc[key]
                    assert -1.0 <= lo <= hi <= 1.0
                    if key == "conversion_rate_ci":
                        assert lo >= 0.0


# ---- signals, stale partials ------------------------------------------------------------------
SLOW_WRITE = textwrap.dedent("""
    import sys, time
    import application.simulate
    real = application.simulate.weekly_csv
    def slow(results):  # summary.json is in the partial folder by now
        print("writing", flush=True)
        time.sleep(60)
        return real(results)
    application.simulate.weekly_csv = slow
    import cli
    sys.argv = ["journey", *sys.argv[1:]]
    cli.main()
""")


class TestSignals:
    def test_sigterm_during_the_write_phase_leaves_nothing(self, tmp_path):
        out = tmp_path / "run"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITE, "simulate", str(DEMO_MODEL), "--customers", "300",
                                 "--quiet", "--out", str(out)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "writing"
            assert any(".partial-" in p.name for p in tmp_path.iterdir())  # mid-write indeed
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert err.strip().splitlines() == ["interrupted: nothing was written"]
        assert list(tmp_path.iterdir()) == []

    def test_the_handler_turns_sigterm_into_an_interrupt(self):
        with pytest.raises(KeyboardInterrupt) as info:
            cli.on_signal(signal.SIGTERM, None)
        assert cli.interrupt_code(info.value) == 143
        assert cli.interrupt_code(KeyboardInterrupt()) == 130

    def test_an_ignored_signal_stays_ignored(self, monkeypatch):
        installed = {}
        monkeypatch.setattr(cli.signal, "getsignal",
                            lambda s: signal.SIG_IGN if s == signal.SIGHUP else signal.SIG_DFL)
        monkeypatch.setattr(cli.signal, "signal", lambda s, h: installed.__setitem__(s, h))
        cli.catch_signals()
        assert installed == {signal.SIGTERM: cli.on_signal}  # nohup's SIGHUP is left alone

    def test_partials_of_dead_processes_are_removed_live_ones_kept(self, tmp_path):
        gone, alive = dead_pid(), os.getpid()
        stale = tmp_path / f".run.partial-{gone}-abcd"
        live = tmp_path / f".run.partial-{alive}-efgh"
        other = tmp_path / f".other.partial-{gone}-ijkl"
        for d in (stale, live, other):
            d.mkdir()
            (d / "summary.json").write_text("{}")
        tmp_file = tmp_path / f".summary.json.tmp-{gone}-xyz.tmp"
        tmp_file.write_text("half")
        out = tmp_path / "run"
        assert invoke("simulate", DEMO_MODEL, "--customers", 200, "--out", out).exit_code == 0
        assert not stale.exists() and live.exists() and other.exists()
        clean_stale(tmp_path, ".summary.json.tmp-")
        assert not tmp_file.exists()

    def test_an_earlier_run_cut_off_mid_swap_is_put_back(self, earlier_run, tmp_path):
        final = tmp_path / "run"
        old = tmp_path / f".run.old-{dead_pid()}-"
        old.mkdir()
        for name, data in tree(earlier_run).items():
            (old / name).write_bytes(data)
        with pytest.raises(RuntimeError):
            with run_directory("simulate", final, {}, []):
                raise RuntimeError("fails before the swap")
        assert tree(final) == tree(earlier_run) and not old.exists()


# ---- write errors name --out ----------------------------------------------------------------
class _FullDisk:
    def __init__(self, fh):
        self.fh = fh

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class TestWriteErrors:
    def test_a_full_disk_names_out_not_the_hidden_folder(self, tmp_path, monkeypatch):
        real = os.fdopen
        monkeypatch.setattr(application.rundir.os, "fdopen", lambda fd, mode: _FullDisk(real(fd, mode)))
        out = tmp_path / "run"
        line = refused(invoke("simulate", DEMO_MODEL, "--customers", 200, "--out", out), "no space left on device",
                       str(out))
        assert ".partial" not in line
        assert list(tmp_path.iterdir()) == []

    def test_a_failed_swap_names_out(self, tmp_path, monkeypatch):
        real = os.replace

        def replace(src, dst):
            if ".partial-" in str(src):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))
            return real(src, dst)

        monkeypatch.setattr(application.rundir.os, "replace", replace)
        out = tmp_path / "run"
        line = refused(invoke("simulate", DEMO_MODEL, "--customers", 200, "--out", out), "--out",
                       "no space left on device")
        assert ".partial" not in line and str(out) in line
        assert list(tmp_path.iterdir()) == []

    def test_a_failed_rerun_keeps_the_earlier_run(self, earlier_run, monkeypatch):
        before = tree(earlier_run)
        real = os.replace
        calls = []

        def replace(src, dst):  # the earlier run moved aside, then the new one fails to land
            calls.append(src)
            if ".partial-" in str(src) and Path(dst) == earlier_run:
                raise OSError(errno.EIO, os.strerror(errno.EIO), str(src))
            return real(src, dst)

        monkeypatch.setattr(application.rundir.os, "replace", replace)
        refused(invoke("simulate", DEMO_MODEL, "--customers", 700, "--out", earlier_run), "input/output error")
        assert tree(earlier_run) == before
        assert not any(".old-" in p.name or ".partial-" in p.name for p in earlier_run.parent.iterdir())

