"""Pass 1 of the streaming reader (calibration/stream.py): each batch of the file checked as `load_events`
checks its rows, its names noted and its rows cut into their buckets.

Batches are examined on worker threads (numpy and Arrow release the GIL) and taken back in file order,
so the first error of each kind, the names and every bucket's rows are those one thread would give.
The batches before the file's time layout is known (a ``dayfirst`` rule reads it from the first kept
row) are examined one at a time.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from calibration.buckets import bucket_of
from calibration.columns import no_nulls
from calibration.load import check_filter_columns, check_required, filter_rows
from calibration.mapping import Mapping
from calibration.readers import READ_ERRORS, column_sources, header_names, wanted_columns
from calibration.row_checks import TIME, VALUE, Rank, check_rows, kind_of, persona_names
from calibration.timestamps import NS_PER_DAY, Layout, ZoneTally, layout_of
from sim.errors import InputError

_TIME = pa.timestamp("ns", "UTC")  # spilled times are parsed once, in pass 1
ROW = "__row"
HOLD_BYTES = 768 << 20  # Arrow bytes of buckets held in memory before they go to disk
# beside the reader's thread; two even on two cores, where the parse and the checks then share both
_WORKERS = min(4, max(2, (os.cpu_count() or 2) - 1))
_AHEAD = _WORKERS + 2  # batches examined ahead of the one taken back: bounds memory

# the order load_events checks things in: the first failing check wins, whatever row it is on; the row
# checks (calibration/row_checks.py) come after the whole log's column checks, the split's check last
_EMPTY, _FILTER_COLUMN, _NO_ROWS, _REQUIRED = range(4)
_ROWS = _REQUIRED + 1  # a row check's rank (check, kind) is (_ROWS + check, kind) here
_BEFORE = _ROWS + VALUE + 1


def spill_path(folder: Path, bucket: int) -> Path:
    """The spill file of one bucket."""
    return folder / f"{bucket:04d}.arrows"


@dataclass
class _Batch:
    """What one batch tells: its checks' errors (in the order found), names, and its rows by bucket."""

    errors: list[tuple[Rank, InputError]] = field(default_factory=list)  # row checks' ranks
    touchpoints: set[str] = field(default_factory=set)
    personas: set = field(default_factory=set)  # names; a banded [persona] rule's label indices
    zones: ZoneTally = field(default_factory=ZoneTally)
    kept_rows: bool = False  # any row left after the [filter]
    spill: pa.Table | None = None  # the kept rows, sorted by bucket (None: nothing to spill)
    bounds: np.ndarray | None = None  # spill's rows of bucket b: bounds[b]:bounds[b + 1]
    kept: np.ndarray | None = None  # rows before the split, per bucket
    end: float = -np.inf  # the last of those times, ns


