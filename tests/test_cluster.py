"""The Dask path (calibration/cluster.py) on a LocalCluster of two workers: the same buckets, the same
metadata and the same model as the in-memory loader on the same rows."""
from __future__ import annotations

import dataclasses
import os
import types

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

pytest.importorskip("distributed")
pytest.importorskip("dask.dataframe")

from corruptions import FILTER_AND_STAGES, corrupted, outcome  # noqa: E402

from calibration import cluster, cluster_plan  # noqa: E402
from calibration import load as load_module  # noqa: E402
from calibration.buckets import split_log  # noqa: E402
from calibration.load import load_events  # noqa: E402
from sim.errors import InputError  # noqa: E402
from worlds import dropped_only_names, make_world, simulate_log, with_customer_refusals  # noqa: E402

HAS_TABLE = hasattr(load_module, "log_from_table")
needs_table = pytest.mark.skipif(not HAS_TABLE, reason="calibration.load.log_from_table not on this branch yet")

MAPPING = FILTER_AND_STAGES


@pytest.fixture(scope="module")
def client():
    with cluster.local_client(2) as c:
        yield c


def test_local_workers_keep_glibcs_mmap_threshold(client, monkeypatch):
    # Dask's MALLOC_TRIM_THRESHOLD_ fixes the mmap threshold: every bucket array is faulted in afresh
    if "MALLOC_TRIM_THRESHOLD_" in os.environ:
        pytest.skip("set in this environment, which wins over the cluster's setting")
    assert set(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {None}
    assert len(client.scheduler_info()["workers"]) == 2


def _write(table: pa.Table, folder, name: str) -> dict:
    """The table as one Parquet file and as a folder of three (small row groups: several pieces)."""
    one = folder / f"{name}.parquet"
    pq.write_table(table, one, row_group_size=1500)
    parts = folder / name
    parts.mkdir()
    n = table.num_rows
    cuts = [0, n // 3, 2 * n // 3, n]
    for i in range(3):
        pq.write_table(table.slice(cuts[i], cuts[i + 1] - cuts[i]), parts / f"part-{i}.parquet", row_group_size=1500)
    return {"one": one, "folder": parts}


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    events = simulate_log(make_world(4), 2500, seed=3, backward_noise=0.05).events
    # the log ends on a customer's second (or later) row: in the mapped log their first row ends the
    # journey, so the true end is below the provisional one
    ids = events["customer_id"].to_numpy(dtype=object)
    later = events.duplicated("customer_id").to_numpy()
    times = events["timestamp"].to_numpy(dtype=object)
    last = max(np.flatnonzero(later), key=lambda i: times[i])
    last_id = ids[last]
    events = events[times <= times[last]].reset_index(drop=True)
    ids = events["customer_id"].to_numpy(dtype=object)
    plain = pa.Table.from_pandas(events, preserve_index=False)
    rng = np.random.default_rng(7)
    status = events["stage"].to_numpy(dtype=object).copy()
    status[rng.random(status.size) < 0.03] = "cancelled"
    mine = np.flatnonzero(ids == last_id)
    status[mine[0]] = "cancelled"
    site = np.where(rng.random(status.size) < 0.9, "shop", "test").astype(object)
    site[mine] = "shop"
    mapped = plain.drop_columns(["stage"]).append_column("status", pa.array(status, pa.string())) \
        .append_column("site", pa.array(site, pa.string()))
    mapping = folder / "mapping.toml"
    mapping.write_text(MAPPING)
    # day-first times: the layout is read from the log's first row, not each piece's
    text = pd.to_datetime(events["timestamp"], utc=True).dt.strftime("%d/%m/%Y %H:%M:%S")
    dayfirst = plain.set_column(plain.schema.get_field_index("timestamp"), "timestamp",
                                pa.array(text.to_numpy(dtype=object), pa.string()))
    (folder / "dayfirst.toml").write_text("[timestamp]\ndayfirst = true\n\n[options]\ndrop_duplicates = true\n")
    # touchpoints as numbers and the other names as Parquet dictionaries: pass B codes only text
    _, touch = np.unique(events["touchpoint"].to_numpy(dtype=object), return_inverse=True)
    typed = plain.set_column(plain.schema.get_field_index("touchpoint"), "touchpoint", pa.array(touch * 7 + 3))
    for name in ("stage", "persona"):
        typed = typed.set_column(typed.schema.get_field_index(name), name, pc.dictionary_encode(typed[name]))
    return {"plain": _write(plain, folder, "plain"), "mapped": _write(mapped, folder, "mapped"),
            "dayfirst": _write(dayfirst, folder, "dayfirst"), "typed": _write(typed, folder, "typed"),
            "mapping": mapping, "folder": folder,
            "mappings": {"plain": None, "mapped": mapping, "dayfirst": folder / "dayfirst.toml", "typed": None}}


def _tables(table, rows, plan):
    """A stand-in part (the rows and ids of a bucket), for the plumbing before log_from_table."""
    ids = pc.cast(table[cluster.column_sources(plan.mapping)["customer_id"]], pa.string()).to_numpy(
        zero_copy_only=False)
    _, first = np.unique(ids, return_index=True)
    return types.SimpleNamespace(end=0.0, rows=rows, ids=ids[np.sort(first)])


def _keep(part, end):
    return part


@pytest.mark.parametrize("kind", ["plain", "mapped"])
def test_metadata_and_bucket_rows_match_the_in_memory_load(client, logs, kind, monkeypatch):
    monkeypatch.setattr(cluster_plan, "PIECE_ROWS", 3000)  # several pieces a file
    mapping = logs["mapping"] if kind == "mapped" else None
    log = load_events(logs[kind]["one"], mapping=mapping)
    with cluster.ClusterLog(str(logs[kind]["folder"]), client, mapping=mapping, build=_tables) as on_cluster:
        plan, end = on_cluster.plan, on_cluster.end
        assert len(plan.pieces) > 3
        assert plan.touchpoints == log.touchpoints and plan.personas == log.personas and plan.notes == log.notes
        if kind == "plain":
            assert end == log.end
        else:
            assert end > log.end  # the provisional end: the last row is after an end row
        done = list(on_cluster.sweep(lambda b, part, _: (b, part, None), "test"))
    ref = list(split_log(log))
    assert [b for b, _, _ in done] == [b for b, _ in ref]
    for (_, got, _), (_, want) in zip(done, ref):
        assert list(got.ids) == list(want.customer_ids)
        assert np.isin(want.row, got.rows).all()  # the part's rows are among the bucket's kept rows
        if kind == "plain":
            assert np.array_equal(np.sort(got.rows), np.sort(want.row))


def _same_part(got, want) -> None:
    for f in dataclasses.fields(want):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if f.name in ("source", "sha256", "backward_rows"):
            continue
        if isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), f.name
        else:
            assert a == b, f.name


@needs_table
@pytest.mark.parametrize("kind", ["plain", "mapped", "dayfirst"])
def test_parts_on_the_workers_equal_split_log(client, logs, kind, monkeypatch):
    monkeypatch.setattr(cluster_plan, "PIECE_ROWS", 3000)
    if kind == "mapped":  # the P2P shuffle (large logs) as well as the task shuffle
        monkeypatch.setattr(cluster, "task_shuffle_fits", lambda plan, limits: False)
    mapping = logs["mappings"][kind]
    log = load_events(logs[kind]["one"], mapping=mapping)
    result, parts = cluster.cluster_map(logs[kind]["folder"], client, _keep, mapping=mapping)
    ref = list(split_log(log))
    assert [b for b, _ in parts] == [b for b, _ in ref]
    for (_, got), (_, want) in zip(parts, ref):
        _same_part(got, want)
        assert got.source == str(logs[kind]["folder"]) and got.sha256 == result.sha256
    assert sum(p.backward_rows for _, p in parts) == log.backward_rows
    assert (result.touchpoints, result.personas, result.stages, result.conversion_stage, result.end) == (
        log.touchpoints, log.personas, log.stages, log.conversion_stage, log.end)
    assert result.rows == pq.ParquetFile(logs[kind]["one"]).metadata.num_rows


@needs_table
def test_one_file_hashes_as_the_loader(client, logs):
    result, _ = cluster.cluster_map(logs["plain"]["one"], client, _keep)
    assert result.sha256 == load_events(logs["plain"]["one"]).sha256


def test_the_task_shuffle_is_chosen_where_the_columns_read_fit_the_workers(tmp_path):
    """The shuffle is sized by the uncompressed bytes of the columns read (a wide column the mapping
    does not name does not count), against the smallest worker's memory limit."""
    n = 6000
    table = pa.table({"customer_id": [f"c{i % 700}" for i in range(n)], "timestamp": ["2024-01-01T00:00:00Z"] * n,
                      "touchpoint": ["web"] * n, "stage": ["awareness"] * n,
                      "notes": [f"{i:0>400}" for i in range(n)]})  # 400 bytes a row, not read
    path = tmp_path / "log.parquet"
    pq.write_table(table, path, row_group_size=1000)
    plan = cluster_plan.make_plan(path, None, None, None, None, 128)
    meta = pq.ParquetFile(path).metadata
    want = sum(meta.row_group(g).column(c).total_uncompressed_size for g in range(meta.num_row_groups)
               for c in range(meta.num_columns) if meta.schema.column(c).name != "notes")
    assert cluster_plan.read_bytes(plan) == want
    assert 0 < want < n * 100  # the notes column (2.4 MB) is left out
    need = cluster.TASK_SHUFFLE_BYTES_PER_BYTE * want / cluster.TASK_SHUFFLE_SHARE  # summed over the workers
    assert cluster.task_shuffle_fits(plan, [int(need / 2) + 1] * 2)
    assert not cluster.task_shuffle_fits(plan, [int(need / 2) - 1] * 2)
    assert not cluster.task_shuffle_fits(plan, [int(need), int(need / 2) - 1])  # the smallest worker decides
    # a worker without a memory limit: the row count decides
    assert cluster.task_shuffle_fits(plan, [0, 10**12])
    one = dataclasses.replace(plan.pieces[0], n_rows=cluster.TASK_SHUFFLE_ROWS + 1)
    large = dataclasses.replace(plan, pieces=[one])
    assert not cluster.task_shuffle_fits(large, [0, 10**12])


@needs_table
@pytest.mark.parametrize("kind", ["plain", "mapped", "dayfirst", "typed"])
def test_the_model_is_the_in_memory_one(client, logs, kind):
    from calibration.estimate import DEFAULT_INACTIVITY_DAYS, estimate, estimate_stats

    mapping = logs["mappings"][kind]
    log = load_events(logs[kind]["one"], mapping=mapping)
    st = cluster.cluster_stats(logs[kind]["folder"], client, inactivity_days=DEFAULT_INACTIVITY_DAYS, mapping=mapping,
                                phases=True)
    got = estimate_stats(st).to_json()
    want = estimate(log).to_json()
    # the folder and the file differ by name and bytes only
    got = got.replace(str(logs[kind]["folder"]), str(logs[kind]["one"])).replace(st.sha256, log.sha256)
    assert got == want


@needs_table
def test_a_filtered_log_names_what_its_kept_rows_name(client, tmp_path):
    """A touchpoint and a persona only rows a [filter] drops hold are not in the model, here as on the
    other readers, with the names stored as Parquet dictionaries (which a filter keeps)."""
    from calibration.estimate import DEFAULT_INACTIVITY_DAYS, estimate, estimate_stats

    table = pa.table({name: pc.dictionary_encode(pa.array(values)) if name in ("touchpoint", "persona") else values
                      for name, values in dropped_only_names().items()})
    log_file = tmp_path / "log.parquet"
    pq.write_table(table, log_file, row_group_size=1_000)
    mapping = tmp_path / "map.toml"
    mapping.write_text('[filter]\nstatus = "DONE"\n')
    st = cluster.cluster_stats(log_file, client, inactivity_days=DEFAULT_INACTIVITY_DAYS, mapping=mapping,
                                phases=True)
    log = load_events(log_file, mapping=mapping)
    assert st.touchpoints == log.touchpoints == ["call", "email", "web"]
    assert st.personas == log.personas == ["a", "b"]
    assert estimate_stats(st).to_json() == estimate(log).to_json()


def test_personas_discovered_on_the_cluster_are_those_found_here(client, logs, tmp_path, monkeypatch):
    """--personas with --scheduler: discovery's sweeps run where the buckets lie (kept on the workers
    between sweeps; the fit's sample and the drawn personas sent to each bucket's worker only), so the
    model, its record and the assignments file are the stream's here, the fit on everyone or on a sample."""
    from calibration import discovery
    from calibration.calibrate import calibration

    paths = _write(pq.read_table(logs["plain"]["one"]).drop_columns(["persona"]), tmp_path, "nopersona")
    for sample in (None, 1_500):  # of about 2,500 customers
        if sample is not None:
            monkeypatch.setattr(discovery, "FIT_SAMPLE", sample)
        here, there = (calibration(paths["folder"], personas="auto", assignments=tmp_path / "a.csv", client=c)
                       for c in (None, client))
        assert here.model.to_json() == there.model.to_json()
        assert here.assignments_csv == there.assignments_csv
        record = there.model.extras["personas_discovered"]
        assert record["customers_in_fit"] == (sample or record["customers"]) and record["customers"] > 2_000


def _broken(logs, folder, kind: str) -> tuple:
    """The plain log with a bad cell in the third file, as one file and as a folder."""
    table = pq.read_table(logs["plain"]["one"])
    i = table.num_rows - 10  # in the third file
    column = {"null id": "customer_id", "bad stage": "stage", "bad time": "timestamp", "empty time late": "timestamp",
              "unreadable time late": "timestamp"}[kind]
    values = table[column].to_pylist()
    values[i] = {"null id": None, "bad stage": "purchase", "bad time": "yesterday", "empty time late": None,
                 "unreadable time late": "yesterday"}[kind]
    # within one check the loader finds empty cells first, then unreadable values, then years out of range
    if kind == "empty time late":
        values[5] = "yesterday"  # in the first file
    if kind == "unreadable time late":
        values[5] = "2300-01-01T00:00:00Z"
    if kind == "bad stage":  # and a bad time after it: the loader's order of checks puts the time first
        times = table["timestamp"].to_pylist()
        times[i + 5] = "soon"
        table = table.set_column(table.schema.get_field_index("timestamp"), "timestamp", pa.array(times, pa.string()))
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.string()))
    sub = folder / kind.replace(" ", "_")
    sub.mkdir()
    return _write(table, sub, "log")


