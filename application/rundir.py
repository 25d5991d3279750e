"""Run directories, manifests and atomic writes: the only place that writes files.

A run directory is built under a hidden temporary name and renamed into place when complete, so a
directory with the final name is never half-written; an interrupted run leaves only a
``.NAME.partial-PID-*`` folder behind, removed by the next run into NAME once PID is gone.

Nothing journey did not write is ever replaced: ``--out`` of a run is a new folder or an earlier run
directory (``check_run_out``), an output file is new or one journey wrote (``check_output_file``).
"""
from __future__ import annotations

import errno
import glob
import json
import os
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sim._version import __version__
from sim.errors import InputError
from sim.limits import sha256_of

RESULTS = Path("results")
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: the umask can only be read by setting it


def utc_now() -> str:
    """The time now, UTC, to the second (ISO 8601, Z)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def default_run_dir(command: str) -> Path:
    """results/<command>-<UTC time>/: a run without --out."""
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


def write_text_atomic(path: str | Path, text: str | bytes | Iterable[bytes], *, shown: str | Path | None = None
                      ) -> Path:
    """Write to a temporary file beside ``path`` and rename it into place; ``text`` may come in pieces
    (an iterable of bytes, written as they come: never held whole).

    Errors name ``shown`` (default ``path``): a file inside a run directory under construction is
    reported under the run's final name, never the hidden temporary one.
    """
    path = Path(path)
    shown = path if shown is None else Path(shown)
    parent = path.parent if str(path.parent) else Path(".")
    _make_folder(parent, shown=shown.parent)
    if path.is_dir():
        raise InputError("output path is a directory", file=shown, hint="give a file name")
    pieces = [text.encode("utf-8")] if isinstance(text, str) else [text] if isinstance(text, bytes) else text
    prefix = f".{path.name}.tmp-"
    clean_stale(parent, prefix)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise InputError(f"cannot write to the output folder ({_words(exc)})", file=shown.parent,
                         hint=_hint(exc)) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            for piece in pieces:
                fh.write(piece)
        os.replace(tmp, path)
    except OSError as exc:  # disk full, target replaced by a folder meanwhile, ...
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write the output ({_words(exc)})", file=shown, hint=_hint(exc)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _words(exc: OSError) -> str:
    """The errno's words as part of a sentence: 'no space left on device'."""
    text = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    return text[:1].lower() + text[1:]


def _hint(exc: OSError) -> str | None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space or choose another --out"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose a folder you can write to"
    return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (when unsure: yes, so its files are kept)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's live process
        return True
    return True


_PID = re.compile(r"(\d+)-")


def clean_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove ``parent/PREFIX<pid>-*`` left by processes that are gone (killed mid-write)."""
    removed: list[Path] = []
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        m = _PID.match(entry.name[len(prefix):])
        if m is None or pid_alive(int(m.group(1))):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _make_folder(folder: Path, shown: Path | None = None) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError("a file is in the way of the output folder", file=shown or folder,
                         hint="choose another --out") from None
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({_words(exc)})", file=shown or folder,
                         hint=_hint(exc)) from None


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as canonical JSON, atomically."""
    return write_text_atomic(path, dumps(obj))


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
        # a URL's digest only when its reader took one (a remote dataset is not read twice to hash it)
        "inputs": {str(p): known.get(str(p)) or sha256_of(p) for p in inputs
                   if p is not None and (known.get(str(p)) or Path(p).is_file())},
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
        """Write ``obj`` as canonical JSON into the run directory."""
        return self.text(name, dumps(obj))

    def text(self, name: str, text: str | bytes) -> Path:
        """Write a text (or bytes) file into the run directory."""
        self.files.append(name)
        return write_text_atomic(self.path / name, text, shown=self.final / name)

    def file(self, name: str) -> Path:
        """A path inside the run directory for writers that need one (figures, databases)."""
        self.files.append(name)
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


