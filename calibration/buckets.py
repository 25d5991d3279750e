"""Customers split into buckets by a hash of their id: the unit every calibration path sums over.

The in-memory, streaming and Dask paths all cut the log the same way (``bucket_of``) and add the
buckets' statistics up in bucket order (calibration/stats.py), so they give the same model, to the bit.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from calibration.eventlog import EventLog
from calibration.stats import in_bucket_order

T = TypeVar("T")

BUCKETS = 128  # a 51 M-event log: ~400 k rows a bucket; fixed, so the model never depends on the path


_P = np.uint64(0x100000001B3)  # FNV's 64-bit prime, as the polynomial's base


def bucket_of(ids: np.ndarray | list[str] | pa.Array | pa.ChunkedArray, buckets: int = BUCKETS) -> np.ndarray:
    """The bucket (0 .. buckets - 1) of each customer id (strings, as the loader reads them).

    The id's length plus a weighted sum of its UTF-8 bytes, sum of byte_i * w_i modulo 2^64 with fixed
    weights w_0 = 1, w_i = (P^(i+1) mod 2^64) // P, mixed by splitmix64's finaliser: numpy integer
    arithmetic on Arrow's buffers, so the same on every machine and version, and no Python object per id.
    (The weights are pinned: changing them moves customers between buckets, and so the order the
    model's sums are added in.)
    """
    arr = ids if isinstance(ids, pa.Array | pa.ChunkedArray) else pa.array(np.asarray(ids, dtype=object),
                                                                            type=pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = pc.cast(arr, pa.large_string())  # int64 offsets, whatever the input's
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    offsets_buf, data_buf = arr.buffers()[1], arr.buffers()[2]
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    start = offsets[:-1]
    lengths = offsets[1:] - start
    h = lengths.astype(np.uint64)
    top, short = int(lengths.max()), int(lengths.min())
    powers = np.cumprod(np.full(max(top, 1), _P, dtype=np.uint64)) // _P  # the weights w_i (see above)
    powers[0] = 1
    if top > short:  # zero bytes past the last id's end: a short id's missing bytes then add 0
        data = np.concatenate([data[:offsets[-1]], np.zeros(top, dtype=np.uint8)])
    # one byte position at a time over every id: a gather and a multiply-add per position
    for i in range(top):
        byte = data[start + i]
        if i >= short:
            byte *= lengths > i
        h += byte.astype(np.uint64) * powers[i]
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return (h % np.uint64(buckets)).astype(np.int64)


def split_log(log: EventLog, buckets: int = BUCKETS) -> Iterator[tuple[int, EventLog]]:
    """Each non-empty bucket's customers as a log of their own, in bucket order (see `LogSplit`)."""
    split = LogSplit(log, buckets)
    for b in split.buckets:
        yield b, split.part(b)


class LogSplit:
    """A log cut into its buckets: ``buckets`` lists the non-empty ones in order, ``part(b)`` gives one.

    Customers keep their order (first appearance in the file) and are renumbered from 0; every
    other code (touchpoints, personas, stages) stays the log's. ``part`` may be called from several
    threads at once (each bucket writes only its own customers' new codes).
    """

    def __init__(self, log: EventLog, buckets: int = BUCKETS) -> None:
        self.log = log
        of_customer = bucket_of(log.customer_ids, buckets).astype(np.uint8 if buckets <= 256 else np.int64)
        of_row = of_customer[log.customer]
        self._row_order = np.argsort(of_row, kind="stable")  # a radix sort on small integers: O(n)
        self._row_bounds = np.searchsorted(of_row[self._row_order], np.arange(buckets + 1))
        self._cust_order = np.argsort(of_customer, kind="stable")
        self._cust_bounds = np.searchsorted(of_customer[self._cust_order], np.arange(buckets + 1))
        self._new_code = np.empty(log.n_customers, dtype=np.int64)
        self.buckets = [int(b) for b in np.flatnonzero(np.diff(self._cust_bounds))]

    @property
    def customer_order(self) -> np.ndarray:
        """The log's customer codes in the parts' order: bucket by bucket, each part's customers in turn."""
        return self._cust_order

    def part(self, b: int) -> EventLog:
        """Bucket ``b``'s customers as a log of their own."""
        customers = self._cust_order[self._cust_bounds[b]:self._cust_bounds[b + 1]]
        rows = self._row_order[self._row_bounds[b]:self._row_bounds[b + 1]]
        self._new_code[customers] = np.arange(customers.size)
        return _part(self.log, rows, customers, self._new_code)

    def sweep(self, compute: Callable[[int, EventLog, Any], T], what: str, given: dict[int, Any] | None = None
              ) -> Iterator[T]:
        """calibration/stats.py's ``Sweep`` over the parts, two at a time (``what`` is for progress, which a
        log in memory does not show)."""
        return in_bucket_order(lambda b: compute(b, self.part(b), None if given is None else given[b]),
                               self.buckets)


def _part(log: EventLog, rows: np.ndarray, customers: np.ndarray, new_code: np.ndarray) -> EventLog:
    """The rows and customers of one bucket (rows stay sorted by customer, then time)."""
    def take(a: np.ndarray | None, index: np.ndarray) -> np.ndarray | None:
        return None if a is None else a[index]

    time = log.time[rows]
    return EventLog(
        customer=new_code[log.customer[rows]], time=time, touchpoint=log.touchpoint[rows], stage=log.stage[rows],
        row=log.row[rows], persona_of_customer=log.persona_of_customer[customers],
        customer_ids=log.customer_ids[customers], touchpoints=log.touchpoints, stages=log.stages,
        personas=log.personas, conversion_stage=log.conversion_stage, source=log.source, sha256=log.sha256,
        end=float(time.max()), backward_rows=0, satisfaction=take(log.satisfaction, rows),
        value=take(log.value, rows), notes=log.notes, ended=take(log.ended, customers))
