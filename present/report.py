"""`journey report DIR... --out report.html`: one self-contained page from run directories.

Each DIR is a simulate, compare, optimize or backtest run directory (recognised by summary.json,
comparison.json, best.json or backtest.json), or a folder whose sub-folders are (e.g. the demo's
``results/demo``). Figures are inlined as base64 PNG, so the page opens from a file with no network;
the PNGs (and each figure's data as JSON) are also written to ``<report stem>_figures/`` beside it,
because a report never writes into the run directories it reads.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from application.rundir import (
    REPORT_GENERATOR,
    check_output_file,
    check_run_out,
    dumps,
    run_directory,
    utc_now,
    write_text_atomic,
)
from present import plots
from sim._version import __version__
from sim.errors import InputError
from sim.hotspots import attribution
from sim.limits import loads_json, read_bytes, sha256_of
from sim.model import MODEL_KIND, Model

RESULT_FILES = {"summary.json": "simulate", "comparison.json": "compare", "best.json": "optimize",
                "backtest.json": "backtest"}
KIND_ORDER = ("compare", "simulate", "optimize", "backtest")
MAX_BYTES = 5_000_000
TOP_RISKS = 3


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
        name = self.data.get("name") if self.kind == "simulate" else None
        return f"{name} ({self.path.name})" if name else self.path.name


# ---- reading ------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return loads_json(read_bytes(path, "JSON file").decode("utf-8"), path)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", file=path,
                         hint="the file is truncated or not JSON; rerun the command that wrote it") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read ({exc.__class__.__name__})", file=path) from None


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read CSV ({exc.__class__.__name__}: {exc})", file=path) from None


REQUIRED = {
    "simulate": ("customers", "conversion_stage", "conversion_rate", "conversion_rate_ci", "stages", "personas"),
    "compare": ("base", "scenarios"),
    "optimize": ("allocation", "expected_conversion_rate", "baseline_expected_conversion_rate", "expected_uplift"),
    "backtest": ("split", "predicted", "observed", "naive"),
}
SCENARIO_KEYS = ("name", "conversion_rate", "uplift", "uplift_ci")


# The types of what the report reads (key -> kind; "?" marks a key that may be absent or null), so
# that a tampered or foreign file is one line naming the file and key instead of a crash.
_STAGE = {"reached": "count", "reached_rate": "rate"}
_PERSONA = {"customers": "count", "conversion_rate": "rate?"}
_SUMMARY = {"customers": "count", "conversion_stage": "text", "conversion_rate": "rate",
            "conversion_rate_ci": "interval", "expected_conversion_rate": "rate?",
            "conversion_rate_interval": "interval?", "expected_conversion_rate_interval": "interval?",
            "replications": "count?", "stages": ("map", _STAGE), "personas": ("map", _PERSONA)}
_SCENARIO = {"name": "text", "conversion_rate": "rate?", "uplift": "number?", "uplift_ci": "interval?",
             "expected_uplift": "number?", "uplift_interval": "interval?", "expected_uplift_interval": "interval?",
             "probability_positive": "rate?"}
SCHEMA = {
    "simulate": _SUMMARY,
    "compare": {"base": ("object", _SUMMARY), "scenarios": ("list", _SCENARIO)},
    "optimize": {"allocation": ("map", "number"), "expected_conversion_rate": "rate",
                 "baseline_expected_conversion_rate": "rate", "expected_uplift": "number", "spend": "number?",
                 "trials": "count?"},
    "backtest": {"split": "text", "predicted": ("map", "rate"), "observed": ("map", "rate"),
                 "naive": ("map", "rate"), "error": ("map", "number?"), "naive_error": ("map", "number?")},
}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _kind_error(kind: str, v: Any) -> str | None:
    """What is wrong with ``v`` as a ``kind`` (None when it is one)."""
    if kind == "text":
        return None if isinstance(v, str) else "must be text"
    if kind == "number":
        return None if _is_number(v) else "must be a finite number"
    if kind == "count":
        return None if _is_number(v) and float(v).is_integer() and v >= 0 else "must be a whole number >= 0"
    if kind == "rate":
        return None if _is_number(v) and -1e-9 <= v <= 1 + 1e-9 else "must be a number from 0 to 1"
    if kind == "interval":
        if not (isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v)):
            return "must be an interval [low, high] of two numbers"
        return None if v[0] <= v[1] else "interval's low end is above its high end"
    return None


def _check_spec(value: Any, spec: Any, file: Path, where: str) -> None:
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise InputError("must be a JSON object", file=file, where=where or None, value=_shown(value))
        for key, sub in spec.items():
            optional = isinstance(sub, str) and sub.endswith("?")
            at = f"{where}.{key}" if where else key
            if (optional and value.get(key) is None) or (isinstance(sub, tuple) and key not in value):
                continue  # the required sections are checked by REQUIRED, with its hint
            if key not in value:
                raise InputError("missing key", file=file, where=at, hint="rerun the command that wrote it")
            _check_spec(value[key], sub.rstrip("?") if optional else sub, file, at)
        return
    if isinstance(spec, tuple):
        container, inner = spec
        if container == "object":
            _check_spec(value, inner, file, where)
        elif container == "list":
            if not isinstance(value, list):
                raise InputError("must be a list", file=file, where=where, value=_shown(value))
            for i, item in enumerate(value):
                _check_spec(item, inner, file, f"{where}[{i}]")
        else:  # map: any keys, every value alike
            if not isinstance(value, dict):
                raise InputError("must be a JSON object", file=file, where=where, value=_shown(value))
            for key, item in value.items():
                if isinstance(inner, str) and inner.endswith("?") and item is None:
                    continue
                _check_spec(item, inner.rstrip("?") if isinstance(inner, str) else inner, file, f"{where}.{key}")
        return
    problem = _kind_error(spec, value)
    if problem:
        raise InputError(problem, file=file, where=where, value=_shown(value),
                         hint="the file was changed or is not journey's; rerun the command that wrote it")


def _shown(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__


def _check(run: Run, file: Path) -> None:
    if not isinstance(run.data, dict):
        raise InputError("expected a JSON object", file=file, value=type(run.data).__name__)
    for key in REQUIRED[run.kind]:
        if key not in run.data:
            raise InputError("missing key", file=file, where=key,
                             hint=f"not a complete `journey {run.kind}` result; rerun it")
    if run.kind == "compare":
        if not isinstance(run.data["scenarios"], list):
            raise InputError("must be a list", file=file, where="scenarios")
        for i, sc in enumerate(run.data["scenarios"]):
            for key in SCENARIO_KEYS:
                if not isinstance(sc, dict) or key not in sc:
                    raise InputError("missing key", file=file, where=f"scenarios[{i}].{key}")
        for key in REQUIRED["simulate"][2:4]:
            if key not in run.data["base"]:
                raise InputError("missing key", file=file, where=f"base.{key}")
    _check_spec(run.data, SCHEMA[run.kind], file, "")


def _runs_in(path: Path) -> list[Run]:
    runs = []
    manifest = _read_json(path / "manifest.json") if (path / "manifest.json").is_file() else None
    for name, kind in RESULT_FILES.items():
        file = path / name
        if not file.is_file():
            continue
        run = Run(path=path, kind=kind, data=_read_json(file), manifest=manifest)
        _check(run, file)
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
                             hint="expected summary.json, comparison.json, best.json or backtest.json "
                                  "(a simulate, compare, optimize or backtest run directory)")
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


# ---- headline -----------------------------------------------------------------------------------
def _money_words(rec: dict[str, Any], cur: str | None, profit: bool = False) -> str | None:
    """'+1.8 pts, +42 k revenue per 100 k customers' where a record has revenue (sim/money.py)."""
    from sim.money import money_label, per_100k

    if "expected_revenue_uplift_per_customer" not in rec:
        return None
    text = (f"{plots.points(float(rec['expected_uplift']), 1)}, "
            f"{per_100k(float(rec['expected_revenue_uplift_per_customer']), cur)}")
    if profit:
        roi = rec.get("roi")
        text += (f"; profit {money_label(float(rec['expected_profit']), cur)} for {int(rec['profit_customers']):,} "
                 "customers" + (f", return on the spend {roi:.2f}" if roi is not None else ""))
    return text


def headline_data(runs: list[Run]) -> dict[str, Any]:
    """The one-line answer: the best scenario's projected change with its interval; else the best
    budget split's expected change; else the simulated conversion with its interval."""
    comps = [r for r in runs if r.kind == "compare"]
    if comps and any(r.data["scenarios"] for r in comps):
        rows = []
        for r in comps:
            base = r.data["base"]
            behind = (r.data.get("data_uncertainty") or {}).get("customers_behind_model")
            for sc in r.data["scenarios"]:
                total = sc.get("uplift_interval")  # data and simulation together, when the run drew
                lo, hi = (float(x) for x in (total or sc["uplift_ci"]))
                rows.append({"name": str(sc["name"]), "base": float(base["conversion_rate"]),
                             "rate": float(sc["conversion_rate"]), "uplift": float(sc["uplift"]),
                             "ci": [lo, hi], "expected_uplift": sc.get("expected_uplift"),
                             "stage": base.get("conversion_stage", "the conversion stage"),
                             "customers": base.get("customers"), "with_data": total is not None,
                             "behind": behind, "to_tell": sc.get("customers_to_tell"),
                             "probability_positive": sc.get("probability_positive"),
                             "money": _money_words(sc, base.get("currency"))})
        top = max(rows, key=lambda x: x["uplift"])
        lo, hi = top["ci"]
        if top["with_data"]:
            fitted = (f"the model was fitted on {int(top['behind']):,} real customers" if top["behind"]
                      else "the model's own data")
            more = (f"; about {int(top['to_tell']):,} customers in the calibration log would tell"
                    if top["to_tell"] else "")
            verdict = (f"the whole interval, which includes the uncertainty of the data {fitted} and simulation "
                       "noise, is above zero: a real gain" if lo > 0 else
                       "the whole interval (data the model was fitted on and simulation) is below zero: "
                       "conversion would fall" if hi < 0 else
                       f"the interval includes zero once the uncertainty of the data ({fitted}) is counted: "
                       f"the data cannot tell yet{more}")
        else:
            verdict = ("the whole interval is above zero, but it covers simulation noise only (run compare with "
                       "--draws for the data's uncertainty)" if lo > 0 else
                       "the whole interval is below zero (simulation noise only)" if hi < 0 else
                       "the interval includes zero: not distinguishable from no change")
        text = (f"Projected conversion change for \u201c{top['name']}\u201d: {plots.points(top['uplift'], 2)} "
                f"(95% interval {plots.points(lo, 2)} to {plots.points(hi, 2)}), from {plots.pct(top['base'])} "
                f"to {plots.pct(top['rate'])} of customers reaching {top['stage']}; {verdict}."
                + (f" In money: {top['money']}." if top["money"] else ""))
        others = [f"{x['name']}: {plots.points(x['uplift'], 2)} [{plots.points(x['ci'][0], 2)}, "
                  f"{plots.points(x['ci'][1], 2)}]" for x in rows if x is not top]
        return {"kind": "compare", "text": text, "others": others, "best": top}
    opts = [r for r in runs if r.kind == "optimize"]
    if opts:
        b = max(opts, key=lambda r: float(r.data["expected_uplift"])).data
        interval = b.get("expected_uplift_interval")
        if interval:
            lo, hi = (float(x) for x in interval)
            verdict = ("the whole interval is above zero: a real gain" if lo > 0 else
                       "the whole interval is below zero: conversion would fall" if hi < 0 else
                       "the interval includes zero: the data cannot tell yet")
            sure = (f" (95% interval {plots.points(lo, 2)} to {plots.points(hi, 2)}, given "
                    f"{_fitted_on(b)}; {verdict})")
        else:
            sure = " (exact, no sampling noise; the data's uncertainty not included)"
        text = (f"The best budget split found ({len(b['allocation'])} levers, spend {float(b.get('spend', 0)):,.1f}) "
                f"changes expected conversion by {plots.points(float(b['expected_uplift']), 2)}, from "
                f"{plots.pct(float(b['baseline_expected_conversion_rate']))} to "
                f"{plots.pct(float(b['expected_conversion_rate']))}{sure}."
                + (f" In money: {_money_words(b, b.get('currency'), profit=True)}." if "expected_profit" in b else ""))
        return {"kind": "optimize", "text": text, "others": [], "best": b}
    sims = [r for r in runs if r.kind == "simulate"]
    if sims:
        s = sims[0].data
        lo, hi = s["conversion_rate_ci"]
        text = (f"Simulated conversion: {plots.pct(float(s['conversion_rate']))} of customers reach "
                f"{s['conversion_stage']} (95% interval {plots.pct(float(lo))} to {plots.pct(float(hi))}, "
                f"{int(s['customers']):,} customers x {int(s.get('replications', 1))}); the model expects "
                f"{plots.pct(float(s.get('expected_conversion_rate', math.nan)))}.")
        others = [f"{r.label}: {plots.pct(float(r.data['conversion_rate']))} "
                  f"[{plots.pct(float(r.data['conversion_rate_ci'][0]))}, "
                  f"{plots.pct(float(r.data['conversion_rate_ci'][1]))}]" for r in sims[1:]]
        return {"kind": "simulate", "text": text, "others": others, "best": s}
    bt = [r for r in runs if r.kind == "backtest"][0].data
    d = plots.backtest_data(bt)
    err = _mean([e for e in d.error if not math.isnan(e)])
    nerr = _mean([e for e in d.naive_error if not math.isnan(e)])
    text = (f"Backtest from {d.split}: the model's reach rates are off by {100 * err:.1f} percentage points on "
            f"average; going by what earlier customers did is off by {100 * nerr:.1f}.")
    return {"kind": "backtest", "text": text, "others": [], "best": bt}


