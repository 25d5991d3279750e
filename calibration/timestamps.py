"""Timestamps of an event log as days since 1970-01-01 UTC: ISO 8601, a mapping's layout, or epoch numbers.

No guessing: a timestamp that is not ISO 8601 needs the mapping to say how to read it.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from calibration.columns import no_nulls
from calibration.mapping import TimestampRule
from sim.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

NS_PER_DAY = 86_400e9


@dataclass
class ZoneTally:
    """How many rows' times named their zone and how many did not (read as UTC, no mapping naming their
    zone): a log that mixes the two may hold local times read as UTC, which calibrate says out loud."""

    zoned: int = 0
    zoneless: int = 0

    def add(self, other: ZoneTally) -> None:
        """Another part's counts."""
        self.zoned += other.zoned
        self.zoneless += other.zoneless

    def note(self) -> dict[str, int]:
        """The log notes for a mix (``zoneless_rows``, ``zoned_rows``), else none."""
        return {"zoneless_rows": self.zoneless, "zoned_rows": self.zoned} if self.zoned and self.zoneless else {}

    def count(self, zoned: int, n: int) -> None:
        """``n`` rows, ``zoned`` of them with a zone."""
        self.zoned += zoned
        self.zoneless += n - zoned


@dataclass(frozen=True)
class Layout:
    """A timestamp layout read from the file's first row (``dayfirst``): strptime codes (None: ISO
    8601), and how messages name where it came from."""

    format: str | None
    origin: str


def layout_of(first: str, rule: TimestampRule, path: Path, column: str, row: int) -> Layout | None:
    """The layout a ``dayfirst`` rule gives every row, from the first row's value (None: no such rule)."""
    if rule is None or rule.format is not None or rule.unit is not None or rule.dayfirst is None:
        return None
    return Layout(*_layout_of_first(first, rule.dayfirst, path, column, np.array([row])))


def parse_time(arr: pa.ChunkedArray, path: Path, column: str, rows: np.ndarray,
               rule: TimestampRule | None = None, *, layout: Layout | None = None,
               zones: ZoneTally | None = None) -> np.ndarray:
    """Days since 1970-01-01 UTC: ISO 8601 (vectorised, no guessing), or as the mapping's [timestamp] says.

    ``layout``: the ``dayfirst`` layout already read from the file's first row (for a part of a file);
    ``zones``: counts the rows whose time named a zone and those whose did not (epoch numbers neither).
    """
    return _days(parse_time_ns(arr, path, column, rows, rule, layout=layout, zones=zones))


def parse_time_ns(arr: pa.ChunkedArray, path: Path, column: str, rows: np.ndarray,
                  rule: TimestampRule | None = None, *, layout: Layout | None = None,
                  zones: ZoneTally | None = None) -> np.ndarray:
    """As ``parse_time``, in UTC nanoseconds (int64)."""
    rule = rule or TimestampRule()
    # counted only where zone-less times default to UTC: a mapping's timezone says what they are
    zones = zones if zones is not None and rule.timezone is None else ZoneTally()
    zone = rule.timezone or "UTC"
    if pa.types.is_date(arr.type):  # a Parquet date column: midnight, as its ISO text would be read
        arr = pc.cast(arr, pa.timestamp("ns"))
    if pa.types.is_timestamp(arr.type):  # typed already (Parquet, or the CSV reader's ISO parser)
        no_nulls(arr, path, column, rows)
        _in_ns_range(arr, path, column, rows)
        zones.count(len(arr) if arr.type.tz else 0, len(arr))
        ts = arr if arr.type.tz else _assume_zone(arr, zone)
        return np.asarray(pc.cast(pc.cast(ts, pa.timestamp("ns", "UTC")), pa.int64())
                          .to_numpy(zero_copy_only=False), dtype=np.int64)
    if rule.unit is not None:
        return _epoch_ns(arr, rule.unit, path, column, rows)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        no_nulls(arr, path, column, rows)
        raise InputError("timestamp is a number, not a date", file=path, where=f"row {rows[0]}, column {column!r}",
                         value=arr[0].as_py(), hint=_EPOCH_HINT)
    s = pc.cast(arr, pa.string())
    no_nulls(s, path, column, rows)
    fmt, origin = rule.format, f"[timestamp] format {rule.format!r}"
    if layout is not None:
        fmt, origin = layout.format, layout.origin
    elif fmt is None and rule.dayfirst is not None:
        fmt, origin = _layout_of_first(str(s[0]), rule.dayfirst, path, column, rows)
    if fmt is not None:
        zones.count(len(s) if "%z" in fmt or "%Z" in fmt else 0, len(s))
        return _parse_format(s, fmt, origin, zone, path, column, rows)
    return _parse_iso(s, zone, path, column, rows, zones)


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


