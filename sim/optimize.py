"""`journey optimize`: Optuna searches the split of a budget over investments (CONTRACT §2, §3).

    scenario ──SpendSpace──▶ spends (feasible by construction) ──Objective──▶ exact conversion
        │                                     ▲
        └── study (storage: journal file in the run directory by default, or --storage URL)
              one or K worker processes ask/tell trials ──▶ best split ──▶ simulated for a CI
                                                            ──▶ best.json, best.toml, trials.csv, PNGs

Search space: each free investment's parameter is its spend drawn from [min, max] widened by 10 %
of the range on both sides and clipped back, so the bounds themselves (spend nothing extra on a lever
that hurts, or all it can take) have prior mass; if the spends above the minimums add up to more than
the budget left, they are scaled down to it. Every trial is feasible; the repaired spends are the
trial's user attributes and what is evaluated, reported and written.
"""
from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from application.rundir import check_run_out, default_run_dir, run_directory, utc_now, write_text_atomic
from sim.errors import InputError, JourneyError
from sim.exact import evaluate
from sim.limits import sha256_of
from sim.model import Model
from sim.money import has_values
from sim.scenario import Scenario, apply, load_scenario
from sim.summary import mean_ci
from sim.summary import round_sig as _r

CLIP = 0.1  # parameter ranges reach this share of [min, max] beyond each bound (clipped back)
DEFAULT_JOURNAL = "study.log"
REPLICATIONS = 5
SPACE_VERSION = 1  # bump when the parametrisation changes: old studies cannot be resumed
FINGERPRINT_ATTR = "journey_fingerprint"
OBJECTIVE_ATTR = "journey_objective"  # said when a resume is refused for another objective
PARETO_LEVELS = 10
PARETO_STREAM = 1 << 40  # sampler streams of the Pareto levels, apart from the study's
PG_LOCK_KEY = 0x6A6F75726E  # advisory lock serialising schema / study creation on PostgreSQL


# ---- search space ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpendSpace:
    """Free investments with their bounds; maps Optuna parameters to feasible spends."""

    names: tuple[str, ...]  # investments Optuna chooses, in file order
    lo: np.ndarray
    hi: np.ndarray
    fixed: dict[str, float]  # investments with a fixed spend (or min_spend == max_spend)
    order: tuple[str, ...]  # every investment, in file order
    total: float  # the budget

    @classmethod
    def from_scenario(cls, scenario: Scenario, total: float | None = None) -> SpendSpace:
        file = scenario.source
        if not scenario.investment:
            raise InputError("the scenario has no [[investment]] to optimise", file=file, where="investment",
                             hint="add [[investment]] tables with name, touchpoint, lever, max_effect, "
                                  "half_saturation and max_spend (see docs/optimize.md)")
        if scenario.budget is None:
            raise InputError("the scenario has no [budget]", file=file, where="budget",
                             hint="add `[budget]` with `total = ...` (the most the spends may add up to)")
        names, lo, hi, fixed = [], [], [], {}
        for inv in scenario.investment:
            if inv.spend is not None:
                fixed[inv.name] = float(inv.spend)
            elif inv.max_spend - inv.min_spend <= 0:
                fixed[inv.name] = float(inv.min_spend)
            else:
                names.append(inv.name)
                lo.append(inv.min_spend)
                hi.append(inv.max_spend)
        if not names:
            raise InputError("every investment has a fixed spend: nothing to optimise", file=file,
                             where="investment", hint="remove `spend = ...` from the investments Optuna may choose")
        return cls(names=tuple(names), lo=np.array(lo, dtype=float), hi=np.array(hi, dtype=float), fixed=fixed,
                   order=tuple(inv.name for inv in scenario.investment),
                   total=float(scenario.budget.total if total is None else total))

    def with_budget(self, total: float) -> SpendSpace:
        return SpendSpace(self.names, self.lo, self.hi, self.fixed, self.order, float(total))

    @property
    def floor(self) -> float:
        """The least any split spends: fixed spends plus the minimums."""
        return float(sum(self.fixed.values()) + self.lo.sum())

    @property
    def free_budget(self) -> float:
        """Budget left above the floor, capped by what the investments can take."""
        return float(max(0.0, min(self.total - self.floor, (self.hi - self.lo).sum())))

    @property
    def quantum(self) -> float:
        """Spends are rounded down to this grid (1e-6 of the budget's order of magnitude)."""
        return 10.0 ** (math.floor(math.log10(max(self.total, 1e-300))) - 6) if self.total > 0 else 1e-6

    def param_range(self, i: int) -> tuple[float, float]:
        width = self.hi[i] - self.lo[i]
        return float(self.lo[i] - CLIP * width), float(self.hi[i] + CLIP * width)

    def suggest(self, trial: Any) -> dict[str, float]:
        raw = [trial.suggest_float(name, *self.param_range(i)) for i, name in enumerate(self.names)]
        return self.spends(raw)

    def spends(self, raw: list[float] | np.ndarray) -> dict[str, float]:
        """Feasible spends of the free investments from raw parameters (clip, scale to budget, round down)."""
        extra = np.clip(np.asarray(raw, dtype=float), self.lo, self.hi) - self.lo
        room = max(0.0, self.total - self.floor)
        if extra.sum() > room:
            extra *= room / extra.sum()
        out = {name: self._down(min(self.lo[i] + extra[i], self.hi[i]), i) for i, name in enumerate(self.names)}
        # the budget check adds the spends in file order, as the scenario's validation does: never above it
        while sum(self.allocation(out).values()) > self.total:
            i = int(np.argmax([out[n] - self.lo[k] for k, n in enumerate(self.names)]))
            if out[self.names[i]] <= self.lo[i]:
                break
            out[self.names[i]] = self._down(out[self.names[i]] - self.quantum, i)
        return out

    def _down(self, x: float, i: int) -> float:
        """x rounded down to the quantum grid, kept within [min, max] of investment i."""
        q = self.quantum
        digits = max(0, -math.floor(math.log10(q)))
        k = math.floor(x / q + 1e-9)  # 0.3 / 1e-4 is 2999.99..., not one quantum less
        v = round(k * q, digits)
        if v > x:
            v = round((k - 1) * q, digits)
        return float(min(max(v, self.lo[i]), self.hi[i]))

    def even_params(self) -> dict[str, float]:
        """Raw parameters of an even split of the free budget (a sensible first trial)."""
        share = self.free_budget / len(self.names)
        return {name: float(self.lo[i] + min(share, self.hi[i] - self.lo[i])) for i, name in enumerate(self.names)}

    def even_split(self) -> dict[str, float]:
        """The spends of the even split, as the study's first trial evaluates them."""
        params = self.even_params()
        return self.spends([params[name] for name in self.names])

    def allocation(self, spends: dict[str, float]) -> dict[str, float]:
        """Every investment's spend (fixed ones included), in file order."""
        return {name: float(spends[name]) if name in spends else self.fixed[name] for name in self.order}