def _plain(obj: Any) -> Any:
    """JSON-ready: NaN becomes null."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


# ---- page ---------------------------------------------------------------------------------------
@dataclass
class Fig:
    slug: str
    title: str
    png: bytes
    data: Any
    caption: str = ""


class Page:
    def __init__(self) -> None:
        self.sections: list[tuple[str, str, list[str]]] = []  # (id, title, html parts)
        self.figures: list[Fig] = []

    def section(self, sid: str, title: str) -> list[str]:
        parts: list[str] = []
        self.sections.append((sid, title, parts))
        return parts

    def figure(self, parts: list[str], slug: str, title: str, fig, data: Any, caption: str = "") -> None:
        slug = _unique(slug, {f.slug for f in self.figures})
        png = plots.png_bytes(fig)
        self.figures.append(Fig(slug, title, png, data, caption))
        parts.append(f'<figure><img alt="{_e(title)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                      + (f"<figcaption>{_e(caption)}</figcaption>" if caption else "") + "</figure>")


def _unique(slug: str, taken: set[str]) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", slug.lower()).strip("-") or "figure"
    out, k = slug, 2
    while out in taken:
        out, k = f"{slug}-{k}", k + 1
    return out


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


_NUMERIC = re.compile(r"^[\[+\-\u2212]?[\d.,]+")


def _table(head: list[str], rows: list[list[Any]], cls: str = "") -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)

    def td(c: Any) -> str:
        return f'<td class="n">{_e(c)}</td>' if _NUMERIC.match(str(c)) else f"<td>{_e(c)}</td>"

    body = "".join("<tr>" + "".join(td(c) for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _share(x: float | None) -> str:
    return "" if x is None else plots.pct(x)


def _ci(ci) -> str:
    return f"[{plots.pct(float(ci[0]))}, {plots.pct(float(ci[1]))}]"


def _compare_section(page: Page, runs: list[Run]) -> None:
    parts = page.section("scenarios", "Uplift per scenario")
    parts.append("<p>Each scenario against the same baseline customers (common random numbers): the bar and "
                 "whisker are the simulated change in conversion with its 95% interval, the diamond the exact "
                 "expectation of the model. Where the run drew the model's parameters (compare --draws), the "
                 "interval also holds the uncertainty of the data the model was fitted on, and the chance of a "
                 "gain is the share of those draws in which the scenario converts more. An interval that "
                 "crosses zero is no evidence of a change.</p>")
    for r in runs:
        d = plots.uplift_data(r.data)
        if not d.names:
            parts.append(f"<p>{_e(r.label)}: no scenarios.</p>")
            continue
        fig = plots.figure(11, 0.9 + 0.75 * len(d.names))
        plots.draw_uplift(d, fig.add_subplot())
        page.figure(parts, f"uplift-{r.path.name}", f"Uplift per scenario ({r.path.name})", fig, d)
        extra = ["", ""] if d.with_data else []
        rows = [["baseline", plots.pct(d.base_rate), plots.pct(d.base_expected) if not math.isnan(d.base_expected)
                 else "", "", "", "", *extra]]
        records = r.data["scenarios"]
        for i, n in enumerate(d.names):
            e = d.expected_uplift[i]
            ex = d.expected_conversion_rate[i]
            row = [n, plots.pct(d.conversion_rate[i]), plots.pct(ex) if not math.isnan(ex) else "",
                   plots.points(d.uplift[i], 2), f"[{plots.points(d.ci[i][0], 2)}, {plots.points(d.ci[i][1], 2)}]",
                   plots.points(e, 2) if not math.isnan(e) else ""]
            if d.with_data:
                rec = records[i]
                row += [f"{100 * float(rec['probability_positive']):.0f}%", _verdict_words(rec)]
            rows.append(row)
        head = ["scenario", "conversion (simulated)", "expected", "uplift",
                "95% interval (data and simulation)" if d.with_data else "95% interval (simulation)",
                "expected uplift", *(["chance of a gain", "verdict"] if d.with_data else [])]
        parts.append(_table(head, rows, "num"))
        behind = (r.data.get("data_uncertainty") or {}).get("customers_behind_model")
        if d.with_data and behind:
            parts.append(f"<p>The model behind these numbers was fitted on {int(behind):,} real customers.</p>")
        said = [f"{sc.get('name')}: {n}" for sc in r.data.get("scenarios", []) for n in sc.get("notes", [])]
        if said:  # a capped factor, a scenario that named another model: said where the numbers are
            parts.append("<ul class='notes'>" + "".join(f"<li>{_e(n)}</li>" for n in said) + "</ul>")
        pu = plots.persona_uplift_data(r.data)
        if pu is not None:
            parts.append("<p>Who gains: the change in conversion per persona (bars: the model's exact expectation; "
                         "dots: simulated).</p>")
            fig = plots.figure(11, 0.9 + 0.3 * len(pu.scenarios) * max(len(pu.personas), 2))
            plots.draw_persona_uplift(pu, fig.add_subplot())
            page.figure(parts, f"uplift-personas-{r.path.name}", "Uplift per persona", fig, pu)


def _verdict_words(record: dict[str, Any]) -> str:
    """A comparison record's verdict in plain words."""
    verdict = record.get("verdict")
    if verdict == "gain":
        return "a gain"
    if verdict == "loss":
        return "a loss"
    more = record.get("customers_to_tell")
    return "the data cannot tell yet" + (f" (about {int(more):,} customers would)" if more else "")