def _parse_iso(s: pa.ChunkedArray, zone: str, path: Path, column: str, rows: np.ndarray,
               zones: ZoneTally) -> np.ndarray:
    for typ in (pa.timestamp("ns", "UTC"), pa.timestamp("ns")):  # all zoned, or all zone-less
        try:
            ns = pc.cast(pc.cast(s, typ), pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        ns = np.asarray(ns.to_numpy(zero_copy_only=False), dtype=np.int64)
        zones.count(len(s) if typ.tz is not None else 0, len(s))
        return _localize(ns, zone) if typ.tz is None else ns
    # mixed zones or formats: pandas' ISO 8601 parser, slower but exact (zone-less rows as UTC first).
    # Zoned and zone-less rows are parsed apart: pandas 2 reads a zone-less row after a zoned one in
    # that row's offset
    import pandas as pd  # imported when needed: most logs never reach pandas
    text = pd.Series(s.to_numpy(zero_copy_only=False))
    naive = ~text.str.contains(_ZONED, regex=True).to_numpy(dtype=bool)
    parts = [np.flatnonzero(naive), np.flatnonzero(~naive)]
    parsed = [pd.to_datetime(text.iloc[i], utc=True, format="ISO8601", errors="coerce") for i in parts]
    bad = np.concatenate([i[v.isna().to_numpy()] for i, v in zip(parts, parsed)])
    if bad.size:  # the first text that is no time at all; else the first year past nanoseconds (pandas 2)
        bad = np.sort(bad)
        texts = text.iloc[bad]
        years = pd.to_numeric(texts.str.extract(r"^\s*([+-]?\d{4,})-\d", expand=False), errors="coerce")
        years = years.to_numpy(dtype=float)  # NaN: no leading year, so unparseable
        unparseable = bad[~_outside_ns_years(years)]
        if not unparseable.size:
            _check_years(years, texts.to_numpy(), path, column, rows[bad])
        i = int(unparseable[0])
        raise InputError("unparseable timestamp", file=path, where=f"row {rows[i]}, column {column!r}",
                         value=str(s[i]), hint=_not_iso_hint(str(s[i])))
    years = np.empty(len(text), dtype=np.int64)
    for i, v in zip(parts, parsed):
        years[i] = v.dt.year.to_numpy()
    _check_years(years, s, path, column, rows)
    ns = np.empty(len(text), dtype=np.int64)
    for i, v in zip(parts, parsed):
        ns[i] = v.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    zones.count(int((~naive).sum()), len(s))
    if zone != "UTC":  # the zone-less rows were local times
        ns[naive] = _localize(ns[naive], zone)
    return ns


def _parse_format(s: pa.ChunkedArray, fmt: str, origin: str, zone: str, path: Path, column: str,
                  rows: np.ndarray) -> np.ndarray:
    aware = "%z" in fmt or "%Z" in fmt
    import pandas as pd  # imported when needed: most logs never reach pandas
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
        from pandas.tseries.api import guess_datetime_format
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
    _check_years(values.dt.year.to_numpy(), s, path, column, rows)
    return values.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _outside_ns_years(years: np.ndarray) -> np.ndarray:
    """Per year: outside the years 1678 to 2261 that int64 nanoseconds hold (NaN: not outside)."""
    return (years < 1678) | (years > 2261)


def _check_years(years: np.ndarray, texts, path: Path, column: str, rows: np.ndarray) -> None:
    """Refuse the first row whose year int64 nanoseconds cannot hold (``texts``, ``rows``: those of
    ``years``)."""
    out = _outside_ns_years(years)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise InputError("timestamp outside the years 1678 to 2261", file=path,
                         where=f"row {rows[i]}, column {column!r}", value=str(texts[i]))


def _epoch_ns(arr: pa.ChunkedArray, unit: str, path: Path, column: str, rows: np.ndarray) -> np.ndarray:
    """Epoch numbers (text or numeric column) -> UTC nanoseconds; whole numbers exactly."""
    no_nulls(arr, path, column, rows)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        values = np.asarray(arr.to_numpy(zero_copy_only=False))
    else:
        s = pc.cast(arr, pa.string())
        try:
            values = np.asarray(pc.cast(s, pa.int64()).to_numpy(zero_copy_only=False))
        except pa.ArrowInvalid:  # decimals, spaces or junk: pandas tells them apart
            import pandas as pd  # imported when needed: most logs never reach pandas
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
        from pandas.tseries.api import guess_datetime_format
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
