"""Stream an event log bigger than memory into its buckets (calibration/buckets.py), one at a time.

Pass 1 reads the file in batches (CSV, CSV.gz, Parquet, or a folder of Parquet files), checks every
row as `load_events` does, collects what the whole log needs (vocabularies, row count, last time,
sha256), and appends each batch's rows to its bucket's spill file (Arrow IPC stream, uncompressed).
`StreamedLog.parts()` then reads one spill file at a time: each bucket's `EventLog` is exactly the
one `split_log(load_events(...))` gives for it. Memory: one batch in pass 1, one bucket in parts().
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from calibration.buckets import BUCKETS, bucket_of
from calibration.columns import (
    derive_stage,
    distinct,
    no_nulls,
    parse_satisfaction,
    parse_value,
    persona_rule_codes,
    stage_codes,
)
from calibration.eventlog import EventLog, parse_stages
from calibration.load import as_mapping, check_required, filter_rows, log_from_table
from calibration.mapping import Mapping
from calibration.readers import (
    READ_ERRORS,
    column_sources,
    csv_convert,
    csv_header,
    csv_plan,
    dictionary_columns,
    open_raw,
    open_text,
    parquet_dictionaries,
    prefetched,
    read_error,
    wanted_columns,
)
from calibration.sources import dataset_files, is_local, is_parquet, is_url, same_columns
from calibration.timestamps import NS_PER_DAY, Layout, ZoneTally, layout_of, parse_time_ns
from sim.errors import InputError
from sim.limits import regular_file, sha256_of_files

Progress = Callable[[int, int], None]
_TIME = pa.timestamp("ns", "UTC")  # spilled times are parsed once, in pass 1
_ROW = "__row"
HOLD_BYTES = 768 << 20  # Arrow bytes of buckets held in memory before they go to disk
_BLOCK = 1 << 22  # CSV bytes per batch: the reader reads ~30 blocks ahead, so this bounds memory

# the order load_events checks things in: the first failing check wins, whatever row it is on
_EMPTY, _FILTER_COLUMN, _NO_ROWS, _REQUIRED, _CUSTOMER, _TIME_KIND, _TOUCHPOINT, _STAGE, _PERSONA, \
    _SATISFACTION, _VALUE, _BEFORE = range(12)


@dataclass
class StreamedLog:
    """A log read in pass 1: the whole log's metadata, and its buckets on disk (``parts()``).

    ``end`` is provisional: the last time of the rows [filter] and ``before`` keep; rows after a
    journey's end row are dropped only in parts(), so the log's true end is the largest part ``end``.
    """

    source: str
    sha256: str
    stages: list[str]
    conversion_stage: str
    touchpoints: list[str]
    personas: list[str]
    notes: dict
    end: float
    rows_read: int
    buckets: int
    files: list[Path]  # the local files read (the file, or the folder's in order), to hash; [] for a remote URL
    _mapping: Mapping = field(repr=False)
    _before: float | None = field(repr=False)
    _folder: Path = field(repr=False)
    _kept: np.ndarray = field(repr=False)  # rows each bucket keeps (before the split)
    _progress: Progress | None = field(default=None, repr=False)
    _held: dict[int, list[pa.Table]] | None = field(default=None, repr=False)  # buckets kept in memory

    def bucket_ids(self) -> list[int]:
        """The non-empty buckets, in order."""
        return [int(b) for b in np.flatnonzero(self._kept)]

    def part(self, bucket: int) -> EventLog:
        """One bucket's log (customers renumbered 0..n-1 by first row); safe to call from several threads.

        A per-customer problem (two personas, duplicate rows, a [persona] rule's empty first row) is
        raised by the bucket that has it.
        """
        mp = self._mapping.model_copy(update={"filter": {}})  # the spill holds the kept rows only
        if self._held is not None:
            table = pa.concat_tables(self._held[bucket])
        else:
            with pa.OSFile(str(_spill_path(self._folder, bucket))) as fh:
                table = ipc.open_stream(fh).read_all()
        # one chunk a column: coding a column of a batch's pieces walks every piece's dictionary
        table = table.combine_chunks()
        rows = table.column(_ROW).to_numpy()
        part = log_from_table(table.drop_columns([_ROW]), rows, mapping=mp, stages=self.stages,
                              conversion_stage=self.conversion_stage, source=self.source, sha256=self.sha256,
                              before=self._before, touchpoints=self.touchpoints, personas=self.personas)
        part.notes = dict(self.notes)  # the whole log's (pass 1 counted the time zones)
        return part

    def parts(self) -> Iterator[tuple[int, EventLog]]:
        """Each non-empty bucket's log, in bucket order (see `part`); the first bucket with a
        per-customer problem raises it."""
        todo = self.bucket_ids()
        for i, b in enumerate(todo):
            part = self.part(b)
            if self._progress is not None:
                self._progress(i + 1, len(todo))
            yield b, part

    def close(self) -> None:
        """Remove the spill files (and drop the buckets held in memory)."""
        self._held = None
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> StreamedLog:
        """The log itself."""
        return self

    def __exit__(self, *exc) -> None:
        """Remove the spill files."""
        self.close()


def open_stream(path: str | Path, *, stages: str | list[str] | None = None, conversion_stage: str | None = None,
                mapping: str | Path | Mapping | None = None, before: float | None = None, buckets: int = BUCKETS,
                progress: Progress | None = None, workdir: str | Path | None = None,
                block_size: int = _BLOCK, hold_bytes: int = HOLD_BYTES, hash_log: bool = True) -> StreamedLog:
    """Read the log once (bounded memory) into per-bucket spill files; the same checks and messages as
    `load_events`. ``path``: a CSV (optionally gzipped) or Parquet file, a folder of Parquet files, or
    the URL of one of those (``s3://``, ``file://``…; calibration/sources.py; a remote one
    is not hashed: ``sha256`` "", ``files`` []). ``progress(done, total)``: bytes in pass 1, then buckets
    in parts(). Buckets stay in memory while they take under ``hold_bytes`` (Arrow bytes), else they go
    to disk. ``hash_log=False``: no SHA-256 while reading (``sha256`` is ""; the caller hashes ``files``
    when a core is free)."""
    mp = as_mapping(mapping)
    stage_names, conv = parse_stages(stages if stages is not None else mp.stages,
                                     conversion_stage or mp.conversion_stage)
    if is_url(path):
        path, fs, files, local, parquet, folder = _url_files(str(path))
    else:
        path, fs, folder = Path(path), None, Path(path).is_dir()
        files, parquet = _folder_files(path) if folder else ([regular_file(path, "event log")], is_parquet(path))
        local = files
    texts = files if folder else [path]  # the CSV files read (named as given, a lone file)
    spill = Path(tempfile.mkdtemp(prefix="journey-stream-", dir=workdir))
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:  # hashing overlaps the reading
            digest = pool.submit(sha256_of_files, local) if hash_log and local else None
            # a log that may outgrow the hold goes to disk from the start: memory handed back after a
            # late spill stays with the allocator
            need = _arrow_bytes(files, fs, parquet)
            hold = hold_bytes if need <= hold_bytes else 0
            p = _read(path, files if parquet else texts, fs, parquet, mp, stage_names, before, buckets, spill, progress,
                      block_size, (hold, need))
            p.raise_first()
            sha = digest.result() if digest is not None else ""
    except BaseException:
        shutil.rmtree(spill, ignore_errors=True)
        raise
    return StreamedLog(
        source=str(path), sha256=sha, stages=stage_names, conversion_stage=conv, touchpoints=sorted(p.touchpoints),
        personas=p.persona_list(), notes={"persona_column": p.persona_note(), **p.zones.note()}, end=p.end / NS_PER_DAY,
        rows_read=p.rows_read, buckets=buckets, files=local, _mapping=mp, _before=before, _folder=spill, _kept=p.kept,
        _progress=progress, _held=p.held)


def _url_files(url: str) -> tuple[str, pafs.FileSystem, list[str], list[Path], bool, bool]:
    """A URL's files (calibration/sources.py), the filesystem Arrow reads them through, the same files
    as local paths when the URL is this machine's (``file://``: hashed as a path is), whether they are
    Parquet (a folder's Parquet files, or one file named so; else CSV), and whether the URL is a folder."""
    listed = dataset_files(url)
    fsspec_fs, files = listed.fs, listed.files
    local = [Path(f) for f in files] if is_local(fsspec_fs) else []
    # files named with their scheme, as messages show them (fsspec takes either form)
    return (url, pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_fs)), [fsspec_fs.unstrip_protocol(f) for f in files],
            local, listed.parquet, listed.folder)


