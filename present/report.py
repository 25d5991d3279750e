"""The report page, assembled from run records: the HTML text and the figure files, written by nobody here.

Each run is a simulate, compare, optimize or backtest result (present/report_runs.py reads them).
Figures are inlined as base64 PNG, so the page opens from a file with no network; the same PNGs, with
each figure's data as JSON, are the page's figure files (application/report.py writes them beside it).
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from present.report_headline import headline_data
from present.report_html import CSS, Fig, Page, esc
from present.report_runs import KIND_ORDER, ModelRef, Run, resolve_model
from present.report_sections import (
    backtest_section,
    compare_section,
    evidence_section,
    forecast_section,
    funnel_section,
    manifest_section,
    map_section,
    optimize_section,
)
from sim._version import __version__
from sim.model import Model


@dataclass
class ReportPage:
    """The page's HTML and its figures, in page order."""

    html: str
    figures: list[Fig]

    def files(self) -> dict[str, bytes | dict[str, Any]]:
        """The figure files: each figure's PNG bytes and its data record (JSON-ready), PNG first."""
        out: dict[str, bytes | dict[str, Any]] = {}
        for f in self.figures:
            out[f"{f.slug}.png"] = f.png
            out[f"{f.slug}.json"] = f.data.to_dict()
        return out


def _model_key(model: Model) -> str:
    """Same parameters, same key: two copies of one calibration get one map."""
    h = hashlib.sha256(json.dumps([model.stages, model.touchpoints, model.personas]).encode())
    for arr in (model.persona_share, model.share, model.advance, model.drop, model.lapse, model.rate,
                model.leave_speed):
        h.update(np.round(arr, 12).tobytes())
    return h.hexdigest()


def render(runs: list[Run], *, generated: str, generator: str) -> ReportPage:
    """The page of ``runs``; ``generated`` (a UTC timestamp) and ``generator`` (the meta tag's name) are
    the caller's, so that the page is a function of its arguments."""
    by_kind = {k: [r for r in runs if r.kind == k] for k in KIND_ORDER}
    head = headline_data(runs)
    page = _sections(runs, by_kind)
    return ReportPage(_html(page, by_kind, head, generated=generated, generator=generator), page.figures)


def _sections(runs: list[Run], by_kind: dict[str, list[Run]]) -> Page:
    """The page's sections, figures drawn, in reading order: scenarios, funnel, map, optimization,
    backtest, evidence, provenance."""
    page = Page()
    refs: dict[int, ModelRef | None] = {id(r): resolve_model(r) if r.kind not in ("backtest", "forecast") else None
                                     for r in runs}
    models: dict[str, ModelRef] = {}  # one map per distinct model file content
    for r in runs:
        ref = refs[id(r)]
        if ref is not None:
            models.setdefault(_model_key(ref.model), ref)
    model_refs = list(models.values())
    if by_kind["compare"]:
        compare_section(page, by_kind["compare"])
    if by_kind["simulate"]:
        funnel_section(page, by_kind["simulate"], refs)
    elif by_kind["compare"]:
        # no simulate run: the comparison's base summary still gives the funnel
        base_runs = [Run(path=r.path, kind="simulate", data=r.data["base"], manifest=r.manifest)
                     for r in by_kind["compare"] if "stages" in r.data["base"] and "personas" in r.data["base"]]
        if base_runs:
            funnel_section(page, base_runs, {id(b): refs[id(r)] for b, r in zip(base_runs, by_kind["compare"])})
    if model_refs:
        map_section(page, model_refs)
    if by_kind["optimize"]:
        optimize_section(page, by_kind["optimize"])
    if by_kind["forecast"]:
        forecast_section(page, by_kind["forecast"])
    if by_kind["backtest"]:
        backtest_section(page, by_kind["backtest"])
    if model_refs:
        evidence_section(page, model_refs)
    manifest_section(page, runs, model_refs)
    return page


def _html(page: Page, by_kind: dict[str, list[Run]], head: dict[str, Any], *, generated: str, generator: str) -> str:
    """The whole page: head, headline, navigation, the sections, footer."""
    out = io.StringIO()
    out.write('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
              f'<meta name="generator" content="{generator} {__version__}">'
              '<meta name="viewport" content="width=device-width, initial-scale=1">'
              f"<title>journey report</title><style>{CSS}</style></head><body><main>\n")
    out.write("<h1>Customer journey report</h1>")
    kinds = ", ".join(f"{len(by_kind[k])} {k}" for k in KIND_ORDER if by_kind[k])
    out.write(f'<p class="sub">{esc(kinds)} run(s); generated {esc(generated)}</p>')
    out.write(f'<div class="headline">{esc(head["text"])}')
    if head["others"]:
        out.write("<ul>" + "".join(f"<li>{esc(o)}</li>" for o in head["others"]) + "</ul>")
    out.write("</div>")
    out.write("<nav>" + "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title, _ in page.sections) + "</nav>")
    for sid, title, parts in page.sections:
        out.write(f'<section id="{sid}"><h2>{esc(title)}</h2>\n' + "\n".join(parts) + "</section>\n")
    out.write("<footer>journey report: self-contained page, figures inlined; the same figures as PNG with their "
              "data as JSON are saved beside it.</footer></main></body></html>\n")
    return out.getvalue()
