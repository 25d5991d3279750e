"""Calibration statistics (and persona discovery) of a Parquet dataset on a Dask cluster (`dask.distributed`).

The same per-bucket logs as ``split_log(load_events(...))`` (calibration/buckets.py), built on the
workers; only what each bucket's computation returns (its ``LogStats``, say) comes back to the driver.
Steps (`ClusterLog`):

1. Plan (driver): the dataset's files in sorted path order (a file, a folder, or an fsspec URL), their
   row groups cut into pieces, and each piece's first file row number, from the Parquet footers.
2. Pass A (one task a piece): the row checks of the in-memory loader in its order (file row numbers
   across files), the global touchpoint and persona vocabularies and the provisional last timestamp.
3. Pass B, once: the pieces as a Dask DataFrame (``from_map``) with ``__row`` and ``__bucket`` columns,
   Dask's own shuffle on ``__bucket``, each partition sorted by bucket and row and kept on its worker.
4. Each sweep (calibration/stats.py's ``Sweep``): per bucket, ``log_from_table`` with the global
   vocabularies, then the sweep's computation (``log_stats``, or one of discovery's steps).

Pieces are read with ``from_map`` rather than ``read_parquet``: dask-expr fuses read_parquet's
partitions depending on the columns projected, so partition numbers are no base for row numbers.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from calibration.buckets import BUCKETS, bucket_of
from calibration.columns import (
    derive_persona,
    derive_stage,
    no_nulls,
    parse_satisfaction,
    parse_value,
    stage_codes,
)
from calibration.eventlog import REQUIRED, EventLog, parse_stages
from calibration.load import log_from_table, refusal_order
from calibration.mapping import Mapping, load_mapping
from calibration.readers import column_sources
from calibration.sources import dataset_files, is_local, same_columns
from calibration.stats import at_log_end
from calibration.timestamps import ZoneTally, parse_time, parse_time_ns
from sim.errors import InputError, closest
from sim.limits import sha256_of_files

PIECE_ROWS = 2_000_000  # rows a pass-A task / shuffle input reads at most (whole row groups)
TASK_SHUFFLE_ROWS = 10_500_000  # logs up to this many rows use Dask's in-memory task shuffle; larger ones P2P


@dataclass
class ClusterResult:
    """The whole log's metadata, as `cluster_map` returns it beside its buckets' results."""

    source: str
    sha256: str  # "" for a remote dataset (not read twice to hash it)
    touchpoints: list[str]
    personas: list[str]
    stages: list[str]
    conversion_stage: str
    end: float  # the log's last timestamp (days), after end rows are dropped
    rows: int  # data rows in the dataset
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Piece:
    """Row groups of one file, and the file row number of their first row."""

    file: str
    groups: tuple[int, ...]
    first_row: int  # 1 = the dataset's first data row
    n_rows: int


@dataclass
class _Plan:
    """What every task needs: the dataset, the mapping and the whole log's vocabularies."""

    source: str
    fs: Any  # fsspec filesystem (picklable)
    pieces: list[_Piece]
    columns: list[str]  # file columns read (those the mapping names)
    header: list[str]  # every column of the files, for "did you mean" hints
    mapping: Mapping
    stages: list[str]
    conversion_stage: str
    before: float | None
    buckets: int
    sha256: str = ""
    touchpoints: list[str] | None = None
    personas: list[str] | None = None
    notes: dict = field(default_factory=dict)
    layout: Any = None  # a dayfirst rule's layout, read from the log's first kept row (timestamps.Layout)


