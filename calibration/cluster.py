"""Calibration statistics (and persona discovery) of a Parquet dataset on a Dask cluster (`dask.distributed`).

The same per-bucket logs as ``split_log(load_events(...))`` (calibration/buckets.py), built on the
workers; only what each bucket's computation returns (its ``LogStats``, say) comes back to the driver.
Steps (`ClusterLog`):

1. Plan (driver; calibration/cluster_plan.py, as is pass A): the dataset's files in sorted path order
   (a file, a folder, or an fsspec URL), their row groups cut into pieces, and each piece's first file
   row number, from the Parquet footers.
2. Pass A (one task a piece): the row checks of the in-memory loader in its order (file row numbers
   across files), the global touchpoint and persona vocabularies and the provisional last timestamp.
3. Pass B, once: the pieces as a Dask DataFrame (``from_map``) with ``__row`` and ``__bucket`` columns,
   the touchpoint, stage and persona columns coded over the whole log's vocabularies (categoricals:
   integers, not text, through the shuffle), Dask's own shuffle on ``__bucket``, each partition sorted
   by bucket and row.
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
from calibration.cluster_plan import (
    Piece,
    Plan,
    check_pieces,
    error_fields,
    first_layout,
    make_plan,
    plan_sha256,
    read_bytes,
    read_piece,
)
from calibration.eventlog import EventLog
from calibration.load import log_from_table, refusal_order
from calibration.mapping import Mapping
from calibration.readers import column_sources
from calibration.stats import at_log_end
from calibration.timestamps import parse_time_ns
from sim.errors import InputError

# The task shuffle holds the whole log in the workers' memory; where it fits it is about twice as fast as
# P2P (49.8 M events, 2 workers: 53 s and 4.3 GB against 112 s and 3.6 GB). Its busiest worker peaked at
# 1.6-1.9 bytes per uncompressed Parquet byte of its share of the columns read; Dask spills from 0.6-0.7
# of a worker's memory limit.
TASK_SHUFFLE_BYTES_PER_BYTE = 2.0
TASK_SHUFFLE_SHARE = 0.5  # of the smallest worker memory limit
TASK_SHUFFLE_ROWS = 10_500_000  # workers without a memory limit: the task shuffle up to this many rows
MIN_WORKER_BYTES = 2 * 10**9  # a worker's memory limit below which calibrate says so (small_workers_note)


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


@contextmanager
def local_client(workers: int) -> Iterator[Any]:
    """A ``distributed.Client`` on a ``LocalCluster`` of ``workers`` one-thread worker processes.

    The workers keep glibc's own malloc trimming: Dask's default (``MALLOC_TRIM_THRESHOLD_=65536``) also
    fixes the mmap threshold, so every array of a bucket is mapped and faulted in afresh, and the
    per-bucket statistics take about 1.5 times as long. The price: freed memory stays with the workers
    (a P2P shuffle's buffers: ~1.3 GB more at 49.8 M events). A variable set in the environment wins."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
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
        plan = make_plan(path, mapping, stages, conversion_stage, before, buckets)
        plan.layout = first_layout(plan)
        with ThreadPoolExecutor(max_workers=1) as pool:  # hashing overlaps the cluster's work
            digest = pool.submit(plan_sha256, plan)
            self.end = check_pieces(plan, client)
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
        limits = memory_limits(self.client)
        method = dask.config.get("dataframe.shuffle.method", None) or (
            "tasks" if task_shuffle_fits(plan, limits) else "p2p")
        # P2P spills to disk, into one partition a bucket (memory per task ~ a bucket)
        n_out = (plan.buckets if method == "p2p"
                 else min(plan.buckets, max(len(plan.pieces), 2 * max(len(limits), 1))))
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


# ---------------------------------------------------------------------------------------------- pass B


def _frame(plan: Plan, piece: Piece) -> pd.DataFrame:
    """A piece's kept rows with their file row number and bucket (the shuffle's input)."""
    table, rows = read_piece(plan, piece)
    table = _coded(table, plan)
    src = column_sources(plan.mapping)
    if not pa.types.is_timestamp(table.schema.field(src["timestamp"]).type):
        # text times parsed once here (pass A checked them): 8 bytes a row through the shuffle, and
        # parse_time reads the typed UTC column back to the same days
        ns = parse_time_ns(table[src["timestamp"]], Path(plan.source), src["timestamp"], rows, plan.mapping.timestamp,
                       layout=plan.layout)
        i = table.schema.get_field_index(src["timestamp"])
        table = table.set_column(i, src["timestamp"], pa.array(ns, pa.int64()).cast(pa.timestamp("ns", "UTC")))
    # per row: cheaper than encoding the ids first (pass A refused empty ones)
    bucket = bucket_of(pc.cast(table[src["customer_id"]], pa.string()), plan.buckets)
    table = table.append_column("__row", pa.array(rows)).append_column("__bucket", pa.array(bucket))
    return _pandas(table)


def _vocabularies(plan: Plan) -> dict[str, list[str]]:
    """The columns whose every kept value is in a whole-log vocabulary (pass A checked it), with it:
    they travel through the shuffle as codes (pandas categoricals), not as text."""
    mp, src = plan.mapping, column_sources(plan.mapping)
    roles = [(src["touchpoint"], plan.touchpoints)]
    if mp.stage is None:
        roles.append((src["stage"], plan.stages))
    if mp.persona is None and src["persona"] in plan.header:
        roles.append((src["persona"], plan.personas))
    names = [name for name, _ in roles]
    return {name: list(vocab) for name, vocab in roles if names.count(name) == 1 and vocab is not None}


def _coded(table: pa.Table, plan: Plan) -> pa.Table:
    """The text columns of `_vocabularies` as dictionary arrays over their vocabulary; any other
    dictionary column as plain values (a column of numbers stays as it is: pass A named it by str())."""
    vocabularies = _vocabularies(plan)
    for i, f in enumerate(table.schema):
        value_type = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if f.name in vocabularies and (pa.types.is_string(value_type) or pa.types.is_large_string(value_type)):
            vocab = pa.array(vocabularies[f.name], pa.string())
            codes = pc.index_in(pc.cast(table[f.name], pa.string()), value_set=vocab).combine_chunks()
            if codes.null_count:  # pass A saw every kept value: a value outside is a bug here
                raise RuntimeError(f"column {f.name!r} holds a value outside the log's vocabulary")
            table = table.set_column(i, f.name, pa.DictionaryArray.from_arrays(codes, vocab))
        elif value_type != f.type:
            table = table.set_column(i, f.name, pc.cast(table[f.name], value_type))
    return table


def _pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow-backed columns, and categoricals for the dictionary ones (codes through the shuffle)."""
    return table.to_pandas(types_mapper=lambda t: None if pa.types.is_dictionary(t) else pd.ArrowDtype(t))


def _meta(plan: Plan) -> pd.DataFrame:
    with plan.fs.open(plan.pieces[0].file, "rb") as fh:
        schema = pq.ParquetFile(fh).schema_arrow
    empty = _coded(schema.empty_table().select(plan.columns), plan)
    empty = empty.append_column("__row", pa.array([], pa.int64())).append_column("__bucket", pa.array([], pa.int64()))
    return _pandas(empty)


def task_shuffle_fits(plan: Plan, limits: list[int]) -> bool:
    """Whether Dask's task shuffle of the plan's columns fits the workers' memory (``limits``: each
    worker's memory limit in bytes, 0 for none) with room to spare; else P2P, which spills to disk."""
    if not limits or min(limits) <= 0:  # a worker without a limit: nothing to size the log by
        return sum(p.n_rows for p in plan.pieces) <= TASK_SHUFFLE_ROWS
    share = read_bytes(plan) / len(limits)
    return TASK_SHUFFLE_BYTES_PER_BYTE * share <= TASK_SHUFFLE_SHARE * min(limits)


def memory_limits(client) -> list[int]:
    """Each worker's memory limit in bytes (0: none)."""
    return [int(w.get("memory_limit") or 0) for w in client.scheduler_info().get("workers", {}).values()]


def small_workers_note(limits: list[int]) -> str | None:
    """A line when a worker's memory limit is under ``MIN_WORKER_BYTES``: a log too big for the task
    shuffle goes through P2P, which can pause such a worker (Dask pauses one past 80 % of its limit;
    measured: a 1 GB worker, 10 M events, unfinished after 10 minutes)."""
    small = [x for x in limits if 0 < x < MIN_WORKER_BYTES]
    if not small:
        return None
    return (f"the smallest Dask worker has a {min(small) / 1e9:.1f} GB memory limit: a log too big to shuffle "
            "in memory may pause it; give each worker at least 2 GB (docs/cluster.md)")


@dataclass
class _Failure:
    """An InputError a bucket raised, with the first row it names (to pick the log's first)."""

    bucket: int
    order: tuple[int, int]  # calibration.load.refusal_order
    fields: dict


def _part(table: pa.Table, rows: np.ndarray, plan: Plan) -> EventLog:
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
    bucket, rows = whole["__bucket"].to_numpy(), whole["__row"].to_numpy()
    # file rows are unique and arrive in a few ascending runs (timsort); then a radix sort on the bucket
    order = np.argsort(rows, kind="stable")
    small = bucket[order].astype(np.uint16) if bucket.size and bucket.max() < 1 << 16 else bucket[order]
    order = order[np.argsort(small, kind="stable")]
    whole = whole.take(order)
    return bucket[order], rows[order], whole.drop_columns(["__row", "__bucket"]).replace_schema_metadata(
        {"journey_header": "\x1f".join(header)})


def _bucket_ids(held: tuple[np.ndarray, np.ndarray, pa.Table]) -> list[int]:
    """The buckets a sorted partition holds."""
    return [int(b) for b in np.unique(held[0])]


def _sweep_partition(held: tuple[np.ndarray, np.ndarray, pa.Table], plan: Plan, compute, build,
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
            out.append((b, _Failure(b, refusal_order(err), error_fields(err))))
            continue
        out.append((b, compute(b, part, None if given is None else given.get(b))))
    return out
