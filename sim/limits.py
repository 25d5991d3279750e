"""Limits on what journey reads and runs, and the checks that enforce them as one-line InputErrors.

Input files are checked before they are opened: a FIFO or a device (``/dev/zero``) would block or
never end, and a model, scenario or mapping file beyond ``MAX_TEXT_BYTES`` is not one journey wrote
(the largest real models are a few MiB), so nothing is read in the gigabytes. Run sizes are capped
so that a typo (``--customers 1000000000000``) is refused at once instead of filling memory.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from sim.errors import InputError

MAX_TEXT_BYTES = 256 * 2**20  # model JSON, scenario or mapping TOML, run-directory JSON
MAX_CUSTOMERS = 1_000_000_000  # per replication: about 2 min of the fast engine, memory bounded (chunks)
MAX_REPLICATIONS = 10_000
MAX_SIMULATED = 10_000_000_000  # customers x replications: about 15 min of the fast engine
MAX_STAGES = 10_000  # stage codes are int16 in the log and the engines


def regular_file(path: str | Path, what: str = "file", *, max_bytes: int | None = None) -> Path:
    """``path`` as a readable regular file (not a FIFO, device or folder), at most ``max_bytes``."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{what} not found", file=path, hint="check the path") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} ({exc.__class__.__name__})", file=path) from None
    a = "an" if what[:1] in "aeiou" else "a"
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"is a directory, expected {a} {what}", file=path)
    if not stat.S_ISREG(st.st_mode):  # reading a FIFO blocks, /dev/zero never ends
        raise InputError(f"not a regular file (a pipe or device), expected {a} {what}", file=path,
                         hint="save the data to a file first")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {what} (permission denied)", file=path, hint="check its permissions")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputError(f"too large for a {what} ({st.st_size / 2**20:,.0f} MiB; the limit is "
                         f"{max_bytes / 2**20:,.0f} MiB)", file=path, hint="is it the right file?")
    return path


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    """The bytes of a small text input (model, scenario, mapping), checked by ``regular_file`` first."""
    path = regular_file(path, what, max_bytes=MAX_TEXT_BYTES)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} ({exc.__class__.__name__})", file=path) from None


def _loads(parse, syntax_error: type[ValueError], kind: str, text: str, file: object) -> Any:
    """``parse(text)`` with the nesting and number problems as InputErrors (syntax errors left to the caller)."""
    try:
        return parse(text)
    except RecursionError:
        raise InputError(f"{kind} nested too deeply", file=file, hint="is it the right file?") from None
    except syntax_error:
        raise
    except ValueError:  # an integer of more than 4300 digits
        raise InputError("a number too long to read (more than 4,300 digits)", file=file,
                         hint="is it the right file?") from None


def loads_json(text: str, file: object) -> Any:
    """json.loads with the nesting and number problems as InputErrors (JSONDecodeError left to the caller)."""
    return _loads(json.loads, json.JSONDecodeError, "JSON", text, file)


def loads_toml(text: str, file: object) -> dict[str, Any]:
    """tomllib.loads with the nesting problem as an InputError (TOMLDecodeError left to the caller)."""
    return _loads(tomllib.loads, tomllib.TOMLDecodeError, "TOML", text, file)


def finite(value: float | None, where: str, *, positive: bool = False, file: object = None) -> None:
    """A number option must be a finite number (nan and inf pass Typer's float parsing)."""
    if value is None:
        return
    if not math.isfinite(value):
        raise InputError("must be a finite number", file=file, where=where, value=value)
    if positive and value <= 0:
        raise InputError("must be positive", file=file, where=where, value=value)


def run_size(customers: int, replications: int, *, where: str = "--customers") -> None:
    """Refuse at once a run too large for a machine of 24 GB and an afternoon."""
    if customers > MAX_CUSTOMERS:
        raise InputError(f"at most {MAX_CUSTOMERS:,} customers per replication (a larger cohort takes "
                         "hours and gives no better estimate)", where=where, value=customers,
                         hint="use --replications for more, or a smaller cohort")
    if replications > MAX_REPLICATIONS:
        raise InputError(f"at most {MAX_REPLICATIONS:,} replications (each keeps its counts in memory)",
                         where="--replications", value=replications)
    if customers * replications > MAX_SIMULATED:
        raise InputError(f"at most {MAX_SIMULATED:,} simulated customers in all (customers x replications; "
                         "about 15 minutes)", where="--customers x --replications",
                         value=customers * replications, hint="lower one of them")


def sha256_of(path: str | Path) -> str:
    """The file's SHA-256, read in 1 MiB blocks (a log may be gigabytes)."""
    return sha256_of_files([path])


def sha256_of_files(paths: list[str | Path]) -> str:
    """SHA-256 of the files' bytes one after the other (a Parquet folder's files; one file: its own hash)."""
    h = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
