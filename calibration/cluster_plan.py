"""What every task of a cluster calibration needs (`Plan`), and pass A: the row checks of each piece.

The driver plans (`make_plan`): the dataset's files in sorted path order, their row groups cut into
pieces of whole row groups, each with its first file row number. The workers then check the pieces
(`check_pieces`) in the in-memory loader's order of checks and collect the whole log's vocabularies;
calibration/cluster.py cuts the checked log into its buckets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from calibration.eventlog import parse_stages
from calibration.load import check_filter_columns, check_required, filter_rows
from calibration.mapping import Mapping, load_mapping
from calibration.readers import column_sources
from calibration.row_checks import check_rows, persona_names
from calibration.sources import dataset_files, is_local, same_columns
from calibration.timestamps import NS_PER_DAY, ZoneTally
from sim.errors import InputError
from sim.limits import sha256_of_files

PIECE_ROWS = 2_000_000  # rows a pass-A task / shuffle input reads at most (whole row groups)


@dataclass(frozen=True)
class Piece:
    """Row groups of one file, and the file row number of their first row."""

    file: str
    groups: tuple[int, ...]
    first_row: int  # 1 = the dataset's first data row
    n_rows: int
    column_bytes: tuple[int, ...]  # each file column's uncompressed Parquet bytes in these groups


@dataclass
class Plan:
    """What every task needs: the dataset, the mapping and the whole log's vocabularies."""

    source: str
    fs: Any  # fsspec filesystem (picklable)
    pieces: list[Piece]
    columns: list[str]  # file columns read (those the mapping names)
    header: list[str]  # every column of the files, for "did you mean" hints
    mapping: Mapping
    stages: list[str]
    conversion_stage: str
    before: float | None
    buckets: int
    sha256: str = ""
    touchpoints: list[str] | None = None
    personas: list[str] | None = None
    notes: dict = field(default_factory=dict)
    layout: Any = None  # a dayfirst rule's layout, read from the log's first kept row (timestamps.Layout)


def make_plan(path: str | Path, mapping, stages, conversion_stage, before, buckets: int) -> Plan:
    """The dataset's plan, with the whole log's checks its footers allow (Parquet, columns, [filter])."""
    if mapping is not None and not isinstance(mapping, Mapping):
        mapping = load_mapping(mapping)
    mp = mapping or Mapping()
    stage_names, conv = parse_stages(stages if stages is not None else mp.stages,
                                     conversion_stage or mp.conversion_stage)
    source = str(path)
    listed = dataset_files(source)
    fs, files = listed.fs, listed.files
    if not listed.parquet:  # CSV files, or one file not named as Parquet is
        raise InputError("the cluster reads Parquet, not CSV", file=source,
                         hint="drop --scheduler to stream the CSV on this machine, or write it as Parquet")
    pieces, header = plan_pieces(fs, files, source)
    if not pieces or sum(p.n_rows for p in pieces) == 0:
        raise InputError("the event log is empty (no data rows)", file=source)
    sources = column_sources(mp)
    check_filter_columns(header, header, mp, source)
    check_required(header, header, mp, sources, source)
    wanted = (set(sources.values()) | set(mp.filter) | ({mp.stage.column} if mp.stage else set())
              | ({mp.persona.column} if mp.persona else set()))
    persona_src = mp.persona.column if mp.persona is not None else sources["persona"]
    notes = {"persona_column": persona_src if mp.persona is not None or persona_src in header else None}
    return Plan(source=source, fs=fs, pieces=pieces, columns=[c for c in header if c in wanted], header=header,
                 mapping=mp, stages=stage_names, conversion_stage=conv, before=before, buckets=buckets, notes=notes)


def plan_pieces(fs, files: list[str], source: str) -> tuple[list[Piece], list[str]]:
    """Row groups cut into pieces of at most ``PIECE_ROWS`` rows (whole groups), and the header."""
    pieces: list[Piece] = []
    header: list[str] | None = None
    first = 1
    for file in files:
        try:
            with fs.open(file, "rb") as fh:
                meta = pq.ParquetFile(fh).metadata
                names = meta.schema.to_arrow_schema().names
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"cannot read the event log: {str(exc).splitlines()[0][:200]}", file=file,
                             hint="expected Parquet files") from None
        if header is None:
            header = names
        same_columns(names, header, file)
        index = {name: i for i, name in enumerate(names)}
        groups: list[int] = []
        start, count = first, 0
        sizes = np.zeros(len(names), dtype=np.int64)
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            n = group.num_rows
            if groups and count + n > PIECE_ROWS:
                pieces.append(Piece(file, tuple(groups), start, count, tuple(int(b) for b in sizes)))
                groups, start, count, sizes = [], start + count, 0, np.zeros(len(names), dtype=np.int64)
            groups.append(g)
            count += n
            sizes += _column_bytes(group, index)
        if groups:
            pieces.append(Piece(file, tuple(groups), start, count, tuple(int(b) for b in sizes)))
        first = start + count
    return [p for p in pieces if p.n_rows], header or []


def _column_bytes(group: pq.RowGroupMetaData, index: dict[str, int]) -> np.ndarray:
    """A row group's uncompressed bytes per top-level column (``index``: each column's position; a
    nested column's leaves summed)."""
    out = np.zeros(len(index), dtype=np.int64)
    for c in range(group.num_columns):
        chunk = group.column(c)
        i = index.get(chunk.path_in_schema.split(".")[0])
        if i is not None:
            out[i] += chunk.total_uncompressed_size
    return out


