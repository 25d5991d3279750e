"""Reading run directories into records for the report: each result file, its manifest and side files,
and the calibrated model a run used."""
from __future__ import annotations

import csv
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from present.report_schema import check_result
from sim.errors import InputError
from sim.limits import loads_json, read_bytes, sha256_of
from sim.model import MODEL_KIND, Model

RESULT_FILES = {"summary.json": "simulate", "comparison.json": "compare", "best.json": "optimize",
                "backtest.json": "backtest", "forecast.json": "forecast"}
KIND_ORDER = ("compare", "simulate", "optimize", "forecast", "backtest")


@dataclass
class Run:
    """One result read from a run directory."""

    path: Path
    kind: str
    data: dict[str, Any]
    manifest: dict[str, Any] | None = None
    tables: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # CSV side files
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The run's name in the page: the simulation's name and its folder, else the folder."""
        name = self.data.get("name") if self.kind == "simulate" else None
        return f"{name} ({self.path.name})" if name else self.path.name


# ---- reading ------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    """A JSON file, or InputError naming it."""
    try:
        return loads_json(read_bytes(path, "JSON file").decode("utf-8"), path)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", file=path,
                         hint="the file is truncated or not JSON; rerun the command that wrote it") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read ({exc.__class__.__name__})", file=path) from None


def _read_csv(path: Path) -> list[dict[str, str]]:
    """A CSV file's rows, or InputError naming it."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read CSV ({exc.__class__.__name__}: {exc})", file=path) from None


def _runs_in(path: Path) -> list[Run]:
    """The results directly in ``path``, checked, with their side files."""
    runs = []
    manifest = _read_json(path / "manifest.json") if (path / "manifest.json").is_file() else None
    for name, kind in RESULT_FILES.items():
        file = path / name
        if not file.is_file():
            continue
        run = Run(path=path, kind=kind, data=_read_json(file), manifest=manifest)
        check_result(kind, run.data, file)
        if kind == "simulate" and (path / "weekly.csv").is_file():
            run.tables["weekly"] = _read_csv(path / "weekly.csv")
        if kind == "optimize":
            if (path / "trials.csv").is_file():
                run.tables["trials"] = _read_csv(path / "trials.csv")
            if (path / "best.toml").is_file():
                run.data = dict(run.data)
                run.data.setdefault("investments", _investments_from_toml(path / "best.toml", run.data))
        runs.append(run)
    return runs


def _investments_from_toml(path: Path, best: dict[str, Any]) -> list[dict[str, Any]]:
    """best.toml's investments that have a response curve, each with its chosen spend."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    out = []
    for inv in doc.get("investment", []) or []:
        if isinstance(inv, dict) and "max_effect" in inv and "half_saturation" in inv:
            rec = dict(inv)
            rec.setdefault("spend", best.get("allocation", {}).get(inv.get("name")))
            out.append(rec)
    return out


def load_runs(dirs: list[Path]) -> list[Run]:
    """Every result in DIRs (or in their direct sub-folders); InputError naming a DIR with none."""
    if not dirs:
        raise InputError("no run directories given", where="DIR", hint="e.g. journey report results/demo/simulate")
    runs: list[Run] = []
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise InputError("run directory not found", file=d, hint="check the path")
        if not d.is_dir():
            raise InputError("not a directory", file=d, hint="give the run directory that holds the result files")
        found = _runs_in(d)
        if not found:
            for sub in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
                found.extend(_runs_in(sub))
        if not found:
            raise InputError("holds no recognised result", file=d,
                             hint="expected summary.json, comparison.json, best.json, backtest.json or "
                                  "forecast.json (a simulate, compare, optimize, backtest or forecast run directory)")
        runs.extend(found)
    unique = {(r.path.resolve(), r.kind): r for r in runs}
    return sorted(unique.values(), key=lambda r: (KIND_ORDER.index(r.kind), str(r.path)))


# ---- the model behind a run ---------------------------------------------------------------------
def _locate(name: str, run_dir: Path) -> Path | None:
    """A path recorded in a manifest: as given, else relative to the run directory or its parents."""
    p = Path(name)
    candidates = [p] if p.is_absolute() else [p, run_dir / p, *(q / p for q in list(run_dir.parents)[:3])]
    for c in candidates:
        if c.is_file():
            return c
    return None


def _model_path_of(path: Path) -> Path | None:
    """The model file a model JSON or scenario TOML stands for."""
    if path.suffix.lower() == ".toml":
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return None
        model = doc.get("model")
        if not isinstance(model, str):
            return None
        target = (path.parent / model)
        return target if target.is_file() else None
    if path.suffix.lower() == ".json":
        try:
            head = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return path if isinstance(head, dict) and head.get("kind") == MODEL_KIND else None
    return None


@dataclass
class ModelRef:
    """A model file a run used, loaded."""

    path: Path
    model: Model
    applied: Model | None = None  # the model with the run's scenario applied (simulate runs of a TOML)


def resolve_model(run: Run) -> ModelRef | None:
    """The calibrated model a run used, found through its manifest; None (with a note) if it is gone."""
    man = run.manifest or {}
    args = man.get("arguments", {}) or {}
    names = [args.get(k) for k in ("target", "base", "scenario", "model")]
    names += list((man.get("inputs") or {}).keys())
    hashes = man.get("inputs") or {}
    for name in names:
        if not isinstance(name, str):
            continue
        where = _locate(name, run.path)
        model_path = _model_path_of(where) if where is not None else None
        if model_path is None:
            continue
        try:
            model = Model.load(model_path)
        except InputError as exc:
            run.notes.append(f"{run.path}: model {model_path} could not be read: {exc}")
            continue
        applied = None
        primary = name in (args.get("target"), args.get("base"))  # what the run's summary describes
        if primary and where.suffix.lower() == ".toml":
            from sim.simulate import load_target

            try:
                applied = load_target(where).model
            except InputError as exc:
                run.notes.append(f"{run.path}: scenario {where} could not be applied: {exc}")
        for key, digest in hashes.items():
            if Path(key).name == model_path.name and _locate(key, run.path) == model_path \
                    and sha256_of(model_path) != digest:
                run.notes.append(f"{run.path}: {model_path} has changed since this run (its hash differs from "
                                 f"the manifest's)")
        return ModelRef(path=model_path, model=model, applied=applied)
    if run.kind in ("simulate", "compare"):
        run.notes.append(f"{run.path}: the model this run used was not found (its path in manifest.json does not "
                         f"exist from here); figures that need the model are left out")
    return None