@pytest.mark.parametrize("kind", ["null id", "bad stage", "bad time", "empty time late", "unreadable time late"])
def test_bad_input_gives_the_loaders_line(client, logs, kind):
    paths = _broken(logs, logs["folder"], kind)
    with pytest.raises(InputError) as want:
        load_events(paths["one"])
    with pytest.raises(InputError) as got:
        cluster.cluster_map(paths["folder"], client, _keep)
    assert str(got.value) == str(want.value).replace(str(paths["one"]), str(paths["folder"]))


@pytest.mark.parametrize("shape", ["plain", "mapped"])
def test_random_bad_cells_give_the_loaders_line_or_model(client, tmp_path, monkeypatch, shape):
    """Logs with random bad (or harmless) cells (tests/corruptions.py; test_stream runs more of them):
    the cluster refuses each with the in-memory line, or gives the in-memory model."""
    monkeypatch.setattr(cluster_plan, "PIECE_ROWS", 1500)  # several pieces a file
    refused = 0
    for case in corrupted(shape, seed=12, n=6, folder=tmp_path):
        want = outcome(case.parquet, reader="memory", mapping=case.mapping)
        got = outcome(case.folder, client=client, mapping=case.mapping)
        assert got == want.replace(str(case.parquet), str(case.folder))
        refused += want.startswith(str(case.parquet))
    assert 1 <= refused < 6  # refusals and models both compared


