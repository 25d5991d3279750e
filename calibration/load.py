"""Read and check an event log (CSV, CSV.gz or Parquet) into integer-coded arrays.

All input errors are raised here, as one-line `InputError`s naming the file, row or column and value.
Vectorised throughout (pyarrow reading, dictionary encoding, numpy sorting): no per-row Python.
"""
from __future__ import annotations

import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pandas.tseries.api import guess_datetime_format

from calibration.mapping import Mapping, TimestampRule, load_mapping
from sim.errors import InputError, closest
from sim.limits import MAX_STAGES, regular_file, sha256_of
from sim.model import DEFAULT_STAGES

REQUIRED = ("customer_id", "timestamp", "touchpoint", "stage")
OPTIONAL = ("persona", "satisfaction", "value")
NS_PER_DAY = 86_400e9


@dataclass
class EventLog:
    """Rows sorted by customer, then time (file order kept for ties)."""

    customer: np.ndarray  # [n] int64 customer code
    time: np.ndarray  # [n] float64 days since 1970-01-01 UTC
    touchpoint: np.ndarray  # [n] int32 touchpoint code
    stage: np.ndarray  # [n] int16 customer's stage after the row (highest reached so far)
    row: np.ndarray  # [n] int64 data-row number in the file (1 = first row after the header)
    persona_of_customer: np.ndarray  # [c] int32
    customer_ids: np.ndarray  # [c] original ids (strings)
    touchpoints: list[str]
    stages: list[str]
    personas: list[str]
    conversion_stage: str
    source: str
    sha256: str
    end: float  # last timestamp of the log, days
    backward_rows: int = 0
    satisfaction: np.ndarray | None = None  # [n] float, NaN where missing
    value: np.ndarray | None = None  # [n] float >= 0: money the row realised (empty cell = 0)
    notes: dict = field(default_factory=dict)
    ended: np.ndarray | None = None  # [c] bool: journey ended by a mapping's [stage] end_values row

    @property
    def n_rows(self) -> int:
        return int(self.customer.size)

    @property
    def n_customers(self) -> int:
        return int(self.customer_ids.size)

    @property
    def conversion_index(self) -> int:
        return self.stages.index(self.conversion_stage)


def parse_stages(stages: str | list[str] | None, conversion_stage: str | None) -> tuple[list[str], str]:
    if stages is None:
        names = list(DEFAULT_STAGES)
    elif isinstance(stages, str):
        names = [s.strip() for s in stages.split(",") if s.strip()]
    else:
        names = list(stages)
    if len(names) > MAX_STAGES:
        raise InputError(f"at most {MAX_STAGES:,} stages", where="--stages", value=len(names))
    if len(names) < 2 or len(set(names)) != len(names):
        raise InputError("need at least two distinct stage names", where="--stages", value=",".join(names),
                         hint="e.g. --stages awareness,consideration,decision")
    conv = conversion_stage or ("decision" if "decision" in names else names[-1])
    if conv not in names:
        raise InputError("conversion stage is not in the stage list", where="--conversion-stage", value=conv,
                         hint=closest(conv, names))
    if conv == names[0]:
        raise InputError("the conversion stage cannot be the first stage", where="--conversion-stage", value=conv)
    return names, conv


def load_events(path: str | Path, *, stages: str | list[str] | None = None,
                conversion_stage: str | None = None, mapping: str | Path | Mapping | None = None,
                before: float | None = None) -> EventLog:
    """Load, map and check an event log. ``before`` (days) keeps only rows earlier than it."""
    path = Path(path)
    if mapping is not None and not isinstance(mapping, Mapping):
        mapping = load_mapping(mapping)
    mp = mapping or Mapping()
    # the mapping's stage list is the default; --stages / --conversion-stage override it
    stage_names, conv = parse_stages(stages if stages is not None else mp.stages,
                                     conversion_stage or mp.conversion_stage)
    regular_file(path, "event log")  # not found, a folder, a FIFO or device (would block), unreadable
    with ThreadPoolExecutor(max_workers=1) as pool:  # hashing overlaps the parsing
        digest = pool.submit(sha256_of, path)
        return _load(path, mp, stage_names, conv, before, digest)


