"""Mapping files (`--mapping`): renames, filters, stage derivation, end values, persona bands, and the
shipped mappings of the two real logs (slices in tests/data) calibrating, simulating and backtesting."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calibration.calibrate import calibrate
from calibration.load import load_events
from calibration.mapping import load_mapping
from cli import app
from sim.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
EXAMPLES = ROOT / "scenarios" / "mappings"
runner = CliRunner()

FOREIGN = ("case,when,activity,status,amount,tier\n"
           "a,2024-01-01T10:00:00,visit,COMPLETE,100,gold\n"
           "a,2024-01-01T11:00:00,visit,START,100,gold\n"
           "a,2024-01-02T10:00:00,quote,COMPLETE,100,silver\n"
           "a,2024-01-03T10:00:00,call,COMPLETE,100,silver\n"
           "a,2024-01-04T10:00:00,sign,COMPLETE,100,silver\n"
           "b,2024-01-01T09:00:00,visit,COMPLETE,7000,silver\n"
           "b,2024-01-02T09:00:00,declined,COMPLETE,7000,silver\n"
           "b,2024-01-05T09:00:00,call,COMPLETE,7000,silver\n"
           "c,2024-01-01T08:00:00,visit,SCHEDULE,20000,bronze\n"
           "c,2024-01-03T08:00:00,quote,COMPLETE,20000,bronze\n")
BASE = """
stages = ["lead", "offer", "signed"]
[columns]
customer_id = "case"
timestamp = "when"
touchpoint = "activity"
"""


def write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, mapping: str, **kw):
    return load_events(write(tmp_path, FOREIGN, "log.csv"), mapping=write(tmp_path, mapping, "map.toml"), **kw)


def rows_of(log, customer: str) -> np.ndarray:
    return np.flatnonzero(log.customer == list(log.customer_ids).index(customer))


def test_rename_filter_list_and_stage_carry_forward(tmp_path):
    log = load(tmp_path, BASE + """
[filter]
status = ["COMPLETE", "SCHEDULE"]
[stage]
column = "activity"
values = { quote = "offer", sign = "signed" }
""")
    assert log.n_rows == 9  # the START row is filtered out
    assert log.stages == ["lead", "offer", "signed"] and log.conversion_stage == "signed"  # mapping's defaults
    a = rows_of(log, "a")
    assert [log.touchpoints[t] for t in log.touchpoint[a]] == ["visit", "quote", "call", "sign"]
    assert log.stage[a].tolist() == [0, 1, 1, 2]  # `call` keeps the stage reached by `quote`
    one = load(tmp_path, BASE + '[filter]\nstatus = "COMPLETE"\n[stage]\ncolumn = "activity"\n')
    assert one.n_rows == 8 and set(one.stage.tolist()) == {0}


def test_cli_stages_override_the_mappings(tmp_path):
    log = load(tmp_path, BASE + '[stage]\ncolumn = "activity"\nvalues = { quote = "offer" }\n',
               stages="lead,offer,signed,renewed", conversion_stage="offer")
    assert log.stages[-1] == "renewed" and log.conversion_stage == "offer"


def test_end_values_end_the_journey(tmp_path):
    mapping = BASE + """
[stage]
column = "activity"
values = { quote = "offer", sign = "signed" }
end_values = ["declined"]
"""
    log = load(tmp_path, mapping)
    b = rows_of(log, "b")
    assert [log.touchpoints[t] for t in log.touchpoint[b]] == ["visit", "declined"]  # the later call is gone
    ids = list(log.customer_ids)
    assert log.ended.tolist() == [False, True, False] and ids == ["a", "b", "c"]
    # b's journey is over at once, though far inside the 30-day window: ended, not in progress
    model = calibrate(tmp_path / "log.csv", mapping=tmp_path / "map.toml")
    assert model.log_summary["customers_ended"] == 1
    assert model.log_summary["customers_completed"] == 1
    assert model.log_summary["customers_in_progress"] == 1


def test_persona_bands_use_the_first_row(tmp_path):
    log = load(tmp_path, BASE + """
