"""Sufficient statistics of an event log: what the estimator needs, computed per bucket of customers and added up.

`log_stats` reads one bucket (an `EventLog` of whole customers, calibration/buckets.py) and returns
counts per persona x stage x touchpoint, sums of days, binned stays and, per customer, the last row
and the arrival: never an array per event. `merge_stats` adds buckets up in bucket order;
calibration/estimate.py estimates from the sums. Counts that depend on the censoring rule are kept
split by whether the row lies in the outcome window (the last ``inactivity_days`` of the log), so the
rule (and whether every row enters, which depends on the whole log) is applied once, to the sums.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np

from calibration.counting import row_structure, weighted_counts
from calibration.eventlog import EventLog
from calibration.experience import ExperienceSums, experience_sums
from calibration.phases import BinSums, bin_sums, merge_bins
from calibration.value import ValueSums, value_sums

T = TypeVar("T")
# ``sweep(compute, what, given)``: ``compute(bucket, part, given[bucket])`` of every non-empty bucket (None
# for each without ``given``), in bucket order ("what" names it for progress); the first per-customer
# refusal of the log is raised once every bucket has been read. A cluster's sweep sends each bucket's
# ``given`` to that bucket's worker only; ``compute`` goes to every worker, so it keeps no big arrays.
Sweep = Callable[[Callable[[int, EventLog, Any], T], str, dict[int, Any] | None], Iterator[T]]


@dataclass
class Tails:
    """Per customer, the last row: what the quiet-row (cure) weights, the dwell fit and the log summary read."""

    ps: np.ndarray  # flat [P, S] of the stage before the row
    cell: np.ndarray  # flat [P, S, T]
    to_idx: np.ndarray  # flat [P, S] of the stage after the row
    after: np.ndarray
    time: np.ndarray
    entry_time: np.ndarray  # when the customer entered the stage the row was in
    live: np.ndarray
    advanced: np.ndarray
    certain: np.ndarray  # the journey was closed by a mapping's end_values
    timed: np.ndarray  # False: the interaction at arrival (no time in the stage)


@dataclass
class Late:
    """Moves inside the outcome window, other than at arrival (censored there by the window rule)."""

    ps: np.ndarray
    entry_time: np.ndarray


@dataclass
class LogStats:
    """The sums behind a model. Arrays indexed [w, ...] hold rows outside (w = 0) and inside (1) the window."""

    touchpoints: list[str]
    stages: list[str]
    personas: list[str]
    conversion_stage: str
    source: str
    sha256: str
    notes: dict
    end: float
    inactivity_days: float
    rows: int
    customers: int
    first_time: float
    backward_rows: int
    live_rows: int
    window_rows: int  # live rows in the window
    known_rows: int  # live rows whose outcome is known (moved on, followed, or closed)
    interactions: np.ndarray  # [P, S, T] live rows
    decided: np.ndarray  # [2, P, S, T] live rows
    advanced: np.ndarray  # [2, P, S, T, S] live moves by stage moved to
    stay_seen: np.ndarray  # [2, P, S, T] live stays followed by another row
    entered: np.ndarray  # [2, P, S] live moves into a non-final stage
    gaps: np.ndarray  # [2, P, S] gaps after a live row that leaves the customer in a non-final stage
    days_seen: np.ndarray  # [2, P, S] their days
    followed_rows: np.ndarray  # [2, P, S, T] live rows moved on or followed (known without the cure weights)
    first_in_stage: np.ndarray  # [P, S, T] a stage's first interactions
    pairs: np.ndarray  # [P, S, T, T] a staying interaction and the next
    move_exits: np.ndarray  # [2, P, S, 1 + S] moves (visits finished by moving on), by way out
    move_timed: np.ndarray  # [2, P, S, 1 + S] of them, those that took time in the stage
    move_days: np.ndarray  # [2, P, S, 1 + S] their days in the stage
    move_bins: list[BinSums] | None  # per w: timed moves' days binned (phase-type stays only)
    persona_customers: np.ndarray  # [P]
    arrival: np.ndarray  # [customers] first row's time
    tails: Tails
    late: Late
    experience: ExperienceSums | None
    value: ValueSums | None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(personas, stages, touchpoints)."""
        return self.interactions.shape