@pytest.mark.parametrize("clash", [False, True])
def test_a_per_customer_refusal_is_the_whole_logs(client, logs, tmp_path, clash):
    """Duplicates in many buckets (and a later persona clash, the earlier check): the workers' buckets
    report what the whole log's check reports (the first row in the file of the earliest check)."""
    events = pq.read_table(logs["plain"]["one"]).to_pandas()
    table = pa.Table.from_pandas(with_customer_refusals(events, seed=5, clash=clash), preserve_index=False)
    paths = _write(table, tmp_path, "refused")
    with pytest.raises(InputError) as want:
        load_events(paths["one"])
    with pytest.raises(InputError) as got:
        cluster.cluster_map(paths["folder"], client, _keep)
    assert str(got.value) == str(want.value).replace(str(paths["one"]), str(paths["folder"]))


def test_time_zone_counts_are_the_whole_logs(client, logs, tmp_path):
    """Times partly without a zone: pass A's counts on the workers are the loader's, in the metadata and
    in every bucket's notes (the model's time-zone warning reads them)."""
    events = pq.read_table(logs["plain"]["one"]).to_pandas()
    stamps = pd.to_datetime(events["timestamp"], utc=True)
    naive = np.arange(len(events)) % 4 == 1
    text = np.where(naive, stamps.dt.strftime("%Y-%m-%d %H:%M:%S.%f"), stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    paths = _write(pa.Table.from_pandas(events.assign(timestamp=text), preserve_index=False), tmp_path, "zones")
    want = load_events(paths["one"]).notes
    assert want["zoneless_rows"] == int(naive.sum()) and want["zoned_rows"] == int((~naive).sum())
    meta, parts = cluster.cluster_map(paths["folder"], client, _keep)
    assert meta.notes == want and all(part.notes == want for _, part in parts)


def test_whole_log_refusals(client, logs, tmp_path):
    with pytest.raises(InputError, match="no Parquet or CSV files"):
        cluster.cluster_map(tmp_path, client, _keep)
    with pytest.raises(InputError, match="not found"):
        cluster.cluster_map(tmp_path / "nope", client, _keep)
    with pytest.raises(InputError, match="no rows before the split"):
        cluster.cluster_map(logs["plain"]["folder"], client, _keep, before=1.0)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "part-0.parquet").write_bytes(logs["plain"]["one"].read_bytes()[:5000])
    with pytest.raises(InputError, match=r"part-0\.parquet: cannot read the event log"):
        cluster.cluster_map(damaged, client, _keep)


