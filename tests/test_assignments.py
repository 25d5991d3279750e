"""The assignments file's text (calibration/assignments.py): Arrow's kernels give exactly what a row of
Python formatting gives, ties, signs and odd ids included, whatever the chunk size."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from application.rundir import write_text_atomic
from calibration import assignments
from calibration.assignments import Assignments


def _one_row_at_a_time(a: Assignments) -> str:
    """The file as Python writes it, row by row (the rule before 0.5.6)."""
    def field(text: str) -> str:
        return '"' + text.replace('"', '""') + '"' if any(ch in text for ch in ',"\n\r') else text

    lines = ["customer_id," + ",".join(a.names) + ",chosen\n"]
    for i in np.argsort(a.first_row, kind="stable"):
        p = a.posterior[i]
        lines.append(",".join([field(str(a.customer_ids[i]))] + ["%.6f" % v for v in p]  # noqa: UP031
                              + [a.names[int(np.argmax(p))]]) + "\n")
    return "".join(lines)


@pytest.mark.parametrize("chunk", [7, 1000, assignments.CHUNK])
def test_the_text_is_row_by_row_formatting(monkeypatch, chunk):
    monkeypatch.setattr(assignments, "CHUNK", chunk)
    rng = np.random.default_rng(5)
    n = 3000
    p = rng.dirichlet([0.3, 0.6, 1.0], size=n)
    # decimal ties and near-ties of "%.6f", signs, the ends, a NaN
    odd = [5e-7, 0.1234565, 0.9999995, 2.5e-7, 1.5e-6, 0.3333335, 0.1 + 0.2, -0.0, -1e-12, 0.0, 1.0, np.nan]
    p[:len(odd), 0] = odd
    p[len(odd):len(odd) + 500, 1] = (rng.integers(0, 10**6, 500) + 0.5) / 1e6
    ids = np.array([f"c{i}" for i in range(n)], dtype=object)
    ids[[3, 5, 7, 9]] = ["a,b", 'say "hi"', "two\nlines", "cr\rhere"]
    a = Assignments(ids, p, ["segment_1", "segment_2", "segment_3"], rng.permutation(n) * 3 + 2)
    text = a.text()
    assert text == _one_row_at_a_time(a)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == n + 1 and {r[0] for r in rows[1:]} >= {"a,b", 'say "hi"', "two\nlines", "cr\rhere"}


def test_no_customers_is_the_header_alone():
    a = Assignments(np.array([], dtype=object), np.zeros((0, 2)), ["segment_1", "segment_2"], np.zeros(0, np.int64))
    assert a.text() == "customer_id,segment_1,segment_2,chosen\n"


def test_a_file_written_in_pieces_is_whole_or_absent(tmp_path):
    out = tmp_path / "assignments.csv"
    write_text_atomic(out, (piece for piece in [b"a,", b"b\n"]))
    assert out.read_bytes() == b"a,b\n"

    def broken():
        yield b"half"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(out, broken())
    assert out.read_bytes() == b"a,b\n" and [f.name for f in tmp_path.iterdir()] == ["assignments.csv"]
