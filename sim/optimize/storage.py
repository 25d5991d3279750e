"""The Optuna adapter: where a study lives (journal file or database URL), opened with the repairs a
crashed run needs (a stale lock, a torn last line) and a journal synced once per trial.

It touches the journal and its lock because they are the storage; it writes nothing else.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.errors import InputError

DEFAULT_JOURNAL = "study.log"
PG_LOCK_KEY = 0x6A6F75726E  # advisory lock serialising schema / study creation on PostgreSQL
TORN = ".torn"  # the copy of a journal whose last line was cut, kept beside it
STALE_LOCK_SECONDS = 5
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: the umask can only be read by setting it


@dataclass(frozen=True)
class StorageSpec:
    """Where the study lives: a journal file or an SQLAlchemy URL."""

    kind: str  # "journal" or "rdb"
    target: str  # journal file path or database URL (driver filled in)
    label: str  # what best.json shows (relative name for the default, no password)
    file: Path | None = None  # the local file holding the study, if any

    @property
    def is_postgres(self) -> bool:
        """Whether the study lives in PostgreSQL (creation is then serialised by an advisory lock)."""
        return self.kind == "rdb" and self.target.startswith("postgresql")


def _mask_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # a URL SQLAlchemy cannot parse: drop anything like a password
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.rsplit('@', 1)[-1]}" if "@" in rest else url


def _postgres_driver(url: str) -> str:
    """`postgresql://` means psycopg (v3) to SQLAlchemy 2.1; use psycopg2 when only that is installed."""
    scheme, rest = url.split("://", 1)
    if "+" in scheme:
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is not None:
        return url
    if importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    raise InputError("no PostgreSQL driver is installed", where="--storage", value=_mask_password(url),
                     hint="pip install psycopg2-binary (or `pip install journey[postgres]`)")


def parse_storage(storage: str | None, run_dir: Path) -> StorageSpec:
    """--storage: none (journal file in the run directory), a database URL, or a .log / .db file."""
    if storage is None:
        path = run_dir / DEFAULT_JOURNAL
        return StorageSpec("journal", str(path), DEFAULT_JOURNAL, path)
    text = storage.strip()
    hint = "use sqlite:///FILE.db, postgresql://USER@HOST/DB, or a journal file FILE.log"
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme.startswith("sqlite"):
            path = Path(text.split(":///", 1)[1]) if ":///" in text else None
            if path is None or not str(path):
                raise InputError("an SQLite URL needs a file", where="--storage", value=text, hint=hint)
            _parent_exists(path, text)
            return StorageSpec("rdb", text, text, path)
        if scheme.startswith(("postgres", "mysql", "mariadb", "oracle", "mssql")):
            _check_url(text, hint)
        if scheme.startswith("postgres"):
            url = text.replace("postgres://", "postgresql://", 1) if scheme == "postgres" else text
            url = _postgres_driver(url)
            return StorageSpec("rdb", url, _mask_password(text))
        if scheme.startswith(("mysql", "mariadb", "oracle", "mssql")):
            return StorageSpec("rdb", text, _mask_password(text))
        raise InputError("unknown storage URL scheme", where="--storage", value=_mask_password(text), hint=hint)
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix in (".log", ".jsonl", ".journal"):
        _parent_exists(path, text)
        return StorageSpec("journal", str(path), text, path)
    if suffix in (".db", ".sqlite", ".sqlite3"):
        _parent_exists(path, text)
        return StorageSpec("rdb", f"sqlite:///{path}", text, path)
    raise InputError("cannot tell what kind of storage this is", where="--storage", value=text, hint=hint)


def _check_url(text: str, hint: str) -> None:
    """A database URL whose host or port cannot be read (an unclosed IPv6 bracket, a port that is not a
    number from 1 to 65535) is bad input, said before any connection is tried."""
    from urllib.parse import urlsplit

    try:
        port = urlsplit(text).port
    except ValueError as exc:
        raise InputError(f"not a valid database URL ({exc})", where="--storage", value=_mask_password(text),
                         hint=hint) from None
    if port == 0:
        raise InputError("not a valid database URL (port 0)", where="--storage", value=_mask_password(text),
                         hint=hint)


def _parent_exists(path: Path, text: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError("the storage file's folder does not exist", where="--storage", value=text,
                         hint=f"create {parent} first, or check the path")


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    return lines[0] if lines else exc.__class__.__name__


def _check_reachable(spec: StorageSpec) -> None:
    """Connect once with a short timeout, so a wrong host or password is one clear line."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    connect_args = {"connect_timeout": 10} if spec.is_postgres else {}
    try:
        engine = sqlalchemy.create_engine(spec.target, poolclass=NullPool, connect_args=connect_args)
        with engine.connect():
            pass
    except (ImportError, sqlalchemy.exc.SQLAlchemyError) as exc:
        raise InputError(f"cannot reach the storage ({_first_line(exc)})", where="--storage", value=spec.label,
                         hint="check the URL, host, port, user, password and that the database exists") from None