@needs_table
def test_an_fsspec_url_reads_the_same_rows(client, logs):
    folder = logs["plain"]["folder"]
    by_path, parts = cluster.cluster_map(folder, client, _keep)
    by_url, url_parts = cluster.cluster_map(f"file://{folder}", client, _keep)
    assert by_url.source == f"file://{folder}" and by_url.sha256 == by_path.sha256
    assert [b for b, _ in url_parts] == [b for b, _ in parts]
    assert all(np.array_equal(a.row, b.row) for (_, a), (_, b) in zip(url_parts, parts))


def test_a_folder_of_files_without_a_suffix_reads_as_parquet(client, logs, tmp_path):
    """Hive, Athena and Trino write their Parquet files with no suffix: such a folder is the same rows (and a
    lone CSV or a folder of them is refused in one line, the cluster reading Parquet only)."""
    folder = logs["plain"]["folder"]
    hive = tmp_path / "hive"
    hive.mkdir()
    for f in sorted(folder.glob("*.parquet")):
        (hive / f.stem).write_bytes(f.read_bytes())
    _, parts = cluster.cluster_map(folder, client, _keep)
    _, hive_parts = cluster.cluster_map(hive, client, _keep)
    assert [b for b, _ in hive_parts] == [b for b, _ in parts]
    assert all(np.array_equal(a.row, b.row) for (_, a), (_, b) in zip(hive_parts, parts))
    (tmp_path / "log.csv").write_text("customer_id,timestamp,touchpoint,stage\n")
    with pytest.raises(InputError, match="log.csv: the cluster reads Parquet, not CSV; drop --scheduler"):
        cluster.cluster_map(tmp_path / "log.csv", client, _keep)
    (tmp_path / "exports").mkdir()  # a folder of CSV files too (the stream reads it)
    (tmp_path / "exports" / "day-1.csv").write_text("customer_id,timestamp,touchpoint,stage\n")
    with pytest.raises(InputError, match="exports: the cluster reads Parquet, not CSV; drop --scheduler"):
        cluster.cluster_map(tmp_path / "exports", client, _keep)


