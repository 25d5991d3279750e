"""The streaming reader (calibration/stream.py): every bucket it yields is exactly the one
split_log(load_events(...)) gives, the same whole-log lists, and the same one-line errors."""
from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import time
from dataclasses import fields
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corruptions import corrupted, outcome

from calibration.buckets import split_log
from calibration.load import load_events
from calibration.stream import open_stream
from sim.errors import InputError
from worlds import dropped_only_names, simulate_log, with_customer_refusals

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
MAPPINGS = ROOT / "scenarios" / "mappings"
SMALL = 1 << 12  # bytes per CSV batch: many batches even on a small log


def same_parts(path: Path, stream_path: Path | None = None, **kw) -> int:
    """Assert the streamed parts equal the in-memory ones; returns the number of parts."""
    log = load_events(path, **kw)
    ref = dict(split_log(log))
    with open_stream(stream_path or path, block_size=SMALL, **kw) as s:
        assert s.touchpoints == log.touchpoints
        assert s.personas == log.personas
        assert s.stages == log.stages and s.conversion_stage == log.conversion_stage
        assert s.notes == log.notes
        if stream_path is None:
            assert s.sha256 == log.sha256
        got = list(s.parts())
    assert [b for b, _ in got] == sorted(ref)
    for b, part in got:
        want = ref[b]
        for f in fields(want):
            if f.name == "backward_rows":  # split_log leaves it 0; each part counts its own
                continue
            if stream_path is not None and f.name in ("source", "sha256"):  # another file, same rows
                continue
            a, c = getattr(want, f.name), getattr(part, f.name)
            if isinstance(a, np.ndarray):
                assert a.dtype == c.dtype and np.array_equal(a, c), (b, f.name)
            else:
                assert a == c, (b, f.name)
    assert sum(p.backward_rows for _, p in got) == log.backward_rows
    assert max(p.end for _, p in got) == log.end
    return len(got)


@pytest.fixture(scope="module")
def events(world):
    journeys = simulate_log(world, 3_000, seed=7, arrival_days=120.0, backward_noise=0.05, after_final=0.3)
    return journeys.events


def test_csv_gzip_parquet_and_a_parquet_folder_stream_like_the_whole_log(tmp_path, events):
    csv = tmp_path / "events.csv"
    events.to_csv(csv, index=False)
    assert same_parts(csv) > 100
    gz = tmp_path / "events.csv.gz"
    gz.write_bytes(gzip.compress(csv.read_bytes()))
    same_parts(gz)
    table = pa.Table.from_pandas(events, preserve_index=False)
    one = tmp_path / "events.parquet"
    pq.write_table(table, one, row_group_size=2_000)
    same_parts(one)
    folder = tmp_path / "log"
    folder.mkdir()
    cuts = [0, 5_000, 5_001, 12_000, table.num_rows]
    for i, (lo, hi) in enumerate(zip(cuts, cuts[1:])):  # names sort as the rows run; rows numbered across
        pq.write_table(table.slice(lo, hi - lo), folder / f"part-{i:02d}.parquet", row_group_size=1_500)
    (folder / "_SUCCESS").write_text("")
    same_parts(one, stream_path=folder)


def test_a_url_streams_like_the_local_files(tmp_path, events):
    """fsspec URLs (memory:// stands in for an object store, file:// is this disk) of Parquet and CSV
    (gzipped too) give the same parts and the same messages, naming the URL; a remote dataset is not
    hashed (that would read it twice), a file:// one is, as its path is."""
    fsspec = pytest.importorskip("fsspec")
    from calibration.calibrate import calibrate

    table = pa.Table.from_pandas(events, preserve_index=False)
    one = tmp_path / "events.parquet"
    pq.write_table(table, one, row_group_size=2_000)
    folder = tmp_path / "log"
    folder.mkdir()
    for i, (lo, hi) in enumerate(((0, 7_000), (7_000, table.num_rows))):
        pq.write_table(table.slice(lo, hi - lo), folder / f"part-{i}.parquet", row_group_size=1_500)
    memory = fsspec.filesystem("memory")
    root = f"/journey-test-{tmp_path.name}"
    try:
        for f in folder.iterdir():
            memory.pipe(f"{root}/log/{f.name}", f.read_bytes())
        memory.pipe(f"{root}/log/_SUCCESS", b"")
        memory.pipe(f"{root}/events.parquet", one.read_bytes())
        csv = tmp_path / "events.csv"
        events.to_csv(csv, index=False)
        memory.pipe(f"{root}/events.csv", csv.read_bytes())
        memory.pipe(f"{root}/events.csv.gz", gzip.compress(csv.read_bytes()))
        memory.pipe(f"{root}/header.csv", b"customer_id,timestamp,touchpoint,stage\n")
        bad = csv.read_text().splitlines()
        bad[41] = bad[41].replace(",awareness,", ",nowhere,").replace(",consideration,", ",nowhere,")
        memory.pipe(f"{root}/bad.csv", "\n".join(bad).encode())
        same_parts(one, stream_path=f"memory://{root}/log/")
        for name in ("events.csv", "events.csv.gz"):  # a CSV URL streams as the local file does
            same_parts(csv, stream_path=f"memory://{root}/{name}")
        with open_stream(f"file://{csv}") as s, open_stream(csv) as t:
            assert s.sha256 == t.sha256 != "" and s.files == t.files
        same_parts(one, stream_path=f"memory://{root}/events.parquet")
        with open_stream(f"memory://{root}/log") as s:
            assert s.sha256 == "" and s.files == [] and s.source == f"memory://{root}/log"
        with open_stream(f"file://{folder}") as s, open_stream(folder) as t:
            assert s.sha256 == t.sha256 != "" and s.files == t.files and s.source == f"file://{folder}"
        with pytest.raises(InputError) as want:
            load_events(csv.with_name("bad.csv")) if csv.with_name("bad.csv").write_text("\n".join(bad)) else None
        for url, message in ((f"memory://{root}/header.csv", "the event log is empty"),
                             (f"memory://{root}/bad.csv", str(want.value).split(": ", 1)[1]),
                             (f"memory://{root}/nothing/", "event log not found"),
                             ("nosuch://bucket/log/", "cannot open the URL: Protocol not known")):
            with pytest.raises(InputError) as err:
                open_stream(url)
            assert str(err.value).startswith(url + ": ") and message in str(err.value)
        with pytest.raises(InputError, match="--reader: a URL is read in batches"):  # that needs the whole log here
            calibrate(f"memory://{root}/log/", reader="memory")
        with pytest.raises(InputError, match="already has personas"):  # discovery streams a URL (and checks it)
            calibrate(f"memory://{root}/log/", personas="auto")
    finally:
        memory.rm(root, recursive=True)