@contextmanager
def local_client(workers: int) -> Iterator[Any]:
    """A ``distributed.Client`` on a ``LocalCluster`` of ``workers`` one-thread worker processes."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


@contextmanager
def connect(scheduler: str, workers: int = 1) -> Iterator[Any]:
    """A client for ``--scheduler``: ``local`` (a LocalCluster of ``workers``) or a scheduler's address."""
    if scheduler == "local":
        with local_client(workers) as client:
            yield client
        return
    from distributed import Client

    try:
        client = Client(scheduler, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise InputError(f"cannot reach the Dask scheduler: {str(exc).splitlines()[0][:200]}",
                         where="--scheduler", value=scheduler,
                         hint="e.g. tcp://host:8786 (start it with dask-scheduler), or local") from None
    with client:
        yield client


class ClusterLog:
    """A Parquet dataset on a Dask cluster: checked (pass A), then cut into its buckets on the workers
    (pass B) for each `sweep`.

    ``hold``: the buckets stay on the workers from the first sweep until `close` (persona discovery
    sweeps them four times; Dask spills them to disk past a worker's memory limit); else each sweep
    reads and shuffles the dataset again, and a large log's P2P shuffle keeps only a bucket a task in
    memory. ``end`` is provisional, as a stream's is (the largest part end is the true one);
    ``build(table, rows, plan)`` makes a bucket's part (`_part`: its EventLog)."""

    def __init__(self, path: str | Path, client: Any, *, stages: str | list[str] | None = None,
                 conversion_stage: str | None = None, mapping: str | Path | Mapping | None = None,
                 before: float | None = None, buckets: int = BUCKETS,
                 progress: Callable[[str, int, int], None] | None = None, build: Callable | None = None,
                 hold: bool = False) -> None:
        plan = _plan(path, mapping, stages, conversion_stage, before, buckets)
        plan.layout = _layout(plan)
        with ThreadPoolExecutor(max_workers=1) as pool:  # hashing overlaps the cluster's work
            digest = pool.submit(_sha256, plan)
            self.end = _pass_a(plan, client)
            plan.sha256 = digest.result()  # the parts carry it, as split_log's do
        self.plan, self.client, self.progress, self.build, self.hold = plan, client, progress, build or _part, hold
        self._held: list[tuple[Any, list[int]]] | None = None  # (a partition's future, its buckets)

    @property
    def source(self) -> str:
        """The dataset as given (a path or a URL)."""
        return self.plan.source

    @property
    def sha256(self) -> str:
        """The files' SHA-256 ("" for a remote dataset)."""
        return self.plan.sha256

    @property
    def notes(self) -> dict:
        """The whole log's notes (persona column, time zones), as every part carries them."""
        return self.plan.notes

    def sweep(self, compute: Callable[[int, EventLog, Any], Any], what: str, given: dict[int, Any] | None = None
              ) -> Iterator[Any]:
        """calibration/stats.py's ``Sweep`` on the workers: ``compute(bucket, part, given[bucket])`` where
        the bucket lies, each partition sent only its buckets' ``given`` (which needs ``hold``); the
        results in bucket order."""
        import dask
        from distributed import as_completed

        if not self.hold:
            if given is not None:
                raise ValueError("a sweep with per-bucket values needs hold=True")  # a caller's bug
            futures = self.client.compute([dask.delayed(_sweep_partition)(sorted_part, self.plan, compute, self.build,
                                                                          None) for sorted_part in self._shuffled()])
        else:
            futures = [self.client.submit(_sweep_partition, data, self.plan, compute, self.build,
                                          None if given is None else {b: given[b] for b in ids if b in given},
                                          pure=False)
                       for data, ids in self._partitions()]
        for i, _ in enumerate(as_completed(futures), 1):
            if self.progress is not None:
                self.progress(what, i, len(futures))
        done = sorted((x for f in futures for x in f.result()), key=lambda x: x[0])
        errors = [x[1] for x in done if isinstance(x[1], _Failure)]
        if errors:  # a per-customer check (two personas, duplicates): the one the whole log gives
            raise InputError(**min(errors, key=lambda e: (e.order, e.bucket)).fields)
        for _, value in done:
            yield value

    def _shuffled(self) -> list[Any]:
        """Pass B's graph: Dask's shuffle on the bucket, each partition sorted by bucket and file row
        (delayed)."""
        import dask
        import dask.dataframe as dd

        plan = self.plan
        frame = dd.from_map(partial(_frame, plan), plan.pieces, meta=_meta(plan), enforce_metadata=False)
        # the task shuffle holds the whole log in the workers' memory: the faster up to ~10 M rows (2x);
        # past that P2P, which spills to disk, into one partition a bucket (memory per task ~ a bucket)
        small = sum(p.n_rows for p in plan.pieces) <= TASK_SHUFFLE_ROWS
        method = dask.config.get("dataframe.shuffle.method", None) or ("tasks" if small else "p2p")
        n_out = min(plan.buckets, max(len(plan.pieces), 2 * _n_workers(self.client))) if small else plan.buckets
        shuffled = frame.shuffle("__bucket", npartitions=n_out, shuffle_method=method)
        return [dask.delayed(_sorted)(d, plan.header) for d in shuffled.to_delayed()]

    def _partitions(self) -> list[tuple[Any, list[int]]]:
        """The sorted partitions kept on the workers (computed at the first sweep), and their buckets."""
        if self._held is None:
            data = self.client.compute(self._shuffled())
            ids = self.client.gather(self.client.map(_bucket_ids, data, pure=False))
            self._held = [(d, i) for d, i in zip(data, ids, strict=True) if i]
        return self._held

    def close(self) -> None:
        """Release the buckets held on the workers."""
        if self._held is not None:
            self.client.cancel([d for d, _ in self._held])
        self._held = None

    def __enter__(self) -> ClusterLog:
        """The log itself."""
        return self

    def __exit__(self, *exc) -> None:
        """Release the workers' buckets."""
        self.close()


def cluster_stats(path: str | Path, client: Any, *, inactivity_days: float, phases: bool = False,
                  stages: str | list[str] | None = None, conversion_stage: str | None = None,
                  mapping: str | Path | Mapping | None = None, before: float | None = None) -> Any:
    """The whole log's ``LogStats``: the workers' buckets summed on the driver in bucket order."""
    from calibration.stats import swept_stats

    with ClusterLog(path, client, stages=stages, conversion_stage=conversion_stage, mapping=mapping,
                    before=before) as on_cluster:
        st = swept_stats(on_cluster.sweep, on_cluster.end, inactivity_days=inactivity_days, phases=phases)
    st.source, st.sha256 = on_cluster.source, on_cluster.sha256
    return st


def cluster_map(path: str | Path, client: Any, fn: Callable[[EventLog, float], Any], *,
                stages: str | list[str] | None = None, conversion_stage: str | None = None,
                mapping: str | Path | Mapping | None = None, before: float | None = None,
                buckets: int = BUCKETS) -> tuple[ClusterResult, list[tuple[int, Any]]]:
    """``fn(part, end)`` on the workers for each non-empty bucket's ``EventLog`` (as ``split_log`` gives
    it), with ``end`` the whole log's last timestamp; the metadata and ``[(bucket, fn(...)), ...]``."""
    with ClusterLog(path, client, stages=stages, conversion_stage=conversion_stage, mapping=mapping, before=before,
                    buckets=buckets) as on_cluster:
        def at(end: float) -> tuple[list[tuple[int, Any, float]], float]:
            done = list(on_cluster.sweep(lambda b, part, _: (b, fn(part, end), part.end), "summing"))
            return done, max((e for _, _, e in done), default=end)

        done, true_end = at_log_end(at, on_cluster.end)
    plan = on_cluster.plan
    meta = ClusterResult(source=plan.source, sha256=plan.sha256, touchpoints=plan.touchpoints,
                         personas=plan.personas, stages=plan.stages, conversion_stage=plan.conversion_stage,
                         end=true_end, rows=sum(p.n_rows for p in plan.pieces), notes=plan.notes)
    return meta, [(b, value) for b, value, _ in done]


# ---------------------------------------------------------------------------------------------- plan


def _plan(path: str | Path, mapping, stages, conversion_stage, before, buckets: int) -> _Plan:
    if mapping is not None and not isinstance(mapping, Mapping):
        mapping = load_mapping(mapping)
    mp = mapping or Mapping()
    stage_names, conv = parse_stages(stages if stages is not None else mp.stages,
                                     conversion_stage or mp.conversion_stage)
    source = str(path)
    listed = dataset_files(source)
    fs, files = listed.fs, listed.files
    if not listed.parquet:  # CSV files, or one file not named as Parquet is
        raise InputError("the cluster reads Parquet, not CSV", file=source,
                         hint="drop --scheduler to stream the CSV on this machine, or write it as Parquet")
    pieces, header = _pieces(fs, files, source)
    if not pieces or sum(p.n_rows for p in pieces) == 0:
        raise InputError("the event log is empty (no data rows)", file=source)
    for column in mp.filter:
        if column not in header:
            raise InputError("filter names a column the log does not have", file=source, where=f"[filter] {column}",
                             hint=closest(column, header))
    sources = column_sources(mp)
    for name in REQUIRED:
        if name == "stage" and mp.stage is not None:
            continue
        if sources[name] not in header:
            raise InputError("missing required column", file=source, where=f"column {sources[name]!r}",
                             hint=closest(sources[name], header) + " (or map it with --mapping)")
    wanted = (set(sources.values()) | set(mp.filter) | ({mp.stage.column} if mp.stage else set())
              | ({mp.persona.column} if mp.persona else set()))
    persona_src = mp.persona.column if mp.persona is not None else sources["persona"]
    notes = {"persona_column": persona_src if mp.persona is not None or persona_src in header else None}
    return _Plan(source=source, fs=fs, pieces=pieces, columns=[c for c in header if c in wanted], header=header,
                 mapping=mp, stages=stage_names, conversion_stage=conv, before=before, buckets=buckets, notes=notes)


def _pieces(fs, files: list[str], source: str) -> tuple[list[_Piece], list[str]]:
    """Row groups cut into pieces of at most ``PIECE_ROWS`` rows (whole groups), and the header."""
    pieces: list[_Piece] = []
    header: list[str] | None = None
    first = 1
    for file in files:
        try:
            with fs.open(file, "rb") as fh:
                meta = pq.ParquetFile(fh).metadata
                names = meta.schema.to_arrow_schema().names
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"cannot read the event log: {str(exc).splitlines()[0][:200]}", file=file,
                             hint="expected Parquet files") from None
        if header is None:
            header = names
        same_columns(names, header, file)
        groups: list[int] = []
        start, count = first, 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if groups and count + n > PIECE_ROWS:
                pieces.append(_Piece(file, tuple(groups), start, count))
                groups, start, count = [], start + count, 0
            groups.append(g)
            count += n
        if groups:
            pieces.append(_Piece(file, tuple(groups), start, count))
        first = start + count
    return [p for p in pieces if p.n_rows], header or []


