"""Checking and coding the columns of an event log table: ids, touchpoints, stages, personas, numbers.

Every problem is one `InputError` naming the file, row, column and value.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from calibration.mapping import Mapping
from calibration.readers import header_names
from sim.errors import InputError, closest

_NULL_WORDS = ("NA", "N/A", "NaN", "nan", "null", "None")  # read as missing only where a number belongs


def no_nulls(arr: pa.ChunkedArray, path: Path, column: str, rows: np.ndarray) -> None:
    """Refuse an empty value in a column that needs one: a null, or an empty text (a CSV reads an empty
    cell as null; Parquet may hold "", which must mean the same)."""
    empty = pc.is_null(arr) if arr.null_count else None
    if _has_empty_text(arr):
        blank = pc.equal(pc.binary_length(arr.cast(pa.string()) if pa.types.is_dictionary(arr.type) else arr), 0)
        blank = pc.fill_null(blank, False)
        empty = blank if empty is None else pc.or_(empty, blank)
    if empty is None:
        return
    # a dictionary may hold "" for a row a [filter] dropped: only a row that holds it is empty
    failing = np.flatnonzero(np.asarray(empty.to_numpy(zero_copy_only=False), dtype=bool))
    if failing.size:
        raise InputError("empty value", file=path, where=f"row {rows[int(failing[0])]}, column {column!r}",
                         hint="every row needs a value here")


def _has_empty_text(arr: pa.ChunkedArray) -> bool:
    """Some row holds "" (a dictionary column is asked through its dictionaries: no row is decoded)."""
    # the shortest length is 0: one pass and no per-row mask (a tenth of the time of any(== 0))
    if pa.types.is_dictionary(arr.type):
        return any(pc.min(pc.binary_length(c.dictionary)).as_py() == 0 for c in arr.chunks if len(c))
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return pc.min(pc.binary_length(arr)).as_py() == 0
    return False


def first_in_file(failing: np.ndarray, row: np.ndarray, *, earlier: bool = False) -> int:
    """The failing position whose file row comes first (``earlier``: the row before it, the pair's first)."""
    return int(failing[np.argmin(row[failing - 1] if earlier else row[failing])])


def _dictionary_codes(arr: pa.ChunkedArray, code_of) -> np.ndarray:
    """Codes of a (possibly dictionary-typed) column via ``code_of(name) -> int``, chunk by chunk.

    Each chunk of a dictionary column has its own small dictionary: remap it instead of decoding
    millions of strings. Nulls get code -1.
    """
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    chunks = [c for c in arr.chunks if len(c)]
    if not chunks:
        return np.empty(0, dtype=np.int32)
    # every chunk's dictionary side by side, remapped once; rows index into it by their chunk's offset
    sizes = np.array([len(c.dictionary) for c in chunks], dtype=np.int64)
    names = pa.concat_arrays([c.dictionary for c in chunks]).to_pylist()
    remap = np.array([code_of(str(x)) for x in names] + [-1], dtype=np.int32)
    lengths = np.array([len(c) for c in chunks], dtype=np.int64)
    offset = np.repeat(np.concatenate([[0], np.cumsum(sizes)[:-1]]), lengths)
    idx = pa.chunked_array([c.indices for c in chunks]).combine_chunks()
    null = np.asarray(idx.is_null().to_numpy(zero_copy_only=False)) if idx.null_count else None
    codes = idx.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) + offset
    if null is not None:
        codes[null] = len(names)
    return remap[codes]


def distinct(arr: pa.ChunkedArray) -> list[str]:
    """The distinct values the rows hold, sorted (of a dictionary column: the entries its rows use, never
    an entry only dropped rows used: a filtered column keeps its dictionary)."""
    if pa.types.is_dictionary(arr.type):
        names = {str(x) for chunk in arr.chunks
                 for x in chunk.dictionary.take(pc.drop_null(pc.unique(chunk.indices))).to_pylist()}
    else:
        names = {str(x) for x in pc.unique(arr).to_pylist() if x is not None}
    return sorted(names)


