"""Read and check an event log (CSV, CSV.gz or Parquet) into integer-coded arrays.

All input errors are raised here, as one-line `InputError`s naming the file, row or column and value.
Vectorised throughout (pyarrow reading, dictionary encoding, numpy sorting): no per-row Python.
The steps live beside it: calibration/readers.py reads the file, calibration/timestamps.py parses the
times, calibration/columns.py checks and codes the other columns, calibration/eventlog.py holds the result.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from calibration.columns import (
    check_first_persona,
    derive_persona,
    derive_stage,
    encode_sorted,
    end_rows,
    first_in_file,
    no_nulls,
    parse_satisfaction,
    parse_value,
    recode,
    stage_codes,
    to_global,
)
from calibration.eventlog import REQUIRED, EventLog, parse_stages
from calibration.mapping import Mapping, load_mapping
from calibration.readers import column_sources, header_names, read_table
from calibration.sources import is_url
from calibration.timestamps import Layout, ZoneTally, parse_time
from sim.errors import InputError, closest
from sim.limits import regular_file, sha256_of


def load_events(path: str | Path, *, stages: str | list[str] | None = None,
                conversion_stage: str | None = None, mapping: str | Path | Mapping | None = None,
                before: float | None = None) -> EventLog:
    """Load, map and check an event log. ``before`` (days) keeps only rows earlier than it."""
    if is_url(path):  # before Path(), which would fold "s3://" into "s3:/"
        raise InputError("a URL is read by journey calibrate (streamed, or on a cluster), not whole", file=path,
                         hint="copy the files here and give their path")
    path = Path(path)
    mp = as_mapping(mapping)
    # the mapping's stage list is the default; --stages / --conversion-stage override it
    stage_names, conv = parse_stages(stages if stages is not None else mp.stages,
                                     conversion_stage or mp.conversion_stage)
    regular_file(path, "event log")  # not found, a folder, a FIFO or device (would block), unreadable
    with ThreadPoolExecutor(max_workers=1) as pool:  # hashing overlaps the parsing
        digest = pool.submit(sha256_of, path)
        table = read_table(path, mp)
        return _log(table, np.arange(1, table.num_rows + 1, dtype=np.int64), mp, stage_names, conv, path,
                    digest.result, before, None, None, None, zones=ZoneTally())


def as_mapping(mapping: str | Path | Mapping | None) -> Mapping:
    """The mapping object: read from its file, as given, or the empty mapping."""
    if mapping is not None and not isinstance(mapping, Mapping):
        mapping = load_mapping(mapping)
    return mapping or Mapping()


def log_from_table(table: pa.Table, rows: np.ndarray, *, mapping: Mapping, stages: list[str],
                   conversion_stage: str, source: str | Path, sha256: str, before: float | None = None,
                   touchpoints: list[str] | None = None, personas: list[str] | None = None,
                   time_rule: Layout | None = None) -> EventLog:
    """The checked, coded log of a table of the file's mapped columns (in file order, before [filter]).

    ``rows`` numbers the table's rows in the file (1 = first data row), for messages. ``touchpoints``
    and ``personas``: code against these lists (the whole file's, when the table is a part of it)
    instead of the table's own. ``time_rule``: the timestamp layout already read from the file's
    first row (a mapping's ``dayfirst``); None reads it from this table's first row.
    """
    return _log(table, np.asarray(rows, dtype=np.int64), mapping, list(stages), conversion_stage, Path(source),
                lambda: sha256, before, touchpoints, personas, time_rule)


@dataclass
class _Rows:
    """The per-row arrays while the log is checked; ``take`` keeps or reorders all of them alike."""

    customer: np.ndarray  # int64 customer code
    time: np.ndarray
    touchpoint: np.ndarray
    stage: np.ndarray  # stage the row names (-1: none)
    persona: np.ndarray
    row: np.ndarray  # data-row number in the file
    is_end: np.ndarray
    satisfaction: np.ndarray | None
    value: np.ndarray | None
    first: np.ndarray | None = None  # the customer's first row (once sorted)

    def take(self, index: np.ndarray) -> None:
        """Every array indexed by ``index`` (a mask or an order)."""
        for f in fields(self):
            a = getattr(self, f.name)
            if a is not None:
                setattr(self, f.name, a[index])


@dataclass
class _Codes:
    """What the row codes stand for."""

    customer_ids: np.ndarray
    touchpoints: list[str]
    personas: list[str]
    persona_src: str  # the column personas come from (mapping rule or contract column)


def _log(table: pa.Table, rows: np.ndarray, mp: Mapping, stage_names: list[str], conv: str, path: Path,
         digest: Callable[[], str], before: float | None, touchpoints: list[str] | None,
         personas: list[str] | None, time_rule: Layout | None, zones: ZoneTally | None = None) -> EventLog:
    """``zones``: the whole log's rows with and without a time zone, noted when they mix (a part's readers
    count them in their first pass)."""
    columns = column_sources(mp)
    vocab: dict[str, list[str]] = {}  # none given: the names the kept rows hold
    # a part of a log is coded against the whole log's lists directly
    tp_global = touchpoints is not None
    per_global = personas is not None and mp.persona is None and columns["persona"] in table.column_names
    if tp_global:
        vocab[columns["touchpoint"]] = list(touchpoints)
    if per_global:
        vocab[columns["persona"]] = list(personas)
    table, rows = _filtered(table, rows, mp, path)
    check_required(table.column_names, header_names(table), mp, columns, path)
    r, codes = _read_rows(table, mp, columns, stage_names, path, rows, time_rule, vocab, zones)
    if (tp_global and (r.touchpoint < 0).any()) or (per_global and (r.persona < 0).any()):
        raise ValueError("a row's value is not in the log's vocabulary")  # a caller's bug, not bad input
    if personas is not None and not per_global:  # a [persona] rule's codes, or everyone "all"
        r.persona, codes.personas = to_global(r.persona, codes.personas, personas), list(personas)
    table_rows = rows  # file row number of each table row (increasing), for messages
    if before is not None:
        keep = r.time < before
        if not keep.any():
            raise InputError("no rows before the split", file=path, where="--split")
        r.take(keep)
        r.customer, codes.customer_ids = recode(r.customer, codes.customer_ids)
    _sort(r, codes.customer_ids.size)
    ended = _end_journeys(r, codes.customer_ids.size)
    persona_of_customer = _personas_of_customers(r, codes, table, table_rows, path, mp)
    _duplicates(r, codes, path, mp)
    running, backward = _running_stage(r, len(stage_names), ended)
    return EventLog(
        customer=r.customer, time=r.time, touchpoint=r.touchpoint.astype(np.int32),
        stage=running.astype(np.int16), row=r.row, persona_of_customer=persona_of_customer,
        customer_ids=codes.customer_ids, touchpoints=codes.touchpoints, stages=stage_names,
        personas=codes.personas, conversion_stage=conv, source=str(path), sha256=digest(),
        end=float(r.time.max()), backward_rows=backward, satisfaction=r.satisfaction, value=r.value, ended=ended,
        # where the personas came from (None: no column, everyone is "all"); --personas needs None
        notes={"persona_column": codes.persona_src
               if mp.persona is not None or codes.persona_src in table.column_names else None,
               **(zones.note() if zones is not None else {})},
    )


def _filtered(table: pa.Table, rows: np.ndarray, mp: Mapping, path: Path) -> tuple[pa.Table, np.ndarray]:
    """The rows the mapping's [filter] keeps, and their file row numbers."""
    if table.num_rows == 0:
        raise InputError("the event log is empty (no data rows)", file=path)
    table, rows = filter_rows(table, rows, mp, path)
    if table.num_rows == 0:
        raise InputError("no rows left after the mapping's [filter]", file=path, where="[filter]",
                         hint="check the filter values")
    return table, rows


def filter_rows(table: pa.Table, rows: np.ndarray, mp: Mapping, path: Path) -> tuple[pa.Table, np.ndarray]:
    """The rows (and row numbers) the mapping's [filter] keeps; the table may be a batch of the file."""
    check_filter_columns(table.column_names, header_names(table), mp, path)
    for column in mp.filter:
        wanted = pa.array(mp.filter_values(column), type=pa.string())
        keep = pc.is_in(pc.cast(table[column], pa.string()), value_set=wanted).to_numpy(zero_copy_only=False)
        keep = np.asarray(keep, dtype=bool) & ~np.asarray(pc.is_null(table[column]).to_numpy(zero_copy_only=False))
        table = table.filter(pa.array(keep))
        rows = rows[keep]
    return table, rows


def check_filter_columns(present: list[str], header: list[str], mp: Mapping, path: Path | str) -> None:
    """Refuse a [filter] on a column the log does not have (``present``: the columns read; ``header``:
    every column of the file, for the hint)."""
    for column in mp.filter:
        if column not in present:
            raise InputError("filter names a column the log does not have", file=path, where=f"[filter] {column}",
                             hint=closest(column, header))


def check_required(present: list[str], header: list[str], mp: Mapping, columns: dict[str, str],
                   path: Path | str) -> None:
    """Refuse a log without one of the contract's required columns (``present``: the columns read;
    ``header``: every column of the file, for the hint)."""
    for name in REQUIRED:
        if name == "stage" and mp.stage is not None:
            continue
        src = columns[name]
        if src not in present:
            raise InputError("missing required column", file=path, where=f"column {src!r}",
                             hint=closest(src, header) + " (or map it with --mapping)")


def _read_rows(table: pa.Table, mp: Mapping, columns: dict[str, str], stage_names: list[str], path: Path,
               rows: np.ndarray, time_rule: Layout | None, vocab: dict[str, list[str]],
               zones: ZoneTally | None = None) -> tuple[_Rows, _Codes]:
    """Every column coded and checked, in file order."""
    def col(name: str) -> pa.ChunkedArray:
        return table[columns[name]]

    cust_arr = pc.cast(col("customer_id"), pa.string())
    no_nulls(cust_arr, path, columns["customer_id"], rows)
    cust_enc = pc.dictionary_encode(cust_arr.combine_chunks())
    cust_code = cust_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    customer_ids = np.asarray(cust_enc.dictionary.to_numpy(zero_copy_only=False))

    time = parse_time(col("timestamp"), path, columns["timestamp"], rows, mp.timestamp, layout=time_rule, zones=zones)

    tp_arr = col("touchpoint")
    no_nulls(tp_arr, path, columns["touchpoint"], rows)
    tp_code, touchpoints = encode_sorted(tp_arr, vocab.get(columns["touchpoint"]))

    if mp.stage is not None:
        stage_raw = derive_stage(table, mp, stage_names, path, rows)
    else:
        stage_raw = stage_codes(col("stage"), stage_names, path, columns["stage"], rows)

    persona_src = mp.persona.column if mp.persona is not None else columns["persona"]
    if mp.persona is not None:
        per_code, personas = derive_persona(table, mp, path)
    elif persona_src in table.column_names:
        per_arr = table[persona_src]
        no_nulls(per_arr, path, persona_src, rows)
        per_code, personas = encode_sorted(per_arr, vocab.get(persona_src))
    else:
        per_code, personas = np.zeros(table.num_rows, dtype=np.int32), ["all"]
    satisfaction = None
    sat_src = columns["satisfaction"]
    if sat_src in table.column_names:
        satisfaction = parse_satisfaction(table[sat_src], path, sat_src, rows)
    value = None
    if columns["value"] in table.column_names:
        value = parse_value(table[columns["value"]], path, columns["value"], rows)
    return (_Rows(customer=cust_code, time=time, touchpoint=tp_code, stage=stage_raw, persona=per_code, row=rows,
                  is_end=end_rows(table, mp), satisfaction=satisfaction, value=value),
            _Codes(customer_ids=customer_ids, touchpoints=touchpoints, personas=personas, persona_src=persona_src))


def _sort(r: _Rows, n_customers: int) -> None:
    """Sort by customer, then time; file order kept for ties. Marks each customer's first row."""
    n_rows = r.customer.size
    if n_rows and bool(np.all(r.time[1:] >= r.time[:-1])):
        # a log in time order (the usual case): one sort on a unique integer key, and the
        # sorted customer column is a plain repeat
        if n_customers <= 1 << 16:  # numpy's stable sort of 16-bit keys is a radix sort: O(n)
            order = np.argsort(r.customer.astype(np.uint16), kind="stable")
        elif n_customers <= 1 << 32:  # two such sorts, the low 16 bits first: the same stable order
            order = np.argsort((r.customer & 0xFFFF).astype(np.uint16), kind="stable")
            order = order[np.argsort((r.customer[order] >> 16).astype(np.uint16), kind="stable")]
        else:
            order = np.argsort(r.customer * n_rows + np.arange(n_rows, dtype=np.int64))
        customer = np.repeat(np.arange(n_customers, dtype=np.int64), np.bincount(r.customer, minlength=n_customers))
    else:
        order = np.lexsort((r.time, r.customer))  # stable: file order kept for ties
        customer = None
    r.take(order)
    if customer is not None:
        r.customer = customer
    r.first = np.ones(r.customer.size, dtype=bool)
    r.first[1:] = r.customer[1:] != r.customer[:-1]


def _end_journeys(r: _Rows, n_customers: int) -> np.ndarray:
    """The journey is over at a customer's first end row: drop the rows after it. Returns who ended."""
    ended = np.zeros(n_customers, dtype=bool)
    if r.is_end.any():
        start = np.maximum.accumulate(np.where(r.first, np.arange(r.first.size), 0))
        ends_before = np.cumsum(r.is_end) - r.is_end
        keep = ends_before - ends_before[start] == 0
        ended[r.customer[r.is_end & keep]] = True
        r.take(keep)
    return ended


# the checks that need all of a customer's rows, in the order _log runs them; a log cut into buckets
# reports the refusal the whole log gives: the earliest check that fails, at the first row it names
PER_CUSTOMER_CHECKS = ("[persona] column needs", "contradictory rows", "duplicate rows")


def refusal_order(err: InputError) -> tuple[int, int]:
    """Where a bucket's per-customer refusal ranks among the log's: (check, first row named)."""
    rank = next((i for i, head in enumerate(PER_CUSTOMER_CHECKS) if err.message.startswith(head)),
                len(PER_CUSTOMER_CHECKS))
    named = re.search(r"rows? (\d+)", err.where or "")
    return rank, int(named[1]) if named else 0


def _personas_of_customers(r: _Rows, codes: _Codes, table: pa.Table, table_rows: np.ndarray, path: Path,
                           mp: Mapping) -> np.ndarray:
    """Each customer's persona (from the first row); refuses a customer with two."""
    first = r.first
    persona_of_customer = np.zeros(codes.customer_ids.size, dtype=np.int32)
    persona_of_customer[r.customer[first]] = r.persona[first]
    if mp.persona is not None:  # a [persona] rule reads the customer's first row: known at arrival
        check_first_persona(r.persona[first], r.row[first], table, table_rows, path, mp.persona)
        r.persona = persona_of_customer[r.customer]
    clash = r.persona != persona_of_customer[r.customer]
    if clash.any():
        i = first_in_file(np.flatnonzero(clash), r.row)
        personas, c = codes.personas, r.customer[i]
        raise InputError("contradictory rows: customer has more than one persona", file=path,
                         where=f"row {r.row[i]}, column {codes.persona_src!r}",
                         value=f"{codes.customer_ids[c]}: {personas[r.persona[i]]} vs "
                               f"{personas[persona_of_customer[c]]}",
                         hint="give each customer one persona")
    return persona_of_customer


def _duplicates(r: _Rows, codes: _Codes, path: Path, mp: Mapping) -> None:
    """Rows repeating the one before (customer, time, touchpoint and stage): dropped, or refused."""
    same_as_prev = ~r.first
    same_as_prev[1:] &= ((r.time[1:] == r.time[:-1]) & (r.touchpoint[1:] == r.touchpoint[:-1])
                         & (r.stage[1:] == r.stage[:-1]))
    if not same_as_prev.any():
        return
    if mp.options.drop_duplicates:
        r.take(~same_as_prev)
        return
    i = first_in_file(np.flatnonzero(same_as_prev), r.row, earlier=True)
    raise InputError("duplicate rows (same customer, timestamp, touchpoint and stage)", file=path,
                     where=f"rows {r.row[i - 1]} and {r.row[i]}", value=str(codes.customer_ids[r.customer[i]]),
                     hint="remove the duplicates, or set drop_duplicates = true under [options] "
                          "in a --mapping file")


def _running_stage(r: _Rows, n_stages: int, ended: np.ndarray) -> tuple[np.ndarray, int]:
    """Stage after each row = highest reached so far (the customer starts in stage 0), and the rows that
    named a lower one. Reaching the final stage completes the journey: not ``ended``."""
    S = n_stages
    key = r.customer * S + np.maximum(r.stage, 0)
    running = np.maximum.accumulate(key) - r.customer * S
    backward = int(((r.stage >= 0) & (r.stage < running)).sum())
    last = np.ones(r.customer.size, dtype=bool)
    last[:-1] = r.customer[1:] != r.customer[:-1]
    ended[r.customer[last]] &= running[last] < S - 1
    return running, backward