def _layout(plan: _Plan) -> Any:
    """A ``dayfirst`` rule's layout from the log's first kept row (as the loader reads it from the whole
    file's), so that every piece and bucket parses alike; None without such a rule."""
    rule = plan.mapping.timestamp
    if rule is None or rule.dayfirst is None or rule.format is not None or rule.unit is not None:
        return None
    from calibration.timestamps import layout_of

    column = column_sources(plan.mapping)["timestamp"]
    for piece in plan.pieces:
        table, rows = _read(plan, piece)
        if table.num_rows:
            arr = table[column]
            if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type) or not arr[0].is_valid:
                return None  # typed times need no layout; an empty first time is refused by the row checks
            return layout_of(str(pc.cast(arr[0], pa.string())), rule, Path(plan.source), column, int(rows[0]))
    return None


def _sha256(plan: _Plan) -> str:
    """SHA-256 of the file, or of the folder's files one after the other; "" when remote."""
    if not is_local(plan.fs):
        return ""
    return sha256_of_files(list(dict.fromkeys(p.file for p in plan.pieces)))


# ---------------------------------------------------------------------------------------------- pass A


def _read(plan: _Plan, piece: _Piece) -> tuple[pa.Table, np.ndarray]:
    """A piece's rows the mapping's [filter] keeps, and their file row numbers."""
    try:
        with plan.fs.open(piece.file, "rb") as fh:
            table = pq.ParquetFile(fh).read_row_groups(list(piece.groups), columns=plan.columns)
    except (pa.ArrowInvalid, OSError) as exc:  # a damaged or vanished file: one line, not a worker traceback
        raise InputError(f"cannot read the event log: {str(exc).splitlines()[0][:200]}", file=piece.file,
                         hint="expected Parquet files") from None
    rows = np.arange(piece.first_row, piece.first_row + table.num_rows, dtype=np.int64)
    mp = plan.mapping
    for column in mp.filter:  # as calibration/load.py's _filtered
        wanted = pa.array(mp.filter_values(column), type=pa.string())
        keep = pc.is_in(pc.cast(table[column], pa.string()), value_set=wanted).to_numpy(zero_copy_only=False)
        keep = np.asarray(keep, dtype=bool) & ~np.asarray(pc.is_null(table[column]).to_numpy(zero_copy_only=False))
        table = table.filter(pa.array(keep))
        rows = rows[keep]
    return table.replace_schema_metadata({"journey_header": "\x1f".join(plan.header)}), rows