def _funnel_section(page: Page, runs: list[Run], refs: dict[int, ModelRef | None]) -> None:
    parts = page.section("funnel", "Funnel per persona, stage by stage")
    parts.append("<p>Share of customers who reach each stage. Lines: what the model expects for each persona; "
                 "black squares: the simulated share of all customers with its 95% interval; diamonds at the "
                 "conversion stage: each persona's simulated conversion with its interval.</p>")
    for r in runs:
        ref = refs.get(id(r))
        model = (ref.applied or ref.model) if ref else None
        d = plots.funnel_data(r.data, model)
        fig = plots.figure(11, 4.6)
        plots.draw_funnel(d, fig.add_subplot())
        page.figure(parts, f"funnel-{r.path.name}", f"Funnel: {r.label}", fig, d, caption=f"{r.label}. {d.ci_note}.")
        rows = [[p, f"{rec.get('share', math.nan) * 100:.0f}%" if "share" in rec else "", f"{rec['customers']:,}",
                 plots.pct(float(rec["conversion_rate"])), _ci(rec["conversion_rate_ci"])
                 if "conversion_rate_ci" in rec else "", plots.pct(float(rec.get("expected_conversion_rate",
                                                                                  math.nan)))]
                for p, rec in sorted(r.data["personas"].items())]
        parts.append(_table(["persona", "mix", "customers", "conversion", "95% interval", "expected"], rows, "num"))
        found = ref.model.extras.get("personas_discovered") if ref else None
        if isinstance(found, dict) and found.get("profiles"):  # personas discovered from behaviour: say who they are
            parts.append(f"<p>Personas discovered from behaviour (K = {_e(found.get('chosen_k'))} by "
                         f"{_e(found.get('criterion'))}), as calibrated:</p><ul>"
                         + "".join(f"<li><b>{_e(n)}</b>: {_e(p.get('description', ''))}</li>"
                                   for n, p in found["profiles"].items()) + "</ul>")