def log_stats(log: EventLog, *, end: float, inactivity_days: float, phases: bool = False) -> LogStats:
    """The statistics of one bucket of whole customers (or a whole log); ``end``: the whole log's last time."""
    P, S, T = len(log.personas), len(log.stages), len(log.touchpoints)
    K = 1 + S
    final = S - 1
    cust, time, tp = log.customer, log.time, log.touchpoint.astype(np.int64)
    after = log.stage.astype(np.int64)
    n = cust.size
    first, last, before = row_structure(cust, after)
    persona = log.persona_of_customer[cust].astype(np.int64)
    live = before < final
    advanced = after > before
    certain = log.ended[cust] if log.ended is not None else np.zeros(n, dtype=bool)
    window = (live & (time > end - inactivity_days)).astype(np.int64)
    ps = persona * S + before
    cell = ps * T + tp
    to_idx = persona * S + after
    size = P * S * T

    def count(mask: np.ndarray, key: np.ndarray, length: int, weights: np.ndarray | None = None) -> np.ndarray:
        """[2, length] sums of the masked rows of a `windowed` key: counts, or float sums of ``weights``."""
        if weights is None:
            return np.bincount(key[mask], minlength=2 * length)
        return weighted_counts(key[mask], weights[mask], 2 * length)

    def windowed(index: np.ndarray, length: int) -> np.ndarray:
        """The window part in front of an index (computed once per index, shared by its counts)."""
        return window * length + index

    gap_rows = live & ~last & (after < final)
    gap_len = np.zeros(n)
    gap_len[:-1] = time[1:] - time[:-1]
    entry_row = _entry_rows(first, before)
    entry_time = time[entry_row]
    moves = live & advanced
    arrival_move = first & (before == 0)
    timed_moves = moves & ~arrival_move
    in_stage = time - entry_time
    way = ps * K + 1 + after
    stay_next = np.flatnonzero(live & ~advanced & ~last)
    entry = live & (first | np.r_[False, advanced[:-1]])
    late = np.flatnonzero(timed_moves & (window == 1))
    w_cell, w_to, w_way = windowed(cell, size), windowed(to_idx, P * S), windowed(way, P * S * K)
    # a live row's interaction moved the customer on, stayed (a row follows), or is the customer's last:
    # one count of each kind gives decided (all three), stay_seen and followed_rows (integers: exact)
    kind = ~advanced * (1 + last.astype(np.int64))  # 0 moved on, 1 stayed, 2 last
    by_kind = count(live, kind * (2 * size) + w_cell, 3 * size).reshape(3, 2, P, S, T)
    decided = by_kind.sum(0)
    # timed moves and untimed ones (the arrival row): move_exits is both
    by_timing = count(moves, timed_moves * (2 * P * S * K) + w_way, 2 * P * S * K).reshape(2, 2, P, S, K)
    return LogStats(
        touchpoints=log.touchpoints, stages=log.stages, personas=log.personas, conversion_stage=log.conversion_stage,
        source=log.source, sha256=log.sha256, notes=log.notes, end=float(end), inactivity_days=float(inactivity_days),
        rows=int(n), customers=log.n_customers, first_time=float(time.min()) if n else np.inf,
        backward_rows=int(log.backward_rows), live_rows=int(live.sum()), window_rows=int(window.sum()),
        known_rows=int((live & (advanced | ~last | certain)).sum()),
        interactions=decided.sum(0),
        decided=decided,
        advanced=count(moves, windowed(cell * S + after, size * S), size * S).reshape(2, P, S, T, S),
        stay_seen=by_kind[1],
        entered=count(moves & (after < final), w_to, P * S).reshape(2, P, S),
        gaps=count(gap_rows, w_to, P * S).reshape(2, P, S),
        days_seen=count(gap_rows, w_to, P * S, gap_len).reshape(2, P, S),
        followed_rows=by_kind[0] + by_kind[1],
        first_in_stage=np.bincount(cell[entry], minlength=size).reshape(P, S, T),
        pairs=np.bincount(cell[stay_next] * T + tp[stay_next + 1], minlength=size * T).reshape(P, S, T, T),
        move_exits=by_timing.sum(0),
        move_timed=by_timing[1],
        move_days=count(timed_moves, w_way, P * S * K, in_stage).reshape(2, P, S, K),
        move_bins=[bin_sums(way[timed_moves & (window == w)], in_stage[timed_moves & (window == w)])
                   for w in (0, 1)] if phases else None,
        persona_customers=np.bincount(log.persona_of_customer, minlength=P),
        arrival=time[first],
        # int32 codes: per-customer arrays are what grows with the log
        tails=Tails(ps=ps[last].astype(np.int32), cell=cell[last].astype(np.int32),
                    to_idx=to_idx[last].astype(np.int32), after=after[last].astype(np.int32), time=time[last],
                    entry_time=entry_time[last], live=live[last], advanced=advanced[last], certain=certain[last],
                    timed=~arrival_move[last]),
        late=Late(ps=ps[late].astype(np.int32), entry_time=entry_time[late]),
        experience=experience_sums(log, before), value=value_sums(log, before, after),
    )