def test_a_folder_file_without_a_column_is_refused_in_one_line(tmp_path, events):
    """A folder's later file with other columns (a required one missing, or reordered) is named, in the
    cluster's words, before any of its rows are read (it was an internal KeyError)."""
    table = pa.Table.from_pandas(events, preserve_index=False)
    for name, second in (("missing", table.slice(9_000).drop_columns(["stage"])),
                         ("reordered", table.slice(9_000).select(table.column_names[::-1]))):
        folder = tmp_path / name
        folder.mkdir()
        pq.write_table(table.slice(0, 9_000), folder / "part-0.parquet")
        pq.write_table(second, folder / "part-1.parquet")
        with pytest.raises(InputError) as got:
            open_stream(folder)
        text = str(got.value)
        assert text.startswith(f"{folder / 'part-1.parquet'}: the dataset's files have different columns"), text
        assert f"the first file has {','.join(table.column_names)}" in text
        assert not list(folder.glob("*.arrows"))


def test_a_folder_is_listed_by_the_clusters_rule(tmp_path, events):
    """The stream reads a folder's *.parquet files (nested ones too; else its files with no suffix, as Hive
    writes them) in sorted path order, as the cluster lists them (calibration.sources.dataset_files);
    other, hidden and _ files are left alone. 0.5.2's stream read every file and failed on a README."""
    from calibration.sources import dataset_files

    table = pa.Table.from_pandas(events, preserve_index=False)
    folder = tmp_path / "log"
    (folder / "year=2024").mkdir(parents=True)
    pq.write_table(table.slice(0, 6_000), folder / "year=2024" / "part-0.parquet")
    pq.write_table(table.slice(6_000), folder / "year=2024-late.pq")
    (folder / "README.txt").write_text("exported by the shop\n")
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-0.parquet.crc").write_bytes(b"\0")
    listed = dataset_files(str(folder)).files
    with open_stream(folder) as s:
        assert [str(f) for f in s.files] == listed
        assert [f.name for f in s.files] == ["year=2024-late.pq", "part-0.parquet"]  # "-" sorts before "/"
    one = tmp_path / "events.parquet"
    pq.write_table(pa.concat_tables([table.slice(6_000), table.slice(0, 6_000)]), one)
    same_parts(one, stream_path=folder)
    hive = tmp_path / "hive"  # Hive, Athena and Trino name their files with no suffix
    hive.mkdir()
    pq.write_table(table.slice(6_000), hive / "20240101_000000_00001_aaaaa_1")
    pq.write_table(table.slice(0, 6_000), hive / "20240101_000000_00001_aaaaa_2")
    (hive / "notes.md").write_text("not data\n")
    assert [Path(f).name for f in dataset_files(str(hive)).files] == ["20240101_000000_00001_aaaaa_1",
                                                                        "20240101_000000_00001_aaaaa_2"]
    same_parts(one, stream_path=hive)
    same_parts(one, stream_path=f"file://{hive}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not data\n")
    with pytest.raises(InputError, match=r"empty: the folder holds no Parquet or CSV files; expected files named "):
        open_stream(tmp_path / "empty")