def _map_section(page: Page, refs: list[ModelRef]) -> None:
    parts = page.section("map", "Journey map")
    parts.append(f"<p>Stages as columns, touchpoints as rows, all personas together. Each cell: the touchpoint's "
                 f"share of the stage's interactions, the chance an interaction there moves the customer on, and "
                 f"the chance it ends the journey (the colour). Framed: the {TOP_RISKS} points where most journeys "
                 f"are expected to end (drop-off rate x traffic). Header: share of customers who reach the stage "
                 f"and who leave right on entering it (lapse).</p>")
    for ref in refs:
        d = plots.journey_map_data(ref.model, top=TOP_RISKS)
        T = len(d.touchpoints)
        # map and emotion curve share their columns: the colour bar gets its own column of the grid
        emo = 1.6 if d.emotion else 0.0
        fig = plots.figure(12, 1.9 + 0.95 * T + emo)
        gs = fig.add_gridspec(2, 2, height_ratios=[max(emo, 0.01), 0.95 * T + 1.2], width_ratios=[60, 1])
        plots.draw_journey_map(d, fig.add_subplot(gs[1, 0]), cax=fig.add_subplot(gs[1, 1]))
        if d.emotion:
            ax_e = fig.add_subplot(gs[0, 0])
            plots.draw_emotion_curve(d, ax_e)
            ax_e.set_title("emotion curve: mean satisfaction (1-5) of the stage's interactions", fontsize=10,
                           loc="left")
        page.figure(parts, "journey-map", f"Journey map ({ref.path.name})", fig, d,
                    caption=f"model {ref.path}" + ("" if d.emotion else "; no satisfaction scores in the log, so no "
                                                    "emotion curve"))
        if d.risk:
            rows = [[f"#{x['rank']}", x["touchpoint"], x["stage"], plots.pct(x["drop_off"]),
                     f"{x['lost_per_1000']:.1f}"] for x in d.risk]
            parts.append("<p>Top risk-of-leaving points:</p>" + _table(
                ["rank", "touchpoint", "stage", "P(interaction ends journey)", "journeys lost per 1000 customers"],
                rows, "num"))
        credit = attribution(ref.model)
        if credit:
            rows = [[a["touchpoint"], _share(a["removal_effect"]), _share(a["attributed_share"]),
                     "" if a["conversions_per_1000_attributed"] is None else
                     f"{a['conversions_per_1000_attributed']:.1f}"] for a in credit]
            parts.append("<p>Conversions credited to each touchpoint. Removal effect (as in Markov attribution): "
                         "the share of conversions lost if every journey that meets the touchpoint ended there; "
                         "attributed share: the removal effects scaled to add up to 100%. Compare a scenario that "
                         "removes a touchpoint, where customers meet their other touchpoints instead.</p>")
            parts.append(_table(["touchpoint", "removal effect", "attributed share",
                                 "conversions per 1000 customers"], rows, "num"))


