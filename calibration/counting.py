"""What the estimates count: per-row flags of an event log (live, decided, quiet) and the counts per cell.

A row that moved the customer on, or was followed by another row of the customer, has a known
outcome; which rows enter the outcome estimates is the censoring rule's (calibration/estimate.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.eventlog import EventLog
from sim.errors import InputError

# Under the cure model the outcome window stays (robust to gaps that are not exponential, as real
# ones are not) unless it would leave more than this share of the rows undecided; then every row
# enters, weighted by the cure model (a short history: a week's log with a 30-day window).
ALL_ROWS_ABOVE = 0.5


def row_structure(cust: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a log sorted by customer: its customer's first row, last row, and the stage before it."""
    n = cust.size
    first = np.ones(n, dtype=bool)
    first[1:] = cust[1:] != cust[:-1]
    last = np.ones(n, dtype=bool)
    last[:-1] = cust[1:] != cust[:-1]
    before = np.empty(n, dtype=np.int64)
    before[0] = 0
    before[1:] = after[:-1]
    before[first] = 0
    return first, last, before


@dataclass
class RowFlags:
    """Per row of the log: where it is (persona, stage, touchpoint cell) and what is known of its outcome."""

    P: int
    S: int
    T: int
    time: np.ndarray
    tp: np.ndarray
    after: np.ndarray  # stage after the row (int64)
    before: np.ndarray  # stage before the row
    first: np.ndarray
    last: np.ndarray
    persona: np.ndarray  # the row's customer's persona
    live: np.ndarray  # before the final stage (rows after completion are ignored)
    advanced: np.ndarray
    certain: np.ndarray  # its journey was closed by a mapping's end_values
    known: np.ndarray  # outcome known: moved on, followed by another row, or closed
    in_window: np.ndarray  # within inactivity_days of the log's end
    decided: np.ndarray  # enters the outcome estimates
    all_rows: bool  # every live row enters (the window would leave most undecided)
    history: float  # days from the first row to the log's end
    cell: np.ndarray  # flat [P, S, T] index of the row
    entry: np.ndarray  # a decided move into a non-final stage
    entry_idx: np.ndarray  # flat [P, S] index of the stage after the row

    @property
    def size(self) -> int:
        """Cells of [P, S, T]."""
        return self.P * self.S * self.T


def row_flags(log: EventLog, *, inactivity_days: float, censoring: str) -> RowFlags:
    """The rows' flags under the censoring rule; an InputError where no outcome is decided."""
    P, S, T = len(log.personas), len(log.stages), len(log.touchpoints)
    final = S - 1
    cust, time, tp, after = log.customer, log.time, log.touchpoint, log.stage.astype(np.int64)
    n = cust.size
    first, last, before = row_structure(cust, after)
    persona = log.persona_of_customer[cust].astype(np.int64)

    live = before < final  # rows after completion are ignored
    advanced = after > before
    certain = np.zeros(n, dtype=bool)  # journeys a mapping's end_values closed: over for sure
    if log.ended is not None:
        certain = log.ended[cust]
    # outcome known: the row moved the customer on, was followed by another, or its journey was closed
    known = live & (advanced | ~last | certain)
    history = float(log.end - time.min()) if n else 0.0
    in_window = live & (time > log.end - inactivity_days)
    all_rows = censoring == "cure" and in_window.sum() > ALL_ROWS_ABOVE * live.sum()
    if all_rows:
        # the window would leave most rows undecided: every row enters, known ones as they are,
        # quiet last ones weighted by P(over | quiet time)
        decided = live.copy()
        if live.any() and not known.any():
            raise InputError("no interaction has a known outcome (none moved a customer on or was followed by "
                             "another), so nothing can be estimated", file=log.source,
                             hint="check the stage column and the customer ids")
    else:
        decided = live & ~in_window
        if live.any() and not decided.any():
            raise InputError(f"every interaction is within the last {inactivity_days:g} days of the log, so no "
                             "outcome is decided and nothing can be estimated", where="--inactivity-days",
                             value=inactivity_days,
                             hint=f"use a shorter --inactivity-days (history is {history:.3g} days) or "
                                  "--censoring cure")
    return RowFlags(P=P, S=S, T=T, time=time, tp=tp, after=after, before=before, first=first, last=last,
                    persona=persona, live=live, advanced=advanced, certain=certain, known=known,
                    in_window=in_window, decided=decided, all_rows=bool(all_rows), history=history,
                    cell=(persona * S + before) * T + tp,
                    entry=decided & advanced & (after < final), entry_idx=persona * S + after)


@dataclass
class Counts:
    """The counts behind the estimates that do not depend on the quiet rows' outcomes."""

    interactions: np.ndarray  # [P, S, T] live rows
    decided: np.ndarray  # [P, S, T] rows entering the outcome estimates
    advanced: np.ndarray  # [P, S, T, S] decided moves, by stage moved to
    stay_seen: np.ndarray  # [P, S, T] decided rows that stayed and were followed by another (float)
    entered: np.ndarray  # [P, S] decided moves into a non-final stage
    gaps: np.ndarray  # [P, S] gaps after a decided row that leaves the customer in a non-final stage
    days_seen: np.ndarray  # [P, S] days of those gaps


def count_rows(f: RowFlags) -> Counts:
    """The counts of the decided rows per cell (lapse: entered a non-final stage and never interacted again)."""
    P, S, T, size = f.P, f.S, f.T, f.size
    final = S - 1

    def count(mask: np.ndarray, index: np.ndarray = f.cell, length: int = size) -> np.ndarray:
        return np.bincount(index[mask], minlength=length)

    gap_rows = f.decided & ~f.last & (f.after < final)
    gap_len = np.zeros(f.time.size)
    gap_len[:-1] = f.time[1:] - f.time[:-1]
    return Counts(
        interactions=count(f.live).reshape(P, S, T),
        decided=count(f.decided).reshape(P, S, T),
        advanced=count(f.decided & f.advanced, f.cell * S + f.after, size * S).reshape(P, S, T, S),
        stay_seen=count(f.decided & ~f.advanced & ~f.last).reshape(P, S, T).astype(float),
        entered=count(f.entry, f.entry_idx, P * S).reshape(P, S),
        gaps=count(gap_rows, f.entry_idx, P * S).reshape(P, S),
        days_seen=np.bincount(f.entry_idx[gap_rows], weights=gap_len[gap_rows], minlength=P * S).reshape(P, S),
    )
