"""The row checks a reader of a log in pieces runs on each piece (a batch of the streaming reader, a piece
of a cluster's dataset), so that every path refuses a bad log with the line `load_events` gives for it.

`load_events` checks the whole file column by column (calibration/load.py's ``_read_rows``): the first
check that fails wins, at the first failing row in the file. Within one column's check, empty cells are
looked for over the whole column first, then values that cannot be read, then values out of range
(timestamps). A reader in pieces therefore ranks each piece's first failure by (check, `kind_of`) and
keeps the smallest rank, the earliest piece in file order among equals.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from calibration.columns import (
    derive_stage,
    distinct,
    no_nulls,
    parse_satisfaction,
    parse_value,
    persona_rule_codes,
    stage_codes,
)
from calibration.mapping import Mapping
from calibration.readers import column_sources
from calibration.timestamps import Layout, ZoneTally, parse_time_ns
from sim.errors import InputError

# the checks, in the order load_events runs them
CUSTOMER, TIME, TOUCHPOINT, STAGE, PERSONA, SATISFACTION, VALUE = range(7)
EMPTY, UNREADABLE, OUT_OF_RANGE = range(3)  # within one check, in the order found over a column


def kind_of(exc: InputError) -> int:
    """Where a failure comes within its check: an empty cell, a value that cannot be read, or one out of
    range (the last is looked for only once every value has been read)."""
    text = exc.message
    if text.startswith("empty value"):
        return EMPTY
    return OUT_OF_RANGE if ("outside the years" in text or "out of range" in text) else UNREADABLE


Rank = tuple[int, int]  # (check, kind_of): smaller fails first


@dataclass
class Checked:
    """One piece's rows checked: its first failure, or what the whole log needs from it."""

    failure: tuple[Rank, InputError] | None = None
    customers: pa.ChunkedArray | None = None  # the customer ids as text
    ns: np.ndarray | None = None  # UTC nanoseconds
    touchpoints: set[str] = field(default_factory=set)
    personas: set = field(default_factory=set)  # names; a banded [persona] rule's label indices
    zones: ZoneTally = field(default_factory=ZoneTally)


def check_rows(table: pa.Table, rows: np.ndarray, mp: Mapping, stages: list[str], path: Path, *,
               layout: Layout | None = None, read_times: bool = True) -> Checked:
    """The loader's row checks on one piece (its kept rows, numbered ``rows`` in the file), in its order,
    up to the first that fails. ``layout``: a ``dayfirst`` rule's layout, read from the log's first kept
    row; ``read_times=False``: the times' layout could not be read, so only empty times are looked for
    (they come first) and the checks stop there."""
    out = Checked()
    cols = column_sources(mp)
    check = CUSTOMER
    try:
        out.customers = pc.cast(table[cols["customer_id"]], pa.string())
        no_nulls(out.customers, path, cols["customer_id"], rows)
        check = TIME
        if not read_times:
            no_nulls(table[cols["timestamp"]], path, cols["timestamp"], rows)
            return out
        out.ns = parse_time_ns(table[cols["timestamp"]], path, cols["timestamp"], rows, mp.timestamp, layout=layout,
                               zones=out.zones)
        check = TOUCHPOINT
        touchpoint = table[cols["touchpoint"]]
        no_nulls(touchpoint, path, cols["touchpoint"], rows)
        out.touchpoints = set(distinct(touchpoint))
        check = STAGE
        if mp.stage is not None:
            derive_stage(table, mp, stages, path, rows)
        elif not _known_stages(table[cols["stage"]], stages):
            stage_codes(table[cols["stage"]], stages, path, cols["stage"], rows)
        check = PERSONA
        out.personas = _personas(table, mp, cols["persona"], path, rows)
        check = SATISFACTION
        if cols["satisfaction"] in table.column_names:
            parse_satisfaction(table[cols["satisfaction"]], path, cols["satisfaction"], rows)
        check = VALUE
        if cols["value"] in table.column_names:
            parse_value(table[cols["value"]], path, cols["value"], rows)
    except InputError as exc:
        out.failure = ((check, kind_of(exc)), exc)
    return out


def _known_stages(arr: pa.ChunkedArray, stages: list[str]) -> bool:
    """Every row names a known stage, by the dictionary entries the rows use alone (`distinct`)."""
    if arr.null_count or not pa.types.is_dictionary(arr.type):
        return False
    return set(distinct(arr)) <= set(stages)


def _personas(table: pa.Table, mp: Mapping, column: str, path: Path, rows: np.ndarray) -> set:
    """The personas the piece's rows name (label indices for a banded [persona] rule)."""
    if mp.persona is not None:
        codes, names = persona_rule_codes(table, mp, path)
        if mp.persona.bands is None:
            return set(names)
        return {int(i) for i in np.unique(codes[codes >= 0])}
    if column in table.column_names:
        no_nulls(table[column], path, column, rows)
        return set(distinct(table[column]))
    return set()


def persona_names(mp: Mapping, found: set, header: list[str]) -> list[str]:
    """The whole log's personas, as load_events lists them, from what its pieces named (`Checked.personas`)
    and the file's columns."""
    rule = mp.persona
    if rule is not None and rule.bands is not None:
        used = sorted(found) or range(len(rule.labels))  # no one in any band: every label
        return [rule.labels[i] for i in used]
    if rule is not None or column_sources(mp)["persona"] in header:
        return sorted(found)
    return ["all"]