@dataclass
class _Summary:
    """What one piece tells about the whole log (or the first check it fails)."""

    kept: int = 0
    before_kept: int = 0
    t_max: float = -np.inf
    touchpoints: set = field(default_factory=set)
    personas: set = field(default_factory=set)
    zones: ZoneTally = field(default_factory=ZoneTally)
    error: tuple | None = None  # (check number, InputError fields): the loader's order of checks


def _distinct(arr: pa.ChunkedArray) -> set[str]:
    """The distinct values as calibration/columns.py's encode_sorted reads them."""
    if pa.types.is_dictionary(arr.type):
        return {str(x) for chunk in arr.chunks for x in chunk.dictionary.to_pylist()}
    return {str(x) for x in pc.unique(arr).to_pylist() if x is not None}


def _summarize(plan: _Plan, piece: _Piece) -> _Summary:
    """Pass A on one piece: the loader's row checks in its order, vocabularies, last timestamp."""
    try:
        table, rows = _read(plan, piece)
    except InputError as err:
        return _Summary(kept=1, error=(-1, _fields(err)))  # kept=1: reported before "no rows left"
    out = _Summary(kept=table.num_rows)
    if not table.num_rows:
        return out
    mp, src, path = plan.mapping, column_sources(plan.mapping), Path(plan.source)
    step = 0
    try:
        no_nulls(pc.cast(table[src["customer_id"]], pa.string()), path, src["customer_id"], rows)
        step = 1
        time = parse_time(table[src["timestamp"]], path, src["timestamp"], rows, mp.timestamp, layout=plan.layout,
                          zones=out.zones)
        step = 2
        no_nulls(table[src["touchpoint"]], path, src["touchpoint"], rows)
        out.touchpoints = _distinct(table[src["touchpoint"]])
        step = 3
        if mp.stage is not None:
            derive_stage(table, mp, plan.stages, path, rows)
        else:
            stage_codes(table[src["stage"]], plan.stages, path, src["stage"], rows)
        step = 4
        out.personas = _piece_personas(table, mp, src, path, rows)
        step = 5
        if src["satisfaction"] in table.column_names:
            parse_satisfaction(table[src["satisfaction"]], path, src["satisfaction"], rows)
        step = 6
        if src["value"] in table.column_names:
            parse_value(table[src["value"]], path, src["value"], rows)
    except InputError as err:
        out.error = (step, _fields(err))
        return out
    kept = time < plan.before if plan.before is not None else np.ones(time.size, dtype=bool)
    out.before_kept = int(kept.sum())
    if out.before_kept:
        out.t_max = float(time[kept].max())
    return out