def _load(path: Path, mp: Mapping, stage_names: list[str], conv: str, before: float | None, digest) -> EventLog:
    table = _read_table(path, mp)
    if table.num_rows == 0:
        raise InputError("the event log is empty (no data rows)", file=path)
    rows = np.arange(1, table.num_rows + 1, dtype=np.int64)

    for column in mp.filter:
        if column not in table.column_names:
            raise InputError("filter names a column the log does not have", file=path, where=f"[filter] {column}",
                             hint=closest(column, _header(table)))
        wanted = pa.array(mp.filter_values(column), type=pa.string())
        keep = pc.is_in(pc.cast(table[column], pa.string()), value_set=wanted).to_numpy(zero_copy_only=False)
        keep = np.asarray(keep, dtype=bool) & ~np.asarray(pc.is_null(table[column]).to_numpy(zero_copy_only=False))
        table = table.filter(pa.array(keep))
        rows = rows[keep]
    if table.num_rows == 0:
        raise InputError("no rows left after the mapping's [filter]", file=path, where="[filter]",
                         hint="check the filter values")

    columns = _column_sources(mp)
    for name in REQUIRED:
        if name == "stage" and mp.stage is not None:
            continue
        src = columns[name]
        if src not in table.column_names:
            raise InputError("missing required column", file=path, where=f"column {src!r}",
                             hint=closest(src, _header(table)) + (
                                 " (or map it with --mapping)" if mp is not None else ""))

    def col(name: str) -> pa.ChunkedArray:
        return table[columns[name]]

    # --- customers ---------------------------------------------------------------------
    cust_arr = pc.cast(col("customer_id"), pa.string())
    _no_nulls(cust_arr, path, columns["customer_id"], rows)
    cust_enc = pc.dictionary_encode(cust_arr.combine_chunks())
    cust_code = cust_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    customer_ids = np.asarray(cust_enc.dictionary.to_numpy(zero_copy_only=False))

    # --- time -------------------------------------------------------------------------
    time = _parse_time(col("timestamp"), path, columns["timestamp"], rows, mp.timestamp)

    # --- touchpoints ------------------------------------------------------------------
    tp_arr = col("touchpoint")
    _no_nulls(tp_arr, path, columns["touchpoint"], rows)
    tp_code, touchpoints = _encode_sorted(tp_arr)

    # --- stages -----------------------------------------------------------------------
    if mp.stage is not None:
        stage_raw = _derive_stage(table, mp, stage_names, path, rows)
    else:
        stage_raw = _stage_codes(col("stage"), stage_names, path, columns["stage"], rows)

    # --- optional columns -------------------------------------------------------------
    persona_src = mp.persona.column if mp.persona is not None else columns["persona"]
    if mp.persona is not None:
        per_code, personas = _derive_persona(table, mp, path)
    elif persona_src in table.column_names:
        per_arr = table[persona_src]
        _no_nulls(per_arr, path, persona_src, rows)
        per_code, personas = _encode_sorted(per_arr)
    else:
        per_code, personas = np.zeros(table.num_rows, dtype=np.int32), ["all"]
    satisfaction = None
    sat_src = columns["satisfaction"]
    if sat_src in table.column_names:
        satisfaction = _parse_satisfaction(table[sat_src], path, sat_src, rows)
    value = None
    if columns["value"] in table.column_names:
        value = _parse_value(table[columns["value"]], path, columns["value"], rows)

    is_end = _end_rows(table, mp)
    table_rows = rows  # file row number of each table row (increasing), for messages

    if before is not None:
        keep = time < before
        is_end = is_end[keep]
        if not keep.any():
            raise InputError("no rows before the split", file=path, where="--split")
        cust_code, time, tp_code, stage_raw, per_code, rows = (
            a[keep] for a in (cust_code, time, tp_code, stage_raw, per_code, rows))
        if satisfaction is not None:
            satisfaction = satisfaction[keep]
        if value is not None:
            value = value[keep]
        cust_code, customer_ids = _recode(cust_code, customer_ids)

    # --- sort: customer, then time; file order kept for ties ----------------------------
    n_rows = cust_code.size
    if n_rows and bool(np.all(time[1:] >= time[:-1])):
        # a log in time order (the usual case): one sort on a unique integer key, and the
        # sorted customer column is a plain repeat
        order = np.argsort(cust_code * n_rows + np.arange(n_rows, dtype=np.int64))
        cust_code = np.repeat(np.arange(customer_ids.size, dtype=np.int64),
                              np.bincount(cust_code, minlength=customer_ids.size))
    else:
        order = np.lexsort((time, cust_code))  # stable: file order kept for ties
        cust_code = cust_code[order]
    time, tp_code, stage_raw, per_code, rows = (a[order] for a in (time, tp_code, stage_raw, per_code, rows))
    is_end = is_end[order]
    if satisfaction is not None:
        satisfaction = satisfaction[order]
    if value is not None:
        value = value[order]

    n_cust = customer_ids.size
    first = np.ones(cust_code.size, dtype=bool)
    first[1:] = cust_code[1:] != cust_code[:-1]
    ended = np.zeros(n_cust, dtype=bool)
    if is_end.any():  # the journey is over at a customer's first end row: drop the rows after it
        start = np.maximum.accumulate(np.where(first, np.arange(first.size), 0))
        ends_before = np.cumsum(is_end) - is_end
        keep = ends_before - ends_before[start] == 0
        ended[cust_code[is_end & keep]] = True
        cust_code, time, tp_code, stage_raw, per_code, rows, first = (
            a[keep] for a in (cust_code, time, tp_code, stage_raw, per_code, rows, first))
        if satisfaction is not None:
            satisfaction = satisfaction[keep]
        if value is not None:
            value = value[keep]
    persona_of_customer = np.zeros(n_cust, dtype=np.int32)
    persona_of_customer[cust_code[first]] = per_code[first]
    if mp.persona is not None:  # a [persona] rule reads the customer's first row: known at arrival
        _check_first_persona(per_code[first], rows[first], table, table_rows, path, mp.persona)
        per_code = persona_of_customer[cust_code]
    clash = per_code != persona_of_customer[cust_code]
    if clash.any():
        i = int(np.flatnonzero(clash)[0])
        raise InputError("contradictory rows: customer has more than one persona", file=path,
                         where=f"row {rows[i]}, column {persona_src!r}",
                         value=f"{customer_ids[cust_code[i]]}: {personas[per_code[i]]} vs "
                               f"{personas[persona_of_customer[cust_code[i]]]}",
                         hint="give each customer one persona")

    same_as_prev = ~first
    same_as_prev[1:] &= (time[1:] == time[:-1]) & (tp_code[1:] == tp_code[:-1]) & (stage_raw[1:] == stage_raw[:-1])
    if same_as_prev.any():
        if mp.options.drop_duplicates:
            keep = ~same_as_prev
            cust_code, time, tp_code, stage_raw, rows = (a[keep] for a in (cust_code, time, tp_code, stage_raw, rows))
            if satisfaction is not None:
                satisfaction = satisfaction[keep]
            if value is not None:
                value = value[keep]
            first = first[keep]
        else:
            i = int(np.flatnonzero(same_as_prev)[0])
            raise InputError("duplicate rows (same customer, timestamp, touchpoint and stage)", file=path,
                             where=f"rows {rows[i - 1]} and {rows[i]}", value=str(customer_ids[cust_code[i]]),
                             hint="remove the duplicates, or set drop_duplicates = true under [options] "
                                  "in a --mapping file")

    # stage after each row = highest reached so far; the customer starts in stage 0
    S = len(stage_names)
    key = cust_code * S + np.maximum(stage_raw, 0)
    running = np.maximum.accumulate(key) - cust_code * S
    backward = int(((stage_raw >= 0) & (stage_raw < running)).sum())
    last = np.ones(cust_code.size, dtype=bool)
    last[:-1] = cust_code[1:] != cust_code[:-1]
    ended[cust_code[last]] &= running[last] < S - 1  # reaching the final stage completes the journey

    return EventLog(
        customer=cust_code, time=time, touchpoint=tp_code.astype(np.int32), stage=running.astype(np.int16),
        row=rows, persona_of_customer=persona_of_customer, customer_ids=customer_ids,
        touchpoints=touchpoints, stages=stage_names, personas=personas, conversion_stage=conv,
        source=str(path), sha256=digest.result(), end=float(time.max()), backward_rows=backward,
        satisfaction=satisfaction, value=value, ended=ended,
        # where the personas came from (None: no column, everyone is "all"); --personas needs None
        notes={"persona_column": persona_src if mp.persona is not None or persona_src in table.column_names
               else None},
    )


