"""A battery of malformed inputs across the commands: exit 2, one short line, no traceback, nothing written.

Each case names the fragments its one line must hold (the file, the key or row, the value, a hint).
Internal errors: exit 1 with one line; the trace only with ``journey --debug``.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from conftest import DEMO_EVENTS, DEMO_MODEL

runner = CliRunner()

GOOD_CSV = ("customer_id,timestamp,touchpoint,stage\n"
            "c1,2024-01-01T10:00:00,email,awareness\nc1,2024-01-03T10:00:00,web,consideration\n"
            "c2,2024-01-02T10:00:00,email,awareness\nc2,2024-02-20T10:00:00,checkout,decision\n")
HEADER = "customer_id,timestamp,touchpoint,stage\n"
CHANGE = "[[change]]\ntouchpoint = 'checkout'\n"
INVEST = ("[[investment]]\nname = 'fix'\ntouchpoint = 'checkout'\nlever = 'drop_off'\nmax_effect = 0.5\n"
          "half_saturation = 10.0\nmax_spend = 100.0\n")


def _model_variant(edit) -> str:
    data = json.loads(DEMO_MODEL.read_text())
    edit(data)
    return json.dumps(data)


def _cell(data: dict) -> dict:
    return data["journey"]["deal_seeker"]["consideration"]["touchpoints"]["checkout"]


FILES: dict[str, str | bytes] = {
    # event logs
    "empty.csv": "",
    "header.csv": HEADER,
    "nocol.csv": "customer_id,timestamp,stage\nc1,2024-01-01,awareness\n",
    "badts.csv": HEADER + "c1,2024-01-01,email,awareness\nc1,yesterday,email,decision\n",
    "badstage.csv": HEADER + "c1,2024-01-01,email,awarenes\n",
    "dmy.csv": HEADER + "c1,01/04/2024,email,awareness\nc1,2024-04-02,email,decision\n",
    "garbage.csv": os.urandom(4096),
    "fake.csv.gz": b"this is not gzip data\n",
    "fake.parquet": os.urandom(512),
    "dup.csv": HEADER + "c1,2024-01-01,email,awareness\nc1,2024-01-01,email,awareness\n",
    "persona2.csv": ("customer_id,timestamp,touchpoint,stage,persona\n"
                     "c1,2024-01-01,email,awareness,a\nc1,2024-01-02,email,awareness,b\n"),
    "emptyval.csv": HEADER + "c1,2024-01-01,,awareness\n",
    "latin1.csv": (HEADER + "c\xe9,2024-01-01,email,awareness\n").encode("latin-1"),
    "good.csv": GOOD_CSV,
    # mappings
    "map_missing.toml": '[columns]\ncustomer_id = "cookie"\n',
    "map_unknown.toml": '[colums]\ncustomer_id = "cookie"\n',
    "map_syntax.toml": '[columns\ncustomer_id = "cookie"\n',
    "map_dmy.toml": '[timestamp]\nformat = "%d/%m/%Y"\n',
    "map_stage.toml": '[stage]\ncolumn = "interaction"\nvalues = { buy = "decision" }\n',
    # models
    "garbage.json": os.urandom(4096),
    "trunc.json": DEMO_MODEL.read_text()[:5000],
    "foreign.json": json.dumps({"hello": [1, 2, 3]}),
    "list.json": "[1, 2, 3]\n",
    "v7.json": _model_variant(lambda d: d.update(schema_version=7)),
    "nokey.json": _model_variant(lambda d: d.pop("journey")),
    "over.json": _model_variant(lambda d: _cell(d).update(drop_off=1.5)),
    "nan.json": _model_variant(lambda d: _cell(d).update(share=float("nan"))),
    "textvalue.json": _model_variant(lambda d: _cell(d).update(drop_off="high")),
    "model.json": DEMO_MODEL.read_text(),
    # scenarios (their model path is relative to them)
    "garbage.toml": os.urandom(4096),
    "syntax.toml": 'model = "model.json"\n[[change]\ntouchpoint = "checkout"\n',
    "empty.toml": "",
    "unknownkey.toml": 'model = "model.json"\n' + CHANGE + "drop_of = 0.5\n",
    "unknowntop.toml": 'model = "model.json"\ncustmers = 5\n',
    "unknowntp.toml": 'model = "model.json"\n[[change]]\ntouchpoint = "chekout"\ndrop_off = 0.5\n',
    "unknownstage.toml": 'model = "model.json"\n' + CHANGE + "stage = 'decisoin'\ndrop_off = 0.5\n",
    "unknownpersona.toml": 'model = "model.json"\n' + CHANGE + "persona = 'bargain_hunter'\ndrop_off = 0.5\n",
    "unknownmix.toml": 'model = "model.json"\n[personas]\nbargain_hunter = 1.0\n',
    "unknowncap.toml": ('model = "model.json"\n[capacity.chekout]\nservers = 1\nservice_minutes = 5.0\n'
                        "patience_minutes = 5.0\n"),
    "negfactor.toml": 'model = "model.json"\n' + CHANGE + "drop_off = -0.5\n",
    "zerofactor.toml": 'model = "model.json"\n' + CHANGE + "exposure = 0\n",
    "strfactor.toml": 'model = "model.json"\n' + CHANGE + "drop_off = '0.7'\n",
    "inffactor.toml": 'model = "model.json"\n' + CHANGE + "advance = inf\n",
    "nolever.toml": 'model = "model.json"\n' + CHANGE,
    "finalstage.toml": 'model = "model.json"\n' + CHANGE + "stage = 'advocacy'\ndrop_off = 0.5\n",
    "negbudget.toml": 'model = "model.json"\n' + INVEST + "[budget]\ntotal = -5.0\n",
    "zerocust.toml": 'model = "model.json"\ncustomers = 0\n',
    "neghorizon.toml": 'model = "model.json"\nhorizon_days = -3\n',
    "nomodel.toml": 'model = "nope.json"\n',
    "garbagemodel.toml": 'model = "garbage.json"\n',
    "dupinvest.toml": 'model = "model.json"\n' + INVEST + INVEST,
    "spendout.toml": 'model = "model.json"\n' + INVEST + "spend = 500.0\n",
    "ok.toml": 'model = "model.json"\n' + CHANGE + "drop_off = 0.7\n",
    "nobudget.toml": 'model = "model.json"\n' + INVEST,
    "noinvest.toml": 'model = "model.json"\n[budget]\ntotal = 100.0\n',
    "budgetonly_neg.toml": 'model = "model.json"\n' + INVEST + "[budget]\ntotal = -1.0\n",
    "invtp.toml": 'model = "model.json"\n' + INVEST.replace("'checkout'", "'chekout'") + "[budget]\ntotal = 50.0\n",
    "okbudget.toml": 'model = "model.json"\n' + INVEST + "[budget]\ntotal = 50.0\n",
}


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    for name, content in FILES.items():
        (d / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    (d / "folder").mkdir()
    (d / "csv-folder").mkdir()
    (d / "csv-folder" / "part-1.csv").write_text("customer_id,timestamp,touchpoint,stage\n")
    (d / "rundir_garbage").mkdir()
    (d / "rundir_garbage" / "summary.json").write_bytes(os.urandom(300))
    (d / "rundir_empty").mkdir()
    (d / "rundir_foreign").mkdir()
    (d / "rundir_foreign" / "summary.json").write_text('{"hello": 1}\n')
    (d / "dangling.csv").symlink_to(d / "not-there.csv")
    with gzip.open(d / "good.csv.gz", "wt") as fh:
        fh.write(GOOD_CSV)
    return d


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def check_bad_input(result, fragments, *, usage: bool = False) -> str:
    """Exit 2, one line (a usage error: click's few lines), the fragments in it, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, "no message on stderr"
    assert len(lines) <= (3 if usage else 1), lines
    text = " ".join(lines)
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


def nothing_written(*folders: Path) -> None:
    for folder in folders:
        left = sorted(p.name for p in folder.rglob("*") if ".partial-" in p.name or ".old-" in p.name
                      or p.name.endswith(".tmp"))
        assert not left, left


# (id, argv with {d} = folder of bad files and {o} = an output path that must not appear, fragments)
CASES = [
    # ---- calibrate ----------------------------------------------------------------------------
    ("cal-missing", ["calibrate", "{d}/nope.csv"], ["nope.csv", "not found"]),
    ("cal-dangling-link", ["calibrate", "{d}/dangling.csv"], ["dangling.csv", "not found"]),
    ("cal-directory", ["calibrate", "{d}/folder"], ["folder", "no Parquet or CSV files"]),
    ("cal-csv-folder", ["calibrate", "{d}/csv-folder"], ["csv-folder", "the event log is empty"]),
    ("cal-empty", ["calibrate", "{d}/empty.csv"], ["empty.csv", "empty"]),
    ("cal-header-only", ["calibrate", "{d}/header.csv"], ["header.csv", "empty"]),
    ("cal-missing-column", ["calibrate", "{d}/nocol.csv"], ["nocol.csv", "'touchpoint'", "missing"]),
    ("cal-bad-timestamp", ["calibrate", "{d}/badts.csv"], ["badts.csv", "row 2", "timestamp", "'yesterday'",
                                                           "ISO 8601"]),
    ("cal-timestamp-not-iso", ["calibrate", "{d}/dmy.csv"], ["dmy.csv", "row 1", "'01/04/2024'",
                                                              "dayfirst = true", "--mapping"]),
    ("cal-timestamp-not-format", ["calibrate", "{d}/dmy.csv", "--mapping", "{d}/map_dmy.toml"],
     ["dmy.csv", "row 2", "'2024-04-02'", "%d/%m/%Y"]),
    ("cal-unknown-stage", ["calibrate", "{d}/badstage.csv"], ["badstage.csv", "row 1", "'awarenes'",
                                                              "did you mean 'awareness'"]),
    ("cal-binary-garbage", ["calibrate", "{d}/garbage.csv"], ["garbage.csv", "cannot read"]),
    ("cal-fake-gzip", ["calibrate", "{d}/fake.csv.gz"], ["fake.csv.gz"]),
    ("cal-fake-parquet", ["calibrate", "{d}/fake.parquet"], ["fake.parquet"]),
    ("cal-not-utf8", ["calibrate", "{d}/latin1.csv"], ["latin1.csv"]),
    ("cal-duplicate-rows", ["calibrate", "{d}/dup.csv"], ["dup.csv", "duplicate", "rows 1 and 2"]),
    ("cal-two-personas", ["calibrate", "{d}/persona2.csv"], ["persona2.csv", "persona", "row 2"]),
    ("cal-empty-value", ["calibrate", "{d}/emptyval.csv"], ["emptyval.csv", "row 1", "'touchpoint'", "empty"]),
    ("cal-stages-one", ["calibrate", "{d}/good.csv", "--stages", "only"], ["--stages", "'only'"]),
    ("cal-unknown-conversion", ["calibrate", "{d}/good.csv", "--conversion-stage", "purchase"],
     ["--conversion-stage", "'purchase'"]),
    ("cal-mapping-missing-column", ["calibrate", "{d}/good.csv", "--mapping", "{d}/map_missing.toml"],
     ["good.csv", "'cookie'", "missing"]),
    ("cal-mapping-stage-column", ["calibrate", "{d}/good.csv", "--mapping", "{d}/map_stage.toml"],
     ["good.csv", "interaction"]),
    ("cal-mapping-unknown-key", ["calibrate", "{d}/good.csv", "--mapping", "{d}/map_unknown.toml"],
     ["map_unknown.toml", "colums", "did you mean 'columns'"]),
    ("cal-mapping-syntax", ["calibrate", "{d}/good.csv", "--mapping", "{d}/map_syntax.toml"],
     ["map_syntax.toml", "TOML", "line 1"]),
    ("cal-mapping-garbage", ["calibrate", "{d}/good.csv", "--mapping", "{d}/garbage.toml"], ["garbage.toml"]),
    ("cal-mapping-missing-file", ["calibrate", "{d}/good.csv", "--mapping", "{d}/nomap.toml"],
     ["nomap.toml", "not found"]),
    # ---- simulate: model files ---------------------------------------------------------------
    ("sim-missing", ["simulate", "{d}/nope.json"], ["nope.json", "not found"]),
    ("sim-directory", ["simulate", "{d}/folder"], ["folder", "directory"]),
    ("sim-binary-model", ["simulate", "{d}/garbage.json"], ["garbage.json", "not a text file"]),
    ("sim-truncated-model", ["simulate", "{d}/trunc.json"], ["trunc.json", "malformed JSON", "line"]),
    ("sim-foreign-json", ["simulate", "{d}/foreign.json"], ["foreign.json", "not a journey model"]),
    ("sim-json-list", ["simulate", "{d}/list.json"], ["list.json", "not a journey model"]),
    ("sim-schema-version", ["simulate", "{d}/v7.json"], ["v7.json", "schema_version", "7"]),
    ("sim-model-missing-key", ["simulate", "{d}/nokey.json"], ["nokey.json", "journey"]),
    ("sim-model-over-one", ["simulate", "{d}/over.json"],
     ["over.json", "journey.deal_seeker.consideration.touchpoints.checkout", "exceeds 1"]),
    ("sim-model-nan", ["simulate", "{d}/nan.json"], ["nan.json", "touchpoints.checkout.share", "nan"]),
    ("sim-model-text-value", ["simulate", "{d}/textvalue.json"], ["textvalue.json", "malformed", "'high'"]),
    # ---- simulate: scenario files -----------------------------------------------------------
    ("sim-binary-toml", ["simulate", "{d}/garbage.toml"], ["garbage.toml", "not a text file"]),
    ("sim-toml-syntax", ["simulate", "{d}/syntax.toml"], ["syntax.toml", "TOML syntax", "line 2"]),
    ("sim-toml-empty", ["simulate", "{d}/empty.toml"], ["empty.toml", "model", "missing"]),
    ("sim-unknown-key", ["simulate", "{d}/unknownkey.toml"], ["unknownkey.toml", "change[0].drop_of",
                                                              "did you mean 'drop_off'"]),
    ("sim-unknown-top-key", ["simulate", "{d}/unknowntop.toml"], ["unknowntop.toml", "custmers",
                                                                  "did you mean 'customers'"]),
    ("sim-unknown-touchpoint", ["simulate", "{d}/unknowntp.toml"], ["unknowntp.toml", "change[0].touchpoint",
                                                                    "'chekout'", "did you mean 'checkout'"]),
    ("sim-unknown-stage", ["simulate", "{d}/unknownstage.toml"], ["unknownstage.toml", "change[0].stage",
                                                                  "'decisoin'", "did you mean 'decision'"]),
    ("sim-unknown-persona", ["simulate", "{d}/unknownpersona.toml"], ["unknownpersona.toml", "unknown persona",
                                                                      "'bargain_hunter'", "deal_seeker"]),
    ("sim-unknown-mix-persona", ["simulate", "{d}/unknownmix.toml"], ["unknownmix.toml", "unknown persona",
                                                                      "personas.bargain_hunter"]),
    ("sim-unknown-capacity", ["simulate", "{d}/unknowncap.toml"], ["unknowncap.toml", "unknown touchpoint",
                                                                   "'chekout'"]),
    ("sim-negative-factor", ["simulate", "{d}/negfactor.toml"], ["negfactor.toml", "change[0].drop_off", "-0.5"]),
    ("sim-zero-factor", ["simulate", "{d}/zerofactor.toml"], ["zerofactor.toml", "change[0].exposure",
                                                              "greater than 0"]),
    ("sim-text-factor", ["simulate", "{d}/strfactor.toml"], ["strfactor.toml", "drop_off", "'0.7'"]),
    ("sim-infinite-factor", ["simulate", "{d}/inffactor.toml"], ["inffactor.toml", "advance", "inf"]),
    ("sim-change-without-lever", ["simulate", "{d}/nolever.toml"], ["nolever.toml", "change[0]", "drop_off"]),
    ("sim-final-stage-change", ["simulate", "{d}/finalstage.toml"], ["finalstage.toml", "'advocacy'"]),
    ("sim-negative-budget", ["simulate", "{d}/negbudget.toml"], ["negbudget.toml", "budget.total", "-5"]),
    ("sim-zero-customers-toml", ["simulate", "{d}/zerocust.toml"], ["zerocust.toml", "customers", "0"]),
    ("sim-negative-horizon", ["simulate", "{d}/neghorizon.toml"], ["neghorizon.toml", "horizon_days", "-3"]),
    ("sim-scenario-model-missing", ["simulate", "{d}/nomodel.toml"], ["nomodel.toml", "model", "'nope.json'",
                                                                      "relative to the scenario"]),
    ("sim-scenario-model-garbage", ["simulate", "{d}/garbagemodel.toml"], ["garbage.json"]),
    ("sim-duplicate-investment", ["simulate", "{d}/dupinvest.toml"], ["dupinvest.toml", "unique", "fix"]),
    ("sim-spend-outside-bounds", ["simulate", "{d}/spendout.toml"], ["spendout.toml", "investment[0]", "500"]),
    ("sim-unknown-engine", ["simulate", "{d}/model.json", "--engine", "warp"], ["--engine", "'warp'"]),
    ("sim-zero-horizon", ["simulate", "{d}/model.json", "--horizon-days", "0"], ["--horizon-days", "0"]),
    # ---- hotspots, backtest, drift, report -----------------------------------------------------
    ("hot-binary-model", ["hotspots", "{d}/garbage.json"], ["garbage.json"]),
    ("hot-unknown-touchpoint", ["hotspots", "{d}/unknowntp.toml"], ["unknowntp.toml", "'chekout'"]),
    ("hot-foreign-json", ["hotspots", "{d}/foreign.json"], ["foreign.json", "not a journey model"]),
    ("bt-missing", ["backtest", "{d}/nope.csv", "--split", "2024-01-15"], ["nope.csv", "not found"]),
    ("bt-bad-split", ["backtest", "{d}/good.csv", "--split", "notadate"], ["--split", "'notadate'"]),
    ("bt-split-not-iso", ["backtest", "{d}/good.csv", "--split", "01/02/2024"],
     ["--split", "'01/02/2024'", "ISO 8601", "2024-04-01"]),
    ("bt-split-outside", ["backtest", "{d}/good.csv", "--split", "2031-01-01"], ["--split", "2031-01-01"]),
    ("bt-bad-timestamp", ["backtest", "{d}/badts.csv", "--split", "2024-01-01"], ["badts.csv", "'yesterday'"]),
    ("bt-empty", ["backtest", "{d}/header.csv", "--split", "2024-01-01"], ["header.csv", "empty"]),
    ("bt-mapping-missing-column", ["backtest", "{d}/good.csv", "--split", "2024-01-02", "--mapping",
                                   "{d}/map_missing.toml"], ["'cookie'"]),
    ("drift-garbage", ["drift", "{d}/model.json", "{d}/garbage.json"], ["garbage.json"]),
    ("report-missing-dir", ["report", "{d}/nope"], ["nope", "not found"]),
    ("report-file-not-dir", ["report", "{d}/model.json"], ["model.json", "not a directory"]),
    ("report-empty-dir", ["report", "{d}/rundir_empty"], ["rundir_empty"]),
    ("report-garbage-result", ["report", "{d}/rundir_garbage"], ["summary.json"]),
    ("report-foreign-result", ["report", "{d}/rundir_foreign"], ["summary.json"]),
]

NO_OUT = "<no --out>"
USAGE = [  # rejected by the option parser: click's usage line, its hint and the error
    ("cal-negative-inactivity", ["calibrate", "{d}/good.csv", "--inactivity-days", "-1"], ["--inactivity-days"]),
    ("sim-zero-customers", ["simulate", "{d}/model.json", "--customers", "0"], ["--customers"]),
    ("sim-negative-seed", ["simulate", "{d}/model.json", "--seed", "-1"], ["--seed"]),
    ("sim-zero-replications", ["simulate", "{d}/model.json", "--replications", "0"], ["--replications"]),
    ("sim-text-customers", ["simulate", "{d}/model.json", "--customers", "many"], ["--customers", "integer"]),
    ("hot-zero-top", ["hotspots", "{d}/model.json", "--top", "0"], ["--top"]),
    ("cal-no-out", ["calibrate", "{d}/good.csv", NO_OUT], ["--out"]),
]

OUT_OPTION = {"calibrate": "model.json", "simulate": "run", "backtest": "run", "drift": "run",
              "report": "report.html", "hotspots": "hot.json", "compare": "run", "optimize": "run"}


def run_case(bad: Path, tmp_path: Path, argv: list[str]):
    out = tmp_path / "out" / OUT_OPTION[argv[0]]
    args = [a.format(d=bad) for a in argv if a != NO_OUT]
    if "--out" not in args and NO_OUT not in argv:
        args += ["--out", str(out)]
    if argv[0] in ("simulate", "compare"):
        args += ["--customers", "200"] if "--customers" not in args else []
    result = invoke(*args)
    assert not (tmp_path / "out").exists(), "output written on bad input"
    nothing_written(bad, tmp_path)
    return result


@pytest.mark.parametrize("argv, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(bad, tmp_path, argv, fragments):
    check_bad_input(run_case(bad, tmp_path, argv), fragments)


@pytest.mark.parametrize("argv, fragments", [c[1:] for c in USAGE], ids=[c[0] for c in USAGE])
def test_usage_errors_are_short_exit_2_and_write_nothing(bad, tmp_path, argv, fragments):
    check_bad_input(run_case(bad, tmp_path, argv), fragments, usage=True)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
@pytest.mark.parametrize("command, name", [("calibrate", "good.csv"), ("simulate", "model.json"),
                                           ("simulate", "ok.toml")])
def test_unreadable_file(tmp_path, bad, command, name):
    locked = tmp_path / "locked" / name
    locked.parent.mkdir()
    locked.write_bytes((bad / name).read_bytes())
    locked.chmod(0)
    try:
        result = invoke(command, locked, "--out", tmp_path / "out" / OUT_OPTION[command])
    finally:
        locked.chmod(0o600)
    check_bad_input(result, [name])
    assert not (tmp_path / "out").exists()


def test_output_in_the_way_is_bad_input_and_left_alone(tmp_path, bad):
    folder = tmp_path / "model.json"
    folder.mkdir()
    check_bad_input(invoke("calibrate", bad / "good.csv", "--out", folder), ["model.json", "directory"])
    assert folder.is_dir() and not any(folder.iterdir())
    file = tmp_path / "run"
    file.write_text("keep me")
    check_bad_input(invoke("simulate", bad / "model.json", "--customers", 100, "--out", file),
                    ["run", "not a directory"])
    assert file.read_text() == "keep me"
    for argv in (["calibrate", bad / "good.csv", "--out", file / "model.json"],
                 ["simulate", bad / "model.json", "--customers", 100, "--out", file / "sub" / "run"]):
        check_bad_input(invoke(*argv), ["run", "a file is in the way"])
    assert file.read_text() == "keep me"
    nothing_written(tmp_path)


def test_report_and_hotspots_refuse_a_folder_as_their_output_file(tmp_path, bad):
    run = tmp_path / "run"
    assert invoke("simulate", bad / "model.json", "--customers", 200, "--seed", 1, "--out", run).exit_code == 0
    folder = tmp_path / "taken"
    folder.mkdir()
    check_bad_input(invoke("report", run, "--out", folder), ["taken"])
    check_bad_input(invoke("hotspots", bad / "model.json", "--out", folder), ["taken", "directory"])
    assert not any(folder.iterdir())
    nothing_written(tmp_path)


def test_a_real_process_prints_one_line_and_no_traceback(tmp_path, bad):
    """Through the console script: no warnings or progress output sneak onto stderr."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", "from cli import main; main()", "simulate",
                           str(bad / "unknowntp.toml"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "did you mean 'checkout'" in proc.stderr
    assert proc.stdout == "" and not out.exists()


def test_byte_order_marks_from_editors_are_tolerated(tmp_path):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "model.json").write_bytes(bom + DEMO_MODEL.read_bytes())
    (tmp_path / "s.toml").write_bytes(bom + b'model = "model.json"\n[[change]]\ntouchpoint = "email"\nexposure = 2.0\n')
    for target in ("model.json", "s.toml"):
        result = invoke("simulate", tmp_path / target, "--customers", 200, "--out", tmp_path / f"run-{target}")
        assert result.exit_code == 0, result.output


def test_messages_are_printable_even_for_binary_garbage(tmp_path, bad):
    for argv in (["calibrate", bad / "garbage.csv", "--out", tmp_path / "m.json"],
                 ["simulate", bad / "garbage.json", "--out", tmp_path / "run"]):
        line = check_bad_input(invoke(*argv), [])
        assert line.isprintable() and len(line) < 600, line


# ---- compare and optimize ------------------------------------------------------------------------
COMPARE = [
    ("cmp-bad-scenario-among-several", ["compare", "{d}/model.json", "{d}/ok.toml", "{d}/unknowntp.toml",
                                        "{d}/ok.toml"], ["unknowntp.toml", "'chekout'", "did you mean"]),
    ("cmp-syntax-among-several", ["compare", "{d}/model.json", "{d}/ok.toml", "{d}/syntax.toml"],
     ["syntax.toml", "TOML"]),
    ("cmp-bad-base", ["compare", "{d}/garbage.json", "{d}/ok.toml"], ["garbage.json"]),
    ("cmp-missing-scenario", ["compare", "{d}/model.json", "{d}/ok.toml", "{d}/nope.toml"],
     ["nope.toml", "not found"]),
    ("cmp-foreign-base", ["compare", "{d}/foreign.json", "{d}/ok.toml"], ["foreign.json"]),
    ("cmp-negative-factor", ["compare", "{d}/model.json", "{d}/negfactor.toml"], ["negfactor.toml", "-0.5"]),
]

OPTIMIZE = [
    ("opt-no-investments", ["optimize", "{d}/noinvest.toml", "--trials", "3"], ["noinvest.toml", "investment"]),
    ("opt-no-budget", ["optimize", "{d}/nobudget.toml", "--trials", "3"], ["nobudget.toml", "budget"]),
    ("opt-negative-budget", ["optimize", "{d}/budgetonly_neg.toml", "--trials", "3"],
     ["budgetonly_neg.toml", "budget.total", "-1"]),
    ("opt-model-json", ["optimize", "{d}/model.json", "--trials", "3"], ["model.json", "JSON", "TOML"]),
    ("opt-bad-storage", ["optimize", "{d}/okbudget.toml", "--trials", "3",
                         "--storage", "nosuchdb://x/y"], ["--storage", "nosuchdb://x/y"]),
    ("opt-unknown-touchpoint", ["optimize", "{d}/invtp.toml", "--trials", "3"],
     ["invtp.toml", "investment[0].touchpoint", "'chekout'", "did you mean 'checkout'"]),
    ("opt-storage-folder-missing", ["optimize", "{d}/okbudget.toml", "--trials", "3", "--storage",
                                    "sqlite:///{d}/nowhere/study.db"], ["--storage", "nowhere"]),
    ("opt-bad-scenario-toml", ["optimize", "{d}/syntax.toml", "--trials", "3"], ["syntax.toml", "TOML"]),
]


@pytest.mark.parametrize("argv, fragments", [c[1:] for c in COMPARE], ids=[c[0] for c in COMPARE])
def test_compare_bad_input(bad, tmp_path, argv, fragments):
    check_bad_input(run_case(bad, tmp_path, argv), fragments)


@pytest.mark.parametrize("argv, fragments", [c[1:] for c in OPTIMIZE], ids=[c[0] for c in OPTIMIZE])
def test_optimize_bad_input(bad, tmp_path, argv, fragments):
    check_bad_input(run_case(bad, tmp_path, argv), fragments)


# ---- internal errors ---------------------------------------------------------------------------------
def _boom(*args, **kwargs):
    raise RuntimeError("boom in the engine")


def test_internal_error_is_exit_1_one_line_and_trace_only_with_debug(monkeypatch, tmp_path):
    import sim.simulate

    monkeypatch.setattr(sim.simulate, "run_replications", _boom)
    out = tmp_path / "run"
    result = invoke("simulate", DEMO_MODEL, "--customers", 100, "--out", out)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "RuntimeError" in lines[0] and "boom in the engine" in lines[0], lines
    assert "--debug" in lines[0] and "Traceback" not in result.output
    debug = invoke("--debug", "simulate", DEMO_MODEL, "--customers", 100, "--out", out)
    assert debug.exit_code == 1
    assert "Traceback" in debug.stderr and "boom in the engine" in debug.stderr
    assert "_boom" in debug.stderr  # the full trace, down to the failing frame
    assert not out.exists()
    nothing_written(tmp_path)
    # --debug does not stick to the next command
    again = invoke("simulate", DEMO_MODEL, "--customers", 100, "--out", out)
    assert again.exit_code == 1 and "Traceback" not in again.stderr


def test_internal_error_in_calibrate_writes_no_model(monkeypatch, tmp_path):
    import calibration.calibrate

    monkeypatch.setattr(calibration.calibrate, "estimate_stats", _boom)
    out = tmp_path / "model.json"
    result = invoke("calibrate", DEMO_EVENTS, "--out", out)
    assert result.exit_code == 1 and "boom in the engine" in result.stderr
    assert not out.exists()
    nothing_written(tmp_path)


def test_interrupt_exits_130_and_says_nothing_was_written(monkeypatch, tmp_path):
    import sim.simulate

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sim.simulate, "run_replications", interrupt)
    out = tmp_path / "run"
    result = invoke("simulate", DEMO_MODEL, "--customers", 100, "--out", out)
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert not out.exists()
    nothing_written(tmp_path)