# ---- what may be replaced ------------------------------------------------------------------------
MANIFEST = "manifest.json"
# optimize keeps its study journal (and Optuna's lock beside it) in the run directory before the
# run's manifest exists: a folder holding only these is an optimize run whose search was cut short
STUDY_FILES = ("study.log", "study.log.lock", "study.log.torn")  # .torn: a journal kept after repair
_HEAD = 8192  # bytes read to recognise a file journey wrote
REPORT_GENERATOR = "journey"  # <meta name="generator" content="journey X.Y.Z"> in every report page


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest ``run_directory`` writes (command, journey_version, started, files), or None."""
    path = folder / MANIFEST
    try:
        if not path.is_file() or path.stat().st_size > 64 << 20:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    if not (isinstance(data.get("command"), str) and isinstance(data.get("journey_version"), str)
            and isinstance(data.get("started"), str) and isinstance(data.get("files"), list)
            and all(isinstance(f, str) for f in data["files"])):
        return None
    return data


def _protected(resolved: Path) -> str | None:
    """Why a folder must never be replaced whole: the cwd, the home folder, or one above them."""
    cwd = Path.cwd().resolve()
    home = Path.home().resolve()
    if resolved == cwd:
        return "is the current folder"
    if resolved == home:
        return "is your home folder"
    if cwd.is_relative_to(resolved) or home.is_relative_to(resolved):
        return "holds the current or the home folder"
    return None


def _unlisted(final: Path, listed: set[str]) -> list[str]:
    """Files under ``final`` that its manifest does not list (sorted, relative, '/'-separated)."""
    extra = []
    for root, dirs, files in os.walk(final):
        rel_root = Path(root).relative_to(final)
        for name in files + [d for d in dirs if Path(root, d).is_symlink()]:
            rel = (rel_root / name).as_posix()
            if rel not in listed and not (rel_root == Path(".") and name in STUDY_FILES):
                extra.append(rel)
    return sorted(extra)


def check_run_out(out: str | Path, inputs: list[str | Path] | tuple = ()) -> Path:
    """InputError unless ``out`` may become a run directory: replacing it loses nothing of the user's.

    Accepted: a new folder, an empty one, an earlier run directory of journey (its manifest.json,
    holding only the files the manifest lists), or a folder holding only an optimize study journal.
    Refused: the cwd, the home folder or a folder above them, any other folder, a file, and a folder
    holding an input of the command.
    """
    final = Path(out)
    resolved = final.resolve()
    why = _protected(resolved)
    if why is not None:
        raise InputError(f"{why}, which holds your files; a run directory is replaced whole", file=out,
                         where="--out", hint="give a new folder, e.g. --out results/run1")
    for p in inputs:
        if p is not None and Path(p).resolve().is_relative_to(resolved):
            raise InputError(f"holds {p}, an input of this command, and a run directory is replaced whole",
                             file=out, where="--out", hint="choose another --out")
    if not final.exists():
        if final.is_symlink():
            raise InputError("is a broken link", file=out, where="--out", hint="choose another --out")
        return final
    if not final.is_dir():
        raise InputError("output path exists and is not a directory", file=out, where="--out",
                         hint="choose another --out")
    try:
        entries = [e.name for e in os.scandir(final)]
    except OSError as exc:
        raise InputError(f"cannot read the folder ({_words(exc)})", file=out, where="--out") from None
    if not entries or set(entries) <= set(STUDY_FILES):
        return final
    manifest = read_manifest(final)
    if manifest is None:
        raise InputError("exists and is not a journey run directory (no journey manifest.json), and a run "
                         "directory is replaced whole", file=out, where="--out",
                         hint="give a new folder, or delete this one if its files can go")
    extra = _unlisted(final, {*manifest["files"], MANIFEST})
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        raise InputError(f"is a journey run directory but also holds files journey did not write ({shown})",
                         file=out, where="--out", hint="move them elsewhere or choose another --out")
    return final


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def _written_by_journey(path: Path, kind: str) -> bool:
    """Whether the existing file ``path`` is a journey output of ``kind``, from its first bytes."""
    if kind == "events":
        try:
            import pyarrow.parquet as pq

            from sim.engines.events import EVENTS_METADATA_KEY  # here: the engines are not light to import

            schema = pq.read_schema(path)  # the footer only
        except (OSError, ValueError, ImportError):
            return False
        meta = schema.metadata or {}
        return EVENTS_METADATA_KEY in meta or schema.names == ["customer_id", "timestamp", "touchpoint", "stage",
                                                               "persona"]
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEAD).decode("utf-8", errors="replace")
    except OSError:
        return False
    if kind == "model":
        return re.match(r'\s*\{\s*"kind"\s*:\s*"journey\.model"', head) is not None
    if kind == "hotspots":
        return (re.match(r'\s*\{\s*"kind"\s*:\s*"journey\.hotspots"', head) is not None
                or re.match(r'\s*\{\s*"name"\s*:.*\n\s*"conversion_stage"', head) is not None)  # 0.3.0's
    if kind == "report":
        return (f'<meta name="generator" content="{REPORT_GENERATOR}' in head
                or "<title>journey report</title>" in head)  # pages of 0.3.0, before the marker
    raise ValueError(f"unknown output kind {kind!r}")


_KIND_WORDS = {"model": "a model", "hotspots": "a hotspots ranking", "report": "a report",
               "events": "a simulated event log"}


def check_output_file(out: str | Path, kind: str, inputs: list[str | Path] | tuple = (),
                      where: str = "--out") -> Path:
    """InputError unless writing the file ``out`` replaces nothing but an earlier output of ``kind``.

    ``kind``: model, hotspots, report or events. An input of the command (also through a hard or
    symbolic link) is never an output; an existing file is replaced only if journey wrote it as ``kind``.
    """
    path = Path(out)
    for p in inputs:
        if p is not None and Path(p).exists() and _same_file(path, Path(p)):
            raise InputError("is also an input of this command", file=out, where=where,
                             hint="choose another path for the output")
    if path.is_dir():
        raise InputError("is a directory", file=out, where=where, hint="give a file name")
    if path.exists() and not _written_by_journey(path, kind):
        raise InputError(f"exists and was not written by journey as {_KIND_WORDS[kind]}", file=out, where=where,
                         hint="choose another path or delete it")
    if path.is_symlink() and not path.exists():
        raise InputError("is a broken link", file=out, where=where, hint="choose another path")
    return path


@contextmanager
def run_directory(command: str, out: str | Path | None, arguments: dict[str, Any],
                  inputs: list[str | Path], seed: int | None = None, known_hashes: dict[str, str] | None = None):
    """Yield a RunDir; on success it is renamed to its final name with ``manifest.json`` inside.

    ``out`` must pass ``check_run_out``; partial folders of ``out`` left by dead processes are removed.
    Write errors name ``out``, never the hidden folder.
    """
    final = Path(out) if out is not None else default_run_dir(command)
    check_run_out(final, inputs)
    started = utc_now()
    manifest = provenance(command, arguments, inputs, seed=seed, started=started, known_hashes=known_hashes)
    parent = final.parent if str(final.parent) else Path(".")
    _make_folder(parent, shown=final)
    _restore_or_clean_old(final)
    prefix = f".{final.name}.partial-"
    clean_stale(parent, prefix)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; results are meant to be shared
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({_words(exc)})", file=final, where="--out",
                         hint=_hint(exc)) from None
    run = RunDir(final, tmp, manifest)
    try:
        yield run
        manifest["finished"] = utc_now()
        manifest["files"] = sorted(set(run.files))
        write_text_atomic(tmp / MANIFEST, dumps(manifest), shown=final / MANIFEST)
        _swap_into_place(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        name = getattr(exc, "filename", None)
        if name is not None and not Path(str(name)).resolve().is_relative_to(tmp.resolve()):
            raise  # not a write into the run directory
        raise InputError(f"cannot write the run directory ({_words(exc)})", file=final, where="--out",
                         hint=_hint(exc)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _old_name(final: Path, pid: int) -> Path:
    return final.with_name(f".{final.name}.old-{pid}-")


def _restore_or_clean_old(final: Path) -> None:
    """A process killed mid-swap leaves the earlier run as ``.NAME.old-PID-``: back into place, or gone."""
    parent = final.parent if str(final.parent) else Path(".")
    prefix = f".{final.name}.old-"
    if not (final.exists() or final.is_symlink()):
        for entry in sorted(parent.glob(f".{glob.escape(final.name)}.old-*-")):
            m = _PID.match(entry.name[len(prefix):])
            if m is not None and not pid_alive(int(m.group(1))):
                try:
                    os.replace(entry, final)
                except OSError:
                    continue
                break
    clean_stale(parent, prefix)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _swap_into_place(tmp: Path, final: Path) -> None:
    if not (final.exists() or final.is_symlink()):
        os.replace(tmp, final)
        return
    old = _old_name(final, os.getpid())
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)  # the earlier run stays in place
        raise
    _remove(old)  # a link --out: the link goes, its target stays