def encode_sorted(arr: pa.ChunkedArray, names: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Codes in sorted-name order (stable names in the model whatever the file's row order);
    ``names``: the vocabulary, when it is not this column's own."""
    names = distinct(arr) if names is None else names
    lookup = {name: i for i, name in enumerate(names)}
    return _dictionary_codes(arr, lambda name: lookup.get(name, -1)), names  # -1: an unused dictionary entry


def to_global(codes: np.ndarray, names: list[str], vocabulary: list[str]) -> np.ndarray:
    """Codes over ``names`` as codes over ``vocabulary`` (the whole log's list); -1 stays -1.

    A name outside the vocabulary is an unused dictionary entry; a row using one is a caller's bug."""
    index = {name: i for i, name in enumerate(vocabulary)}
    remap = np.array([index.get(n, -1) for n in names] + [-1], dtype=np.int32)
    out = remap[np.where(codes < 0, len(names), codes)].astype(codes.dtype, copy=False)
    if (out[codes >= 0] < 0).any():
        raise ValueError("a row's value is not in the log's vocabulary")
    return out


def recode(codes: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes renumbered over the ids still used, and those ids."""
    used, new = np.unique(codes, return_inverse=True)
    return new.astype(np.int64), ids[used]



def stage_codes(arr: pa.ChunkedArray, stages: list[str], path: Path, column: str,
                 rows: np.ndarray) -> np.ndarray:
    """Stage index of each row from the stage column."""
    no_nulls(arr, path, column, rows)
    lookup = {name: i for i, name in enumerate(stages)}
    codes = _dictionary_codes(arr, lambda name: lookup.get(name, -1)).astype(np.int16)
    if (codes < 0).any():
        i = int(np.flatnonzero(codes < 0)[0])
        bad = str(arr[i].as_py())
        raise InputError("unknown stage", file=path, where=f"row {rows[i]}, column {column!r}",
                         value=bad, hint=closest(bad, stages) + "; or list the stages with --stages")
    return codes


def derive_stage(table: pa.Table, mp: Mapping, stages: list[str], path: Path, rows: np.ndarray) -> np.ndarray:
    """Stage index of each row (-1: no stage) from a [stage] rule of the mapping."""
    rule = mp.stage
    if rule.column not in table.column_names:
        raise InputError("[stage] column is not in the log", file=path, where="[stage] column",
                         value=rule.column, hint=closest(rule.column, header_names(table)))
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


def end_rows(table: pa.Table, mp: Mapping) -> np.ndarray:
    """Rows whose [stage] column holds one of the mapping's end_values."""
    if mp.stage is None or not mp.stage.end_values or mp.stage.column not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    s = pc.cast(table[mp.stage.column], pa.string())
    hit = pc.is_in(s, value_set=pa.array(mp.stage.end_values, type=pa.string()))
    return np.asarray(hit.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def derive_persona(table: pa.Table, mp: Mapping, path: Path) -> tuple[np.ndarray, list[str]]:
    """Per-row persona codes (-1 where the value is unusable) from a [persona] rule."""
    codes, names = persona_rule_codes(table, mp, path)
    rule = mp.persona
    if rule.bands is None:
        return codes, names
    used = np.unique(codes[codes >= 0])  # labels nobody has are left out of the model
    return compress_bands(codes, used, rule.labels)


def compress_bands(codes: np.ndarray, used: np.ndarray, labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Band codes renumbered over the bands in ``used`` (all of them when none is)."""
    if used.size == 0:
        used = np.arange(len(labels))
    remap = np.full(len(labels) + 1, -1, dtype=np.int32)
    remap[used] = np.arange(used.size, dtype=np.int32)
    return remap[codes], [labels[i] for i in used]


def persona_rule_codes(table: pa.Table, mp: Mapping, path: Path) -> tuple[np.ndarray, list[str]]:
    """A [persona] rule's raw codes: over the sorted values, or the band index of each row (-1: none)."""
    rule = mp.persona
    if rule.column not in table.column_names:
        raise InputError("[persona] column is not in the log", file=path, where="[persona] column",
                         value=rule.column, hint=closest(rule.column, header_names(table)))
    s = pc.cast(table[rule.column], pa.string())
    if rule.bands is None:
        enc = pc.dictionary_encode(s).combine_chunks()
        names = [str(x) for x in enc.dictionary.to_pylist()]
        order = np.argsort(np.array(names, dtype=object), kind="stable")
        remap = np.full(len(names) + 1, -1, dtype=np.int32)
        remap[order] = np.arange(len(names), dtype=np.int32)
        codes = remap[enc.indices.fill_null(len(names)).to_numpy(zero_copy_only=False)]
        return codes, [names[i] for i in order]
    import pandas as pd  # imported when needed: most logs never reach pandas
    values = pd.to_numeric(pd.Series(s.to_numpy(zero_copy_only=False)), errors="coerce").to_numpy(dtype=float)
    codes = np.searchsorted(np.asarray(rule.bands, dtype=float), values, side="right").astype(np.int32) - 1
    codes[np.isnan(values)] = -1
    return codes, list(rule.labels)


def check_first_persona(codes: np.ndarray, rows: np.ndarray, table: pa.Table, table_rows: np.ndarray,
                         path: Path, rule) -> None:
    """Refuse a customer whose first row has no usable [persona] value."""
    bad = codes < 0
    if bad.any():
        i = first_in_file(np.flatnonzero(bad), rows)  # the first in the file, as every path reports it
        value = table[rule.column][int(np.searchsorted(table_rows, rows[i]))].as_py()
        what = (f"a number of at least {rule.bands[0]:g}" if rule.bands is not None else "a value")
        raise InputError(f"[persona] column needs {what} on each customer's first row", file=path,
                         where=f"row {rows[i]}, column {rule.column!r}", value=value if value is not None else "",
                         hint="fill it in, or lower the first band" if rule.bands is not None else "fill it in")


def parse_satisfaction(arr: pa.ChunkedArray, path: Path, column: str, rows: np.ndarray) -> np.ndarray:
    """Satisfaction per row, 1 to 5, NaN where missing."""
    text = pc.cast(arr, pa.string())
    import pandas as pd  # imported when needed: most logs never reach pandas
    values = pd.to_numeric(pd.Series(text.to_numpy(zero_copy_only=False)), errors="coerce")
    out = values.to_numpy(dtype=float, na_value=np.nan)
    missing = pc.or_(pc.is_null(text), pc.is_in(text, value_set=pa.array(("",) + _NULL_WORDS)))
    raw_null = np.asarray(missing.to_numpy(zero_copy_only=False), dtype=bool)
    bad = np.isnan(out) & ~raw_null
    bad |= ~np.isnan(out) & ((out < 1) | (out > 5))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError("satisfaction must be a number from 1 to 5 (or empty)", file=path,
                         where=f"row {rows[i]}, column {column!r}", value=str(arr[i]))
    return out


def parse_value(arr: pa.ChunkedArray, path: Path, column: str, rows: np.ndarray) -> np.ndarray:
    """Money realised by each row: a finite number >= 0; an empty cell is 0 (nothing realised)."""
    # only an empty cell reads as null (readers._NULLS): "NaN" and "NA" stay text, and are refused below
    text = pc.cast(arr, pa.string()).to_numpy(zero_copy_only=False)
    empty = np.array([t is None or (isinstance(t, str) and not t.strip()) for t in text], dtype=bool)
    import pandas as pd  # imported when needed: most logs never reach pandas
    out = pd.to_numeric(pd.Series(np.where(empty, "0", text)), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(out) | (out < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError("value must be a finite number >= 0 (money the interaction realised; empty = 0)",
                         file=path, where=f"row {rows[i]}, column {column!r}", value=str(text[i]))
    return out
