"""Run directories, manifests and atomic writes: the only place that writes files.

A run directory is built under a hidden temporary name and renamed into place when complete, so a
directory with the final name is never half-written; an interrupted run leaves only a
``.NAME.partial-*`` folder behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sim._version import __version__
from sim.errors import InputError

RESULTS = Path("results")
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: the umask can only be read by setting it


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def default_run_dir(command: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return RESULTS / f"{command}-{stamp}"


def dumps(obj: Any) -> str:
    """Canonical JSON: same object, same bytes."""
    return json.dumps(obj, indent=2, allow_nan=False, default=_default) + "\n"


def _default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_text_atomic(path: str | Path, text: str | bytes) -> Path:
    """Write to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    _make_folder(parent)
    if path.is_dir():
        raise InputError("output path is a directory", file=path, hint="give a file name")
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise InputError(f"cannot write to the output folder ({exc.strerror})", file=parent) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:  # disk full, target replaced by a folder meanwhile, ...
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write the output ({exc.strerror})", file=path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError("a file is in the way of the output folder", file=folder,
                         hint="choose another --out") from None
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({exc.strerror})", file=folder) from None


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, dumps(obj))


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def provenance(command: str, arguments: dict[str, Any], inputs: list[str | Path], *,
               seed: int | None = None, started: str | None = None,
               known_hashes: dict[str, str] | None = None) -> dict[str, Any]:
    """What produced a result: command, arguments, seed, versions and input hashes.

    ``known_hashes`` (path -> sha256) reuses digests already computed, e.g. by the loader, so a
    large event log is not read a second time just to hash it.
    """
    known = known_hashes or {}
    from importlib.metadata import PackageNotFoundError, version

    def _version(package: str) -> str | None:  # not `import pandas`: that alone costs ~0.3 s per run
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    return {
        "command": command,
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in arguments.items()},
        "argv": ["journey", *sys.argv[1:]],
        "seed": seed,
        "journey_version": __version__,
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "pandas": _version("pandas"),
        "inputs": {str(p): known.get(str(p)) or sha256_of(p) for p in inputs if p is not None and Path(p).is_file()},
        "started": started or utc_now(),
    }


class RunDir:
    """A run directory under construction; files go to ``self.path`` (a temporary folder)."""

    def __init__(self, final: Path, tmp: Path, manifest: dict[str, Any]) -> None:
        self.final = final
        self.path = tmp
        self.manifest = manifest
        self.files: list[str] = []

    def json(self, name: str, obj: Any) -> Path:
        self.files.append(name)
        return write_json(self.path / name, obj)

    def text(self, name: str, text: str | bytes) -> Path:
        self.files.append(name)
        return write_text_atomic(self.path / name, text)

    def file(self, name: str) -> Path:
        """A path inside the run directory for writers that need one (figures, databases)."""
        self.files.append(name)
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


@contextmanager
def run_directory(command: str, out: str | Path | None, arguments: dict[str, Any],
                  inputs: list[str | Path], seed: int | None = None, known_hashes: dict[str, str] | None = None):
    """Yield a RunDir; on success it is renamed to its final name with ``manifest.json`` inside."""
    final = Path(out) if out is not None else default_run_dir(command)
    if final.exists() and not final.is_dir():
        raise InputError("output path exists and is not a directory", file=final, hint="choose another --out")
    started = utc_now()
    manifest = provenance(command, arguments, inputs, seed=seed, started=started, known_hashes=known_hashes)
    parent = final.parent if str(final.parent) else Path(".")
    _make_folder(parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=parent))
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({exc.strerror})", file=parent) from None
    run = RunDir(final, tmp, manifest)
    try:
        yield run
        manifest["finished"] = utc_now()
        manifest["files"] = sorted(set(run.files))
        write_json(tmp / "manifest.json", manifest)
        _swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(tmp: Path, final: Path) -> None:
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