# ---- helpers ------------------------------------------------------------------------------
def _column_sources(mp: Mapping) -> dict[str, str]:
    return {name: mp.source_of(name) for name in REQUIRED + OPTIONAL}


def _read_table(path: Path, mp: Mapping) -> pa.Table:
    name = path.name.lower()
    try:
        if name.endswith(".parquet") or name.endswith(".pq"):
            return pq.read_table(path)
        wanted = (set(_column_sources(mp).values()) | set(mp.filter) | ({mp.stage.column} if mp.stage else set())
                  | ({mp.persona.column} if mp.persona else set()))
        parse = _sniff_delimiter(path)
        head = _csv_header(path, parse)
        twice = sorted({c for c in head if c in wanted and head.count(c) > 1})
        if twice:
            raise InputError("the header names this column more than once", file=path, where=f"column {twice[0]!r}",
                             hint="rename one of them (or map the right one with --mapping)")
        include = [c for c in head if c in wanted]
        sources = _column_sources(mp)
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
            time_type = _sniff_time_type(path, time_col, parse)
        if time_type is not None:
            types[time_col] = time_type
        try:
            table = _read_csv(path, include, types, parse)
        except pa.ArrowInvalid:
            if time_type is None:
                raise
            types[time_col] = pa.string()  # mixed or odd timestamps: parse them the slow, exact way
            table = _read_csv(path, include, types, parse)
        # only the wanted columns are read; keep the whole header for "did you mean" hints
        return table.replace_schema_metadata({"journey_header": "\x1f".join(head)})
    except InputError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError, EOFError) as exc:
        msg = str(exc).splitlines()[0][:200]
        bad = re.search(r"Row #(\d+): Expected (\d+) columns, got (\d+)", msg)
        if bad:  # the reader counts the header as row 1; journey's rows are data rows
            raise InputError(f"cannot read the event log: {bad[3]} fields where the header has {bad[2]}",
                             file=path, where=f"row {int(bad[1]) - 1}",
                             hint="quote a field that holds the delimiter, or remove the extra field") from None
        msg = re.sub(r"(Expected \d+ columns, got \d+):.*", r"\1 in a row", msg)  # not the raw row
        raise InputError(f"cannot read the event log: {msg}", file=path,
                         hint="expected CSV (optionally .gz) with a header row, or Parquet") from None