def _size(f: Path | str, fs: pafs.FileSystem | None) -> int:
    return f.stat().st_size if fs is None else fs.get_file_info(str(f)).size


def _parquet(f: Path | str, fs: pafs.FileSystem | None, **options) -> pq.ParquetFile:
    """A Parquet file, here or through a URL's filesystem."""
    return pq.ParquetFile(f if fs is None else fs.open_input_file(str(f)), **options)


def _arrow_bytes(files: list[Path] | list[str], fs: pafs.FileSystem | None = None, parquet: bool = False) -> int:
    """About how many bytes the log takes as Arrow columns: Parquet's uncompressed size, else the text's
    (a gzipped CSV inflates about five times)."""
    total = 0
    for f in files:
        if parquet:
            try:
                meta = _parquet(f, fs).metadata
            except READ_ERRORS:  # not Parquet after all, or unreadable: the reader says so, in one line
                total += _size(f, fs)
                continue
            total += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        else:
            total += _size(f, fs) * (5 if str(f).lower().endswith(".gz") else 1)
    return total


def _folder_files(path: Path) -> tuple[list[Path], bool]:
    """A local folder's files, by the rule the cluster lists them with (calibration/sources.py), and
    whether they are Parquet (else CSV)."""
    listed = dataset_files(str(path))
    root = os.path.abspath(path)  # fsspec lists absolute paths; messages name them under the path given
    return [path / os.path.relpath(f, root) for f in listed.files], listed.parquet