def _piece_personas(table: pa.Table, mp: Mapping, src: dict[str, str], path: Path, rows: np.ndarray) -> set:
    """The personas this piece's rows name (label indices for a banded [persona] rule)."""
    if mp.persona is not None:
        codes, names = derive_persona(table, mp, path)
        if mp.persona.bands is None:
            return set(names)
        return {mp.persona.labels.index(n) for n in names} if (codes >= 0).any() else set()
    if src["persona"] in table.column_names:
        no_nulls(table[src["persona"]], path, src["persona"], rows)
        return _distinct(table[src["persona"]])
    return set()


def _pass_a(plan: _Plan, client) -> float:
    """Checks and vocabularies of the whole log (on the workers); the provisional last timestamp."""
    summaries = client.gather(client.map(partial(_summarize, plan), plan.pieces, pure=False))
    errors = [(s.error[0], i, s.error[1]) for i, s in enumerate(summaries) if s.error is not None]
    if not sum(s.kept for s in summaries):
        raise InputError("no rows left after the mapping's [filter]", file=plan.source, where="[filter]",
                         hint="check the filter values")
    if errors:  # the loader's first check that fails, at its first row in file order
        raise InputError(**min(errors, key=lambda e: e[:2])[2])
    if plan.before is not None and not sum(s.before_kept for s in summaries):
        raise InputError("no rows before the split", file=plan.source, where="--split")
    mp = plan.mapping
    zones = ZoneTally()
    for s in summaries:
        zones.add(s.zones)
    plan.notes.update(zones.note())
    plan.touchpoints = sorted(set().union(*(s.touchpoints for s in summaries)))
    personas = set().union(*(s.personas for s in summaries))
    if mp.persona is not None and mp.persona.bands is not None:
        plan.personas = [label for i, label in enumerate(mp.persona.labels) if i in personas] or list(
            mp.persona.labels)
    elif mp.persona is not None or column_sources(mp)["persona"] in plan.header:
        plan.personas = sorted(personas)
    else:
        plan.personas = ["all"]
    return max(s.t_max for s in summaries)


def _fields(err: InputError) -> dict:
    """An InputError as its fields: rebuilt on the driver, it prints the same line."""
    return {"message": err.message, "file": err.file, "where": err.where, "value": err.value, "hint": err.hint}


# ---------------------------------------------------------------------------------------------- pass B


