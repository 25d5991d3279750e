"""The persona assignments file of ``--personas ... --assignments``: each customer's posterior per
discovered persona, as CSV text made a chunk of customers at a time.

Rows are in the order of the customers' first rows in the file, whichever order a reader met them in;
the posteriors are written as ``"%.6f"`` writes them, the customer ids quoted only where CSV needs it.
The text is made with Arrow's string kernels (a Python string a row took a minute at 8 M customers)
and handed out in chunks, so that it never has to be held whole.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CHUNK = 262_144  # customers a chunk of the text


@dataclass
class Assignments:
    """Each customer's posterior per persona: ``customer_ids[i]``, ``posterior[i, k]`` for ``names[k]``,
    and ``first_row[i]`` (the customer's first row in the file: the order of the file's rows)."""

    customer_ids: np.ndarray | pa.Array
    posterior: np.ndarray
    names: list[str]
    first_row: np.ndarray

    def chunks(self) -> Iterator[bytes]:
        """The CSV file, UTF-8, in pieces: the header, then ``CHUNK`` customers at a time."""
        yield ("customer_id," + ",".join(self.names) + ",chosen\n").encode("utf-8")
        order = np.argsort(self.first_row, kind="stable")
        labels = pa.array(self.names, pa.string())
        for lo in range(0, order.size, CHUNK):
            rows = order[lo:lo + CHUNK]
            p = self.posterior[rows]
            chosen = pa.DictionaryArray.from_arrays(pa.array(p.argmax(1).astype(np.int32)), labels)
            fields = [_csv_fields(self._ids(rows))]
            fields += [_fixed6(p[:, k]) for k in range(p.shape[1])]
            fields.append(pc.cast(chosen, pa.string()))
            line = pc.binary_join_element_wise(*fields, ",")
            yield _text_bytes(pc.binary_join_element_wise(line, "", "\n"))

    def _ids(self, rows: np.ndarray) -> pa.Array:
        if isinstance(self.customer_ids, pa.Array):
            return pc.cast(self.customer_ids.take(pa.array(rows)), pa.string())
        return pa.array(self.customer_ids[rows], pa.string())

    def text(self) -> str:
        """The whole CSV file as one string."""
        return b"".join(self.chunks()).decode("utf-8")


def _fixed6(values: np.ndarray) -> pa.Array:
    """``"%.6f" % v`` of each value, exactly: millionths rounded by numpy, and Python's own formatting
    where that rounding could differ (within 1e-6 of a tie, a minus sign, not finite)."""
    scaled = values * 1e6  # off by at most ~1e-10 for values up to 1: only near-ties can round apart
    odd = ~np.isfinite(scaled) | np.signbit(values) | (np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6) | (scaled > 1e15)
    micro = np.rint(np.where(odd, 0.0, scaled)).astype(np.int64)
    whole = pc.cast(pa.array(micro // 1_000_000), pa.string())
    part = pc.utf8_lpad(pc.cast(pa.array(micro % 1_000_000), pa.string()), 6, "0")
    out = pc.binary_join_element_wise(whole, part, ".")
    if odd.any():
        exact = pa.array([f"{v:.6f}" for v in values[odd]], pa.string())
        out = pc.replace_with_mask(out, pa.array(odd), exact)
    return out


def _csv_fields(ids: pa.Array) -> pa.Array:
    """Each id as a CSV field: quoted, its quotes doubled, where it holds a comma, a quote or a line break."""
    needs = pc.match_substring_regex(ids, '[,"\r\n]')
    if not pc.any(needs).as_py():
        return ids
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(ids, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, ids)


def _text_bytes(arr: pa.Array) -> bytes:
    """A string array's values back to back, straight from its buffers."""
    if len(arr) == 0:
        return b""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    return arr.buffers()[2][int(offsets[0]):int(offsets[-1])].to_pybytes()
