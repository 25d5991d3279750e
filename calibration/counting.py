"""What the estimates count: the counts per cell of the rows that enter the outcome estimates.

A row that moved the customer on, or was followed by another row of the customer, has a known
outcome; which rows enter the outcome estimates is the censoring rule's (calibration/estimate.py).
The statistics they are taken from are calibration/stats.py's, per bucket of customers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sim.errors import InputError

if TYPE_CHECKING:  # stats.py imports row_structure from here
    from calibration.stats import LogStats

# Under the cure model the outcome window stays (robust to gaps that are not exponential, as real
# ones are not) unless it would leave more than this share of the rows undecided; then every row
# enters, weighted by the cure model (a short history: a week's log with a 30-day window).
ALL_ROWS_ABOVE = 0.5


def weighted_counts(index: np.ndarray, weights: np.ndarray, length: int) -> np.ndarray:
    """np.bincount with weights, always float: with no rows numpy returns integer zeros, and sums must
    have one dtype whatever a bucket or a cell holds."""
    return np.bincount(index, weights=weights, minlength=length).astype(float, copy=False)


def row_structure(cust: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a log sorted by customer: its customer's first row, last row, and the stage before it."""
    n = cust.size
    first = np.ones(n, dtype=bool)
    first[1:] = cust[1:] != cust[:-1]
    last = np.ones(n, dtype=bool)
    last[:-1] = cust[1:] != cust[:-1]
    before = np.zeros(n, dtype=np.int64)
    before[1:] = after[:-1]
    before[first] = 0
    return first, last, before


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
    followed: np.ndarray  # [P, S, T] decided rows that moved on or were followed (outcome known)
    all_rows: bool  # every live row enters (the window would leave most undecided)
    history: float  # days from the first row to the log's end


def every_row_decided(live_rows: int, window_rows: int, censoring: str) -> bool:
    """Every live row enters the outcome estimates: the cure model, where the outcome window holds most
    live rows (the rule the plain fit and persona discovery share)."""
    return censoring == "cure" and window_rows > ALL_ROWS_ABOVE * live_rows


def outcome_rows(st: LogStats, censoring: str) -> bool:
    """Whether every live row enters the outcome estimates (the cure model on a short history), or only
    those before the outcome window; an InputError where no outcome is decided."""
    all_rows = every_row_decided(st.live_rows, st.window_rows, censoring)
    if all_rows:
        # the window would leave most rows undecided: every row enters, known ones as they are,
        # quiet last ones weighted by P(over | quiet time)
        if st.live_rows and not st.known_rows:
            raise InputError("no interaction has a known outcome (none moved a customer on or was followed by "
                             "another), so nothing can be estimated", file=st.source,
                             hint="check the stage column and the customer ids")
    elif st.live_rows and st.live_rows == st.window_rows:
        d = st.inactivity_days
        raise InputError(f"every interaction is within the last {d:g} days of the log, so no "
                         "outcome is decided and nothing can be estimated", where="--inactivity-days", value=d,
                         hint=f"use a shorter --inactivity-days (history is {history(st):.3g} days) or "
                              "--censoring cure")
    return bool(all_rows)


def history(st: LogStats) -> float:
    """Days from the log's first row to its end."""
    return float(st.end - st.first_time) if st.rows else 0.0


def count_rows(st: LogStats, censoring: str) -> Counts:
    """The counts of the rows entering the outcome estimates (the window part too where every row enters)."""
    all_rows = outcome_rows(st, censoring)
    parts = slice(0, 2) if all_rows else slice(0, 1)

    def decided(a: np.ndarray) -> np.ndarray:
        return a[parts].sum(axis=0)

    return Counts(interactions=st.interactions, decided=decided(st.decided), advanced=decided(st.advanced),
                  stay_seen=decided(st.stay_seen).astype(float), entered=decided(st.entered),
                  gaps=decided(st.gaps), days_seen=decided(st.days_seen), followed=decided(st.followed_rows),
                  all_rows=all_rows, history=history(st))
