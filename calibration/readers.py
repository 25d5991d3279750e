"""Reading an event log file into an Arrow table: CSV (any delimiter, optionally gzipped) or Parquet.

Only the columns the mapping names are read; the whole header is kept for "did you mean" hints.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from calibration.eventlog import OPTIONAL, REQUIRED
from calibration.mapping import Mapping
from calibration.sources import dataset_files, is_local, is_parquet
from sim.errors import InputError


def column_sources(mp: Mapping) -> dict[str, str]:
    """The file column behind each contract column."""
    return {name: mp.source_of(name) for name in REQUIRED + OPTIONAL}



def read_table(path: Path, mp: Mapping) -> pa.Table:
    """The columns of the log the mapping needs (CSV or Parquet), as a table."""
    plan = None
    try:
        if is_parquet(path):
            return pq.read_table(path)
        plan = csv_plan(path, mp)
        try:
            table = _read_csv(path, plan.include, plan.types, plan.parse)
        except pa.ArrowInvalid:
            if plan.time_type is None:
                raise
            plan.types[plan.time_column] = pa.string()  # mixed or odd timestamps: parse them the slow, exact way
            table = _read_csv(path, plan.include, plan.types, plan.parse)
        # only the wanted columns are read; keep the whole header for "did you mean" hints
        return table.replace_schema_metadata(plan.metadata)
    except InputError:
        raise
    except READ_ERRORS as exc:
        raise read_error(exc, path, plan.header if plan is not None else None) from None


# ArrowKeyError: a column the header named is gone when the file is read again (rewritten meanwhile)
READ_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowKeyError, OSError, UnicodeDecodeError, EOFError)


def read_error(exc: Exception, path: Path | str, header: list[str] | None = None) -> InputError:
    """The one-line message for a file the reader cannot read (``exc`` one of READ_ERRORS; ``header``: a
    CSV's columns, to name the one Arrow numbers)."""
    msg = str(exc).splitlines()[0][:200]
    bad = re.search(r"Row #(\d+): Expected (\d+) columns, got (\d+)", msg)
    if bad:  # the reader counts the header as row 1; journey's rows are data rows
        return InputError(f"cannot read the event log: {bad[3]} fields where the header has {bad[2]}",
                          file=path, where=f"row {int(bad[1]) - 1}",
                          hint="quote a field that holds the delimiter, or remove the extra field")
    text = re.search(r"CSV column #(\d+): Row #(\d+): CSV conversion error to string: invalid UTF8", msg)
    if text:
        i = int(text[1])
        column = repr(header[i]) if header is not None and i < len(header) else f"#{i + 1}"
        return InputError("text that is not UTF-8", file=path, where=f"row {int(text[2]) - 1}, column {column}",
                          hint="save the log as UTF-8 (e.g. iconv -f latin1 -t utf-8 old.csv > new.csv)")
    gone = re.search(r"Column '(.*)' in include_columns does not exist", msg)
    if gone:
        return InputError("the header changed while the log was read: a column it named is gone", file=path,
                          where=f"column {gone[1]!r}", hint="is another program writing the file? copy it first")
    msg = re.sub(r"(Expected \d+ columns, got \d+):.*", r"\1 in a row", msg)  # not the raw row
    return InputError(f"cannot read the event log: {msg}", file=path,
                      hint="expected CSV (optionally .gz) with a header row, or Parquet")


@dataclass
class CsvPlan:
    """How to read a CSV log: delimiter, header, the columns to read and their types."""

    parse: pacsv.ParseOptions
    header: list[str]
    include: list[str]
    types: dict
    time_column: str
    time_type: pa.DataType | None  # the reader's own timestamp parsing (None: text)

    @property
    def metadata(self) -> dict[str, str]:
        """Schema metadata keeping the whole header (only the wanted columns are read)."""
        return {"journey_header": "\x1f".join(self.header)}


def wanted_columns(mp: Mapping) -> set[str]:
    """The file columns the mapping reads."""
    return (set(column_sources(mp).values()) | set(mp.filter) | ({mp.stage.column} if mp.stage else set())
            | ({mp.persona.column} if mp.persona else set()))


def csv_plan(path: Path | str, mp: Mapping, fs: pafs.FileSystem | None = None) -> CsvPlan:
    """Sniff the delimiter, check the header, and choose each wanted column's type (``fs``: the filesystem
    of a URL, calibration/sources.py; None: a local path)."""
    wanted = wanted_columns(mp)
    parse = sniff_delimiter(path, fs)
    head = csv_header(path, parse, fs)
    twice = sorted({c for c in head if c in wanted and head.count(c) > 1})
    if twice:
        raise InputError("the header names this column more than once", file=path, where=f"column {twice[0]!r}",
                         hint="rename one of them (or map it with --mapping)")
    include = [c for c in head if c in wanted]
    sources = column_sources(mp)
    # Low-cardinality columns are read dictionary-encoded and the timestamp parsed by the
    # reader itself (multi-threaded): far cheaper than materialising millions of strings.
    types = {c: _DICT for c in include}
    types[sources["customer_id"]] = pa.string()
    for name in ("satisfaction", "value"):  # numbers checked by their own parsers
        if sources[name] in types:
            types[sources[name]] = pa.string()
    time_col = sources["timestamp"]
    rule = mp.timestamp
    as_text = rule is not None and (rule.format is not None or rule.unit is not None or rule.dayfirst is not None)
    time_type = None
    if time_col in types and as_text:
        types[time_col] = pa.string()  # read as the mapping says, not by the reader's ISO parser
    elif time_col in types:
        time_type = _sniff_time_type(path, time_col, parse, fs)
    if time_type is not None:
        types[time_col] = time_type
    return CsvPlan(parse, head, include, types, time_col, time_type)


def csv_convert(plan: CsvPlan, *, dictionaries: bool = True) -> pacsv.ConvertOptions:
    """The reader's conversion options for a plan; ``dictionaries=False``: the dictionary-typed columns
    (`dictionary_columns`) read as text, for the caller to encode."""
    types = plan.types if dictionaries else {c: pa.string() if t == _DICT else t for c, t in plan.types.items()}
    return pacsv.ConvertOptions(include_columns=plan.include, column_types=types,
                                strings_can_be_null=True, null_values=_NULLS)


def dictionary_columns(plan: CsvPlan) -> list[str]:
    """The columns a plan reads dictionary-encoded (touchpoint, stage, persona, [filter] and rule columns)."""
    return [c for c, t in plan.types.items() if t == _DICT]


_DICT = pa.dictionary(pa.int32(), pa.string())
# only an empty field is missing: "NA" or "None" are ids, touchpoints or personas like any string (CONTRACT §1)
_NULLS = [""]


def open_raw(path: Path | str, fs: pafs.FileSystem | None = None) -> pa.NativeFile:
    """A file's bytes as stored (compressed or not), from this disk or a URL's filesystem."""
    return pa.OSFile(str(path)) if fs is None else fs.open_input_file(str(path))


def open_text(path: Path | str, fs: pafs.FileSystem | None = None, raw: pa.NativeFile | None = None
              ) -> pa.NativeFile:
    """A CSV's bytes, decompressed as its name says (``.gz``…); ``raw``: the stored bytes already opened
    (`open_raw`), for a caller that reports progress by how far into them it is."""
    raw = open_raw(path, fs) if raw is None else raw
    codec = codec_of(path)
    return pa.CompressedInputStream(raw, codec) if codec is not None else raw


def codec_of(path: Path | str) -> str | None:
    """The compression a file's name says (``gzip`` for ``.gz``), None for none."""
    try:
        return pa.Codec.detect(str(path)).name
    except (TypeError, ValueError):
        return None


def sniff_delimiter(path: Path | str, fs: pafs.FileSystem | None = None) -> pacsv.ParseOptions:
    """Comma, semicolon (spreadsheet exports in many locales), tab or pipe, from the header line."""
    try:
        with open_text(path, fs) as stream:
            head = stream.read(1 << 16).decode("utf-8", errors="replace").lstrip("\ufeff")
    except (pa.ArrowInvalid, OSError, EOFError):
        return pacsv.ParseOptions()
    first = head.splitlines()[0] if head else ""
    counts = {d: first.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return pacsv.ParseOptions(delimiter=best if counts[best] > counts[","] else ",")


def _read_csv(path: Path, include: list[str], types: dict, parse: pacsv.ParseOptions) -> pa.Table:
    def read(threads: bool) -> pa.Table:
        return with_block(lambda block: pacsv.read_csv(
            path,
            parse_options=parse,
            read_options=pacsv.ReadOptions(block_size=block, use_threads=threads),
            convert_options=pacsv.ConvertOptions(include_columns=include, column_types=types,
                                                 strings_can_be_null=True, null_values=_NULLS),
        ), 1 << 24)

    try:
        return read(True)
    except pa.ArrowInvalid as exc:
        if not re.search(r"Expected \d+ columns|invalid UTF8", str(exc)) or "Row #" in str(exc):
            raise
        return read(False)  # the threaded reader does not count rows: read again on one, which names the row


def with_block(read, block: int):
    """``read(block_size)``, with larger blocks while a row is longer than a block (a 1 MiB field)."""
    while True:
        try:
            return read(block)
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc) or block >= 1 << 30:
                raise
            block *= 8


def _sniff_time_type(path: Path | str, column: str, parse: pacsv.ParseOptions,
                     fs: pafs.FileSystem | None = None) -> pa.DataType | None:
    """Timestamp type for the reader from the first rows: zoned, naive, or None (mixed/unknown)."""
    convert = pacsv.ConvertOptions(include_columns=[column], column_types={column: pa.string()})
    try:
        batch = with_block(lambda block: _opened_csv(path, fs, parse, block, convert, lambda r: r.read_next_batch()),
                           1 << 16)
    except (pa.ArrowInvalid, StopIteration, OSError):
        return None
    values = [v for v in batch.column(0).to_pylist() if v]
    if not values:
        return None
    zoned = [bool(re.search(r"(Z|[+-]\d\d:?\d\d)$", v.strip())) for v in values]
    if all(zoned):
        return pa.timestamp("ns", "UTC")
    if not any(zoned):
        return pa.timestamp("ns")
    return None


def _opened_csv(path: Path | str, fs: pafs.FileSystem | None, parse: pacsv.ParseOptions, block: int,
                convert: pacsv.ConvertOptions, take):
    """``take(reader)`` of a CSV reader on the file's start, the file closed after (a store may hand the
    same file object to each open)."""
    with open_text(path, fs) as source:
        return take(pacsv.open_csv(source, parse_options=parse, read_options=pacsv.ReadOptions(block_size=block),
                                   convert_options=convert))


def header_names(table: pa.Table) -> list[str]:
    """Every column of the file, including those not read."""
    meta = table.schema.metadata or {}
    raw = meta.get(b"journey_header")
    return raw.decode("utf-8").split("\x1f") if raw else list(table.column_names)


def csv_header(path: Path | str, parse: pacsv.ParseOptions, fs: pafs.FileSystem | None = None) -> list[str]:
    """The CSV's header row."""
    try:
        names = with_block(lambda block: _opened_csv(path, fs, parse, block, pacsv.ConvertOptions(column_types={}),
                                                     lambda r: r.schema.names), 1 << 16)
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            raise InputError("the event log is empty", file=path) from None
        raise
    return names


def parquet_dictionaries(schema: pa.Schema, mp: Mapping) -> list[str]:
    """The text columns read dictionary-encoded, as the CSV reader reads them: a row group's dictionary
    instead of a string per row (a vocabulary is still what the kept rows name: columns.distinct)."""
    src = column_sources(mp)
    low = {src["touchpoint"], src["stage"], src["persona"]}
    return [f.name for f in schema
            if f.name in low and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))]


def log_header(source: str | Path) -> list[str] | None:
    """The log's column names, from its first file's header or schema alone (a file, a folder or a URL,
    listed as every reader lists it: calibration/sources.py); None when they cannot be read so cheaply
    (the reader then says why)."""
    try:
        listed = dataset_files(str(source))
        fs = listed.fs
        arrow_fs = None if is_local(fs) else pafs.PyFileSystem(pafs.FSSpecHandler(fs))
        first = listed.files[0] if arrow_fs is None else fs.unstrip_protocol(listed.files[0])
        if listed.parquet:
            return pq.read_schema(first, filesystem=arrow_fs).names
        return csv_header(first, sniff_delimiter(first, arrow_fs), arrow_fs)
    except (InputError, *READ_ERRORS):
        return None


def prefetched(batches) -> Iterator[pa.RecordBatch]:
    """The batches, the next one read (GIL released) while the caller works on this one."""
    it = iter(batches)
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(next, it, None)
        while True:
            batch = ahead.result()
            if batch is None:
                return
            ahead = pool.submit(next, it, None)
            yield batch