def _spill_path(folder: Path, bucket: int) -> Path:
    return folder / f"{bucket:04d}.arrows"


def _read(path: Path | str, files: list[Path] | list[str], fs: pafs.FileSystem | None, parquet: bool, mp: Mapping,
          stage_names: list[str], before: float | None, buckets: int, folder: Path, progress: Progress | None,
          block: int, hold: tuple[int, int] = (HOLD_BYTES, 0)) -> _Pass:
    """Pass 1 over the file(s); CSV restarts (with fresh spill files) where the in-memory reader retries.
    ``files``: the Parquet files, or the CSV files (a folder's share the first one's header and plan);
    ``fs``: the filesystem of a URL's files (None: local paths); ``hold``: the bytes held in memory before
    the buckets go to disk, and the log's Arrow size (for a full disk's message)."""
    if parquet:
        p = _Pass(path, mp, stage_names, before, buckets, folder, *hold)
        _read_parquet(p, files, fs, progress)
        return p
    try:
        plan = csv_plan(files[0], mp, fs)
    except InputError:
        raise
    except READ_ERRORS as exc:
        raise read_error(exc, files[0]) from None
    while True:
        p = _Pass(path, mp, stage_names, before, buckets, folder, *hold)
        try:
            _read_csv(p, files, fs, plan, block, progress)
            return p
        except pa.ArrowInvalid as exc:
            p.discard()
            if "straddl" in str(exc) and block < 1 << 30:
                block *= 8  # a row longer than a block (a 1 MiB field)
            elif plan.time_type is not None:
                plan.types[plan.time_column] = pa.string()  # mixed or odd timestamps: parse them as text
                plan.time_type = None
            else:
                raise read_error(exc, p.reading, plan.header) from None
        except READ_ERRORS as exc:
            p.discard()
            raise read_error(exc, p.reading, plan.header) from None