def _evidence_section(page: Page, refs: list[ModelRef]) -> None:
    parts = page.section("evidence", "Model evidence")
    for ref in refs:
        d = plots.evidence_data(ref.model)
        m = ref.model
        log = m.log_summary
        if log:
            first, last = _e(_when(log.get("first_timestamp"))), _e(_when(log.get("last_timestamp")))
            parts.append(f"<p>Calibrated from {int(log.get('rows', 0)):,} rows of {int(log.get('customers', 0)):,} "
                         f"customers ({first} to {last}): "
                         f"{int(log.get('customers_completed', 0)):,} completed, {int(log.get('customers_ended', 0)):,}"
                         f" ended, {int(log.get('customers_in_progress', 0)):,} still in progress.</p>")
        warning = _fallback_box(m.estimator.get("fallbacks"))
        if warning:
            parts.append(warning)
        if d is None:
            parts.append("<p>The model carries no counts.</p>")
            continue
        fig = plots.figure(12, 1.4 + 0.5 * len(d.touchpoints))
        plots.draw_evidence(d, fig.add_subplot())
        page.figure(parts, "evidence", f"Model evidence ({ref.path.name})", fig, d, caption=f"model {ref.path}")
        rows = plots.dwell_rows(m)
        if rows:
            parts.append("<p>Time in each stage by way out (mean days from entering the stage to leaving it; "
                         "speed 1 = the same for every way out):</p>")
            parts.append(_table(["stage", "way out", "share of leavers", "mean days", "leave speed"],
                                [[a, "drop-off" if b == "drop_off" else f"moved on to {b}", f"{100 * c:.1f} %",
                                  f"{d_:.1f}", f"{e:.2f}"] for a, b, c, d_, e in rows],
                                cls="num"))