def test_replications_and_batches_on_the_cluster_are_those_run_here(client):
    """simulate's replications (fast and SimPy) and compare's batches as tasks on the workers: the seeds go
    with the tasks, so the records are the same, to the bit."""
    from application.context import RunContext
    from conftest import DEMO_MODEL
    from sim.compare import compare_targets
    from sim.simulate import load_target, simulate_target

    examples = DEMO_MODEL.parents[1] / "examples"
    for target, engine in ((load_target(DEMO_MODEL), "fast"), (load_target(examples / "sales_chat_capacity.toml"),
                                                               "auto")):
        runs = [simulate_target(target, customers=3000, streams=RunContext.from_option(4), replications=3,
                                engine=engine, client=c)
                for c in (None, client)]
        assert runs[0][0].to_dict() == runs[1][0].to_dict()
        assert all(np.array_equal(a.reached, b.reached) and np.array_equal(a.interactions, b.interactions)
                   for a, b in zip(runs[0][1], runs[1][1]))
    base = load_target(DEMO_MODEL)
    fix = load_target(examples / "checkout_fix.toml", on=base)
    here, there = (compare_targets(base, [fix], customers=40_000, streams=RunContext.from_option(2), client=c)
                   for c in (None, client))  # one replication: the cohort runs in batches
    assert here.to_dict() == there.to_dict()


def test_workers_under_2_gb_are_named_on_the_terminal(logs, tmp_path, capsys):
    """P2P can pause a worker with a small memory limit (a 1 GB worker, 10 M events: unfinished after
    10 minutes), so calibrate on such a cluster says so in one note line on stderr; the model is the
    one a large cluster gives."""
    from distributed import LocalCluster

    from application.calibrate import run_calibrate

    assert cluster.small_workers_note([12 * 10**9, 0]) is None  # no limit is no small limit
    assert "1.5 GB" in cluster.small_workers_note([1_500_000_000, 12 * 10**9])
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, memory_limit="1.5GB",
                      dashboard_address=None) as small:
        model = run_calibrate(logs["plain"]["folder"], tmp_path / "model.json", scheduler=small.scheduler_address,
                              terminal=True)
    err = capsys.readouterr().err
    assert "note: the smallest Dask worker has a 1.5 GB memory limit" in err
    here = run_calibrate(logs["plain"]["folder"], tmp_path / "here.json").to_dict()
    got = model.to_dict()
    got.pop("provenance"), here.pop("provenance")
    assert got == here