def _frame(plan: _Plan, piece: _Piece) -> pd.DataFrame:
    """A piece's kept rows with their file row number and bucket (the shuffle's input)."""
    table, rows = _read(plan, piece)
    table = _decoded(table)
    src = column_sources(plan.mapping)
    if not pa.types.is_timestamp(table.schema.field(src["timestamp"]).type):
        # text times parsed once here (pass A checked them): 8 bytes a row through the shuffle, and
        # parse_time reads the typed UTC column back to the same days
        ns = parse_time_ns(table[src["timestamp"]], Path(plan.source), src["timestamp"], rows, plan.mapping.timestamp,
                       layout=plan.layout)
        i = table.schema.get_field_index(src["timestamp"])
        table = table.set_column(i, src["timestamp"], pa.array(ns, pa.int64()).cast(pa.timestamp("ns", "UTC")))
    ids = pc.dictionary_encode(pc.cast(table[column_sources(plan.mapping)["customer_id"]], pa.string()))
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    of_id = bucket_of(ids.dictionary.to_numpy(zero_copy_only=False), plan.buckets)
    bucket = of_id[ids.indices.fill_null(0).to_numpy(zero_copy_only=False)] if len(ids.dictionary) else (
        np.zeros(table.num_rows, dtype=np.int64))
    table = table.append_column("__row", pa.array(rows)).append_column("__bucket", pa.array(bucket))
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _decoded(table: pa.Table) -> pa.Table:
    """Dictionary columns as plain ones (the codes come from the global vocabularies anyway)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, pc.cast(table[f.name], f.type.value_type))
    return table


def _meta(plan: _Plan) -> pd.DataFrame:
    with plan.fs.open(plan.pieces[0].file, "rb") as fh:
        schema = pq.ParquetFile(fh).schema_arrow
    empty = _decoded(schema.empty_table().select(plan.columns))
    empty = empty.append_column("__row", pa.array([], pa.int64())).append_column("__bucket", pa.array([], pa.int64()))
    return empty.to_pandas(types_mapper=pd.ArrowDtype)


def _n_workers(client) -> int:
    return max(len(client.scheduler_info().get("workers", {})), 1)


@dataclass
class _Failure:
    """An InputError a bucket raised, with the first row it names (to pick the log's first)."""

    bucket: int
    order: tuple[int, int]  # calibration.load.refusal_order
    fields: dict


def _part(table: pa.Table, rows: np.ndarray, plan: _Plan) -> EventLog:
    """One bucket's EventLog, coded against the whole log's vocabularies."""
    part = log_from_table(table, rows, mapping=plan.mapping, stages=plan.stages,
                          conversion_stage=plan.conversion_stage, source=plan.source, sha256=plan.sha256,
                          before=plan.before, touchpoints=plan.touchpoints, personas=plan.personas,
                          time_rule=plan.layout)
    part.notes = dict(plan.notes)  # the whole log's (pass A counted the time zones)
    return part


def _sorted(df: pd.DataFrame, header: list[str]) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    """A shuffled partition sorted by bucket, then file row: each row's bucket and file row, and the
    table of the mapped columns."""
    whole = pa.Table.from_pandas(df, preserve_index=False)
    whole = whole.take(pc.sort_indices(whole, [("__bucket", "ascending"), ("__row", "ascending")]))
    bucket, rows = whole["__bucket"].to_numpy(), whole["__row"].to_numpy()
    return bucket, rows, whole.drop_columns(["__row", "__bucket"]).replace_schema_metadata(
        {"journey_header": "\x1f".join(header)})


def _bucket_ids(held: tuple[np.ndarray, np.ndarray, pa.Table]) -> list[int]:
    """The buckets a sorted partition holds."""
    return [int(b) for b in np.unique(held[0])]


def _sweep_partition(held: tuple[np.ndarray, np.ndarray, pa.Table], plan: _Plan, compute, build,
                     given: dict[int, Any] | None) -> list[tuple[int, Any]]:
    """``(bucket, compute(bucket, part, given))`` for each bucket of a sorted partition (a refusal as a
    ``_Failure``); ``build(table, rows, plan)`` makes the part."""
    bucket, rows_all, whole = held
    out: list[tuple[int, Any]] = []
    bounds = np.flatnonzero(np.diff(bucket)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, bucket.size]):
        if lo == hi:
            continue
        b = int(bucket[lo])
        try:
            part = build(whole.slice(lo, hi - lo), rows_all[lo:hi], plan)
        except InputError as err:
            if err.where == "--split":  # none of this bucket's rows is before the split: no customers
                continue
            out.append((b, _Failure(b, refusal_order(err), _fields(err))))
            continue
        out.append((b, compute(b, part, None if given is None else given.get(b))))
    return out