def _read_csv(p: _Pass, files: list[Path] | list[str], fs: pafs.FileSystem | None, plan, block: int,
              progress: Progress | None) -> None:
    sizes = [_size(f, fs) for f in files]
    total, done = sum(sizes), 0
    encode = dictionary_columns(plan)
    for i, (f, size) in enumerate(zip(files, sizes)):
        p.reading = f
        if i:  # the first file's header and plan read every file
            same_columns(csv_header(f, plan.parse, fs), plan.header, f)
        with open_raw(f, fs) as raw:
            stream = open_text(f, fs, raw)
            # one thread: the prefetch thread is the reader's, the other core checks batches; a parse
            # error then names its row. The parser is the slower of the two, so the low-cardinality
            # columns are read as text and dictionary-encoded here (the same table as the reader's own)
            reader = pacsv.open_csv(stream, parse_options=plan.parse,
                                    read_options=pacsv.ReadOptions(block_size=block, use_threads=False),
                                    convert_options=csv_convert(plan, dictionaries=False))
            for batch in prefetched(reader):
                table = pa.Table.from_batches([batch]).replace_schema_metadata(plan.metadata)
                for name in encode:
                    table = table.set_column(table.schema.get_field_index(name), name,
                                             pc.dictionary_encode(table[name]))
                p.add(table)
                if progress is not None:
                    progress(done + min(raw.tell(), size), total)
        done += size
    p.finish()