def _csv_folder(events, folder: Path) -> Path:
    """The log as three CSV files (one gzipped, one in a sub-folder) and as the one CSV they make in
    sorted path order."""
    cuts = [0, 4_000, 9_000, len(events)]
    names = ["2024-01.csv", "2024-02.csv.gz", "later/2024-03.csv"]
    (folder / "later").mkdir(parents=True)
    for name, lo, hi in zip(names, cuts[:-1], cuts[1:]):
        events.iloc[lo:hi].to_csv(folder / name, index=False)
    (folder / "_SUCCESS").write_text("")
    one = folder.parent / f"{folder.name}-one.csv"
    events.to_csv(one, index=False)
    return one


def test_a_folder_of_csv_files_streams_as_the_one_file_they_make(tmp_path, events):
    """A folder of CSV exports (no Parquet files in it: its *.csv, *.csv.gz and *.tsv files, in sorted
    path order, as one log): the parts, model and messages of the one file they make, rows numbered
    across the files as in a Parquet folder; a later file with other columns is named in one line; the
    same folder behind a URL. It was refused before 0.5.5."""
    from calibration.calibrate import calibrate

    folder = tmp_path / "exports"
    one = _csv_folder(events, folder)
    assert same_parts(one, stream_path=folder) > 100
    with open_stream(folder) as s:
        assert [f.name for f in s.files] == ["2024-01.csv", "2024-02.csv.gz", "2024-03.csv"] and s.sha256
    got, want = (json.loads(calibrate(p).to_json()) for p in (folder, one))
    for d in (got, want):
        d["log"] = {k: v for k, v in d["log"].items() if k not in ("source", "sha256")}
    assert got == want
    bad = events.copy()
    bad.loc[6_000, "stage"] = "purchase"  # in the second file
    broken = tmp_path / "broken"
    one_bad = _csv_folder(bad, broken)
    with pytest.raises(InputError) as whole:
        load_events(one_bad)
    with pytest.raises(InputError) as streamed:
        open_stream(broken)
    assert str(streamed.value) == str(whole.value).replace(str(one_bad), str(broken))
    events.iloc[:10].rename(columns={"stage": "step"}).to_csv(broken / "later" / "2024-04.csv", index=False)
    with pytest.raises(InputError, match=r"2024-04\.csv: the dataset's files have different columns"):
        open_stream(broken)
    fsspec = pytest.importorskip("fsspec")
    memory, root = fsspec.filesystem("memory"), "/journey-test-csv-folder"
    try:
        for f in sorted(folder.rglob("*.csv*")):
            memory.pipe(f"{root}/{f.relative_to(folder)}", f.read_bytes())
        same_parts(one, stream_path=f"memory://{root}")
    finally:
        memory.rm(root, recursive=True)


@pytest.mark.parametrize("clash", [False, True])
def test_a_per_customer_refusal_is_the_whole_logs(tmp_path, events, clash):
    """Duplicates in many buckets (and a persona clash, the earlier check, late in the file): the stream
    names what the whole log's check names, the first row in the file of the earliest check that fails
    (it named its first refusing bucket's)."""
    from calibration.calibrate import calibrate

    bad = with_customer_refusals(events, seed=3, clash=clash)
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(InputError) as want:
        load_events(path)
    assert str(want.value).split(": ")[2].startswith("contradictory rows" if clash else "duplicate rows")
    for reader in ("stream", "memory"):
        with pytest.raises(InputError) as got:
            calibrate(path, reader=reader)
        assert str(got.value) == str(want.value), reader
    rows = [int(x) for x in re.findall(r"\d+", want.value.where)]
    if clash:  # the one changed row, late in the file (rows count from 1 after the header)
        assert rows == [len(bad) - 3 + 1]
    else:  # the repeated pair that starts first in the file
        key = ["customer_id", "timestamp", "touchpoint", "stage"]
        starts = bad[bad.duplicated(key, keep=False)].reset_index().groupby(key)["index"].min()
        assert rows[0] == int(starts.min()) + 1


@pytest.mark.parametrize("column", ["customer_id", "timestamp", "touchpoint", "stage", "persona"])
def test_an_empty_text_in_parquet_is_an_empty_cell(tmp_path, events, column):
    """Parquet can hold "" where a CSV has an empty cell (read as null): both are "empty value" at that
    row on every reader, not a touchpoint (or persona) named "" as 0.5.2 took it; an empty satisfaction
    is missing, as in a CSV."""
    from calibration.calibrate import calibrate

    bad = events.astype({"timestamp": str}).copy()
    bad.loc[40, column] = ""
    csv, parquet = tmp_path / "bad.csv", tmp_path / "bad.parquet"
    bad.to_csv(csv, index=False)
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), parquet)
    want = f"row 41, column {column!r}: empty value; every row needs a value here"
    for path in (csv, parquet):
        for reader in ("stream", "memory"):
            with pytest.raises(InputError) as got:
                calibrate(path, reader=reader)
            assert str(got.value) == f"{path}: {want}", (path.suffix, reader)
    if column == "persona":
        rated = events.assign(satisfaction=np.where(np.arange(len(events)) % 5 == 0, "4", ""))
        pq.write_table(pa.Table.from_pandas(rated, preserve_index=False), parquet)
        model = calibrate(parquet)
        assert model.to_json() == calibrate(parquet, reader="memory").to_json()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a disk that is always full)")