@contextlib.contextmanager
def creation_lock(spec: StorageSpec) -> Iterator[None]:
    """On PostgreSQL, one process at a time creates tables and studies (workers start together)."""
    if not spec.is_postgres:
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(spec.target, poolclass=NullPool)
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
            conn.commit()
    engine.dispose()


class _TrialSyncedJournal:
    """Builds a journal file backend that syncs to disk once per trial instead of after every write.

    Optuna's file backend fsyncs each of the ~8 writes of a trial (3-4 ms each on a virtual disk);
    syncing once at the end of the trial keeps the same promise (a crash, even a power cut, loses at
    most the trial in flight) at an eighth of the cost. Appends stay under the file lock, so other
    processes on the machine see them at once.
    """

    @staticmethod
    def make(path: str) -> Any:
        from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

        class Backend(JournalFileBackend):
            def __init__(self, file_path: str) -> None:
                # a writer holds the lock for milliseconds: one older than this was left by a killed process
                self._journey_lock = JournalFileSymlinkLock(file_path, grace_period=STALE_LOCK_SECONDS)
                self._journey_path = file_path
                super().__init__(file_path, lock_obj=self._journey_lock)

            def append_logs(self, logs: list[dict[str, Any]]) -> None:
                text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
                self._journey_lock.acquire()
                try:
                    with open(self._journey_path, "ab") as fh:
                        fh.write(text.encode("utf-8"))
                finally:
                    self._journey_lock.release()

            def sync(self) -> None:
                with open(self._journey_path, "ab") as fh:
                    os.fsync(fh.fileno())

        return Backend(path)


@dataclass
class Store:
    """An opened Optuna storage with what it takes to sync and close it."""

    storage: Any
    backend: Any = None  # journal backend
    engine: Any = None  # SQLAlchemy engine of an RDB storage
    notes: list[str] = field(default_factory=list)  # said to the user (a torn journal line recovered)

    def sync(self) -> None:
        """Make the trials told so far durable (journal: one fsync per trial)."""
        if self.backend is not None and hasattr(self.backend, "sync"):
            self.backend.sync()

    def close(self) -> None:
        """Release database connections (before a run directory is moved, or a process ends)."""
        if self.engine is not None:
            self.engine.dispose()


def stale_lock(path: Path) -> str | None:
    """Remove a journal lock left behind by a killed process (older than any write holds it), so a
    resume does not wait Optuna's half minute for it; returns a line saying so."""
    lock = Path(str(path) + ".lock")
    try:
        age = time.time() - lock.lstat().st_mtime
    except FileNotFoundError:
        return None
    if age < STALE_LOCK_SECONDS:
        return None
    try:
        lock.unlink()
    except FileNotFoundError:  # another worker removed it first
        return None
    return f"removed the study journal's lock left by a process that stopped {age:.0f} s ago ({lock})"


def repair_journal(path: Path) -> str | None:
    """A journal whose last line was cut (a power loss mid-write) keeps its complete trials: the
    original is copied to ``<name>.torn``, the torn line dropped; returns a line saying so."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if not data or data.endswith(b"\n"):
        return None
    keep = data[:data.rfind(b"\n") + 1]
    copy = path.with_name(path.name + TORN)
    _rewrite(copy, data)
    _rewrite(path, keep)
    return (f"the study journal's last line was cut (a crash or power loss while writing): the complete "
            f"entries before it were kept and the torn line dropped; the original is kept as {copy}")


def _rewrite(path: Path, data: bytes) -> None:
    """Replace a journal file (or write its torn copy) through a temporary file beside it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the journal is shared like any result
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_storage(spec: StorageSpec) -> Store:
    """An Optuna storage for the spec; unreachable databases raise InputError (one line)."""
    import optuna
    from optuna.storages.journal import JournalStorage

    if spec.kind == "journal":
        try:
            notes = [n for n in (stale_lock(Path(spec.target)), repair_journal(Path(spec.target))) if n]
            backend = _TrialSyncedJournal.make(spec.target)
            return Store(JournalStorage(backend), backend=backend, notes=notes)
        except OSError as exc:
            raise InputError(f"cannot open the journal file ({exc.strerror})", where="--storage",
                             value=spec.label) from None
    import sqlalchemy

    _check_reachable(spec)
    kwargs = {"connect_args": {"timeout": 60}} if spec.target.startswith("sqlite") else {}
    for attempt in range(6):
        try:
            with creation_lock(spec):
                rdb = optuna.storages.RDBStorage(spec.target, engine_kwargs=kwargs)
            return Store(rdb, engine=rdb.engine)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            # another process creating the same tables at the same moment: wait a little and retry
            if attempt == 5:
                raise InputError(f"cannot set up the storage ({_first_line(exc)})", where="--storage",
                                 value=spec.label) from None
            time.sleep(0.1 * (attempt + 1) * (1 + (os.getpid() % 10) / 10))
    raise AssertionError("unreachable")