_DICT = pa.dictionary(pa.int32(), pa.string())
# only an empty field is missing: "NA" or "None" are ids, touchpoints or personas like any string (CONTRACT §1)
_NULLS = [""]
_NULL_WORDS = ("NA", "N/A", "NaN", "nan", "null", "None")  # read as missing only where a number belongs


def _sniff_delimiter(path: Path) -> pacsv.ParseOptions:
    """Comma, semicolon (spreadsheet exports in many locales), tab or pipe, from the header line."""
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            head = stream.read(1 << 16).decode("utf-8", errors="replace").lstrip("\ufeff")
    except (pa.ArrowInvalid, OSError, EOFError):
        return pacsv.ParseOptions()
    first = head.splitlines()[0] if head else ""
    counts = {d: first.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=counts.get)
    return pacsv.ParseOptions(delimiter=best if counts[best] > counts[","] else ",")


def _read_csv(path: Path, include: list[str], types: dict, parse: pacsv.ParseOptions) -> pa.Table:
    return _with_block(lambda block: pacsv.read_csv(
        path,
        parse_options=parse,
        read_options=pacsv.ReadOptions(block_size=block),
        convert_options=pacsv.ConvertOptions(include_columns=include, column_types=types,
                                             strings_can_be_null=True, null_values=_NULLS),
    ), 1 << 24)


def _with_block(read, block: int):
    """``read(block_size)``, with larger blocks while a row is longer than a block (a 1 MiB field)."""
    while True:
        try:
            return read(block)
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc) or block >= 1 << 30:
                raise
            block *= 8


def _sniff_time_type(path: Path, column: str, parse: pacsv.ParseOptions) -> pa.DataType | None:
    """Timestamp type for the reader from the first rows: zoned, naive, or None (mixed/unknown)."""
    try:
        batch = _with_block(lambda block: pacsv.open_csv(
            path, parse_options=parse, read_options=pacsv.ReadOptions(block_size=block),
            convert_options=pacsv.ConvertOptions(include_columns=[column],
                                                 column_types={column: pa.string()})).read_next_batch(), 1 << 16)
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


def _header(table: pa.Table) -> list[str]:
    """Every column of the file, including those not read."""
    meta = table.schema.metadata or {}
    raw = meta.get(b"journey_header")
    return raw.decode("utf-8").split("\x1f") if raw else list(table.column_names)


def _csv_header(path: Path, parse: pacsv.ParseOptions) -> list[str]:
    try:
        names = _with_block(lambda block: pacsv.open_csv(
            path, parse_options=parse, read_options=pacsv.ReadOptions(block_size=block),
            convert_options=pacsv.ConvertOptions(column_types={})).schema.names, 1 << 16)
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            raise InputError("the event log is empty", file=path) from None
        raise
    return names


def _no_nulls(arr: pa.ChunkedArray, path: Path, column: str, rows: np.ndarray) -> None:
    if arr.null_count:
        i = int(np.flatnonzero(np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False)))[0])
        raise InputError("empty value", file=path, where=f"row {rows[i]}, column {column!r}",
                         hint="every row needs a value here")


def _dictionary_codes(arr: pa.ChunkedArray, code_of) -> np.ndarray:
    """Codes of a (possibly dictionary-typed) column via ``code_of(name) -> int``, chunk by chunk.

    Each chunk of a dictionary column has its own small dictionary: remap it instead of decoding
    millions of strings. Nulls get code -1.
    """
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    out = np.empty(len(arr), dtype=np.int32)
    pos = 0
    for chunk in arr.chunks:
        remap = np.array([code_of(str(x)) for x in chunk.dictionary.to_pylist()] + [-1], dtype=np.int32)
        idx = chunk.indices.fill_null(len(chunk.dictionary)).to_numpy(zero_copy_only=False)
        out[pos:pos + len(chunk)] = remap[idx]
        pos += len(chunk)
    return out