# ---- objective ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectiveSpec:
    """--objective: what a trial's value is. point: the calibrated model's exact conversion; mean: the
    mean exact conversion over the first K parameter draws; qNN: the NNth percentile over those draws
    of the uplift against the baseline on the same draw (a cautious choice)."""

    kind: str  # "point", "mean" or "quantile"
    q: int | None = None  # 1..99 for "quantile"

    @classmethod
    def parse(cls, text: str) -> ObjectiveSpec:
        t = str(text).strip().lower()
        if t in ("point", "mean"):
            return cls(t)
        digits = t[1:]
        if t.startswith("q") and digits.isascii() and digits.isdigit() and 1 <= int(digits) <= 99:
            return cls("quantile", int(digits))
        raise InputError("unknown objective", where="--objective", value=text,
                         hint="use point (the calibrated model), mean (the average over the data's "
                              "uncertainty) or qNN with NN a whole number from 1 to 99 (q10: the uplift "
                              "reached in 90 % of the plausible models)")

    @property
    def label(self) -> str:
        return f"q{self.q}" if self.kind == "quantile" else self.kind

    @property
    def uses_draws(self) -> bool:
        return self.kind != "point"

    def draws_used(self, draws: int) -> int:
        """K: the parameter draws one trial evaluates (few, for speed)."""
        return min(int(draws), OBJECTIVE_DRAWS) if self.uses_draws else 0

    def tag(self, draws: int, seed: int) -> str:
        """What a study remembers of its objective (said when a resume is refused)."""
        return self.label if not self.uses_draws else f"{self.label} over {draws} draws, seed {seed}"

    def describe(self, draws: int) -> str:
        k = self.draws_used(draws)
        return {"point": "the calibrated model's exact expected conversion",
                "mean": f"the mean exact expected conversion over {k} parameter draws",
                "quantile": f"the {self.q}th percentile over {k} parameter draws of the exact uplift against "
                            "the baseline on the same draw"}[self.kind]


OBJECTIVE_DRAWS = 40  # K = min(--draws, this): a trial evaluates K models
DEFAULT_CUSTOMERS = 100_000  # a scenario without `customers` (profit needs it: sim/scenario.py)
POINT = ObjectiveSpec("point")


class Objective:
    """Exact expected conversion of the model with the scenario and the spends applied; with parameter
    draws (``models``), the mean over them or a percentile of the paired uplift (``spec``)."""

    def __init__(self, model: Model, scenario: Scenario, spec: ObjectiveSpec = POINT,
                 models: list[Model] | None = None, maximize: str | None = None) -> None:
        self.model = model
        self.scenario = scenario
        self.horizon = scenario.horizon_days
        self.spec = spec
        self.models = list(models or [])
        if spec.uses_draws and not self.models:
            raise ValueError("an objective over parameter draws needs the draws")
        self._base_draws: np.ndarray | None = None
        # the scenario's [objective] (docs/optimize.md, "Money"); "conversion" without a target is today's
        self.maximize = maximize if maximize is not None else scenario.maximize
        table = scenario.objective
        self.target = table.target_uplift if table is not None and maximize is None else None
        self.customers = int(scenario.customers or DEFAULT_CUSTOMERS)
        self._base_measure: float | None = None

    @property
    def in_money(self) -> bool:
        return self.maximize in ("revenue", "profit")

    @property
    def plain(self) -> bool:
        """Today's objective: conversion, no target."""
        return self.maximize == "conversion" and self.target is None

    def measure(self, model: Model) -> float:
        """What the objective is made of on one model: conversion, or revenue per customer."""
        if self.in_money:
            from sim.money import revenue_per_customer

            return revenue_per_customer(model)
        return evaluate(model, horizon_days=self.horizon).conversion_rate

    def score(self, measure: float | np.ndarray, base: float | np.ndarray, spends: dict[str, float]
              ) -> float | np.ndarray:
        """A trial's value from the measure with the spends and without them (``base``)."""
        spent = float(sum(spends.values()))
        if self.maximize == "profit":
            return self.customers * (measure - base) - spent
        if self.maximize == "revenue":
            return measure
        # the cheapest split reaching the target: less spend is better; short of the target, a penalty
        # that grows with the shortfall (always below any split that reaches it)
        short = np.maximum(self.target - (measure - base), 0.0) / self.target
        return np.where(short > 0, -(self.scenario.budget.total if self.scenario.budget else spent) * (1.0 + short)
                        - spent, -spent)

    @property
    def scale(self) -> float:
        """reference_optimum's loss scale: uplifts of conversion are small numbers, money ones are not."""
        if self.plain:
            return 1e4
        if self.maximize == "revenue":
            return 1e4 / max(self._base(), 1e-9)
        if self.maximize == "profit":
            return 1e4 / max(self.customers * self._base(), 1e-9)
        return 1e4 / max(self.scenario.budget.total if self.scenario.budget else 1.0, 1e-9)

    def _base(self) -> float:
        if self._base_measure is None:
            self._base_measure = self.measure(self.model_with({}))
        return self._base_measure

    def model_with(self, spends: dict[str, float]) -> Model:
        return apply(self.model, self.scenario, spends=spends)

    def point(self, spends: dict[str, float]) -> float:
        """The calibrated model's exact conversion (what best.json reports whatever the objective)."""
        return evaluate(self.model_with(spends), horizon_days=self.horizon).conversion_rate

    def on_draws(self, spends: dict[str, float]) -> np.ndarray:
        """Exact conversion on every draw of ``models``."""
        return draw_conversions(self.models, self.scenario, spends, self.horizon)

    def __call__(self, spends: dict[str, float]) -> float:
        if not self.plain:
            return self._money_call(spends)
        if self.spec.kind == "point":
            return self.point(spends)
        conv = self.on_draws(spends)
        if self.spec.kind == "mean":
            return float(conv.mean())
        if self._base_draws is None:
            self._base_draws = self.on_draws({})
        return float(np.percentile(conv - self._base_draws, self.spec.q))

    def _money_call(self, spends: dict[str, float]) -> float:
        """The [objective] table's value: on the calibrated model, or over the draws as --objective says."""
        if self.spec.kind == "point":
            return float(self.score(self.measure(self.model_with(spends)), self._base(), spends))
        on = np.array([self.measure(apply(m, self.scenario, spends=spends)) for m in self.models])
        if self._base_draws is None:
            self._base_draws = np.array([self.measure(apply(m, self.scenario, spends={})) for m in self.models])
        values = np.asarray(self.score(on, self._base_draws, spends), dtype=float)
        if self.spec.kind == "mean":
            return float(values.mean())
        if self.maximize == "revenue":  # qNN: a percentile of the paired uplift, as for conversion
            values = on - self._base_draws
        return float(np.percentile(values, self.spec.q))

    @property
    def baseline(self) -> float:
        """Nothing spent on the investments being optimised (changes and fixed spends kept)."""
        return self.point({})


