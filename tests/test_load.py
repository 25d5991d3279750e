"""Reading event logs: formats, ordering, stage rules and bad input."""
from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from calibration.load import load_events
from sim.errors import InputError

HEADER = "customer_id,timestamp,touchpoint,stage,persona\n"


def write(tmp_path, text, name="log.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_gzip_and_parquet_agree(tmp_path, world_log):
    frame = pd.read_csv(world_log, nrows=5000)
    frame.to_csv(tmp_path / "a.csv", index=False)
    with gzip.open(tmp_path / "a.csv.gz", "wt") as fh:
        frame.to_csv(fh, index=False)
    frame.to_parquet(tmp_path / "a.parquet")
    logs = [load_events(tmp_path / n) for n in ("a.csv", "a.csv.gz", "a.parquet")]
    for other in logs[1:]:
        assert np.array_equal(logs[0].time, other.time)
        assert np.array_equal(logs[0].stage, other.stage)
        assert logs[0].touchpoints == other.touchpoints


def test_stage_is_highest_reached_and_backward_rows_counted(tmp_path):
    path = write(tmp_path, HEADER +
                 "a,2024-01-01T00:00:00Z,web,consideration,x\n"
                 "a,2024-01-02T00:00:00Z,email,awareness,x\n"
                 "a,2024-01-03T00:00:00Z,checkout,decision,x\n")
    log = load_events(path)
    assert log.stage.tolist() == [1, 1, 2]
    assert log.backward_rows == 1


def test_equal_timestamps_keep_file_order_and_zones_are_utc(tmp_path):
    path = write(tmp_path, HEADER +
                 "b,2024-01-01T02:00:00+02:00,web,consideration,x\n"
                 "b,2024-01-01T00:00:00,checkout,decision,x\n"
                 "a,2024-01-01 00:00:00Z,ad,awareness,y\n")
    log = load_events(path)
    b = log.customer_ids.tolist().index("b")
    rows = log.customer == b
    assert log.time[rows][0] == log.time[rows][1]  # +02:00 converted, naive read as UTC
    assert [log.touchpoints[t] for t in log.touchpoint[rows]] == ["web", "checkout"]


@pytest.mark.parametrize("customers", [500, 70_000])  # 70 000: more than a 16-bit sort key holds
def test_rows_sorted_by_customer_in_first_appearance_then_time(tmp_path, customers):
    rng = np.random.default_rng(5)
    n = 2 * customers
    ids = rng.permutation(np.repeat(np.arange(customers), 2))
    stamp = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 10**7, n)), unit="s")
    frame = pd.DataFrame({"customer_id": [f"c{i}" for i in ids], "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                          "touchpoint": "web", "stage": "awareness", "persona": "x"})
    frame.to_csv(tmp_path / "log.csv", index=False)
    log = load_events(tmp_path / "log.csv")
    first = {c: i for i, c in enumerate(dict.fromkeys(frame["customer_id"]))}  # codes by first appearance
    want = frame.assign(code=frame["customer_id"].map(first), row=np.arange(1, n + 1))
    want = want.sort_values("code", kind="stable")
    assert log.customer_ids.tolist() == list(first)
    assert log.customer.tolist() == want["code"].tolist() and log.row.tolist() == want["row"].tolist()


def test_persona_defaults_to_all(tmp_path):
    path = write(tmp_path, "customer_id,timestamp,touchpoint,stage\n1,2024-01-01,web,awareness\n")
    assert load_events(path).personas == ["all"]


@pytest.mark.parametrize("text, fragment", [
    ("customer_id,timestamp,stage\n1,2024-01-01,awareness\n", "missing required column"),
    (HEADER + "1,2024-13-45,web,awareness,x\n", "unparseable timestamp"),
    (HEADER + "1,2024-01-01,web,purchase,x\n", "unknown stage"),
    (HEADER, "empty"),
    ("", "empty"),
    (HEADER + "1,2024-01-01,web,awareness,x\n1,2024-01-02,web,awareness,y\n", "more than one persona"),
    (HEADER + "1,2024-01-01,web,awareness,x\n1,2024-01-01,web,awareness,x\n", "duplicate rows"),
    (HEADER + "1,,web,awareness,x\n", "empty value"),
])
def test_bad_input_is_one_line_naming_the_problem(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_events(path)
    message = str(err.value)
    assert fragment in message
    assert str(path) in message
    assert "\n" not in message


def test_bad_stage_names_row_and_suggests(tmp_path):
    path = write(tmp_path, HEADER + "1,2024-01-01,web,awareness,x\n1,2024-01-02,web,considerations,x\n")
    with pytest.raises(InputError, match=r"row 2.*'considerations'.*did you mean 'consideration'"):
        load_events(path)


def test_missing_file_and_binary_garbage(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_events(tmp_path / "nope.csv")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(InputError, match="cannot read"):
        load_events(junk)


def test_mapping_renames_filters_and_derives_stage(tmp_path):
    log = write(tmp_path, "cookie,time,channel,what,kind\n"
                "u1,2024-01-01,web,view,COMPLETE\n"
                "u1,2024-01-02,web,view,START\n"
                "u1,2024-01-03,checkout,buy,COMPLETE\n"
                "u1,2024-01-04,email,view,COMPLETE\n")
    mapping = write(tmp_path, """
[columns]
customer_id = "cookie"
timestamp = "time"
touchpoint = "channel"
[filter]
kind = "COMPLETE"
[stage]
column = "what"
values = { buy = "decision" }
""", "map.toml")
    ev = load_events(log, mapping=mapping)
    assert ev.n_rows == 3
    assert ev.stage.tolist() == [0, 2, 2]  # carry-forward after the purchase


def test_mapping_errors_are_input_errors(tmp_path):
    log = write(tmp_path, HEADER + "1,2024-01-01,web,awareness,x\n")
    bad = write(tmp_path, "[columns]\ncustomer_idd = 'x'\n", "m.toml")
    with pytest.raises(InputError, match="unknown key.*did you mean 'customer_id'"):
        load_events(log, mapping=bad)
    missing = write(tmp_path, "[columns]\ncustomer_id = 'cookie'\n", "m2.toml")
    with pytest.raises(InputError, match="'cookie'.*missing required column"):
        load_events(log, mapping=missing)
    broken = write(tmp_path, "[columns\n", "m3.toml")
    with pytest.raises(InputError, match="TOML syntax error"):
        load_events(log, mapping=broken)


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_semicolon_tab_and_pipe_logs_read_like_comma_logs(tmp_path, sep):
    rows = ["customer_id,timestamp,touchpoint,stage,persona",
            "a,2024-01-01T00:00:00Z,web,awareness,x", "a,2024-01-02T00:00:00Z,checkout,decision,x",
            "b,2024-01-03T00:00:00Z,email,consideration,y"]
    comma = write(tmp_path, "\n".join(rows) + "\n", "comma.csv")
    other = write(tmp_path, "\n".join(r.replace(",", sep) for r in rows) + "\n", "other.csv")
    a, b = load_events(comma), load_events(other)
    assert a.touchpoints == b.touchpoints and a.personas == b.personas
    assert np.array_equal(a.stage, b.stage) and np.array_equal(a.time, b.time)