def _distinct(arr: pa.ChunkedArray) -> list[str]:
    if pa.types.is_dictionary(arr.type):
        names = {str(x) for chunk in arr.chunks for x in chunk.dictionary.to_pylist()}
    else:
        names = {str(x) for x in pc.unique(arr).to_pylist() if x is not None}
    return sorted(names)


def _encode_sorted(arr: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Codes in sorted-name order (stable names in the model whatever the file's row order)."""
    names = _distinct(arr)
    lookup = {name: i for i, name in enumerate(names)}
    return _dictionary_codes(arr, lookup.__getitem__), names


def _recode(codes: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used, new = np.unique(codes, return_inverse=True)
    return new.astype(np.int64), ids[used]


def _parse_time(arr: pa.ChunkedArray, path: Path, column: str, rows: np.ndarray,
                rule: TimestampRule | None = None) -> np.ndarray:
    """Days since 1970-01-01 UTC: ISO 8601 (vectorised, no guessing), or as the mapping's [timestamp] says."""
    rule = rule or TimestampRule()
    zone = rule.timezone or "UTC"
    if pa.types.is_date(arr.type):  # a Parquet date column: midnight, as its ISO text would be read
        arr = pc.cast(arr, pa.timestamp("ns"))
    if pa.types.is_timestamp(arr.type):  # typed already (Parquet, or the CSV reader's ISO parser)
        _no_nulls(arr, path, column, rows)
        _in_ns_range(arr, path, column, rows)
        ts = arr if arr.type.tz else _assume_zone(arr, zone)
        return _days(pc.cast(pc.cast(ts, pa.timestamp("ns", "UTC")), pa.int64()))
    if rule.unit is not None:
        return _days(_epoch_ns(arr, rule.unit, path, column, rows))
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        _no_nulls(arr, path, column, rows)
        raise InputError("timestamp is a number, not a date", file=path, where=f"row {rows[0]}, column {column!r}",
                         value=arr[0].as_py(), hint=_EPOCH_HINT)
    s = pc.cast(arr, pa.string())
    _no_nulls(s, path, column, rows)
    fmt, origin = rule.format, f"[timestamp] format {rule.format!r}"
    if fmt is None and rule.dayfirst is not None:
        fmt, origin = _layout_of_first(str(s[0]), rule.dayfirst, path, column, rows)
    if fmt is not None:
        return _days(_parse_format(s, fmt, origin, zone, path, column, rows))
    return _days(_parse_iso(s, zone, path, column, rows))


_ZONED = r"(?:Z|[+-]\d\d(?::?\d\d)?)\s*$"
_EPOCH_FACTOR = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_MAX_NS = 9.2e18  # int64 nanoseconds reach the years 1678 to 2261
_EPOCH_HINT = ('if it is epoch time, set [timestamp] unit = "s" (or "ms") in a --mapping file; '
               "otherwise use ISO 8601, e.g. 2024-03-01T14:05:00Z")


def _in_ns_range(arr: pa.ChunkedArray, path: Path, column: str, rows: np.ndarray) -> None:
    """A typed timestamp in a coarser unit than ns may lie outside the years 1678 to 2261: refuse it
    with its row, as the text path does, instead of letting the cast to ns fail."""
    if arr.type.unit == "ns":
        return
    raw = pc.cast(arr, pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
    bad = np.flatnonzero(np.abs(raw * _EPOCH_FACTOR[arr.type.unit]) > _MAX_NS)
    if bad.size:
        i = int(bad[0])
        raise InputError("timestamp outside the years 1678 to 2261", file=path,
                         where=f"row {rows[i]}, column {column!r}", value=str(arr[i].as_py()))


def _days(ns) -> np.ndarray:
    if isinstance(ns, (pa.Array, pa.ChunkedArray)):
        ns = ns.to_numpy(zero_copy_only=False)
    return np.asarray(ns, dtype=np.float64) / NS_PER_DAY


def _assume_zone(ts, zone: str):
    """Zone-less times as local times of ``zone``: in the hour repeated when clocks go back the first
    occurrence, in the hour skipped when they go forward the moment of the change."""
    return pc.assume_timezone(ts, zone, ambiguous="earliest", nonexistent="latest")


def _localize(ns: np.ndarray, zone: str) -> np.ndarray:
    """Wall-clock nanoseconds of ``zone`` -> UTC nanoseconds."""
    if zone == "UTC":
        return ns
    local = _assume_zone(pa.array(ns, type=pa.timestamp("ns")), zone)
    return np.asarray(pc.cast(local, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _parse_iso(s: pa.ChunkedArray, zone: str, path: Path, column: str, rows: np.ndarray) -> np.ndarray:
    for typ in (pa.timestamp("ns", "UTC"), pa.timestamp("ns")):  # all zoned, or all zone-less
        try:
            ns = pc.cast(pc.cast(s, typ), pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        ns = np.asarray(ns.to_numpy(zero_copy_only=False), dtype=np.int64)
        return _localize(ns, zone) if typ.tz is None else ns
    # mixed zones or formats: pandas' ISO 8601 parser, slower but exact (zone-less rows as UTC first)
    text = pd.Series(s.to_numpy(zero_copy_only=False))
    values = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError("unparseable timestamp", file=path, where=f"row {rows[i]}, column {column!r}",
                         value=str(s[i]), hint=_not_iso_hint(str(s[i])))
    ns = _datetime_ns(values, s, path, column, rows)
    if zone != "UTC":  # the zone-less rows were local times
        naive = ~text.str.contains(_ZONED, regex=True).to_numpy(dtype=bool)
        ns[naive] = _localize(ns[naive], zone)
    return ns


def _parse_format(s: pa.ChunkedArray, fmt: str, origin: str, zone: str, path: Path, column: str,
                  rows: np.ndarray) -> np.ndarray:
    aware = "%z" in fmt or "%Z" in fmt
    values = pd.to_datetime(pd.Series(s.to_numpy(zero_copy_only=False)), format=fmt, utc=aware, errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"timestamp does not match {origin}", file=path, where=f"row {rows[i]}, column {column!r}",
                         value=str(s[i]), hint="fix the row, or the [timestamp] table of the mapping file")
    ns = _datetime_ns(values, s, path, column, rows)
    return ns if aware else _localize(ns, zone)


def _layout_of_first(first: str, dayfirst: bool, path: Path, column: str,
                     rows: np.ndarray) -> tuple[str | None, str]:
    """``dayfirst``: the first row's layout, read with the day before the month, is every row's layout.
    Year-first dates are year-month-day whatever ``dayfirst`` says; ISO 8601 ones take the ISO path."""
    value = first.strip()
    if re.match(r"\d{4}-\d", value):
        return None, ""
    year_first = re.match(r"\d{4}\D", value) is not None
    with warnings.catch_warnings():  # pandas warns when the value contradicts dayfirst: checked below
        warnings.simplefilter("ignore", UserWarning)
        fmt = guess_datetime_format(value, dayfirst=dayfirst and not year_first)
    where = f"row {rows[0]}, column {column!r}"
    if fmt is None:
        raise InputError("cannot tell the layout of this timestamp", file=path, where=where, value=first,
                         hint='give it as [timestamp] format = "..." (strptime codes, e.g. "%d/%m/%Y %H:%M") '
                              "in the mapping file")
    if not year_first and "%d" in fmt and "%m" in fmt and (fmt.index("%d") < fmt.index("%m")) != dayfirst:
        raise InputError(f"this timestamp has the {'month' if dayfirst else 'day'} first, but the mapping says "
                         f"dayfirst = {'true' if dayfirst else 'false'}", file=path, where=where, value=first,
                         hint=f'fix dayfirst, or give [timestamp] format = "{fmt}"')
    order = "day" if dayfirst else "month"
    return fmt, f"the layout {fmt!r} of row {rows[0]} ([timestamp] dayfirst: {order} first)"


def _datetime_ns(values: pd.Series, s: pa.ChunkedArray, path: Path, column: str, rows: np.ndarray) -> np.ndarray:
    """Nanoseconds of parsed datetimes; a year outside int64 nanoseconds is bad input, not a wrap-around."""
    years = values.dt.year.to_numpy()
    out = (years < 1678) | (years > 2261)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise InputError("timestamp outside the years 1678 to 2261", file=path,
                         where=f"row {rows[i]}, column {column!r}", value=str(s[i]))
    return values.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _epoch_ns(arr: pa.ChunkedArray, unit: str, path: Path, column: str, rows: np.ndarray) -> np.ndarray:
    """Epoch numbers (text or numeric column) -> UTC nanoseconds; whole numbers exactly."""
    _no_nulls(arr, path, column, rows)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        values = np.asarray(arr.to_numpy(zero_copy_only=False))
    else:
        s = pc.cast(arr, pa.string())
        try:
            values = np.asarray(pc.cast(s, pa.int64()).to_numpy(zero_copy_only=False))
        except pa.ArrowInvalid:  # decimals, spaces or junk: pandas tells them apart
            num = pd.to_numeric(pd.Series(s.to_numpy(zero_copy_only=False)), errors="coerce")
            bad = num.isna().to_numpy()
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InputError(f"not an epoch number ([timestamp] unit = {unit!r})", file=path,
                                 where=f"row {rows[i]}, column {column!r}", value=str(s[i]),
                                 hint="use numbers such as 1711929600 (seconds since 1970-01-01 UTC), "
                                      "or remove unit from the mapping") from None
            values = num.to_numpy()
    factor = _EPOCH_FACTOR[unit]
    if values.dtype.kind == "f" and np.isfinite(values).all() and (values == np.floor(values)).all() \
            and np.abs(values).max() < _MAX_NS:
        values = values.astype(np.int64)  # whole numbers: exact, like ISO text of whole seconds
    ns = values.astype(np.float64) * factor
    out = ~np.isfinite(ns) | (np.abs(ns) >= _MAX_NS)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        smaller = {"s": "ms", "ms": "us", "us": "ns"}.get(unit)
        raise InputError(f"epoch number out of range for unit {unit!r} (years 1678 to 2261)", file=path,
                         where=f"row {rows[i]}, column {column!r}", value=arr[i].as_py(),
                         hint=f'is it in {smaller}? set unit = "{smaller}"' if smaller else None)
    if values.dtype.kind in "iu":
        return values.astype(np.int64) * factor
    return np.rint(ns).astype(np.int64)


def _not_iso_hint(value: str) -> str:
    """How to read a timestamp that is not ISO 8601: guessing silently could swap day and month."""
    v = value.strip()
    if re.fullmatch(r"[+-]?\d+(\.\d*)?", v):
        return _EPOCH_HINT
    year_first = re.match(r"\d{4}\D", v) is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        day = None if year_first else guess_datetime_format(v, dayfirst=True)
        month = guess_datetime_format(v, dayfirst=False)
    if day and month and day != month:
        return (f'not ISO 8601, and day and month could be either way round: set [timestamp] format = "{day}" '
                f'or dayfirst = true (day first), or format = "{month}" (month first), in a --mapping file; '
                "or use ISO 8601, e.g. 2024-03-01")
    if day or month:
        return f'not ISO 8601: set [timestamp] format = "{day or month}" in a --mapping file, or use ISO 8601'
    if re.match(r"\d{1,2}\D\d{1,2}\D\d{2,4}", v):
        return ('not ISO 8601: say how to read it in a --mapping file, e.g. [timestamp] format = "%d/%m/%Y" '
                "or dayfirst = true; or use ISO 8601, e.g. 2024-03-01T14:05:00Z")
    return ('use ISO 8601, e.g. 2024-03-01T14:05:00Z, or give the layout in a --mapping file: '
            '[timestamp] format = "..." (strptime codes)')


def _stage_codes(arr: pa.ChunkedArray, stages: list[str], path: Path, column: str,
                 rows: np.ndarray) -> np.ndarray:
    _no_nulls(arr, path, column, rows)
    lookup = {name: i for i, name in enumerate(stages)}
    codes = _dictionary_codes(arr, lambda name: lookup.get(name, -1)).astype(np.int16)
    if (codes < 0).any():
        i = int(np.flatnonzero(codes < 0)[0])
        bad = str(arr[i].as_py())
        raise InputError("unknown stage", file=path, where=f"row {rows[i]}, column {column!r}",
                         value=bad, hint=closest(bad, stages) + "; or list the stages with --stages")
    return codes


def _derive_stage(table: pa.Table, mp: Mapping, stages: list[str], path: Path, rows: np.ndarray) -> np.ndarray:
    rule = mp.stage
    if rule.column not in table.column_names:
        raise InputError("[stage] column is not in the log", file=path, where="[stage] column",
                         value=rule.column, hint=closest(rule.column, _header(table)))
    for value, stage in rule.values.items():
        if stage not in stages:
            raise InputError("unknown stage in [stage] values", file=path, where=f"[stage] values.{value}",
                             value=stage, hint=closest(stage, stages))
    s = pc.cast(table[rule.column], pa.string())
    enc = pc.dictionary_encode(s).combine_chunks()
    names = enc.dictionary.to_pylist()
    lookup = np.array([stages.index(rule.values[n]) if n in rule.values else -1 for n in names] + [-1],
                      dtype=np.int16)
    idx = enc.indices.fill_null(len(names)).to_numpy(zero_copy_only=False)
    return lookup[idx]


def _end_rows(table: pa.Table, mp: Mapping) -> np.ndarray:
    """Rows whose [stage] column holds one of the mapping's end_values."""
    if mp.stage is None or not mp.stage.end_values or mp.stage.column not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    s = pc.cast(table[mp.stage.column], pa.string())
    hit = pc.is_in(s, value_set=pa.array(mp.stage.end_values, type=pa.string()))
    return np.asarray(hit.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _derive_persona(table: pa.Table, mp: Mapping, path: Path) -> tuple[np.ndarray, list[str]]:
    """Per-row persona codes (-1 where the value is unusable) from a [persona] rule."""
    rule = mp.persona
    if rule.column not in table.column_names:
        raise InputError("[persona] column is not in the log", file=path, where="[persona] column",
                         value=rule.column, hint=closest(rule.column, _header(table)))
    s = pc.cast(table[rule.column], pa.string())
    if rule.bands is None:
        enc = pc.dictionary_encode(s).combine_chunks()
        names = [str(x) for x in enc.dictionary.to_pylist()]
        order = np.argsort(np.array(names, dtype=object), kind="stable")
        remap = np.full(len(names) + 1, -1, dtype=np.int32)
        remap[order] = np.arange(len(names), dtype=np.int32)
        codes = remap[enc.indices.fill_null(len(names)).to_numpy(zero_copy_only=False)]
        return codes, [names[i] for i in order]
    values = pd.to_numeric(pd.Series(s.to_numpy(zero_copy_only=False)), errors="coerce").to_numpy(dtype=float)
    codes = np.searchsorted(np.asarray(rule.bands, dtype=float), values, side="right").astype(np.int32) - 1
    codes[np.isnan(values)] = -1
    used = np.unique(codes[codes >= 0])  # labels nobody has are left out of the model
    if used.size == 0:
        used = np.arange(len(rule.labels))
    remap = np.full(len(rule.labels) + 1, -1, dtype=np.int32)
    remap[used] = np.arange(used.size, dtype=np.int32)
    return remap[codes], [rule.labels[i] for i in used]


def _check_first_persona(codes: np.ndarray, rows: np.ndarray, table: pa.Table, table_rows: np.ndarray,
                         path: Path, rule) -> None:
    bad = codes < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = table[rule.column][int(np.searchsorted(table_rows, rows[i]))].as_py()
        what = (f"a number of at least {rule.bands[0]:g}" if rule.bands is not None else "a value")
        raise InputError(f"[persona] column needs {what} on each customer's first row", file=path,
                         where=f"row {rows[i]}, column {rule.column!r}", value=value if value is not None else "",
                         hint="fill it in, or lower the first band" if rule.bands is not None else "fill it in")


def _parse_satisfaction(arr: pa.ChunkedArray, path: Path, column: str, rows: np.ndarray) -> np.ndarray:
    text = pc.cast(arr, pa.string())
    values = pd.to_numeric(pd.Series(text.to_numpy(zero_copy_only=False)), errors="coerce")
    out = values.to_numpy(dtype=float, na_value=np.nan)
    missing = pc.or_(pc.is_null(text), pc.is_in(text, value_set=pa.array(_NULL_WORDS)))
    raw_null = np.asarray(missing.to_numpy(zero_copy_only=False), dtype=bool)
    bad = np.isnan(out) & ~raw_null
    bad |= ~np.isnan(out) & ((out < 1) | (out > 5))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError("satisfaction must be a number from 1 to 5 (or empty)", file=path,
                         where=f"row {rows[i]}, column {column!r}", value=str(arr[i]))
    return out


def _parse_value(arr: pa.ChunkedArray, path: Path, column: str, rows: np.ndarray) -> np.ndarray:
    """Money realised by each row: a finite number >= 0; an empty cell is 0 (nothing realised)."""
    text = pc.cast(arr, pa.string()).to_numpy(zero_copy_only=False)
    if arr.null_count and not path.name.lower().endswith((".parquet", ".pq")):
        # the reader turns "NaN" and "NA" into empty cells: read the column as written to tell them apart
        raw = pacsv.read_csv(path, parse_options=_sniff_delimiter(path), convert_options=pacsv.ConvertOptions(
            include_columns=[column], column_types={column: pa.string()}, strings_can_be_null=False,
            quoted_strings_can_be_null=False))[column].to_numpy(zero_copy_only=False)
        text = raw[rows - 1]
    empty = np.array([t is None or (isinstance(t, str) and not t.strip()) for t in text], dtype=bool)
    out = pd.to_numeric(pd.Series(np.where(empty, "0", text)), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(out) | (out < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError("value must be a finite number >= 0 (money the interaction realised; empty = 0)",
                         file=path, where=f"row {rows[i]}, column {column!r}", value=str(text[i]))
    return out