def in_bucket_order(compute: Callable[[int], T], buckets: list[int]) -> Iterator[T]:
    """``compute(bucket)`` of each bucket, in the order given, on two threads (numpy and Arrow release the
    GIL): added up as they come, the sums keep the bucket order every path adds in."""
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        yield from pool.map(compute, buckets)


def at_log_end(compute: Callable[[float], tuple[T, float]], provisional: float) -> tuple[T, float]:
    """``compute(end)`` (a result and the largest bucket end) at the log's true end.

    A reader's end is provisional (the last row it kept): rows after a journey's end row are dropped only
    when a bucket is built, so the true end is the largest bucket end, and the statistics, which split
    rows by the outcome window before the end, are computed again where it is earlier.
    """
    result, last = compute(provisional)
    if last != provisional:
        result, _ = compute(last)
    return result, last


def summed_stats(sweep: Sweep, end: float, *, inactivity_days: float, phases: bool,
                 given: dict[int, Any] | None = None, fill: Callable[[EventLog, Any], EventLog] | None = None
                 ) -> tuple[StatsSum, float]:
    """The buckets' statistics at ``end``, added up in bucket order, and the largest part end;
    ``fill(part, given[bucket])``: the part as its statistics see it (discovered personas filled in)."""
    def bucket_stats(bucket: int, part: EventLog, extra: Any) -> tuple[LogStats, float]:
        if fill is not None:
            part = fill(part, extra)
        return log_stats(part, end=end, inactivity_days=inactivity_days, phases=phases), part.end

    total, last = StatsSum(), -np.inf
    for part_stats, part_end in sweep(bucket_stats, "summing", given):
        total.add(part_stats)
        last = max(last, part_end)
    return total, last


def swept_stats(sweep: Sweep, provisional_end: float, *, inactivity_days: float, phases: bool,
                given: dict[int, Any] | None = None, fill: Callable[[EventLog, Any], EventLog] | None = None
                ) -> LogStats:
    """A reader's log's statistics (`summed_stats`) at the log's true end (`at_log_end`)."""
    total, _ = at_log_end(lambda end: summed_stats(sweep, end, inactivity_days=inactivity_days, phases=phases,
                                                   given=given, fill=fill), provisional_end)
    return total.result()


