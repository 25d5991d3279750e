"""Stream an event log bigger than memory into its buckets (calibration/buckets.py), one at a time.

Pass 1 reads the file in batches (CSV, CSV.gz, Parquet, or a folder of Parquet files) and hands them to
calibration/first_pass.py, which checks every row as `load_events` does, collects what the whole log
needs (vocabularies, row count, last time) and appends each batch's rows to its bucket (held in memory,
or a spill file: Arrow IPC stream, uncompressed). `StreamedLog.parts()` then reads one bucket at a time:
each bucket's `EventLog` is exactly the one `split_log(load_events(...))` gives for it. Memory: a few
batches in pass 1, one bucket in parts().
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
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from calibration.buckets import BUCKETS
from calibration.eventlog import EventLog, parse_stages
from calibration.first_pass import HOLD_BYTES, ROW, FirstPass, spill_path
from calibration.load import as_mapping, log_from_table
from calibration.mapping import Mapping
from calibration.readers import (
    READ_ERRORS,
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
from calibration.timestamps import NS_PER_DAY
from sim.errors import InputError
from sim.limits import regular_file, sha256_of_files

Progress = Callable[[int, int], None]
_BLOCK = 1 << 22  # CSV bytes per batch: the reader reads ~30 blocks ahead, so this bounds memory


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
            with pa.OSFile(str(spill_path(self._folder, bucket))) as fh:
                table = ipc.open_stream(fh).read_all()
        # one chunk a column: coding a column of a batch's pieces walks every piece's dictionary
        table = table.combine_chunks()
        rows = table.column(ROW).to_numpy()
        part = log_from_table(table.drop_columns([ROW]), rows, mapping=mp, stages=self.stages,
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


def _read(path: Path | str, files: list[Path] | list[str], fs: pafs.FileSystem | None, parquet: bool, mp: Mapping,
          stage_names: list[str], before: float | None, buckets: int, folder: Path, progress: Progress | None,
          block: int, hold: tuple[int, int] = (HOLD_BYTES, 0)) -> FirstPass:
    """Pass 1 over the file(s); CSV restarts (with fresh spill files) where the in-memory reader retries.
    ``files``: the Parquet files, or the CSV files (a folder's share the first one's header and plan);
    ``fs``: the filesystem of a URL's files (None: local paths); ``hold``: the bytes held in memory before
    the buckets go to disk, and the log's Arrow size (for a full disk's message)."""
    if parquet:
        p = FirstPass(path, mp, stage_names, before, buckets, folder, *hold)
        _read_parquet(p, files, fs, progress)
        return p
    try:
        plan = csv_plan(files[0], mp, fs)
    except InputError:
        raise
    except READ_ERRORS as exc:
        raise read_error(exc, files[0]) from None
    while True:
        p = FirstPass(path, mp, stage_names, before, buckets, folder, *hold, encode=dictionary_columns(plan))
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


def _read_csv(p: FirstPass, files: list[Path] | list[str], fs: pafs.FileSystem | None, plan, block: int,
              progress: Progress | None) -> None:
    sizes = [_size(f, fs) for f in files]
    total, done = sum(sizes), 0
    for i, (f, size) in enumerate(zip(files, sizes)):
        p.reading = f
        if i:  # the first file's header and plan read every file
            same_columns(csv_header(f, plan.parse, fs), plan.header, f)
        with open_raw(f, fs) as raw:
            stream = open_text(f, fs, raw)
            # one parsing thread (the prefetch thread), so that a parse error names its row; the
            # workers check the batches. The low-cardinality columns are read as text and
            # dictionary-encoded by the workers (the same table as the reader's own)
            reader = pacsv.open_csv(stream, parse_options=plan.parse,
                                    read_options=pacsv.ReadOptions(block_size=block, use_threads=False),
                                    convert_options=csv_convert(plan, dictionaries=False))

            def tables(reader=reader, raw=raw, size=size, done=done) -> Iterator[pa.Table]:
                for batch in prefetched(reader):
                    yield pa.Table.from_batches([batch]).replace_schema_metadata(plan.metadata)
                    if progress is not None:
                        progress(done + min(raw.tell(), size), total)

            p.add_all(tables())
        done += size
    p.finish()


def _read_parquet(p: FirstPass, files: list[Path] | list[str], fs: pafs.FileSystem | None,
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

            def tables(pf=pf, meta=meta, names=names, size=size, done=done) -> Iterator[pa.Table]:
                n, seen = max(pf.metadata.num_rows, 1), 0
                for batch in prefetched(pf.iter_batches(batch_size=1 << 18, columns=[c for c in names if c in wanted])):
                    yield pa.Table.from_batches([batch]).replace_schema_metadata(meta)
                    seen += batch.num_rows
                    if progress is not None:
                        progress(done + size * seen // n, total)

            p.add_all(tables())
        except READ_ERRORS as exc:
            p.discard()
            raise read_error(exc, f if len(files) > 1 else p.path) from None
        done += size
    p.finish()