def test_a_full_disk_for_the_spill_is_one_line(tmp_path, events, monkeypatch):
    """The spill folder's disk filling up names the folder and says how to give it room (it was an internal
    error, exit 1); the spill folder is removed."""
    import calibration.first_pass as first_pass

    csv = tmp_path / "events.csv"
    events.to_csv(csv, index=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(first_pass, "spill_path", lambda folder, bucket: Path("/dev/full"))
    with pytest.raises(InputError) as err:
        open_stream(csv, block_size=SMALL, hold_bytes=0, workdir=work)
    text = str(err.value)
    assert text.startswith(f"{work}: cannot write the stream's temporary files: "), text
    assert "No space left on device" in text and "; set TMPDIR to a folder with room for about" in text
    assert not list(work.iterdir())


def test_before_and_time_disorder(tmp_path, events):
    shuffled = events.sample(frac=1.0, random_state=3)  # first appearance differs from time order
    csv = tmp_path / "shuffled.csv"
    shuffled.to_csv(csv, index=False)
    same_parts(csv)
    same_parts(csv, before=float(pd.Timestamp(events["timestamp"].iloc[len(events) // 2]).value / 86_400e9))


def test_the_real_logs_with_their_mappings(tmp_path):
    same_parts(DATA / "bpic2012_slice.csv.gz", mapping=MAPPINGS / "bpic2012_mapping.toml")
    same_parts(DATA / "helpdesk_slice.csv.gz", mapping=MAPPINGS / "helpdesk_mapping.toml")


FOREIGN = "case,when,activity,status,amount,tier\n" + "".join(
    f"c{i % 37},2024-{1 + i // 300 % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00,"
    f"{['visit', 'quote', 'call', 'sign', 'declined'][i % 5 if i % 7 else 0]},"
    f"{'START' if i % 11 == 0 else 'COMPLETE'},{(i % 37) * 700},{['gold', 'silver'][i % 37 % 2]}\n"
    for i in range(3_000))
BASE = """
stages = ["lead", "offer", "signed"]
[columns]
customer_id = "case"
timestamp = "when"
touchpoint = "activity"
[stage]
column = "activity"
values = { quote = "offer", sign = "signed" }
"""


@pytest.mark.parametrize("extra", [
    "",
    'end_values = ["declined"]\n',
    'end_values = ["declined"]\n[filter]\nstatus = "COMPLETE"\n',
    '[filter]\nstatus = ["COMPLETE"]\nactivity = ["visit", "quote", "call", "sign"]\n',
    '[persona]\ncolumn = "tier"\n',
    '[persona]\ncolumn = "amount"\nbands = [0, 5000, 15000, 90000]\nlabels = ["s", "m", "l", "xl"]\n',
    '[options]\ndrop_duplicates = true\n',
])
def test_mappings_stream_like_the_whole_log(tmp_path, extra):
    log = tmp_path / "log.csv"
    text = FOREIGN if "drop_duplicates" not in extra else FOREIGN + FOREIGN.split("\n", 1)[1]
    log.write_text(text)
    mapping = tmp_path / "map.toml"
    mapping.write_text(BASE + extra)
    same_parts(log, mapping=mapping)


def test_a_parquet_log_under_a_filter_keeps_the_kept_rows_vocabulary(tmp_path):
    """The stream reads a Parquet log's text columns as dictionaries, under a [filter] too: a row
    group's dictionary still names what the dropped rows hold (here a touchpoint only they have), and
    the vocabulary is the entries the kept rows use."""
    table = pa.table(dropped_only_names(persona=False))
    log = tmp_path / "log.parquet"
    pq.write_table(table, log, row_group_size=1_000)
    mapping = tmp_path / "map.toml"
    mapping.write_text('[filter]\nstatus = "DONE"\n')
    same_parts(log, mapping=mapping)
    with open_stream(log, mapping=mapping) as s:
        assert "fax" not in s.touchpoints
    with open_stream(log) as s:  # no filter: read as dictionaries, the same names as the whole log
        assert s.touchpoints == load_events(log).touchpoints == ["call", "email", "fax", "web"]


@pytest.mark.parametrize("form", ["csv", "parquet", "parquet dictionaries"])
def test_a_filtered_log_names_what_its_kept_rows_name_in_every_format(tmp_path, form):
    """Under a [filter], a touchpoint or persona only dropped rows name is not in the model, whatever
    the format: a CSV's columns are read dictionary-encoded, and a filtered column keeps its dictionary
    (0.5.6 kept the dropped rows' names from a CSV, and not from a Parquet file of the same rows)."""
    table = pa.table(dropped_only_names())
    if form == "csv":
        log = tmp_path / "log.csv"
        pd.DataFrame(table.to_pydict()).to_csv(log, index=False)
    else:
        log = tmp_path / "log.parquet"
        if form == "parquet dictionaries":  # stored as Arrow dictionaries (a pandas categorical's file)
            table = pa.table({c: table[c].dictionary_encode() if c in ("touchpoint", "persona") else table[c]
                              for c in table.column_names})
        pq.write_table(table, log, row_group_size=1_000)
    mapping = tmp_path / "map.toml"
    mapping.write_text('[filter]\nstatus = "DONE"\n')
    same_parts(log, mapping=mapping)
    log_in_memory = load_events(log, mapping=mapping)
    assert log_in_memory.touchpoints == ["call", "email", "web"]
    assert log_in_memory.personas == ["a", "b"]


def test_an_unknown_stage_on_a_row_the_filter_drops_is_not_refused(tmp_path):
    """The stream checks stages by each batch's dictionary; after a [filter] a dictionary may still hold
    a dropped row's value, so there every kept row is checked instead (as load_events does)."""
    rows = ["customer_id,timestamp,touchpoint,stage,status"]
    rows += [f"c{i % 23},2024-01-{1 + i % 28:02d}T{i % 24:02d}:00:00,web,"
             f"{'purchase' if i % 50 == 7 else ['awareness', 'consideration'][i % 2]},"
             f"{'START' if i % 50 == 7 else 'COMPLETE'}" for i in range(600)]
    log = tmp_path / "log.csv"
    log.write_text("\n".join(rows) + "\n")
    mapping = tmp_path / "map.toml"
    mapping.write_text('[filter]\nstatus = "COMPLETE"\n')
    same_parts(log, mapping=mapping)
    mapping.write_text('[filter]\nstatus = ["COMPLETE", "START"]\n')  # kept: refused on both paths
    refused_alike(log, mapping, "unknown stage", block_size=SMALL)


def refused_alike(log, mapping, match: str, **stream_options) -> None:
    """The loader refuses the log with ``match`` in its line, and the stream with the same line."""
    with pytest.raises(InputError, match=match) as want:
        load_events(log, mapping=mapping)
    with pytest.raises(InputError) as got, open_stream(log, mapping=mapping, **stream_options) as s:
        list(s.parts())
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("column", ["touchpoint", "persona", "stage"])
def test_an_empty_text_on_a_row_the_filter_drops_is_not_refused(tmp_path, column):
    """A Parquet column read as a dictionary keeps a dropped row's "" in its dictionary: the empty-value
    check looks at the kept rows (0.5.8 crashed with an IndexError in the stream)."""
    n = 600
    data = {"customer_id": [f"c{i % 23}" for i in range(n)],
            "timestamp": [f"2024-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z" for i in range(n)],
            "touchpoint": ["web"] * n, "stage": [["awareness", "consideration"][i % 2] for i in range(n)],
            "persona": ["p"] * n, "status": ["START" if i % 50 == 7 else "COMPLETE" for i in range(n)]}
    data[column] = ["" if i % 50 == 7 else v for i, v in enumerate(data[column])]
    log = tmp_path / "log.parquet"
    pq.write_table(pa.table(data), log, row_group_size=200)
    mapping = tmp_path / "map.toml"
    mapping.write_text('[filter]\nstatus = "COMPLETE"\n')
    same_parts(log, mapping=mapping)
    mapping.write_text('[filter]\nstatus = ["COMPLETE", "START"]\n')  # kept: refused on both paths
    refused_alike(log, mapping, "empty value")


@pytest.mark.parametrize("layout, fmt", [
    ('format = "%d/%m/%Y %H:%M"', "%d/%m/%Y %H:%M"),
    ("dayfirst = true", "%d/%m/%Y %H:%M"),
    ('unit = "s"', None),
])
def test_timestamp_rules_stream_like_the_whole_log(tmp_path, layout, fmt):
    frame = pd.read_csv(pd.io.common.StringIO(FOREIGN))
    when = pd.to_datetime(frame["when"])
    frame["when"] = when.dt.strftime(fmt) if fmt else (when.astype("int64") // 10**9).astype(str)
    log = tmp_path / "log.csv"
    frame.to_csv(log, index=False)
    mapping = tmp_path / "map.toml"
    mapping.write_text(BASE + f"[timestamp]\n{layout}\ntimezone = \"Europe/Amsterdam\"\n"
                       if "unit" not in layout else BASE + f"[timestamp]\n{layout}\n")
    same_parts(log, mapping=mapping)


HEADER = "customer_id,timestamp,touchpoint,stage,persona\n"
GOOD = "".join(f"{i % 50},2024-01-{1 + i % 28:02d},web,awareness,p{i % 50 % 3}\n" for i in range(2_000))


def _late(row: str) -> str:
    """A good log with ``row`` replacing a row in a late batch."""
    lines = GOOD.splitlines(keepends=True)
    lines[1_700] = row
    return HEADER + "".join(lines)


def _early(row: str) -> str:
    lines = GOOD.splitlines(keepends=True)
    lines[40] = row
    return "".join(lines)


def _early_and_late(early: str, late: str) -> str:
    """A good log with ``early`` in its first batch and ``late`` in a late one."""
    lines = GOOD.splitlines(keepends=True)
    lines[40], lines[1_700] = early, late
    return HEADER + "".join(lines)


@pytest.mark.parametrize("text", [
    "customer_id,timestamp,stage\n1,2024-01-01,awareness\n",
    HEADER + "1,2024-13-45,web,awareness,x\n",
    HEADER + "1,2024-01-01,web,purchase,x\n",
    HEADER,
    "",
    HEADER + "1,,web,awareness,x\n",
    _late("7,2024-01-02,web,awareness,x,extra\n"),  # a reader error
    _late(",2024-01-02,web,awareness,p1\n"),  # an empty id late beats a bad stage early (check order)
    _late(",2024-01-02,web,awareness,p1\n")[:-1] + _early("7,2024-01-02,web,purchase,p1\n"),
    _late("7,2024-01-02,web,awareness,\n"),
    _late("7,2024-02-31,web,awareness,p1\n"),
    # within one check: an empty time late beats an unreadable one early, which beats a year out of range
    _early_and_late("7,yesterday,web,awareness,p1\n", "7,,web,awareness,p1\n"),
    _early_and_late("7,2300-01-01,web,awareness,p1\n", "7,yesterday,web,awareness,p1\n"),
    HEADER.replace("persona", "customer_id") + "1,2024-01-01,web,awareness,x\n",
])
def test_bad_input_gives_the_in_memory_line(tmp_path, text):
    path = tmp_path / "log.csv"
    path.write_text(text)
    with pytest.raises(InputError) as want:
        load_events(path)
    with pytest.raises(InputError) as got:
        with open_stream(path, block_size=SMALL) as s:
            list(s.parts())
    assert str(got.value) == str(want.value)
    assert not list(tmp_path.glob("journey-stream-*"))


@pytest.mark.parametrize("shape", ["plain", "mapped"])
def test_random_bad_cells_give_the_in_memory_line_or_model(tmp_path, monkeypatch, shape):
    """Logs with one to three random bad (or harmless) cells (tests/corruptions.py), without and with a
    mapping ([filter], [stage], banded [persona], dayfirst times): the stream of the CSV (many batches)
    and of a folder of Parquet files refuses each with the in-memory line, or gives the in-memory model."""
    from calibration import stream

    monkeypatch.setattr(stream, "open_stream", partial(stream.open_stream, block_size=SMALL))
    refused = 0
    for case in corrupted(shape, seed=11, n=16, folder=tmp_path):
        want = outcome(case.csv, reader="memory", mapping=case.mapping)
        assert outcome(case.csv, mapping=case.mapping) == want
        want = outcome(case.parquet, reader="memory", mapping=case.mapping)
        got = outcome(case.folder, mapping=case.mapping)
        assert got == want.replace(str(case.parquet), str(case.folder))
        refused += want.startswith(str(case.parquet))
    assert 4 <= refused < 16  # refusals and models both compared


def test_the_first_bad_row_is_named_whichever_batch_a_worker_finishes_first(tmp_path, monkeypatch):
    """Pass 1 examines batches on worker threads (calibration/first_pass.py) and takes them back in file
    order: with the first batches made slow, the later batches are done first, and the message still
    names the first bad row of each check, as load_events does."""
    import calibration.first_pass as first_pass

    lines = GOOD.splitlines(keepends=True)
    lines[40], lines[1_700] = "7,2024-01-02,web,purchase,p1\n", "8,2024-01-02,web,checkout,p1\n"
    bad_stages = tmp_path / "stages.csv"
    bad_stages.write_text(HEADER + "".join(lines))
    lines = GOOD.splitlines(keepends=True)
    lines[900], lines[1_700] = ",2024-01-02,web,awareness,p1\n", "8,2024-01-02,web,awareness,\n"
    lines[40] = "7,2024-01-02,web,purchase,p1\n"  # a bad stage early loses to an empty id later
    bad_ids = tmp_path / "ids.csv"
    bad_ids.write_text(HEADER + "".join(lines))
    examine = first_pass.FirstPass._examine

    def slow_start(self, table, rows):
        if rows[0] < 1_000:
            time.sleep(0.02)
        return examine(self, table, rows)

    monkeypatch.setattr(first_pass.FirstPass, "_examine", slow_start)
    for path, named in ((bad_stages, "row 41, column 'stage'"), (bad_ids, "row 901, column 'customer_id'")):
        with pytest.raises(InputError) as want:
            load_events(path)
        with pytest.raises(InputError) as got:
            with open_stream(path, block_size=SMALL) as s:
                list(s.parts())
        assert str(got.value) == str(want.value), path.name
        assert named in str(got.value), str(got.value)


def test_a_row_with_an_extra_field_is_named_on_both_readers(tmp_path):
    """The threaded reader does not count rows; the stream reads on one thread and the in-memory loader
    reads again on one after such an error, so both name the row."""
    path = tmp_path / "log.csv"
    path.write_text(_late("7,2024-01-02,web,awareness,x,extra\n"))
    row = path.read_text().splitlines().index("7,2024-01-02,web,awareness,x,extra")
    with pytest.raises(InputError, match=f"row {row}: cannot read the event log: 6 fields where the header has 5"):
        load_events(path)
    with pytest.raises(InputError, match=f"row {row}: "), open_stream(path, block_size=SMALL):
        pass


def test_text_that_is_not_utf8_is_named_on_both_readers(tmp_path):
    """A Latin-1 byte in a read column: both readers name its row and column and say how to convert (the
    in-memory loader reads again on one thread to find the row, as for an extra field)."""
    path = tmp_path / "log.csv"
    path.write_bytes(_late("7,2024-01-02,caf\xe9,awareness,x\n").encode("latin-1"))
    row = path.read_bytes().splitlines().index(b"7,2024-01-02,caf\xe9,awareness,x")
    want = f"{path}: row {row}, column 'touchpoint': text that is not UTF-8; save the log as UTF-8"
    with pytest.raises(InputError) as got:
        load_events(path)
    assert str(got.value).startswith(want), str(got.value)
    with pytest.raises(InputError) as got, open_stream(path, block_size=SMALL):
        pass
    assert str(got.value).startswith(want), str(got.value)


def test_timestamps_with_and_without_a_zone_are_said_out_loud(tmp_path, events):
    """A log whose times partly name no zone (read as UTC) gets the same counts on every reader and a
    warning in the model's fallbacks; one zone throughout, none, or a mapping's timezone, gets neither."""
    from calibration.calibrate import calibrate

    stamps = pd.to_datetime(events["timestamp"], utc=True)
    naive = np.arange(len(events)) % 3 == 0
    text = np.where(naive, stamps.dt.strftime("%Y-%m-%d %H:%M:%S.%f"), stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    mixed = events.assign(timestamp=text)
    csv, parquet = tmp_path / "mixed.csv", tmp_path / "mixed.parquet"
    mixed.to_csv(csv, index=False)
    pq.write_table(pa.Table.from_pandas(mixed, preserve_index=False), parquet)
    want = {"zoneless_rows": int(naive.sum()), "zoned_rows": int((~naive).sum())}
    assert load_events(csv).notes == {"persona_column": "persona", **want}
    same_parts(csv)  # the stream's notes are the whole log's
    same_parts(parquet)
    fallback = [f for f in calibrate(parquet).estimator["fallbacks"] if f["kind"] == "time_zone"]
    assert fallback and fallback[0]["count"] == want["zoneless_rows"] and "set [timestamp] timezone" in \
        fallback[0]["message"]
    assert calibrate(csv).to_json() == calibrate(csv, reader="memory").to_json()
    zone = tmp_path / "zone.toml"  # the mapping says what the zone-less times are: nothing to say
    zone.write_text('[timestamp]\ntimezone = "Europe/Berlin"\n')
    assert "zoneless_rows" not in load_events(csv, mapping=zone).notes
    with open_stream(csv, mapping=zone) as s:
        assert "zoneless_rows" not in s.notes
    for one in (stamps.dt.strftime("%Y-%m-%d %H:%M:%S.%f"), stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")):
        events.assign(timestamp=one).to_csv(csv, index=False)
        assert "zoneless_rows" not in load_events(csv).notes
        with open_stream(csv) as s:
            assert "zoneless_rows" not in s.notes


@pytest.mark.parametrize("extra, before", [
    ('[filter]\nstatus = "NOPE"\n', None),
    ('[filter]\nstatuz = "COMPLETE"\n', None),
    ('[persona]\ncolumn = "amount"\nbands = [500]\nlabels = ["x"]\n', None),  # a first row below every band
    ('[persona]\ncolumn = "amont"\n', None),
    ("", 1.0),
])
def test_bad_mappings_give_the_in_memory_line(tmp_path, extra, before):
    log = tmp_path / "log.csv"
    log.write_text(FOREIGN)
    mapping = tmp_path / "map.toml"
    mapping.write_text(BASE + extra)
    with pytest.raises(InputError) as want:
        load_events(log, mapping=mapping, before=before)
    with pytest.raises(InputError) as got:
        with open_stream(log, mapping=mapping, before=before, block_size=SMALL, workdir=tmp_path) as s:
            list(s.parts())
    assert str(got.value) == str(want.value)


def test_progress_and_spill_files_removed(tmp_path, events):
    csv = tmp_path / "events.csv"
    events.to_csv(csv, index=False)
    seen = []
    with open_stream(csv, block_size=SMALL, workdir=tmp_path, progress=lambda d, t: seen.append((d, t)),
                     hold_bytes=0) as s:
        assert list(tmp_path.glob("journey-stream-*/*.arrows"))
        n = sum(1 for _ in s.parts())
    assert seen[-1] == (n, n) and any(t == csv.stat().st_size for _, t in seen)
    assert not list(tmp_path.glob("journey-stream-*"))


def test_buckets_held_in_memory_or_spilled_are_the_same(tmp_path, events):
    csv = tmp_path / "events.csv"
    events.to_csv(csv, index=False)
    with open_stream(csv, block_size=SMALL, workdir=tmp_path) as held, \
            open_stream(csv, block_size=SMALL, workdir=tmp_path, hold_bytes=20_000) as spilled:
        assert not list(held._folder.glob("*.arrows")) and list(spilled._folder.glob("*.arrows"))
        for (b1, p1), (b2, p2) in zip(held.parts(), spilled.parts(), strict=True):
            assert b1 == b2
            for f in fields(p1):
                a, c = getattr(p1, f.name), getattr(p2, f.name)
                assert (a.dtype == c.dtype and np.array_equal(a, c)) if isinstance(a, np.ndarray) else a == c


_PEAK = """
import resource, sys
sys.path.insert(0, sys.argv[3])
if sys.argv[1] == "stream":
    from calibration.stream import open_stream
    # to disk, as a log over the hold goes; 1 MiB blocks: the reader's read-ahead (~30 blocks) fills
    # early, so what is left to grow is what the stream keeps per event
    with open_stream(sys.argv[2], hold_bytes=0, block_size=1 << 20) as s:
        rows = sum(p.n_rows for _, p in s.parts())
else:
    from calibration.load import load_events
    rows = load_events(sys.argv[2]).n_rows
# VmHWM, not getrusage: ru_maxrss keeps the forking parent's (pytest's) size across exec
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]
print(rows, hwm[0].split()[1] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_streaming_memory_stays_bounded(tmp_path):
    """1 M and 3 M rows: the streamed read peaks well below the in-memory one, and hardly grows with the log
    (the spill keeps no event in memory)."""
    n, first = 3_000_000, 1_000_000
    rng = np.random.default_rng(0)
    cust = rng.integers(0, 400_000, n)
    t0 = np.datetime64("2024-01-01T00:00:00", "s")
    times = (t0 + (np.arange(n) * 8).astype("timedelta64[s]")).astype(str)  # distinct: no duplicate rows
    table = pa.table({"customer_id": pa.array(cust.astype(str)), "timestamp": pa.array(times),
                      "touchpoint": pa.array(np.array(["web", "email", "call"])[rng.integers(0, 3, n)]),
                      "stage": pa.array(np.array(["awareness", "consideration"])[rng.integers(0, 2, n)])})
    paths = {"big": tmp_path / "big.csv", "small": tmp_path / "small.csv"}
    pa.csv.write_csv(table, paths["big"])
    pa.csv.write_csv(table.slice(0, first), paths["small"])
    extra_mb = table.slice(first).nbytes / 2**20  # the Arrow size of the rows the big log adds
    del table, cust, times
    peak = {}
    for how, log in (("stream", "big"), ("load", "big"), ("stream", "small")):
        done = subprocess.run([sys.executable, "-c", _PEAK, how, str(paths[log]), str(ROOT)], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        out = done.stdout.split()
        peak[f"{how} {log}"] = (int(out[0]), int(out[1]) / 1024)
    (tmp_path / "peak.json").write_text(json.dumps(peak))
    assert peak["stream big"][0] == peak["load big"][0] == n and peak["stream small"][0] == first
    assert peak["stream big"][1] < 0.7 * peak["load big"][1], peak
    assert peak["stream big"][1] - peak["stream small"][1] < 0.5 * extra_mb, (peak, extra_mb)


@pytest.mark.parametrize("reader", ["memory", "stream"])
def test_a_log_rewritten_while_it_is_read_gets_one_line(tmp_path, monkeypatch, reader):
    """A column the header named when the file was first opened and gone when it is read (another
    program rewrote it) is one line naming the column on both readers (it was an internal error)."""
    from calibration import readers

    log = tmp_path / "log.csv"
    rows = [f"c{i % 7},2024-01-{1 + i % 28:02d}T00:00:00Z,web,awareness" for i in range(50)]
    log.write_text("customer_id,timestamp,touchpoint,stage\n" + "\n".join(rows) + "\n")
    sniff = readers._sniff_time_type

    def sniffed_then_rewritten(*args, **kw):
        out = sniff(*args, **kw)
        log.write_text("customer,timestamp,touchpoint,stage\n" + "\n".join(rows) + "\n")
        return out

    monkeypatch.setattr(readers, "_sniff_time_type", sniffed_then_rewritten)
    with pytest.raises(InputError) as got:
        if reader == "memory":
            load_events(log)
        else:
            with open_stream(log) as s:
                list(s.parts())
    assert "the header changed while the log was read" in str(got.value)
    assert "column 'customer_id'" in str(got.value) and str(log) in str(got.value)