def _read_parquet(p: _Pass, files: list[Path] | list[str], fs: pafs.FileSystem | None,
                  progress: Progress | None) -> None:
    done = 0
    wanted = wanted_columns(p.mp)
    try:
        sizes = [_size(f, fs) for f in files]
    except READ_ERRORS as exc:
        raise read_error(exc, p.path) from None
    total = sum(sizes)
    header: list[str] | None = None
    for f, size in zip(files, sizes):
        try:
            pf = _parquet(f, fs)
            header = header or pf.schema_arrow.names
            same_columns(pf.schema_arrow.names, header, f)
            dictionaries = parquet_dictionaries(pf.schema_arrow, p.mp)
            if dictionaries:  # the footer already read, not fetched again
                pf = _parquet(f, fs, read_dictionary=dictionaries, metadata=pf.metadata)
            names = pf.schema_arrow.names
            meta = {"journey_header": "\x1f".join(names)}
            n = max(pf.metadata.num_rows, 1)
            seen = 0
            for batch in prefetched(pf.iter_batches(batch_size=1 << 18, columns=[c for c in names if c in wanted])):
                p.add(pa.Table.from_batches([batch]).replace_schema_metadata(meta))
                seen += batch.num_rows
                if progress is not None:
                    progress(done + size * seen // n, total)
        except READ_ERRORS as exc:
            p.discard()
            raise read_error(exc, f if len(files) > 1 else p.path) from None
        done += size
    p.finish()


class _Pass:
    """Pass 1's state: the first error of each kind, the vocabularies, and the open spill files."""

    def __init__(self, path: Path, mp: Mapping, stage_names: list[str], before: float | None, buckets: int,
                 folder: Path, hold: int = HOLD_BYTES, need: int = 0) -> None:
        self.path, self.mp, self.stages, self.before, self.buckets, self.folder = \
            path, mp, stage_names, before, buckets, folder
        self.columns = column_sources(mp)
        self.errors: dict[tuple[int, int], InputError] = {}
        self.touchpoints: set[str] = set()
        self.personas: set[str] = set()
        self.bands: set[int] = set()
        self.rows_read = 0
        self.any_kept = False
        self.end = -np.inf  # ns
        self.kept = np.zeros(buckets, dtype=np.int64)
        self.layout: Layout | None = None
        self.layout_read = False
        self.layout_failed = False
        self.read_columns: list[str] | None = None
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

    # -- errors ------------------------------------------------------------------------------------
    def _record(self, kind: int, exc: InputError) -> None:
        text = exc.message
        sub = 0 if text.startswith("empty value") else 2 if ("outside the years" in text or "out of range" in text) \
            else 1
        self.errors.setdefault((kind, sub), exc)

    def _check(self, kind: int, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            self._record(kind, exc)
            return None

    def raise_first(self) -> None:
        """The error load_events would raise: the first check (in its order) that fails."""
        if self.errors:
            raise self.errors[min(self.errors)]

    # -- one batch ---------------------------------------------------------------------------------
    def add(self, table: pa.Table) -> None:
        """Check one batch of the file (in file order), note its vocabulary and spill its rows."""
        n = table.num_rows
        rows = np.arange(self.rows_read + 1, self.rows_read + n + 1, dtype=np.int64)
        self.rows_read += n
        if self.read_columns is None:
            self.read_columns = list(table.column_names)
            self._structure(table)
        if n == 0 or any(k[0] <= _REQUIRED for k in self.errors):
            return
        table, rows = filter_rows(table, rows, self.mp, self.path)
        if table.num_rows == 0:
            return
        self.any_kept = True
        cols, path, mp = self.columns, self.path, self.mp
        cust = pc.cast(table[cols["customer_id"]], pa.string())
        self._check(_CUSTOMER, no_nulls, cust, path, cols["customer_id"], rows)
        ns = self._time(table[cols["timestamp"]], rows)
        tp = table[cols["touchpoint"]]
        if self._check(_TOUCHPOINT, no_nulls, tp, path, cols["touchpoint"], rows) is None and not tp.null_count:
            self.touchpoints.update(distinct(tp))
        if mp.stage is not None:
            self._check(_STAGE, derive_stage, table, mp, self.stages, path, rows)
        elif not self._known_stages(table[cols["stage"]]):
            self._check(_STAGE, stage_codes, table[cols["stage"]], self.stages, path, cols["stage"], rows)
        self._persona(table, rows)
        if cols["satisfaction"] in table.column_names:
            self._check(_SATISFACTION, parse_satisfaction, table[cols["satisfaction"]], path, cols["satisfaction"],
                        rows)
        if cols["value"] in table.column_names:
            self._check(_VALUE, parse_value, table[cols["value"]], path, cols["value"], rows)
        if self.errors or ns is None:
            return  # an error will be raised: no need to spill
        self._spill(table, rows, cust, ns)

    def _structure(self, table: pa.Table) -> None:
        """The whole log's column checks, on the first batch (every batch has the same columns)."""
        for column in self.mp.filter:
            if column not in table.column_names:
                try:
                    filter_rows(table.slice(0, 0), np.zeros(0, dtype=np.int64), self.mp, self.path)
                except InputError as exc:
                    self._record(_FILTER_COLUMN, exc)
                return
        try:
            check_required(table, self.mp, self.columns, self.path)
        except InputError as exc:
            self._record(_REQUIRED, exc)

    def _time(self, arr: pa.ChunkedArray, rows: np.ndarray) -> np.ndarray | None:
        """UTC nanoseconds; a ``dayfirst`` layout read once, from the file's first kept row."""
        column = self.columns["timestamp"]
        rule = self.mp.timestamp
        text = not (pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type) or pa.types.is_integer(arr.type)
                    or pa.types.is_floating(arr.type))
        if not self.layout_read and rule is not None and text:
            s = pc.cast(arr, pa.string())
            if self._check(_TIME_KIND, no_nulls, s, self.path, column, rows) is None and s.null_count:
                return None
            self.layout_read = True
            try:
                self.layout = layout_of(str(s[0]), rule, self.path, column, int(rows[0]))
            except InputError as exc:
                self._record(_TIME_KIND, exc)
                self.layout_failed = True
        if self.layout_failed:  # still look for empty cells (reported first)
            self._check(_TIME_KIND, no_nulls, arr, self.path, column, rows)
            return None
        return self._check(_TIME_KIND, parse_time_ns, arr, self.path, column, rows, rule, layout=self.layout,
                           zones=self.zones)

    def _known_stages(self, arr: pa.ChunkedArray) -> bool:
        """Every row names a known stage, by the dictionary entries the rows use alone (`distinct`)."""
        if arr.null_count or not pa.types.is_dictionary(arr.type):
            return False
        return set(distinct(arr)) <= set(self.stages)

    def _persona(self, table: pa.Table, rows: np.ndarray) -> None:
        mp, path = self.mp, self.path
        if mp.persona is not None:
            got = self._check(_PERSONA, persona_rule_codes, table, mp, path)
            if got is not None:
                codes, names = got
                if mp.persona.bands is None:
                    self.personas.update(names)
                else:
                    self.bands.update(int(i) for i in np.unique(codes[codes >= 0]))
            return
        src = self.columns["persona"]
        if src in table.column_names:
            arr = table[src]
            if self._check(_PERSONA, no_nulls, arr, path, src, rows) is None and not arr.null_count:
                self.personas.update(distinct(arr))

    def _spill(self, table: pa.Table, rows: np.ndarray, cust: pa.ChunkedArray, ns: np.ndarray) -> None:
        """Append each row to its bucket's file, times already parsed (nanoseconds UTC)."""
        bucket = bucket_of(cust, self.buckets)  # per row: cheaper than encoding the ids first
        days = ns.astype(np.float64) / NS_PER_DAY  # as load_events compares them
        keep = days < self.before if self.before is not None else np.ones(days.size, dtype=bool)
        if keep.any():
            self.end = max(self.end, float(ns[keep].max()))
        self.kept += np.bincount(bucket[keep], minlength=self.buckets)
        cols = self.columns
        only_filter = set(self.mp.filter) - (wanted_columns(self.mp.model_copy(update={"filter": {}})))
        out = {}
        for name in table.column_names:
            if name in only_filter:
                continue
            if name == cols["customer_id"]:
                out[name] = cust
            elif name == cols["timestamp"]:
                out[name] = pc.cast(pa.array(ns), _TIME)
            else:
                out[name] = table[name]
        out[_ROW] = pa.array(rows)
        spill = pa.table(out)
        if self.schema is None:
            self.schema = spill.schema
        elif spill.schema != self.schema:  # a folder's files may type a column differently
            spill = spill.cast(self.schema)
        small = bucket.astype(np.uint8 if self.buckets <= 256 else np.uint16)
        order = np.argsort(small, kind="stable")  # a radix sort on small integers
        spill = spill.take(order)
        bounds = np.searchsorted(bucket[order], np.arange(self.buckets + 1))
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
            sink = pa.OSFile(str(_spill_path(self.folder, b)), "wb")
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
        rule = self.mp.persona
        if rule is not None and rule.bands is not None:
            used = sorted(self.bands) or range(len(rule.labels))  # no one in any band: every label
            return [rule.labels[i] for i in used]
        if rule is not None or self.columns["persona"] in (self.read_columns or []):
            return sorted(self.personas)
        return ["all"]

    def persona_note(self) -> str | None:
        """notes["persona_column"]: where personas come from (None: everyone is "all")."""
        src = self.mp.persona.column if self.mp.persona is not None else self.columns["persona"]
        return src if self.mp.persona is not None or src in (self.read_columns or []) else None