def _fallback_box(fallbacks: Any) -> str:
    """A visible warning box listing where the fit could not tell from the data (empty if nowhere)."""
    lines = [str(f.get("message", "")) for f in fallbacks or [] if isinstance(f, dict)]
    if not lines:
        return ""
    return ("<div class='warn'><strong>Where the data could not tell, the model uses a prior:</strong><ul>"
            + "".join(f"<li>{_e(x)}</li>" for x in lines) + "</ul></div>")


def _when(stamp: Any) -> str:
    """An ISO timestamp to the minute, for reading."""
    return str(stamp or "")[:16].replace("T", " ")


def _fitted_on(best: dict[str, Any]) -> str:
    n = (best.get("data_uncertainty") or {}).get("customers_behind_model")
    return f"the {int(n):,} real customers the model was fitted on" if n else "the data the model was fitted on"


def _optimize_sure(b: dict[str, Any]) -> str:
    """How sure the data is of the chosen split, in plain words (HTML-escaped); empty without draws."""
    if "expected_uplift_interval" not in b:
        note = (b.get("data_uncertainty") or {}).get("note")
        return f"<p>{_e(note)}</p>" if note else ""
    lo, hi = (float(x) for x in b["expected_uplift_interval"])
    verdict = ("a real gain" if lo > 0 else "conversion would fall" if hi < 0 else
               "the interval includes zero: the data cannot tell yet whether this split gains")
    text = (f"95% interval of the gain: {plots.points(lo, 2)} to {plots.points(hi, 2)}, given {_fitted_on(b)}: "
            f"{verdict}. Chance that it beats spending nothing: {100 * float(b['probability_beats_baseline']):.0f}%; "
            f"that it beats an even split of the budget: {100 * float(b['probability_beats_even_split']):.0f}% "
            f"(an even split gains {plots.points(float(b['even_split_expected_uplift']), 2)}).")
    st = b.get("stability")
    if st:
        near = round(float(st["share_of_draws_near_best"]) * int(st["draws"]))
        spread = ", ".join(f"{name} {lo_:,.0f} to {hi_:,.0f}" for name, (lo_, hi_) in st["best_spend_range"].items()
                           if hi_ > lo_)
        text += (f" On {near} of {st['draws']} plausible versions of the data, this split is within 1% of the best "
                 "one for that version" + (f"; the best spends range over {spread}" if spread else "") + ".")
    objective = str(b.get("objective") or "point")
    k = f"{b['objective_draws']} " if b.get("objective_draws") else ""
    if objective == "mean":
        text += f" Chosen for the best average over {k}plausible versions of the data."
    elif objective.startswith("q"):
        text += (f" Chosen for the best gain that {100 - int(objective[1:])}% of {k}plausible versions of the "
                 "data reach or beat (a cautious choice).")
    return f"<p>{_e(text)}</p>"


def _optimize_section(page: Page, runs: list[Run]) -> None:
    parts = page.section("optimization", "Optimization")
    for r in runs:
        b = r.data
        parts.append(f"<h3>{_e(r.label)}</h3><p>Best split found after {_e(b.get('trials', '?'))} trials "
                     f"(study {_e(b.get('study', ''))}): expected conversion "
                     f"{plots.pct(float(b['expected_conversion_rate']), 2)} against "
                     f"{plots.pct(float(b['baseline_expected_conversion_rate']), 2)} without the investments "
                     f"({plots.points(float(b['expected_uplift']), 2)}).</p>" + _optimize_sure(b))
        a = plots.allocation_data(b)
        if a.names:
            fig = plots.figure(11, 1.0 + 0.55 * len(a.names))
            plots.draw_allocation(a, fig.add_subplot())
            page.figure(parts, f"allocation-{r.path.name}", "Allocation", fig, a)
        h = plots.history_data(r.tables.get("trials", []), maximize=str(b.get("direction", "maximize")) != "minimize")
        if h is not None:
            fig = plots.figure(11, 3.6)
            plots.draw_history(h, fig.add_subplot())
            page.figure(parts, f"history-{r.path.name}", "Optimization history", fig, h,
                        caption=f"{len(h.number)} completed trials" + (f"; {h.skipped} not completed or infeasible"
                                                                        if h.skipped else ""))
        elif "trials" in r.tables:
            parts.append("<p>trials.csv holds no completed trial with a value.</p>")
        else:
            parts.append("<p>No trials.csv in the run directory: no history to draw.</p>")
        resp = plots.response_data(b.get("investments", []) or [], b.get("allocation"))
        if resp is not None:
            fig = plots.figure(11, 3.8)
            plots.draw_response(resp, fig.add_subplot())
            page.figure(parts, f"response-{r.path.name}", "Response curves", fig, resp,
                        caption="effect of each lever against spend, e = max_effect x spend / (spend + "
                                "half_saturation); dots: the chosen spends")
        money = plots.money_response_data(b)
        if money is not None:
            fig = plots.figure(max(5.5, 3.6 * len(money.names)), 3.6)
            plots.draw_money_response(money, fig)
            marks = "; ".join(f"{n}: spend {s:,.0f}, {plots.marginal_words(m)}"
                              + ("" if roi is None else f", roi {roi:.2f}")
                              for n, s, m, roi in zip(money.names, money.chosen_spend, money.marginal_return,
                                                      money.roi))
            page.figure(parts, f"response-money-{r.path.name}", "Revenue back per investment", fig, money,
                        caption=f"exact revenue an investment brings back over its spend range, the others at "
                                f"their chosen spends; dashed: the spend itself (above it, profit); the short line "
                                f"at the chosen spend has the marginal return as its slope. {marks}")