def _entry_rows(first: np.ndarray, before: np.ndarray) -> np.ndarray:
    """Per row, the row that moved the customer into the row's stage (itself for the first stage)."""
    n = first.size
    rows = np.arange(n, dtype=np.int64)
    run_start = first.copy()
    run_start[1:] |= before[1:] != before[:-1]
    entry_row = np.where(run_start, np.where(first, rows, rows - 1), 0)
    np.maximum.accumulate(entry_row, out=entry_row)
    return entry_row


_SUMMED = ("interactions", "decided", "advanced", "stay_seen", "entered", "gaps", "days_seen", "followed_rows",
           "first_in_stage", "pairs", "move_exits", "move_timed", "move_days", "persona_customers")
_COUNTS = ("rows", "customers", "backward_rows", "live_rows", "window_rows", "known_rows")


class StatsSum:
    """Buckets' statistics added up one at a time, in the order given (bucket order: the sums are then the
    same on every path, to the bit). Dense sums are kept running; per-customer arrays are joined at the end."""

    def __init__(self) -> None:
        self._head: LogStats | None = None
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        self._joined: dict[str, list[np.ndarray]] = {}
        self._bins: list[list[BinSums]] = [[], []]
        self._experience: list[ExperienceSums] = []
        self._value: list[ValueSums] = []
        self._first_time = np.inf
        self.parts = 0

    def add(self, part: LogStats) -> None:
        """Add one bucket's statistics."""
        if self._head is None:
            self._head = part
            self._sums = {name: np.array(getattr(part, name), copy=True) for name in _SUMMED}
            self._counts = dict.fromkeys(_COUNTS, 0)
        else:
            for name in _SUMMED:  # counts are integers, weighted sums floats, in every bucket
                self._sums[name] += getattr(part, name)
        for name in _COUNTS:
            self._counts[name] += getattr(part, name)
        self._first_time = min(self._first_time, part.first_time)
        for key, value in _joined_arrays(part).items():
            self._joined.setdefault(key, []).append(value)
        if part.move_bins is not None:
            for w in (0, 1):
                self._bins[w].append(part.move_bins[w])
        if part.experience is not None:
            self._experience.append(part.experience)
        if part.value is not None:
            self._value.append(part.value)
        self.parts += 1

    def result(self) -> LogStats:
        """The statistics of every bucket added (once: the per-customer lists are handed over)."""
        if self._head is None:
            raise ValueError("no buckets to add up")
        out = {f.name: getattr(self._head, f.name) for f in fields(LogStats)}
        out.update(self._sums)
        out.update(self._counts)
        out["first_time"] = self._first_time
        joined = {}
        while self._joined:  # each list freed as it is joined: per-customer arrays are the big ones
            key, parts = self._joined.popitem()
            joined[key] = np.concatenate(parts)
            del parts
        out["arrival"] = joined.pop("arrival")
        out["tails"] = Tails(**{f.name: joined[f"tails.{f.name}"] for f in fields(Tails)})
        out["late"] = Late(**{f.name: joined[f"late.{f.name}"] for f in fields(Late)})
        if self._head.move_bins is not None:
            out["move_bins"] = [merge_bins(self._bins[w]) for w in (0, 1)]
        if self._experience:
            out["experience"] = ExperienceSums.add_up(self._experience)
        if self._value:
            out["value"] = ValueSums.add_up(self._value)
        return LogStats(**out)


def _joined_arrays(part: LogStats) -> dict[str, np.ndarray]:
    """The per-customer (and per late move) arrays of a bucket, by name."""
    out = {"arrival": part.arrival}
    out.update({f"tails.{f.name}": getattr(part.tails, f.name) for f in fields(Tails)})
    out.update({f"late.{f.name}": getattr(part.late, f.name) for f in fields(Late)})
    return out


def merge_stats(parts: list[LogStats]) -> LogStats:
    """The statistics of the buckets together, added in the order given (see `StatsSum`)."""
    total = StatsSum()
    for part in parts:
        total.add(part)
    return total.result()