def draw_conversions(models: list[Model], scenario: Scenario, spends: dict[str, float],
                     horizon: float | None) -> np.ndarray:
    """Exact conversion of each parameter draw with the scenario and the spends applied."""
    return np.array([evaluate(apply(m, scenario, spends=spends), horizon_days=horizon).conversion_rate
                     for m in models])


def make_objective(model: Model, scenario: Scenario, spec: ObjectiveSpec, draws: int, seed: int) -> Objective:
    """The objective of a run; workers rebuild it from the same (model, scenario, spec, draws, seed)."""
    if not spec.uses_draws:
        return Objective(model, scenario)
    from sim.uncertainty import draw_seed, parameter_draws

    # the first K of the run's draws: the same models best.json's intervals use
    models = parameter_draws(model, draws, draw_seed(seed))[:spec.draws_used(draws)]
    return Objective(model, scenario, spec, models)


def fingerprint(scenario: Scenario, model_sha: str, objective: ObjectiveSpec = POINT, draws: int = 0,
                seed: int | None = None) -> str:
    """What the objective depends on: a study made for another scenario, model or objective must not be
    resumed. (A draws-based objective also depends on the draws: their number and the run's seed.)"""
    keys = ("personas", "change", "investment", "budget", "horizon_days")
    data = {k: scenario.model_dump(mode="json")[k] for k in keys}
    data["model_sha256"] = model_sha
    data["space_version"] = SPACE_VERSION
    for key in ("objective", "value"):  # only when set: studies without them resume as before
        if getattr(scenario, key) is not None:
            data[key] = scenario.model_dump(mode="json")[key]
    if objective.uses_draws:  # point studies keep today's fingerprint: they resume as before
        data["objective"] = {"kind": objective.label, "draws": draws, "seed": seed}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ---- storage -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StorageSpec:
    """Where the study lives: a journal file or an SQLAlchemy URL."""

    kind: str  # "journal" or "rdb"
    target: str  # journal file path or database URL (driver filled in)
    label: str  # what best.json shows (relative name for the default, no password)
    file: Path | None = None  # the local file holding the study, if any

    @property
    def is_postgres(self) -> bool:
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
def _creation_lock(spec: StorageSpec) -> Iterator[None]:
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


TORN = ".torn"  # the copy of a journal whose last line was cut, kept beside it


STALE_LOCK_SECONDS = 5


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
    write_text_atomic(copy, data)
    write_text_atomic(path, keep)
    return (f"the study journal's last line was cut (a crash or power loss while writing): the complete "
            f"entries before it were kept and the torn line dropped; the original is kept as {copy}")


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
            with _creation_lock(spec):
                rdb = optuna.storages.RDBStorage(spec.target, engine_kwargs=kwargs)
            return Store(rdb, engine=rdb.engine)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            # another process creating the same tables at the same moment: wait a little and retry
            if attempt == 5:
                raise InputError(f"cannot set up the storage ({_first_line(exc)})", where="--storage",
                                 value=spec.label) from None
            time.sleep(0.1 * (attempt + 1) * (1 + (os.getpid() % 10) / 10))
    raise AssertionError("unreachable")