def _backtest_section(page: Page, runs: list[Run]) -> None:
    parts = page.section("backtest", "Backtest")
    for r in runs:
        d = plots.backtest_data(r.data)
        fig = plots.figure(11, 4.0)
        plots.draw_backtest(d, fig.add_subplot())
        page.figure(parts, f"backtest-{r.path.name}", f"Backtest ({r.path.name})", fig, d,
                    caption=f"{r.label}: fitted on rows before {d.split}, predicting customers who start after it")
        rows = [[s, plots.pct(p), plots.pct(o), plots.pct(n), f"{100 * e:.2f}", f"{100 * ne:.2f}"]
                for s, p, o, n, e, ne in zip(d.stages, d.predicted, d.observed, d.naive, d.error, d.naive_error)]
        parts.append(_table(["stage", "model", "observed", "earlier customers", "model off by (pts)",
                             "earlier customers off by (pts)"],
                            rows, "num"))
        warning = _fallback_box(r.data.get("fallbacks"))
        if warning:
            parts.append(warning)


def _seed_text(seed: Any) -> str:
    """A run that draws nothing at random records no seed: say so rather than "None"."""
    return "not used" if seed is None or seed == "" else str(seed)


def _manifest_section(page: Page, runs: list[Run], refs: list[ModelRef]) -> None:
    parts = page.section("manifest", "Provenance")
    rows = []
    for r in runs:
        m = r.manifest or {}
        inputs = "; ".join(f"{Path(k).name} {str(v)[:12]}" for k, v in (m.get("inputs") or {}).items())
        rows.append([str(r.path), m.get("command", r.kind), " ".join(m.get("argv", [])) or
                     ", ".join(f"{k}={v}" for k, v in (m.get("arguments") or {}).items()),
                     _seed_text(m.get("seed", r.data.get("seed"))), m.get("journey_version", ""),
                     f"{m.get('started', '')} \u2192 {m.get('finished', '')}", inputs or ""])
    for ref in refs:
        m = ref.model.provenance or {}
        inputs = "; ".join(f"{Path(k).name} {str(v)[:12]}" for k, v in (m.get("inputs") or {}).items())
        rows.append([str(ref.path), m.get("command", "calibrate"), " ".join(m.get("argv", [])),
                     _seed_text(m.get("seed")), m.get("journey_version", ""),
                     f"{m.get('started', '')} \u2192 {m.get('finished', '')}", inputs])
    parts.append(_table(["run", "command", "as typed", "seed", "version", "time (UTC)", "inputs (sha256)"], rows,
                        "prov"))
    notes = [n for r in runs for n in r.notes]
    if notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{_e(n)}</li>" for n in dict.fromkeys(notes)) + "</ul>")


CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;color:#1d1d1f;margin:0;
background:#f6f7f9;line-height:1.45}
main{max-width:1240px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:28px;margin:8px 0 4px}h2{font-size:21px;margin:36px 0 8px;border-bottom:2px solid #e8e8ec;
padding-bottom:4px}h3{font-size:16px;margin:20px 0 6px}
.sub{color:#666;font-size:14px;margin:0 0 18px}
.headline{background:#eef5fc;border-left:6px solid #0072B2;padding:14px 18px;font-size:19px;margin:12px 0}
.headline ul{font-size:15px;margin:8px 0 0;padding-left:20px}
nav{font-size:14px;margin:6px 0 10px}nav a{margin-right:14px;color:#0a5a9c;text-decoration:none}
figure{margin:10px 0 18px}figure img{max-width:100%;height:auto;display:block}
figcaption{color:#555;font-size:13px;margin-top:4px}
table{border-collapse:collapse;font-size:13.5px;margin:8px 0 16px}
th,td{border-bottom:1px solid #e3e3e8;padding:5px 10px;text-align:left;vertical-align:top}
th{background:#f3f4f7;font-weight:600}table.num td.n{text-align:right;font-variant-numeric:tabular-nums}
table.prov{font-size:12px}table.prov td{word-break:break-all;max-width:360px}
.notes{color:#8a4b00;font-size:13px}
.warn{background:#fff4e5;border-left:6px solid #E69F00;padding:10px 16px;margin:10px 0 16px;font-size:14px}
.warn ul{margin:6px 0 0;padding-left:20px}footer{color:#888;font-size:12px;margin-top:30px}
"""


def _model_key(model: Model) -> str:
    """Same parameters, same key: two copies of one calibration get one map."""
    h = hashlib.sha256(json.dumps([model.stages, model.touchpoints, model.personas]).encode())
    for arr in (model.persona_share, model.share, model.advance, model.drop, model.lapse, model.rate,
                model.leave_speed):
        h.update(np.round(arr, 12).tobytes())
    return h.hexdigest()


def render(runs: list[Run]) -> tuple[str, list[Fig]]:
    """The page's HTML and its figures."""
    page = Page()
    refs: dict[int, ModelRef | None] = {id(r): resolve_model(r) if r.kind != "backtest" else None for r in runs}
    models: dict[str, ModelRef] = {}  # one map per distinct model file content
    for r in runs:
        ref = refs[id(r)]
        if ref is not None:
            models.setdefault(_model_key(ref.model), ref)
    model_refs = list(models.values())
    by_kind = {k: [r for r in runs if r.kind == k] for k in KIND_ORDER}
    head = headline_data(runs)
    if by_kind["compare"]:
        _compare_section(page, by_kind["compare"])
    if by_kind["simulate"]:
        _funnel_section(page, by_kind["simulate"], refs)
    elif by_kind["compare"]:
        # no simulate run: the comparison's base summary still gives the funnel
        base_runs = [Run(path=r.path, kind="simulate", data=r.data["base"], manifest=r.manifest)
                     for r in by_kind["compare"] if "stages" in r.data["base"] and "personas" in r.data["base"]]
        if base_runs:
            _funnel_section(page, base_runs, {id(b): refs[id(r)] for b, r in zip(base_runs, by_kind["compare"])})
    if model_refs:
        _map_section(page, model_refs)
    if by_kind["optimize"]:
        _optimize_section(page, by_kind["optimize"])
    if by_kind["backtest"]:
        _backtest_section(page, by_kind["backtest"])
    if model_refs:
        _evidence_section(page, model_refs)
    _manifest_section(page, runs, model_refs)

    out = io.StringIO()
    out.write('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
              f'<meta name="generator" content="{REPORT_GENERATOR} {__version__}">'
              '<meta name="viewport" content="width=device-width, initial-scale=1">'
              f"<title>journey report</title><style>{CSS}</style></head><body><main>\n")
    out.write("<h1>Customer journey report</h1>")
    kinds = ", ".join(f"{len(by_kind[k])} {k}" for k in KIND_ORDER if by_kind[k])
    out.write(f'<p class="sub">{_e(kinds)} run(s); generated {_e(utc_now())}</p>')
    out.write(f'<div class="headline">{_e(head["text"])}')
    if head["others"]:
        out.write("<ul>" + "".join(f"<li>{_e(o)}</li>" for o in head["others"]) + "</ul>")
    out.write("</div>")
    out.write("<nav>" + "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in page.sections) + "</nav>")
    for sid, title, parts in page.sections:
        out.write(f'<section id="{sid}"><h2>{_e(title)}</h2>\n' + "\n".join(parts) + "</section>\n")
    out.write("<footer>journey report: self-contained page, figures inlined; the same figures as PNG with their "
              "data as JSON are saved beside it.</footer></main></body></html>\n")
    return out.getvalue(), page.figures


def build_report(dirs: list[Path], out: Path) -> Path:
    """Read the run directories, draw the figures, write ``out`` and ``<out stem>_figures/``."""
    out = Path(out)
    if out.is_dir():
        raise InputError("is a directory", file=out, where="--out", hint="give the HTML file to write, e.g. "
                         "--out report.html")
    runs = load_runs([Path(d) for d in dirs])
    fig_dir = out.parent / f"{out.stem}_figures"
    read = sorted({p for r in runs for p in r.path.iterdir() if p.is_file()})
    check_output_file(out, "report", read)  # before the work: never a run's file, never a user's file
    check_run_out(fig_dir, read)
    text, figures = render(runs)
    size = len(text.encode("utf-8"))
    if size > MAX_BYTES:
        raise InputError(f"the report would be {size / 1e6:.1f} MB, over the {MAX_BYTES / 1e6:.0f} MB limit",
                         where="DIR", value=len(runs), hint="report fewer run directories at once")
    args = {"dirs": [str(d) for d in dirs], "out": str(out)}
    inputs = sorted({r.path / name for r in runs for name in (*RESULT_FILES, "manifest.json")
                     if (r.path / name).is_file()})
    # the figures folder belongs to this report: rebuilt whole, so no stale figure survives
    with run_directory("report", fig_dir, args, inputs) as run:
        for f in figures:
            run.text(f"{f.slug}.png", f.png)
            run.text(f"{f.slug}.json", dumps(_plain(asdict(f.data))))
    return write_text_atomic(out, text)