def read_bytes(plan: Plan) -> int:
    """The uncompressed Parquet bytes of the columns the plan reads, over every piece (a proxy for their
    size in memory)."""
    read = set(plan.columns)
    wanted = [i for i, name in enumerate(plan.header) if name in read]
    return sum(p.column_bytes[i] for p in plan.pieces for i in wanted)


def first_layout(plan: Plan) -> Any:
    """A ``dayfirst`` rule's layout from the log's first kept row (as the loader reads it from the whole
    file's), so that every piece and bucket parses alike; None without such a rule."""
    rule = plan.mapping.timestamp
    if rule is None or rule.dayfirst is None or rule.format is not None or rule.unit is not None:
        return None
    from calibration.timestamps import layout_of

    column = column_sources(plan.mapping)["timestamp"]
    for piece in plan.pieces:
        table, rows = read_piece(plan, piece)
        if table.num_rows:
            arr = table[column]
            if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type) or not arr[0].is_valid:
                return None  # typed times need no layout; an empty first time is refused by the row checks
            return layout_of(str(pc.cast(arr[0], pa.string())), rule, Path(plan.source), column, int(rows[0]))
    return None


def plan_sha256(plan: Plan) -> str:
    """SHA-256 of the file, or of the folder's files one after the other; "" when remote."""
    if not is_local(plan.fs):
        return ""
    return sha256_of_files(list(dict.fromkeys(p.file for p in plan.pieces)))


# ---------------------------------------------------------------------------------------------- pass A


def read_piece(plan: Plan, piece: Piece) -> tuple[pa.Table, np.ndarray]:
    """A piece's rows the mapping's [filter] keeps, and their file row numbers."""
    try:
        with plan.fs.open(piece.file, "rb") as fh:
            table = pq.ParquetFile(fh).read_row_groups(list(piece.groups), columns=plan.columns)
    except (pa.ArrowInvalid, OSError) as exc:  # a damaged or vanished file: one line, not a worker traceback
        raise InputError(f"cannot read the event log: {str(exc).splitlines()[0][:200]}", file=piece.file,
                         hint="expected Parquet files") from None
    rows = np.arange(piece.first_row, piece.first_row + table.num_rows, dtype=np.int64)
    table, rows = filter_rows(table, rows, plan.mapping, Path(plan.source))  # make_plan checked its columns
    return table.replace_schema_metadata({"journey_header": "\x1f".join(plan.header)}), rows


@dataclass
class _Summary:
    """What one piece tells about the whole log (or the first check it fails)."""

    kept: int = 0
    before_kept: int = 0
    t_max: float = -np.inf
    touchpoints: set = field(default_factory=set)
    personas: set = field(default_factory=set)
    zones: ZoneTally = field(default_factory=ZoneTally)
    error: tuple | None = None  # (rank, InputError fields): calibration/row_checks.py's order of checks


def _summarize(plan: Plan, piece: Piece) -> _Summary:
    """Pass A on one piece: the loader's row checks in its order, vocabularies, last timestamp."""
    try:
        table, rows = read_piece(plan, piece)
    except InputError as err:
        return _Summary(kept=1, error=((-1, 0), error_fields(err)))  # kept=1: reported before "no rows left"
    out = _Summary(kept=table.num_rows)
    if not table.num_rows:
        return out
    checked = check_rows(table, rows, plan.mapping, plan.stages, Path(plan.source), layout=plan.layout)
    if checked.failure is not None:
        rank, err = checked.failure
        out.error = (rank, error_fields(err))
        return out
    out.touchpoints, out.personas, out.zones = checked.touchpoints, checked.personas, checked.zones
    time = checked.ns.astype(np.float64) / NS_PER_DAY  # as load_events compares them
    kept = time < plan.before if plan.before is not None else np.ones(time.size, dtype=bool)
    out.before_kept = int(kept.sum())
    if out.before_kept:
        out.t_max = float(time[kept].max())
    return out


def check_pieces(plan: Plan, client) -> float:
    """Checks and vocabularies of the whole log (on the workers); the provisional last timestamp."""
    summaries = client.gather(client.map(partial(_summarize, plan), plan.pieces, pure=False))
    errors = [(s.error[0], i, s.error[1]) for i, s in enumerate(summaries) if s.error is not None]
    if not sum(s.kept for s in summaries):
        raise InputError("no rows left after the mapping's [filter]", file=plan.source, where="[filter]",
                         hint="check the filter values")
    if errors:  # the loader's first check that fails, at its first row in file order
        raise InputError(**min(errors, key=lambda e: e[:2])[2])
    if plan.before is not None and not sum(s.before_kept for s in summaries):
        raise InputError("no rows before the split", file=plan.source, where="--split")
    zones = ZoneTally()
    for s in summaries:
        zones.add(s.zones)
    plan.notes.update(zones.note())
    plan.touchpoints = sorted(set().union(*(s.touchpoints for s in summaries)))
    plan.personas = persona_names(plan.mapping, set().union(*(s.personas for s in summaries)), plan.header)
    return max(s.t_max for s in summaries)


def error_fields(err: InputError) -> dict:
    """An InputError as its fields: rebuilt on the driver, it prints the same line."""
    return {"message": err.message, "file": err.file, "where": err.where, "value": err.value, "hint": err.hint}