# ---- study -------------------------------------------------------------------------------------
def make_sampler(seed: int, offset: int = 0, worker: int = 0) -> Any:
    """TPE seeded from (seed, trials already in the study, worker): a resumed run draws new numbers."""
    import optuna

    s = int(np.random.SeedSequence([seed, offset, worker]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=s, multivariate=True, constant_liar=True)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_study(storage: Any, spec: StorageSpec, name: str, fp: str, *, sampler: Any = None,
               space: SpendSpace | None = None, objective: str = "point") -> tuple[Any, bool]:
    """Create the study or load it (race-safe); (study, created). Checks that it fits this scenario."""
    import optuna
    from optuna.study import StudyDirection

    with _creation_lock(spec):
        try:
            storage.create_new_study([StudyDirection.MAXIMIZE], name)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            created = False
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        if created:
            study.set_user_attr(FINGERPRINT_ATTR, fp)
            study.set_user_attr(OBJECTIVE_ATTR, objective)
            if space is not None:
                study.enqueue_trial(space.even_params())
    if len(study.directions) != 1 or study.direction != StudyDirection.MAXIMIZE:
        raise InputError("the study exists but does not maximise one value", where="--study", value=name,
                         hint="choose another --study name")
    have = study.user_attrs.get(FINGERPRINT_ATTR)
    if have is None:
        if study.get_trials(deepcopy=False):
            raise InputError("the study exists and was not made by journey optimize", where="--study",
                             value=name, hint="choose another --study name")
        study.set_user_attr(FINGERPRINT_ATTR, fp)  # its creator has not labelled it yet
    elif have != fp and study.user_attrs.get(OBJECTIVE_ATTR, "point") != objective:
        made = study.user_attrs.get(OBJECTIVE_ATTR, "point")
        raise InputError(f"the study in {spec.label} was made for another objective ({made})",
                         where="--study", value=name,
                         hint=f"resume it with the objective it was made for, or choose a new --study name "
                              f"(or another --out) to optimise {objective}")
    elif have != fp:
        raise InputError(f"the study in {spec.label} was made for another scenario, budget or model",
                         where="--study", value=name,
                         hint="choose a new --study name (or another --out) to start afresh")
    return study, created


def count_complete(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


# ---- trials and workers ------------------------------------------------------------------------
@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """A Ctrl-C during the block waits until the trial is committed (a second one interrupts at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


class Slots:
    """Trials this run may still start; shared by the worker processes of one run."""

    def __init__(self, n: int, shared: Any = None) -> None:
        self.value = shared  # a multiprocessing.Value, or None for a plain counter
        self.n = n

    def take(self) -> bool:
        if self.value is None:
            if self.n <= 0:
                return False
            self.n -= 1
            return True
        with self.value.get_lock():
            if self.value.value <= 0:
                return False
            self.value.value -= 1
            return True

    def give_back(self) -> None:
        if self.value is None:
            self.n += 1
        else:
            with self.value.get_lock():
                self.value.value += 1


def run_trial(study: Any, space: SpendSpace, objective: Callable[[dict[str, float]], float],
              sync: Callable[[], None] | None = None) -> float:
    """One trial, ask to tell (then made durable); a failure is recorded as FAIL before it propagates."""
    from optuna.trial import TrialState

    with _sigint_deferred():
        trial = study.ask()
        try:
            spends = space.suggest(trial)
            value = float(objective(spends))
            trial.set_user_attr("spends", spends)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, value)
        if sync is not None:
            sync()
    return value


def run_trials(study: Any, space: SpendSpace, objective: Callable[[dict[str, float]], float], *, target: int,
               slots: Slots, progress: Callable[[int], None] | None = None,
               sync: Callable[[], None] | None = None) -> int:
    """Trials until this run's slots are used or the study has ``target`` complete trials (any worker)."""
    done = 0
    while slots.take():
        if count_complete(study) >= target:
            slots.give_back()
            break
        run_trial(study, space, objective, sync)
        done += 1
        if progress is not None:
            progress(1)
    return done


@dataclass
class WorkerJob:
    model: Model
    scenario: Scenario
    spec: StorageSpec
    study: str
    fingerprint: str
    seed: int
    offset: int
    index: int
    target: int
    objective: str = "point"  # the --objective text: the worker rebuilds the objective from it
    draws: int = 0


def _add(shared: Any, amount: int) -> None:
    with shared.get_lock():
        shared.value += amount


def _worker(job: WorkerJob, counter: Any, errors: Any, done: Any) -> None:
    """Entry of a worker process: its own storage connection, its own sampler stream."""
    import warnings

    warnings.filterwarnings("ignore", module="optuna")
    try:
        _quiet_optuna()
        store = open_storage(job.spec)
        space = SpendSpace.from_scenario(job.scenario)
        spec = ObjectiveSpec.parse(job.objective)
        study, _ = open_study(store.storage, job.spec, job.study, job.fingerprint,
                              sampler=make_sampler(job.seed, job.offset, job.index),
                              objective=spec.tag(job.draws, job.seed))
        objective = make_objective(job.model, job.scenario, spec, job.draws, job.seed)
        try:
            run_trials(study, space, objective, target=job.target, slots=Slots(0, counter), sync=store.sync,
                       progress=functools.partial(_add, done))
        finally:
            store.close()
    except KeyboardInterrupt:
        sys.exit(130)
    except JourneyError as exc:
        errors.put(str(exc))
        sys.exit(2)


def _run_workers(jobs: list[WorkerJob], remaining: int, study: Any,
                 progress: Callable[[int], None] | None) -> int:
    """K worker processes on one study; Ctrl-C lets each finish its trial in flight. Returns the trials
    these workers completed (not other machines' on the same study)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no inherited connections, locks or threads
    counter = ctx.Value("l", remaining)
    errors = ctx.Queue()
    done = ctx.Value("l", 0)  # this run's completed trials: the bar and trials_this_run ignore other machines'
    procs = [ctx.Process(target=_worker, args=(job, counter, errors, done), name=f"journey-optimize-{job.index}")
             for job in jobs]
    seen = 0
    try:
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=0.25)
            if progress is not None:
                now = done.value
                if now > seen:
                    progress(now - seen)
                    seen = now
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        raise
    failed = [p for p in procs if p.exitcode not in (0, None)]
    if failed:
        message = errors.get(timeout=1) if not errors.empty() else None
        if message is not None:
            raise InputError(f"worker failed: {message}")
        raise JourneyError(f"{len(failed)} of {len(procs)} workers failed (exit {failed[0].exitcode}); "
                           "the study keeps every completed trial: run the same command again to resume")
    return int(done.value)


@dataclass
class SearchResult:
    study: Any
    store: Store
    ran: int  # trials this run completed
    complete_before: int


def search(model: Model, scenario: Scenario, space: SpendSpace, objective: Objective, *, spec: StorageSpec,
           study_name: str, fp: str, trials: int, seed: int, workers: int,
           progress_factory: Callable[[int], Any] | None = None, draws: int = 0) -> SearchResult:
    """Open (or create) the study and run trials until it holds ``trials`` complete ones."""
    store = open_storage(spec)
    try:
        study, _ = open_study(store.storage, spec, study_name, fp, space=space,
                              objective=objective.spec.tag(draws, seed))
        before = count_complete(study)
        remaining = max(0, trials - before)
        workers = max(1, min(workers, remaining))
        bar = progress_factory(remaining) if progress_factory is not None and remaining else contextlib.nullcontext()
        ran = 0  # this run's own trials: other machines may complete some of the study's meanwhile
        with bar as advance:
            if remaining == 0:
                pass
            elif workers == 1:
                study.sampler = make_sampler(seed, before, 0)
                ran = run_trials(study, space, objective, target=trials, slots=Slots(remaining), progress=advance,
                                 sync=store.sync)
            else:
                jobs = [WorkerJob(model, scenario, spec, study_name, fp, seed, before, k, trials,
                                  objective=objective.spec.label, draws=draws) for k in range(workers)]
                ran = _run_workers(jobs, remaining, study, advance)
    except BaseException:
        store.close()
        raise
    return SearchResult(study=study, store=store, ran=ran, complete_before=before)


# ---- Pareto front: conversion against total spend ----------------------------------------------
def pareto_front(space: SpendSpace, objective: Objective, best_spends: dict[str, float], best_value: float, *,
                 seed: int, trials_per_level: int, levels: int = PARETO_LEVELS,
                 progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Best split found at budget levels from the floor to the budget (in-memory TPE at each level).

    A split found at a lower level is feasible at every higher one, so each level keeps the better of
    its own search and the level below: the front never falls as the budget grows.
    """
    import optuna

    lo_total, hi_total = space.floor, space.total
    front: list[dict[str, Any]] = []
    carry: tuple[float, dict[str, float]] | None = None
    for k in range(levels + 1):
        level = lo_total + (hi_total - lo_total) * k / levels
        if k == levels:
            found = (best_value, best_spends)
        elif k == 0 or space.with_budget(level).free_budget <= 0:
            spends = space.with_budget(level).spends(space.lo)
            found = (objective(spends), spends)
        else:
            sub = space.with_budget(level)
            study = optuna.create_study(direction="maximize", sampler=make_sampler(seed, PARETO_STREAM + k, 0))
            study.enqueue_trial(sub.even_params())
            # the best split shrunk to this level: the optimum moves smoothly with the budget
            shrink = sub.free_budget / space.free_budget if space.free_budget > 0 else 0.0
            study.enqueue_trial({n: space.lo[i] + (best_spends[n] - space.lo[i]) * shrink
                                 for i, n in enumerate(space.names)})
            run_trials(study, sub, objective, target=trials_per_level, slots=Slots(trials_per_level),
                       progress=progress)
            found = (study.best_value, study.best_trial.user_attrs["spends"])
        if carry is not None and carry[0] > found[0]:
            found = carry
        carry = found
        value, spends = found
        alloc = space.allocation(spends)
        front.append({"budget": _r(level), "spend": _r(sum(alloc.values())), "expected_conversion_rate": _r(value),
                      "allocation": alloc})
    return front


# ---- reference optimum (tests and benchmarks) --------------------------------------------------
def reference_optimum(objective: Callable[[dict[str, float]], float], space: SpendSpace, *, starts: int = 8,
                      seed: int = 0, extra_starts: list[dict[str, float]] | None = None, corners: bool = True,
                      ftol: float = 1e-9
                      ) -> tuple[float, dict[str, float]]:
    """The best split by SLSQP from several starts on the same exact objective (no rounding).

    Starts: the even split, all the room on each lever in turn (``corners``), ``starts`` random splits
    and ``extra_starts``. Measures how close the Optuna search gets (tests, benchmarks) and finds each
    draw's own best split for best.json's ``stability``.
    """
    from scipy.optimize import minimize

    lo, hi = space.lo, space.hi
    width = np.maximum(hi - lo, 1e-12)
    room = max(0.0, space.total - space.floor)
    base = objective({})

    def spends_of(u: np.ndarray) -> dict[str, float]:
        x = lo + np.clip(u, 0.0, 1.0) * width
        extra = x - lo
        if extra.sum() > room:
            x = lo + extra * room / extra.sum()
        return {n: float(v) for n, v in zip(space.names, x)}

    scale = float(getattr(objective, "scale", 1e4))  # uplifts of conversion are small numbers; money is not

    def loss(u: np.ndarray) -> float:
        return -(objective(spends_of(u)) - base) * scale

    rng = np.random.default_rng(seed)
    n = len(space.names)
    inits = [np.minimum(space.free_budget / n / width, 1.0)]
    for i in range(n if corners else 0):
        u = np.zeros(n)
        u[i] = min(1.0, room / width[i])
        inits.append(u)
    while len(inits) < starts + (n + 1 if corners else 1):
        w = rng.dirichlet(np.ones(n)) * room * rng.uniform(0.5, 1.0)
        inits.append(np.minimum(w / width, 1.0))
    for s in extra_starts or []:
        inits.append(np.array([(s[nm] - lo[i]) / width[i] for i, nm in enumerate(space.names)]))
    best: tuple[float, dict[str, float]] | None = None
    cons = [{"type": "ineq", "fun": lambda u: room - float(((np.clip(u, 0, 1)) * width).sum())}]
    for u0 in inits:
        res = minimize(loss, u0, method="SLSQP", bounds=[(0.0, 1.0)] * n, constraints=cons,
                       options={"ftol": ftol, "maxiter": 200})
        spends = spends_of(res.x)
        value = objective(spends)
        if best is None or value > best[0]:
            best = (value, spends)
    assert best is not None
    return best


# ---- the chosen split under the data's uncertainty ---------------------------------------------
STABILITY_DRAWS = 20  # draws on which each draw's own best split is searched (SLSQP, two starts each)
NEAR_BEST = 0.01  # "near its best": within this share of the draw's best uplift


def uncertainty_record(objective: Objective, space: SpendSpace, spends: dict[str, float], *, draws: int,
                       seed: int) -> dict[str, Any]:
    """The chosen split, the even split and the baseline on the same parameter draws (exact, paired)."""
    from sim.summary import no_evidence_note
    from sim.uncertainty import Interval, describe, draw_seed, has_evidence, parameter_draws

    model, sc, horizon = objective.model, objective.scenario, objective.horizon
    if not has_evidence(model):
        return {"data_uncertainty": no_evidence_note(draws)}
    models = parameter_draws(model, draws, draw_seed(seed))
    even = space.even_split()
    chosen = draw_conversions(models, sc, spends, horizon)
    base = draw_conversions(models, sc, {}, horizon)
    even_conv = draw_conversions(models, sc, even, horizon)
    uplift = Interval(chosen - base)
    return {
        **_money_intervals(objective, models, spends),
        "expected_uplift_interval": [_r(x) for x in uplift.bounds],
        "probability_beats_baseline": _r(uplift.probability_positive),
        "probability_beats_even_split": _r(Interval(chosen - even_conv).probability_positive),
        "even_split": space.allocation(even),
        "even_split_expected_uplift": _r(objective.point(even) - objective.baseline),
        "even_split_expected_uplift_interval": [_r(x) for x in Interval(even_conv - base).bounds],
        "stability": stability(models[:STABILITY_DRAWS], sc, space, spends, horizon),
        "data_uncertainty": describe(model, draws),
    }


def _money_intervals(objective: Objective, models: list[Model], spends: dict[str, float]) -> dict[str, Any]:
    """The revenue uplift's and the profit's 95 % data intervals, on the draws of the conversion uplift's."""
    from sim.money import revenue_per_customer
    from sim.uncertainty import Interval

    if not has_values(objective.model_with({})):
        return {}
    sc, n = objective.scenario, objective.customers
    diff = np.array([revenue_per_customer(apply(m, sc, spends=spends)) - revenue_per_customer(apply(m, sc, spends={}))
                     for m in models])
    spent = float(sum(spends.values()))
    profit = Interval(n * diff - spent)
    return {"expected_revenue_uplift_interval": [_r(n * x) for x in Interval(diff).bounds],
            "expected_profit_interval": [_r(x) for x in profit.bounds],
            "probability_profitable": _r(profit.probability_positive)}


def stability(models: list[Model], scenario: Scenario, space: SpendSpace, spends: dict[str, float],
              horizon: float | None) -> dict[str, Any]:
    """Each draw's own best split, the spread of its spends, and how often the chosen split is near it."""
    bests, near = [], 0
    for m in models:
        obj = Objective(m, scenario)
        base, mine = obj({}), obj(spends)  # the objective's own value of spending nothing
        # ftol 1e-7 (on 1e4 x uplift): a quarter of the evaluations of 1e-9 for the same uplift to 1e-9
        value, best = reference_optimum(obj, space, starts=0, corners=False, extra_starts=[spends], ftol=1e-7)
        if mine >= value:  # SLSQP stops short now and then: the chosen split is a candidate too
            value, best = mine, spends
        near += bool(mine - base >= (1 - NEAR_BEST) * (value - base))
        bests.append(space.allocation(best))
    return {
        "draws": len(models),
        "share_of_draws_near_best": _r(near / len(models)),
        "best_spend_range": {name: [_r(_on_grid(space, name, float(np.percentile([b[name] for b in bests], q))))
                                    for q in (5, 95)] for name in space.order},
        "method": (f"on each of the first {len(models)} parameter draws, the split best on that draw (SLSQP from "
                   "the even and the chosen split); best_spend_range: 5th to 95th percentile of those splits' "
                   f"spends; share_of_draws_near_best: draws on which the chosen split's uplift is within "
                   f"{100 * NEAR_BEST:g} % of that draw's best uplift"),
    }


def _on_grid(space: SpendSpace, name: str, x: float) -> float:
    """A spend SLSQP found, on the spends' grid (no 1e-17 for nothing)."""
    return space._down(x + space.quantum / 2, space.names.index(name)) if name in space.names else x


# ---- records and files -------------------------------------------------------------------------
def trials_csv(study: Any, space: SpendSpace) -> str:
    """number, state, value, spend per investment, total spend (no times: same seed, same file)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["number", "state", "value", *[f"spend_{n}" for n in space.order], "spend"])
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        spends = t.user_attrs.get("spends")
        alloc = space.allocation(spends) if isinstance(spends, dict) else None
        value = "" if t.value is None else f"{t.value:.12g}"
        cells = [f"{alloc[n]:.10g}" for n in space.order] if alloc else [""] * len(space.order)
        total = f"{sum(alloc.values()):.10g}" if alloc else ""
        writer.writerow([t.number, t.state.name, value, *cells, total])
    return buf.getvalue()


def best_toml(scenario: Scenario, allocation: dict[str, float], run_dir: Path, *, study: str, trials: int) -> str:
    """The scenario with the chosen spends as fixed `spend = ...`, its model path relative to run_dir."""
    import tomli_w

    from sim.tomlio import read_toml

    raw = read_toml(scenario.source) if scenario.source is not None else scenario.model_dump(exclude_none=True)
    raw = dict(raw)
    model = scenario.model_path.resolve()
    try:
        raw["model"] = Path(os.path.relpath(model, run_dir.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        raw["model"] = model.as_posix()
    raw["name"] = f"{scenario.name} (best split)"
    invs = []
    for inv in raw.get("investment", []):
        inv = dict(inv)
        inv["spend"] = allocation[inv["name"]]
        invs.append(inv)
    raw["investment"] = invs
    head = (f"# {scenario.name}: the split chosen by `journey optimize` (study {study!r}, {trials} trials).\n"
            "# Every investment now has a fixed spend: compare it with `journey compare MODEL best.toml`.\n")
    return head + tomli_w.dumps(raw)


def investments_record(scenario: Scenario, allocation: dict[str, float], space: SpendSpace) -> list[dict[str, Any]]:
    out = []
    for inv in scenario.investment:
        spend = allocation[inv.name]
        out.append({"name": inv.name, "touchpoint": inv.touchpoint, "stage": inv.stage, "persona": inv.persona,
                    "lever": inv.lever, "max_effect": inv.max_effect, "half_saturation": inv.half_saturation,
                    "min_spend": inv.min_spend, "max_spend": inv.max_spend, "fixed": inv.name in space.fixed,
                    "spend": spend, "effect": _r(inv.effect(spend)), "factor": _r(inv.factor(spend))})
    return out


def simulate_split(objective: Objective, spends: dict[str, float], *, customers: int, seed: int
                   ) -> dict[str, Any]:
    """The best split and the baseline simulated with the same random numbers (fast engine)."""
    from sim.simulate import run_replications
    from sim.summary import summarize

    sc = objective.scenario
    out: dict[str, Any] = {}
    rates = {}
    for key, sp in (("best", spends), ("baseline", {})):
        model = objective.model_with(sp)
        results = run_replications(model, customers, seed, REPLICATIONS, engine="fast", horizon_days=sc.horizon_days,
                                   arrival_days=sc.arrival_days)
        summary = summarize(model, results, evaluate(model, horizon_days=sc.horizon_days), customers=customers,
                            seed=seed, engine="fast", horizon_days=sc.horizon_days)
        out[key] = summary
        rates[key] = np.array([r.conversions / max(r.n, 1) for r in results])
    diff = rates["best"] - rates["baseline"]
    return {"conversion_rate": out["best"]["conversion_rate"], "conversion_rate_ci": out["best"]["conversion_rate_ci"],
            "baseline_conversion_rate": out["baseline"]["conversion_rate"],
            "uplift": _r(diff.mean()), "uplift_ci": mean_ci(diff),
            "ci_method": f"t over {REPLICATIONS} replications (uplift: paired, common random numbers)"}


# ---- figures -----------------------------------------------------------------------------------
@dataclass
class ParetoData:
    spend: list[float]
    value: list[float]
    budget: list[float]
    chosen_spend: float
    chosen_value: float
    baseline: float


def pareto_data(best: dict[str, Any]) -> ParetoData | None:
    front = best.get("pareto") or []
    if not front:
        return None
    return ParetoData(spend=[float(p["spend"]) for p in front],
                      value=[float(p["expected_conversion_rate"]) for p in front],
                      budget=[float(p["budget"]) for p in front], chosen_spend=float(best["spend"]),
                      chosen_value=float(best["expected_conversion_rate"]),
                      baseline=float(best["baseline_expected_conversion_rate"]))


def draw_pareto(data: ParetoData, ax: Any) -> None:
    ax.plot(data.budget, data.value, "-o", color="#08519c", ms=5, lw=2, label="best split at this budget")
    ax.axhline(data.baseline, color="#7F7F7F", lw=1, ls="--", label="nothing spent")
    ax.plot([data.chosen_spend], [data.chosen_value], "*", color="#E15759", ms=14, label="chosen split")
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.2f}%")
    ax.set_xlabel("budget")
    ax.set_ylabel("expected conversion")
    ax.legend(frameon=False, fontsize=9, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)


def write_figures(run: Any, best: dict[str, Any], trials_text: str) -> None:
    from present import plots

    rows = list(csv.DictReader(io.StringIO(trials_text)))
    figs = []
    hist = plots.history_data(rows)
    if hist is not None:
        fig = plots.figure(8, 3.6)
        ax = fig.add_subplot()
        plots.draw_history(hist, ax)
        # the trials' values are the objective's: its own value of spending nothing
        ax.axhline(best.get("objective_baseline", best["baseline_expected_conversion_rate"]), color="#7F7F7F",
                   lw=1, ls="--", label="nothing spent")
        if str(best.get("objective", "")).startswith("q"):
            ax.set_ylabel(f"uplift, {best['objective'][1:]}th percentile")
        elif best.get("objective") == "mean":
            ax.set_ylabel("expected conversion, mean over the data")
        ax.legend(frameon=False, fontsize=9, loc="lower right")
        figs.append(("history.png", fig))
    alloc = plots.allocation_data(best)
    fig = plots.figure(8, 1.0 + 0.55 * len(alloc.names))
    plots.draw_allocation(alloc, fig.add_subplot())
    figs.append(("allocation.png", fig))
    resp = plots.response_data(best["investments"], best["allocation"])
    if resp is not None:
        fig = plots.figure(8, 3.8)
        plots.draw_response(resp, fig.add_subplot())
        figs.append(("response_curves.png", fig))
    money = plots.money_response_data(best)
    if money is not None:
        fig = plots.figure(max(5.5, 3.6 * len(money.names)), 3.6)
        plots.draw_money_response(money, fig)
        figs.append(("response_money.png", fig))
    par = pareto_data(best)
    if par is not None:
        fig = plots.figure(8, 3.8)
        draw_pareto(par, fig.add_subplot())
        figs.append(("pareto.png", fig))
    for name, fig in figs:
        run.text(name, plots.png_bytes(fig))


def _keep_study_files(run: Any, spec: StorageSpec, store: Store) -> None:
    """Study files living in the final run directory (this run's, or a default one left by an earlier
    run with other options) are linked into the new directory before it replaces the old one."""
    final = run.final.resolve()
    keep = {f for f in (final / DEFAULT_JOURNAL, final / (DEFAULT_JOURNAL + TORN)) if f.is_file()}
    if spec.file is not None and spec.file.resolve().is_relative_to(final):
        keep.add(spec.file.resolve())
        torn = spec.file.resolve().with_name(spec.file.name + TORN)
        if torn.is_file():
            keep.add(torn)
    store.close()
    for path in sorted(keep):
        target = run.file(str(path.relative_to(final)))
        try:
            os.link(path, target)
        except OSError:  # no hard links here: a copy (the original stays until the swap)
            shutil.copy2(path, target)


# ---- money (docs/optimize.md, "Money") --------------------------------------------------------
MARGINAL_STEP = 1e-3  # of an investment's spend range: the step of its marginal return


def money_record(objective: Objective, space: SpendSpace, spends: dict[str, float], trial_value: float
                 ) -> dict[str, Any]:
    """best.json's money keys: revenue, profit, ROI, and per investment its ROI and marginal return."""
    from sim.money import currency, revenue_per_customer

    sc, n = objective.scenario, objective.customers
    out: dict[str, Any] = {"maximize": objective.maximize}
    if objective.target is not None:
        uplift = objective.point(spends) - objective.baseline
        out["target_uplift"] = objective.target
        out["target_reached"] = bool(uplift >= objective.target - 1e-12)
    chosen = objective.model_with(spends)
    if not has_values(chosen):
        return out
    allocation = space.allocation(spends)

    def rev(sp: dict[str, float]) -> float:
        return revenue_per_customer(objective.model_with(sp))

    base, mine = rev({}), rev(spends)
    spent = float(sum(spends.values()))
    profit = n * (mine - base) - spent
    out.update({
        "currency": currency(chosen),
        "profit_customers": n,
        "expected_revenue_per_customer": _r(mine),
        "baseline_expected_revenue_per_customer": _r(base),
        "expected_revenue_uplift_per_customer": _r(mine - base),
        "expected_revenue_uplift": _r(n * (mine - base)),
        "optimised_spend": _r(spent),
        "expected_profit": _r(profit),
        "roi": _r(profit / spent) if spent > 0 else None,
        "money_method": ("profit = profit_customers x revenue uplift per customer against the baseline - the spend "
                         "on the investments optimised (fixed spends are in the baseline, effect and cost); roi = "
                         "profit / that spend; per investment: roi = (revenue lost without it - its spend) / its "
                         "spend, marginal_return = revenue per unit of one more unit of spend there (1 = break even)"),
    })
    if objective.maximize == "profit" and not objective.spec.uses_draws:
        out["objective_value"] = _r(trial_value)
    per = {}
    for inv in sc.investment:
        spend = allocation[inv.name]
        without = {**spends, inv.name: 0.0}
        gain = n * (mine - rev(without)) if spend > 0 else 0.0
        h = MARGINAL_STEP * max(inv.max_spend - inv.min_spend, 1e-9)
        lo, hi = max(spend - h, inv.min_spend), min(spend + h, inv.max_spend)
        if hi <= lo:
            marginal = None
        else:
            marginal = n * (rev({**spends, inv.name: hi}) - rev({**spends, inv.name: lo})) / (hi - lo)
        per[inv.name] = {"roi": _r((gain - spend) / spend) if spend > 0 else None,
                         "marginal_return": _r(marginal) if marginal is not None else None}
    out["investment_returns"] = per
    out["response_curves"] = response_curves(objective, space, spends, rev)
    unspent = space.total - sum(allocation.values())
    if objective.maximize == "profit" and unspent > len(space.names) * space.quantum:
        full = [name for i, name in enumerate(space.names) if allocation[name] >= space.hi[i] - space.quantum]
        low = [name for name in space.names if name not in full]
        out["unspent_reason"] = (
            f"{_r(unspent):g} of the budget is left unspent: "
            + (f"{', '.join(low)} return less than they cost on the next unit (marginal return below 1)"
               if low else "")
            + ("; " if low and full else "")
            + (f"{', '.join(full)} are at their max_spend" if full else ""))
    return out


RESPONSE_POINTS = 25  # per investment: each point is one exact revenue evaluation


def response_curves(objective: Objective, space: SpendSpace, spends: dict[str, float],
                    rev: Callable[[dict[str, float]], float]) -> dict[str, dict[str, list[float]]]:
    """Each free investment's revenue contribution over its spend range, the others at their chosen spends
    (exact): revenue_uplift = customers x (revenue with that spend - revenue with none there)."""
    n, out = objective.customers, {}
    for inv in objective.scenario.investment:
        if inv.name not in space.names:
            continue  # a fixed spend has no choice to draw
        without = rev({**spends, inv.name: 0.0})
        # denser at low spends, where saturating curves bend most
        grid = inv.min_spend + (inv.max_spend - inv.min_spend) * np.linspace(0.0, 1.0, RESPONSE_POINTS) ** 2
        out[inv.name] = {"spend": [_r(x) for x in grid],
                         "revenue_uplift": [_r(n * (rev({**spends, inv.name: float(x)}) - without)) for x in grid]}
    return out


# ---- the command -------------------------------------------------------------------------------
def run_optimize(scenario_path: str | Path, *, trials: int, seed: int | None, storage: str | None,
                 study: str | None, workers: int, pareto: bool, customers: int | None, out: str | Path | None,
                 quiet: bool = False, draws: int = 0, objective: str = "point") -> tuple[Path, dict[str, Any]]:
    """Search the split, simulate the best one, write best.json / best.toml / trials.csv / figures.

    With ``draws`` > 0, best.json also says how sure the data is of the split (the chosen split, the
    even split and the baseline on the same parameter draws)."""
    import warnings

    from application.context import resolve_seed
    from application.progress import progress_bar

    if trials < 1:
        raise InputError("must be at least 1", where="--trials", value=trials)
    if workers < 1:
        raise InputError("must be at least 1", where="--workers", value=workers)
    if customers is not None and customers < 1:
        raise InputError("must be at least 1", where="--customers", value=customers)
    if draws < 0:
        raise InputError("must not be negative", where="--draws", value=draws)
    spec_obj = ObjectiveSpec.parse(objective)
    if spec_obj.uses_draws and draws == 0:
        raise InputError("needs parameter draws", where="--objective", value=objective,
                         hint="drop --draws 0 (or give --draws 1 or more), or use --objective point")
    started = utc_now()
    scenario_path = Path(scenario_path)
    scenario = load_scenario(scenario_path)
    space = SpendSpace.from_scenario(scenario)
    model = Model.load(scenario.model_path)
    if spec_obj.uses_draws:
        from sim.uncertainty import has_evidence

        if not has_evidence(model):
            raise InputError("the model file keeps no counts to draw from", file=scenario.model_path,
                             where="--objective", value=objective,
                             hint="recalibrate with `journey calibrate`, or use --objective point")
    seed = resolve_seed(seed)
    point = Objective(model, scenario)
    baseline = point.baseline  # also checks touchpoints, stages and personas before anything is written
    objective_fn = make_objective(model, scenario, spec_obj, draws, seed)
    study_name = study if study is not None else str(scenario.name)
    if not study_name.strip():
        raise InputError("must not be empty", where="--study", value=study_name)
    fp = fingerprint(scenario, sha256_of(scenario.model_path), spec_obj, draws, seed)
    final = Path(out) if out is not None else default_run_dir("optimize")
    if final.exists() and not final.is_dir():
        raise InputError("output path exists and is not a directory", file=final, hint="choose another --out")
    check_run_out(final, [scenario_path, scenario.model_path])  # the study goes into --out before the run
    spec = parse_storage(storage, final)
    if storage is None:
        try:
            final.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the output folder ({exc.strerror})", file=final) from None

    _quiet_optuna()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="optuna")
        found = search(model, scenario, space, objective_fn, spec=spec, study_name=study_name, fp=fp,
                       trials=trials, seed=seed, workers=workers,
                       progress_factory=lambda n: progress_bar("trials", n, quiet=quiet), draws=draws)
    # the bar's ETA is the trials'; checking the best split (a simulation, the draws) can take as long again,
    # so it gets its own line instead of a bar stuck at 100 % (the Pareto front has its own bar)
    status = contextlib.nullcontext() if pareto else progress_bar("simulating and checking the best split", None,
                                                                   quiet=quiet)
    try:
        with status:
                return _finish(found, scenario_path, scenario, space, objective_fn, baseline, model, spec=spec,
                           study_name=study_name, trials=trials, seed=seed, workers=workers, pareto=pareto,
                           customers=customers, final=final, started=started, quiet=quiet, draws=draws)
    finally:
        found.store.close()


def _finish(found: SearchResult, scenario_path: Path, scenario: Scenario, space: SpendSpace, objective: Objective,
            baseline: float, model: Model, *, spec: StorageSpec, study_name: str, trials: int, seed: int,
            workers: int, pareto: bool, customers: int | None, final: Path, started: str,
            quiet: bool, draws: int = 0) -> tuple[Path, dict[str, Any]]:
    """After the search: the Pareto front if asked, the best split simulated, every file written."""
    import warnings

    from application.progress import progress_bar

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="optuna")
        st = found.study
        complete = count_complete(st)
        if complete == 0:
            raise JourneyError("no trial completed; the study keeps the failed ones for inspection")
        best_trial = st.best_trial
        spends = {k: float(v) for k, v in best_trial.user_attrs["spends"].items()}
        trial_value = float(best_trial.value)
        # best.json's conversions are the calibrated model's, whatever the trials' value was
        best_value = trial_value if objective.plain and not objective.spec.uses_draws else objective.point(spends)
        front = None
        if pareto:
            per_level = int(min(60, max(25, trials // 4)))
            with progress_bar("pareto", per_level * (PARETO_LEVELS - 1), quiet=quiet) as advance:
                front = pareto_front(space, Objective(model, scenario, maximize="conversion"), spends, best_value,
                                     seed=seed,
                                     trials_per_level=per_level, progress=advance)
    n_sim = customers if customers is not None else (scenario.customers or 100_000)
    sim = simulate_split(objective, spends, customers=n_sim, seed=seed)
    allocation = space.allocation(spends)
    states: dict[str, int] = {}
    for t in st.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    best: dict[str, Any] = {
        "scenario": scenario.name,
        "study": study_name,
        "storage": spec.label,
        "trials": complete,
        "trial_states": dict(sorted(states.items())),
        "best_trial": best_trial.number,
        "seed": seed,
        "allocation": allocation,
        "spend": _r(sum(allocation.values())),
        "budget": space.total,
        "unspent": _r(space.total - sum(allocation.values())),
        "expected_conversion_rate": _r(best_value),
        "baseline_expected_conversion_rate": _r(baseline),
        "expected_uplift": _r(best_value - baseline),
        "expected_uplift_relative": _r((best_value - baseline) / baseline) if baseline > 0 else None,
        "baseline": "the scenario with nothing spent on the investments being optimised "
                    "(its changes, persona mix and fixed spends kept)",
        "conversion_stage": model.conversion_stage,
        "horizon_days": scenario.horizon_days,
        "customers": n_sim,
        "replications": REPLICATIONS,
        "engine": "fast",
        **sim,
        "investments": investments_record(scenario, allocation, space),
        "search": {"sampler": "TPE (multivariate, constant liar)",
                   "parametrisation": "spend per free investment in [min, max] widened by 10 % and clipped; "
                                      "spends above the minimums scaled down to the budget; rounded down "
                                      f"to {space.quantum:g}"},
    }
    if found.store.notes:
        best["notes"] = list(found.store.notes)
    if draws:
        best["objective"] = objective.spec.label
        best["objective_method"] = objective.spec.describe(draws)
        if objective.spec.uses_draws:
            best["objective_draws"] = objective.spec.draws_used(draws)
            best["objective_value"] = _r(trial_value)
            best["objective_baseline"] = _r(objective({}))
        best.update(uncertainty_record(objective, space, spends, draws=draws, seed=seed))
    if not objective.plain or has_values(objective.model_with({})):
        best.update(money_record(objective, space, spends, trial_value))
        for rec in best["investments"]:  # each investment's roi and marginal return beside its spend
            rec.update(best.get("investment_returns", {}).get(rec["name"], {}))
        best.pop("investment_returns", None)
    if scenario.capacity:
        best["expected_note"] = ("the optimizer's objective ignores [capacity] limits (queues and patience); "
                                 "check the split with `journey simulate best.toml`")
    if front is not None:
        best["pareto"] = front
        best["pareto_method"] = (f"best split found at {PARETO_LEVELS + 1} budget levels from the least possible "
                                 f"spend to the budget (in-memory TPE, {per_level} trials per level, starting "
                                 "from the even split and the best split scaled down; the top level is the "
                                 "study's best); a level keeps the level below's split where that is better")
    trials_text = trials_csv(st, space)
    args = {"scenario": str(scenario_path), "trials": trials, "seed": seed, "storage": spec.label,
            "study": study_name, "workers": workers, "pareto": pareto, "customers": customers,
            "out": str(final), "draws": draws, "objective": objective.spec.label}
    with run_directory("optimize", final, args, [scenario_path, scenario.model_path], seed=seed) as run:
        best["trials"] = complete = count_complete(st)  # as the study stands now: other workers may have added
        run.json("best.json", best)
        run.text("best.toml", best_toml(scenario, allocation, run.final, study=study_name, trials=complete))
        run.text("trials.csv", trials_text)
        write_figures(run, best, trials_text)
        run.manifest["started"] = started  # the search began before the run directory
        run.manifest["optimize"] = {"trials_this_run": found.ran, "complete_before": found.complete_before}
        _keep_study_files(run, spec, found.store)
    return run.final, best


