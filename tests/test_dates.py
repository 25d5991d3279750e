"""Timestamps that are not ISO 8601 ([timestamp] in a mapping file) and ISO-only `--split`:
nothing is guessed, day-first and epoch logs calibrate to the same model as their ISO twin."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from calibration.backtest import parse_split
from calibration.calibrate import calibrate
from calibration.load import load_events
from calibration.mapping import load_mapping
from calibration.timestamps import NS_PER_DAY
from cli import app
from conftest import DEMO_EVENTS, DEMO_MODEL
from sim.errors import InputError

runner = CliRunner()
HEADER = "customer_id,timestamp,touchpoint,stage\n"
DAY_FIRST = (HEADER + "c1,01/04/2024 10:00,email,awareness\nc1,02/04/2024 11:30,web,consideration\n"
             "c2,13/04/2024 09:00,email,awareness\nc2,1/5/2024 9:05,checkout,decision\n")


def write(path, text):
    path.write_text(text)
    return path


def days(*stamps: str) -> list[float]:
    return [pd.Timestamp(s).value / NS_PER_DAY for s in stamps]


def sorted_times(log) -> list[float]:
    return sorted(log.time.tolist())


def mapping(tmp_path, body: str, name: str = "map.toml"):
    return write(tmp_path / name, body)


def model_numbers(model) -> dict:
    """The model JSON without what names the input file."""
    data = json.loads(model.to_json())
    data.pop("provenance", None)
    for key in ("source", "sha256"):
        data["log"].pop(key)
    return data


@pytest.fixture(scope="module")
def demo_seconds(tmp_path_factory):
    """The demo log with whole-second timestamps: as ISO text, epoch s, epoch ms, and day first."""
    d = tmp_path_factory.mktemp("dates")
    frame = pd.read_csv(DEMO_EVENTS)
    ts = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601").dt.floor("s")
    seconds = (ts - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta("1s")
    out = {}
    for name, column in [("iso", ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ")), ("s", seconds), ("ms", seconds * 1000),
                         ("dmy", ts.dt.strftime("%d/%m/%Y %H:%M:%S"))]:
        path = d / f"{name}.csv"
        frame.assign(timestamp=column).to_csv(path, index=False)
        out[name] = path
    frame.assign(timestamp=seconds.astype("int64")).to_parquet(d / "s.parquet")
    out["s.parquet"] = d / "s.parquet"
    for name, body in [("s", '[timestamp]\nunit = "s"\n'), ("ms", '[timestamp]\nunit = "ms"\n'),
                       ("dmy", '[timestamp]\nformat = "%d/%m/%Y %H:%M:%S"\n'),
                       ("dayfirst", "[timestamp]\ndayfirst = true\n")]:
        out[f"map_{name}"] = write(d / f"{name}.toml", body)
    return out


# ---- day first --------------------------------------------------------------------------------
@pytest.mark.parametrize("body", ['[timestamp]\nformat = "%d/%m/%Y %H:%M"\n', "[timestamp]\ndayfirst = true\n"])
def test_day_first_dates_give_the_right_days(tmp_path, body):
    log = load_events(write(tmp_path / "log.csv", DAY_FIRST), mapping=mapping(tmp_path, body))
    assert sorted_times(log) == days("2024-04-01T10:00Z", "2024-04-02T11:30Z", "2024-04-13T09:00Z",
                                     "2024-05-01T09:05Z")


def test_month_first_reads_the_same_text_the_other_way_round(tmp_path):
    log = load_events(write(tmp_path / "log.csv", HEADER + "c1,01/04/2024,email,awareness\n"
                                                           "c1,04/13/2024,web,consideration\n"),
                      mapping=mapping(tmp_path, "[timestamp]\ndayfirst = false\n"))
    assert sorted_times(log) == days("2024-01-04T00:00Z", "2024-04-13T00:00Z")


def test_dayfirst_refuses_a_first_row_that_is_month_first(tmp_path):
    path = write(tmp_path / "log.csv", HEADER + "c1,04/13/2024,email,awareness\n")
    with pytest.raises(InputError, match="month first") as err:
        load_events(path, mapping=mapping(tmp_path, "[timestamp]\ndayfirst = true\n"))
    assert "row 1" in str(err.value) and "'04/13/2024'" in str(err.value)


def test_dayfirst_keeps_iso_dates_year_month_day(tmp_path):
    log = load_events(write(tmp_path / "log.csv", HEADER + "c1,2024-01-04 10:00,email,awareness\n"),
                      mapping=mapping(tmp_path, "[timestamp]\ndayfirst = true\n"))
    assert sorted_times(log) == days("2024-01-04T10:00Z")


def test_a_row_not_matching_the_format_is_one_line_naming_row_and_value(tmp_path):
    path = write(tmp_path / "log.csv", DAY_FIRST + "c3,2024-04-20 10:00,email,awareness\n")
    with pytest.raises(InputError) as err:
        load_events(path, mapping=mapping(tmp_path, '[timestamp]\nformat = "%d/%m/%Y %H:%M"\n'))
    text = str(err.value)
    assert "\n" not in text
    for fragment in ("log.csv", "row 5", "column 'timestamp'", "'2024-04-20 10:00'", "%d/%m/%Y %H:%M"):
        assert fragment in text, (fragment, text)


def test_dayfirst_rows_must_share_the_first_rows_layout(tmp_path):
    path = write(tmp_path / "log.csv", DAY_FIRST + "c3,20.04.2024 10:00,email,awareness\n")
    with pytest.raises(InputError, match="row 5.*does not match the layout") as err:
        load_events(path, mapping=mapping(tmp_path, "[timestamp]\ndayfirst = true\n"))
    assert "'20.04.2024 10:00'" in str(err.value)


# ---- nothing guessed without a mapping ----------------------------------------------------------
@pytest.mark.parametrize("value, fragments", [
    ("01/04/2024", ['format = "%d/%m/%Y"', "dayfirst = true", '"%m/%d/%Y"', "--mapping"]),
    ("1/4/2024 9:05", ['format = "%d/%m/%Y %H:%M"', "dayfirst = true"]),
    ("13/04/2024", ['format = "%d/%m/%Y"']),
    ("1711929600", ['unit = "s"']),
    ("yesterday", ["ISO 8601"]),
])
def test_non_iso_timestamps_without_a_mapping_are_refused_not_guessed(tmp_path, value, fragments):
    path = write(tmp_path / "log.csv", HEADER + "c1,2024-03-30T10:00:00Z,email,awareness\n"
                                                f"c1,{value},web,consideration\n")
    with pytest.raises(InputError) as err:
        load_events(path)
    text = str(err.value)
    for fragment in ["log.csv", "row 2", "column 'timestamp'", repr(value), *fragments]:
        assert fragment in text, (fragment, text)


def test_a_numeric_parquet_column_without_unit_is_refused(demo_seconds):
    with pytest.raises(InputError, match='timestamp is a number.*unit = "s"'):
        load_events(demo_seconds["s.parquet"])


# ---- epoch numbers ------------------------------------------------------------------------------
def test_epoch_seconds_and_milliseconds_calibrate_to_the_iso_model(demo_seconds):
    iso = model_numbers(calibrate(demo_seconds["iso"]))
    for log, mp in [("s", "map_s"), ("ms", "map_ms"), ("s.parquet", "map_s")]:
        assert model_numbers(calibrate(demo_seconds[log], mapping=demo_seconds[mp])) == iso, log
    assert iso["log"]["first_timestamp"] == "2024-01-01T01:01:21Z"  # not 1970: the numbers were read as epoch


@pytest.mark.parametrize("mp", ["map_dmy", "map_dayfirst"])
def test_a_day_first_log_calibrates_to_the_iso_model(demo_seconds, mp):
    assert model_numbers(calibrate(demo_seconds["dmy"], mapping=demo_seconds[mp])) == \
        model_numbers(calibrate(demo_seconds["iso"]))


def test_epoch_decimals_and_bad_values(tmp_path):
    unit_s = mapping(tmp_path, '[timestamp]\nunit = "s"\n')
    log = load_events(write(tmp_path / "a.csv", HEADER + "c1,1711965600.5,email,awareness\n"), mapping=unit_s)
    assert sorted_times(log) == days("2024-04-01T10:00:00.5Z")
    with pytest.raises(InputError, match=r"row 2, column 'timestamp': not an epoch number.*'2024-04-01'"):
        load_events(write(tmp_path / "b.csv", HEADER + "c1,1711965600,email,awareness\n"
                                                       "c1,2024-04-01,web,consideration\n"), mapping=unit_s)
    with pytest.raises(InputError, match=r'row 1.*out of range.*unit = "ms"'):  # milliseconds read as seconds
        load_events(write(tmp_path / "c.csv", HEADER + "c1,1711965600000,email,awareness\n"), mapping=unit_s)


# ---- time zones ---------------------------------------------------------------------------------
def test_timezone_reads_zone_less_times_as_local_and_leaves_zoned_ones(tmp_path):
    amsterdam = mapping(tmp_path, '[timestamp]\ntimezone = "Europe/Amsterdam"\n')
    naive = write(tmp_path / "a.csv", HEADER + "c1,2024-01-15 10:00:00,email,awareness\n"
                                               "c1,2024-07-15 10:00:00,web,consideration\n")
    assert sorted_times(load_events(naive, mapping=amsterdam)) == days("2024-01-15T09:00Z", "2024-07-15T08:00Z")
    assert sorted_times(load_events(naive)) == days("2024-01-15T10:00Z", "2024-07-15T10:00Z")  # default UTC
    mixed = write(tmp_path / "b.csv", HEADER + "c1,2024-07-15 10:00:00,email,awareness\n"
                                               "c1,2024-07-15T10:00:00Z,web,consideration\n"
                                               "c1,2024-03-31 02:30:00,web,consideration\n"   # skipped hour
                                               "c1,2024-10-27 02:30:00,web,consideration\n")  # repeated hour
    assert sorted_times(load_events(mixed, mapping=amsterdam)) == days(
        "2024-03-31T01:00Z", "2024-07-15T08:00Z", "2024-07-15T10:00Z", "2024-10-27T00:30Z")
    local = mapping(tmp_path, '[timestamp]\nformat = "%d/%m/%Y %H:%M"\ntimezone = "Europe/Amsterdam"\n', "b.toml")
    assert sorted_times(load_events(write(tmp_path / "c.csv", DAY_FIRST), mapping=local))[0] == \
        days("2024-04-01T08:00Z")[0]


# ---- mapping keys -------------------------------------------------------------------------------
@pytest.mark.parametrize("body, fragments", [
    ('format = "%d/%m/%Y"\nunit = "s"\n', ["one of format, dayfirst or unit"]),
    ('format = "%d/%m/%Q"\n', ["timestamp.format", "strptime"]),
    ('format = "%H:%M"\n', ["timestamp.format", "year, month and day"]),
    ('unit = "h"\n', ["timestamp.unit", "'h'"]),
    ('unit = "s"\ntimezone = "Europe/Amsterdam"\n', ["epoch numbers are UTC"]),
    ('timezone = "Europe/Amsterdm"\n', ["timestamp.timezone", "did you mean 'Europe/Amsterdam'"]),
    ('formt = "%d/%m/%Y"\n', ["unknown key", "did you mean 'format'"]),
])
def test_bad_timestamp_tables_are_refused(tmp_path, body, fragments):
    with pytest.raises(InputError) as err:
        load_mapping(mapping(tmp_path, "[timestamp]\n" + body))
    for fragment in ["map.toml", *fragments]:
        assert fragment in str(err.value), (fragment, str(err.value))


# ---- loader edge cases --------------------------------------------------------------------------
def test_empty_and_out_of_range_timestamps_are_bad_input(tmp_path):
    with pytest.raises(InputError, match="row 2, column 'timestamp': empty value"):
        load_events(write(tmp_path / "a.csv", HEADER + "c1,2024-01-01,email,awareness\nc1,,web,decision\n"))
    with pytest.raises(InputError, match="row 1.*years 1678 to 2261.*'3000-01-01'"):
        load_events(write(tmp_path / "b.csv", HEADER + "c1,3000-01-01,email,awareness\n"))


def test_mixed_zones_and_bad_years_read_the_same_on_pandas_2_and_3(tmp_path):
    """Mixed zones take pandas' ISO parser: zoned and zone-less rows are parsed apart (pandas 2.2 gave a
    zone-less row after a zoned one that row's offset), and a text that is no time at all is named
    before a year past int64 nanoseconds (which pandas 2 cannot parse either)."""
    log = load_events(write(tmp_path / "a.csv", HEADER + "c1,2024-01-01T02:00:00+02:00,email,awareness\n"
                            "c2,2024-01-01T00:00:00,web,awareness\nc3,2024-01-01T01:00:00Z,web,awareness\n"))
    assert sorted(log.time.tolist()) == [19723.0, 19723.0, 19723.0 + 1 / 24]
    with pytest.raises(InputError, match="row 3, column 'timestamp': unparseable timestamp"):
        load_events(write(tmp_path / "b.csv", HEADER + "c1,2024-01-01T00:00:00+02:00,email,awareness\n"
                          "c1,3000-01-01,web,decision\nc1,soon,web,decision\n"))
    with pytest.raises(InputError, match="row 2.*years 1678 to 2261.*'3000-01-01'"):
        load_events(write(tmp_path / "c.csv", HEADER + "c1,2024-01-01T00:00:00+02:00,email,awareness\n"
                          "c1,3000-01-01,web,decision\nc1,2024-01-02,web,decision\n"))


def test_the_demo_model_is_unchanged():
    data = json.loads(calibrate(DEMO_EVENTS).to_json())
    shipped = json.loads(DEMO_MODEL.read_text())
    for d in (data, shipped):
        d.pop("provenance", None)
        d["log"].pop("source")
    assert data == shipped


# ---- --split ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("2024-04-01", "2024-04-01T00:00Z"), ("2024-04-01T12:00:00Z", "2024-04-01T12:00Z"),
    ("2024-04-01 12:00", "2024-04-01T12:00Z"), ("2024-04-01T14:00:00+02:00", "2024-04-01T12:00Z"),
])
def test_split_takes_iso_dates(text, expected):
    assert parse_split(text) == days(expected)[0]


@pytest.mark.parametrize("text", ["01/04/2024", "4/1/2024", "April 1", "1 April 2024", "20240401", "2024-04",
                                  "2024-13-01", "2024-02-30"])
def test_split_refuses_what_is_not_an_iso_date(text):
    with pytest.raises(InputError, match="use an ISO 8601 date such as 2024-04-01") as err:
        parse_split(text)
    assert "--split" in str(err.value) and repr(text) in str(err.value)


def test_backtest_split_day_first_exits_2_with_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "bt"
    result = runner.invoke(app, ["backtest", str(DEMO_EVENTS), "--split", "01/04/2024", "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--split" in lines[0] and "'01/04/2024'" in lines[0] and "2024-04-01" in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_calibrate_with_a_mismatching_row_exits_2_and_writes_nothing(tmp_path):
    log = write(tmp_path / "log.csv", DAY_FIRST + "c3,2024-04-20 10:00,email,awareness\n")
    mp = mapping(tmp_path, '[timestamp]\nformat = "%d/%m/%Y %H:%M"\n')
    out = tmp_path / "model.json"
    result = runner.invoke(app, ["calibrate", str(log), "--mapping", str(mp), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "row 5" in lines[0] and "'2024-04-20 10:00'" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv", "map.toml"]
    ok = runner.invoke(app, ["calibrate", str(write(log, DAY_FIRST)), "--mapping", str(mp), "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert json.loads(out.read_text())["log"]["first_timestamp"] == "2024-04-01T10:00:00Z"


def test_a_parquet_timestamp_past_2261_is_refused_with_its_row(tmp_path):
    """Typed timestamps in microseconds reach beyond int64 nanoseconds: one line, not a crash."""
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from cli import app

    path = tmp_path / "far.parquet"
    stamps = [datetime.datetime(2024, 1, 1), datetime.datetime(2300, 1, 2)]
    pq.write_table(pa.table({"customer_id": ["c1", "c1"], "timestamp": pa.array(stamps, pa.timestamp("us")),
                             "touchpoint": ["web", "web"], "stage": ["awareness", "consideration"]}), path)
    res = CliRunner().invoke(app, ["calibrate", str(path), "--out", str(tmp_path / "m.json")])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "row 2" in lines[0] and "2300" in lines[0] and "1678 to 2261" in lines[0]
    assert not (tmp_path / "m.json").exists()