[stage]
column = "activity"
[persona]
column = "amount"
bands = [0, 5000, 15000, 50000]
labels = ["small", "medium", "large", "huge"]
""")
    assert log.personas == ["small", "medium", "large"]  # bands nobody falls in are left out
    names = [log.personas[p] for p in log.persona_of_customer]
    assert dict(zip(log.customer_ids, names)) == {"a": "small", "b": "medium", "c": "large"}


def test_categorical_persona_may_change_after_the_first_row(tmp_path):
    # the contract's persona column must be constant; a [persona] rule reads the first row only
    log = load(tmp_path, BASE + '[stage]\ncolumn = "activity"\n[persona]\ncolumn = "tier"\n')
    names = [log.personas[p] for p in log.persona_of_customer]
    assert dict(zip(log.customer_ids, names)) == {"a": "gold", "b": "silver", "c": "bronze"}
    with pytest.raises(InputError, match="more than one persona"):
        load(tmp_path, BASE + 'persona = "tier"\n[stage]\ncolumn = "activity"\n')


@pytest.mark.parametrize("extra, message", [
    ('[persona]\ncolumn = "amount"\nbands = [0, 5000]\nlabels = ["x"]\n', "2 bands but 1 labels"),
    ('[persona]\ncolumn = "amount"\nbands = [5000, 0]\nlabels = ["x", "y"]\n', "strictly increasing"),
    ('[persona]\ncolumn = "amount"\nbands = [0]\n', "both bands and labels"),
    ('[persona]\ncolumn = "amount"\nbandz = [0]\n', "unknown key.*did you mean 'bands'"),
    ('[persona]\ncolumn = "amount"\nbands = [500]\nlabels = ["x"]\n', "row 1, column 'amount'.*500.*got '100'"),
    ('[persona]\ncolumn = "amount"\nbands = [500]\nlabels = ["x"]\n[filter]\nactivity = "quote"\n',
     "row 3, column 'amount'.*got '100'"),  # row numbers stay the file's after a filter
    ('[persona]\ncolumn = "amont"\n', r"\[persona\] column is not in the log.*did you mean 'amount'"),
    ('[stage]\ncolumn = "activity"\nend_value = ["x"]\n', "unknown key.*did you mean 'end_values'"),
    ('[stage]\ncolumn = "activity"\nvalues = { quote = "offr" }\n', "unknown stage.*did you mean 'offer'"),
    ('[filter]\nstatuz = "COMPLETE"\n', "filter names a column.*did you mean 'status'"),
])
def test_bad_mappings_name_key_and_value(tmp_path, extra, message):
    stage = '' if extra.startswith("[stage]") else '[stage]\ncolumn = "activity"\n'
    with pytest.raises(InputError, match=message):
        load(tmp_path, BASE + stage + extra)


def test_persona_twice_is_rejected(tmp_path):
    path = write(tmp_path, '[columns]\npersona = "tier"\n[persona]\ncolumn = "tier"\n', "m.toml")
    with pytest.raises(InputError, match="not both"):
        load_mapping(path)


def test_missing_column_in_mapping_exits_2_and_writes_nothing(tmp_path):
    log = write(tmp_path, FOREIGN, "log.csv")
    mapping = write(tmp_path, BASE.replace('"activity"', '"channel"'), "map.toml")
    out = tmp_path / "model.json"
    result = runner.invoke(app, ["calibrate", str(log), "--mapping", str(mapping), "--out", str(out)])
    assert result.exit_code == 2
    assert "column 'channel'" in result.output and "missing required column" in result.output
    assert "Traceback" not in result.output and not out.exists()


# ---- the real logs' slices and shipped mappings -------------------------------------------------------
REAL = {
    "bpic2012": ("bpic2012_slice.csv.gz", "bpic2012_mapping.toml", "2012-01-01"),
    "helpdesk": ("helpdesk_slice.csv.gz", "helpdesk_mapping.toml", "2012-07-01"),
}


def test_bpic2012_slice_maps_onto_the_funnel():
    log = load_events(DATA / "bpic2012_slice.csv.gz", mapping=EXAMPLES / "bpic2012_mapping.toml")
    assert log.n_customers == 300
    assert log.stages == ["submitted", "preaccepted", "accepted", "finalized", "approved"]
    assert set(log.personas) == {"small", "medium", "large"}
    # every application ends approved, declined/cancelled (ended), or is still open at the log's end
    last = np.append(np.flatnonzero(np.diff(log.customer)), log.n_rows - 1)
    approved = log.stage[last] == 4
    assert not (approved & log.ended[log.customer[last]]).any()
    assert 0.1 < approved.mean() < 0.3 and 0.6 < log.ended.mean() < 0.9
    assert "A_DECLINED" in log.touchpoints and "W_Nabellen offertes" in log.touchpoints


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_slices_calibrate_simulate_and_backtest(tmp_path, name):
    events, mapping, split = REAL[name]
    events, mapping = DATA / events, EXAMPLES / mapping
    model_path = tmp_path / "model.json"
    result = runner.invoke(app, ["calibrate", str(events), "--mapping", str(mapping), "--out", str(model_path)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["simulate", str(model_path), "--customers", "2000", "--seed", "3",
                                 "--out", str(tmp_path / "sim"), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert 0 < summary["expected_conversion_rate"] <= 1
    result = runner.invoke(app, ["backtest", str(events), "--mapping", str(mapping), "--split", split,
                                 "--out", str(tmp_path / "bt")])
    assert result.exit_code == 0, result.output
    bt = json.loads((tmp_path / "bt" / "backtest.json").read_text())
    assert bt["customers"]["fit"] > 50 and bt["customers"]["later"] > 50
    assert all(0 <= bt["predicted"][s] <= 1 for s in bt["observed"])