class FirstPass:
    """Pass 1's state: the first error of each kind, the names, and the buckets (held, or in spill files)."""

    def __init__(self, path: Path, mp: Mapping, stage_names: list[str], before: float | None, buckets: int,
                 folder: Path, hold: int = HOLD_BYTES, need: int = 0, encode: list[str] | None = None) -> None:
        self.path, self.mp, self.stages, self.before, self.buckets, self.folder = \
            path, mp, stage_names, before, buckets, folder
        self.columns = column_sources(mp)
        self.errors: dict[tuple[int, int], InputError] = {}
        self.touchpoints: set[str] = set()
        self.personas: set = set()  # as row_checks.Checked.personas
        self.rows_read = 0
        self.any_kept = False
        self.end = -np.inf  # ns
        self.kept = np.zeros(buckets, dtype=np.int64)
        self.layout: Layout | None = None
        self.layout_read = False
        self.layout_failed = False
        self.read_columns: list[str] | None = None
        self.encode = encode or []  # text columns to dictionary-encode (a CSV's low-cardinality ones)
        self.writers: dict[int, ipc.RecordBatchStreamWriter] = {}
        self.sinks: list[pa.NativeFile] = []
        # buckets are held in memory until they pass HOLD_BYTES, then spilled: a log that fits
        # skips the disk, a longer one keeps memory bounded
        self.hold, self.need = hold, need
        self.held: dict[int, list[pa.Table]] | None = {} if hold > 0 else None
        self.held_bytes = 0
        self.schema: pa.Schema | None = None
        self.zones = ZoneTally()
        self.reading: Path | str = path  # the CSV file being read (a folder's), for a parse error's message
        self._only_filter = set(mp.filter) - wanted_columns(mp.model_copy(update={"filter": {}}))

    # -- errors ------------------------------------------------------------------------------------
    def _record(self, kind: int, exc: InputError, sub: int = 0) -> None:
        self.errors.setdefault((kind, sub), exc)  # batches are taken in file order: the first row wins

    def raise_first(self) -> None:
        """The error load_events would raise: the first check (in its order) that fails."""
        if self.errors:
            raise self.errors[min(self.errors)]

    # -- the batches -------------------------------------------------------------------------------
    def add_all(self, tables: Iterable[pa.Table]) -> None:
        """Check the batches of one file (in file order), note their names and keep their rows by bucket.

        An error the batches' source raises comes after the batches read before it have been taken.
        """
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            pending: deque[Future] = deque()
            batches = iter(tables)
            while True:
                try:
                    table = next(batches)
                except StopIteration:
                    break
                except (InputError, *READ_ERRORS):  # re-raised once the batches read before it are taken
                    self._take_all(pending)
                    raise
                job = self._admit(table)
                if job is None:
                    continue
                if self._settled():
                    pending.append(pool.submit(self._examine, *job))
                    while len(pending) > _AHEAD:
                        self._take(pending.popleft().result())
                else:  # the layout is read from this batch, perhaps
                    self._take_all(pending)
                    self._take(self._examine(*job))
            self._take_all(pending)

    def _take_all(self, pending: deque[Future]) -> None:
        while pending:
            self._take(pending.popleft().result())

    def _settled(self) -> bool:
        """Every later batch is examined the same way (the time layout is known): workers may run."""
        return self.mp.timestamp is None or self.layout_read

    def _admit(self, table: pa.Table) -> tuple[pa.Table, np.ndarray] | None:
        """Number a batch's rows (the file's checks on its first); None when no row needs examining."""
        n = table.num_rows
        rows = np.arange(self.rows_read + 1, self.rows_read + n + 1, dtype=np.int64)
        self.rows_read += n
        if self.read_columns is None:
            self.read_columns = list(table.column_names)
            self._structure(table)
        if n == 0 or any(k[0] <= _REQUIRED for k in self.errors):
            return None
        return table, rows

    def _examine(self, table: pa.Table, rows: np.ndarray) -> _Batch:
        """One batch's checks (in load_events' order), names and bucketed rows; changes nothing here once
        settled, so that workers may run it."""
        out = _Batch()
        for name in self.encode:
            table = table.set_column(table.schema.get_field_index(name), name, pc.dictionary_encode(table[name]))
        table, rows = filter_rows(table, rows, self.mp, self.path)
        if table.num_rows == 0:
            return out
        out.kept_rows = True
        if not self._settled():
            self._read_layout(out, table, rows)
        checked = check_rows(table, rows, self.mp, self.stages, self.path, layout=self.layout,
                             read_times=not self.layout_failed)
        if checked.failure is not None:
            out.errors.append(checked.failure)
        out.touchpoints, out.personas, out.zones = checked.touchpoints, checked.personas, checked.zones
        # with an error to raise (perhaps an earlier batch's layout), there is nothing to spill
        if not out.errors and checked.ns is not None:
            self._bucketed(out, table, rows, checked.customers, checked.ns)
        return out

    def _take(self, batch: _Batch) -> None:
        """A batch's findings, in file order: errors, names, and its rows into their buckets."""
        self.any_kept |= batch.kept_rows
        for (check, kind), exc in batch.errors:
            self._record(_ROWS + check, exc, kind)
        self.touchpoints |= batch.touchpoints
        self.personas |= batch.personas
        self.zones.add(batch.zones)
        if self.errors or batch.spill is None:
            return  # an error will be raised: no need to spill
        self.end = max(self.end, batch.end)
        self.kept += batch.kept
        spill = batch.spill
        if self.schema is None:
            self.schema = spill.schema
        elif spill.schema != self.schema:  # a folder's files may type a column differently
            spill = spill.cast(self.schema)
        bounds = batch.bounds
        for b in np.flatnonzero(np.diff(bounds)):
            piece = spill.slice(bounds[b], bounds[b + 1] - bounds[b])
            if self.held is not None:
                self.held.setdefault(int(b), []).append(piece)
            else:
                self._write(int(b), piece)
        if self.held is not None:
            self.held_bytes += spill.nbytes
            if self.held_bytes > self.hold:
                self._spill_held()

    def _structure(self, table: pa.Table) -> None:
        """The whole log's column checks, on the first batch (every batch has the same columns)."""
        present, header = table.column_names, header_names(table)
        try:
            check_filter_columns(present, header, self.mp, self.path)
        except InputError as exc:
            self._record(_FILTER_COLUMN, exc)
            return
        try:
            check_required(present, header, self.mp, self.columns, self.path)
        except InputError as exc:
            self._record(_REQUIRED, exc)

    def _read_layout(self, out: _Batch, table: pa.Table, rows: np.ndarray) -> None:
        """A ``dayfirst`` rule's layout, read from the file's first kept row, as load_events reads it from
        the whole file's (only while unsettled: batches are examined one at a time)."""
        column, rule = self.columns["timestamp"], self.mp.timestamp
        arr = table[column]
        if (pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type) or pa.types.is_integer(arr.type)
                or pa.types.is_floating(arr.type)):
            return
        s = pc.cast(arr, pa.string())
        try:
            no_nulls(s, self.path, column, rows)
        except InputError:
            return  # the row checks refuse the empty time, which comes before any layout
        self.layout_read = True
        try:
            self.layout = layout_of(str(s[0]), rule, self.path, column, int(rows[0]))
        except InputError as exc:
            out.errors.append(((TIME, kind_of(exc)), exc))
            self.layout_failed = True

    def _bucketed(self, out: _Batch, table: pa.Table, rows: np.ndarray, cust: pa.ChunkedArray, ns: np.ndarray
                  ) -> None:
        """The batch's rows sorted by bucket, times already parsed (nanoseconds UTC)."""
        bucket = bucket_of(cust, self.buckets)  # per row: cheaper than encoding the ids first
        days = ns.astype(np.float64) / NS_PER_DAY  # as load_events compares them
        keep = days < self.before if self.before is not None else np.ones(days.size, dtype=bool)
        if keep.any():
            out.end = float(ns[keep].max())
        out.kept = np.bincount(bucket[keep], minlength=self.buckets)
        cols = self.columns
        columns = {}
        for name in table.column_names:
            if name in self._only_filter:
                continue
            if name == cols["customer_id"]:
                columns[name] = cust
            elif name == cols["timestamp"]:
                columns[name] = pc.cast(pa.array(ns), _TIME)
            else:
                columns[name] = table[name]
        columns[ROW] = pa.array(rows)
        small = bucket.astype(np.uint8 if self.buckets <= 256 else np.uint16)
        order = np.argsort(small, kind="stable")  # a radix sort on small integers
        out.spill = pa.table(columns).take(order)
        out.bounds = np.searchsorted(bucket[order], np.arange(self.buckets + 1))

    # -- the buckets -------------------------------------------------------------------------------
    def _spill_held(self) -> None:
        """Write the buckets held in memory to their files; from now on every batch goes to disk."""
        held, self.held = self.held or {}, None
        for b in sorted(held):
            for piece in held[b]:
                self._write(b, piece)

    def _write(self, b: int, piece: pa.Table) -> None:
        try:
            self._writer(b).write_table(piece)
        except OSError as exc:  # a full disk, most likely: the spill folder is the user's to choose
            raise self._no_room(exc) from None

    def _no_room(self, exc: OSError) -> InputError:
        return InputError(f"cannot write the stream's temporary files: {str(exc).splitlines()[0][:160]}",
                          file=self.folder.parent, hint=f"set TMPDIR to a folder with room for about "
                          f"{max(self.need / 2**30, 0.1):.1f} GB (this log's rows as Arrow), or free space there")

    def _writer(self, b: int) -> ipc.RecordBatchStreamWriter:
        w = self.writers.get(b)
        if w is None:
            sink = pa.OSFile(str(spill_path(self.folder, b)), "wb")
            self.sinks.append(sink)
            w = self.writers[b] = ipc.new_stream(sink, self.schema)
        return w

    # -- the end -----------------------------------------------------------------------------------
    def finish(self) -> None:
        """Close the spill files; the whole log's checks that need every row."""
        self._close()
        if self.rows_read == 0:
            self._record(_EMPTY, InputError("the event log is empty (no data rows)", file=self.path))
        elif not self.any_kept and not any(k[0] <= _REQUIRED for k in self.errors):
            self._record(_NO_ROWS, InputError("no rows left after the mapping's [filter]", file=self.path,
                                              where="[filter]", hint="check the filter values"))
        elif self.before is not None and not self.kept.any():
            self._record(_BEFORE, InputError("no rows before the split", file=self.path, where="--split"))

    def _close(self, *, dropping: bool = False) -> None:  # dropping: removed next, a failed flush is moot
        files, self.writers, self.sinks = [*self.writers.values(), *self.sinks], {}, []
        for f in files:
            try:
                f.close()
            except OSError as exc:
                if not dropping:
                    raise self._no_room(exc) from None

    def discard(self) -> None:
        """Close and remove the spill files (pass 1 starts again, or failed)."""
        self._close(dropping=True)
        self.held, self.held_bytes = ({} if self.hold > 0 else None), 0
        for f in self.folder.glob("*.arrows"):
            f.unlink()

    def persona_list(self) -> list[str]:
        """The whole log's personas, as load_events lists them."""
        return persona_names(self.mp, self.personas, self.read_columns or [])

    def persona_note(self) -> str | None:
        """notes["persona_column"]: where personas come from (None: everyone is "all")."""
        src = self.mp.persona.column if self.mp.persona is not None else self.columns["persona"]
        return src if self.mp.persona is not None or src in (self.read_columns or []) else None
