"""The funnel: reach per stage, simulated with intervals and expected per persona."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from present.figures.common import OBSERVED_COLOUR, Record, palette, pct, style
from sim.exact import evaluate
from sim.model import Model
from sim.summary import wilson


@dataclass
class FunnelData(Record):
    """The funnel's numbers: reach per stage, overall and per persona."""

    stages: list[str]
    conversion_stage: str
    personas: list[str]
    colours: dict[str, str]
    expected: dict[str, list[float]]  # persona -> P(reach stage), from the exact evaluator
    expected_overall: list[float]
    simulated: list[float]  # overall reached_rate per stage
    simulated_ci: list[list[float]]  # [lo, hi] per stage
    persona_conversion: dict[str, dict[str, Any]]  # persona -> {rate, ci} simulated at the conversion stage
    ci_note: str = ""


def funnel_data(summary: dict[str, Any], model: Model | None = None) -> FunnelData:
    """Reach per stage: simulated overall with 95 % intervals, expected per persona from the model.

    Stage intervals are Wilson intervals over all simulated customers; the conversion stage uses the
    summary's own interval (across replications when there are several).
    """
    stages = list(summary["stages"])
    conv = summary["conversion_stage"]
    n = int(summary.get("simulated_customers") or summary["customers"] * summary.get("replications", 1))
    sim = [float(summary["stages"][s]["reached_rate"]) for s in stages]
    ci = [wilson(float(summary["stages"][s]["reached"]), n) for s in stages]
    ci[stages.index(conv)] = [float(x) for x in summary["conversion_rate_ci"]]
    personas = sorted(summary.get("personas", {}))
    expected: dict[str, list[float]] = {}
    if model is not None and list(model.stages) == stages:
        ex = evaluate(model, horizon_days=summary.get("horizon_days"))
        for p, name in enumerate(model.personas):
            expected[name] = [float(x) for x in ex.reach[p]]
        overall = [float(x) for x in ex.reach_overall]
    else:
        overall = [float(summary["stages"][s].get("expected_reached_rate", math.nan)) for s in stages]
    per_conv = {name: {"rate": float(rec["conversion_rate"]),
                       "ci": [float(x) for x in rec.get("conversion_rate_ci", [math.nan, math.nan])],
                       "expected": float(rec.get("expected_conversion_rate", math.nan))}
                for name, rec in sorted(summary.get("personas", {}).items())}
    return FunnelData(stages=stages, conversion_stage=conv, personas=personas, colours=palette(personas),
                      expected=expected, expected_overall=overall, simulated=sim, simulated_ci=ci,
                      persona_conversion=per_conv,
                      ci_note=f"bars: 95 % intervals from the {n:,} simulated customers; conversion: "
                              f"{_plain_ci_method(summary.get('ci_method'))}")


def _plain_ci_method(method: str | None) -> str:
    """summary.json's ci_method in words for a caption (the JSON keeps the method's name)."""
    if method and method.startswith("t over"):
        return "95 % interval from the spread of the replications"
    if method and "binomial" in method.lower():
        return "95 % interval from the count of simulated customers (one replication)"
    return "interval as in summary.json"


def draw_funnel(data: FunnelData, ax: Axes) -> None:
    """Expected reach per persona, simulated reach with whiskers, persona conversion as diamonds."""
    x = np.arange(len(data.stages))
    for name in data.personas:
        if name in data.expected:
            ax.plot(x, data.expected[name], "-o", color=data.colours[name], lw=2, ms=5,
                    label=f"{name} (expected)")
    sim = np.array(data.simulated)
    ci = np.array(data.simulated_ci)
    ax.plot(x, data.expected_overall, "--", color=OBSERVED_COLOUR, lw=1.2, label="all (expected)")
    # never negative: an interval rounded just past its point (a stage nobody reaches) is still drawn
    yerr = np.maximum([sim - ci[:, 0], ci[:, 1] - sim], 0.0)
    ax.errorbar(x, sim, yerr=yerr, fmt="s", color=OBSERVED_COLOUR, ms=7,
                capsize=4, label="all (simulated, 95% interval)")
    c = data.stages.index(data.conversion_stage)
    for k, name in enumerate(data.personas):
        rec = data.persona_conversion.get(name)
        if rec and not math.isnan(rec["ci"][0]):
            ax.errorbar([c + 0.16 + 0.08 * k], [rec["rate"]], yerr=[[max(rec["rate"] - rec["ci"][0], 0.0)],
                                                               [max(rec["ci"][1] - rec["rate"], 0.0)]],
                        fmt="D", color=data.colours[name], ms=5, capsize=3)
    for xi, y in zip(x, sim):
        at_conv = xi == data.stages.index(data.conversion_stage)  # persona diamonds sit to its right
        ax.annotate(pct(y), (xi, y), textcoords="offset points", xytext=(-9, -16) if at_conv else (9, 7),
                    ha="right" if at_conv else "left", fontsize=9.5, fontweight="bold",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
    ax.axvspan(c - 0.5, len(data.stages) - 0.5, color="#f3f7fb", zorder=0)
    ax.text(c - 0.45, 1.02, "converted", fontsize=9, color="#4a6a8a", va="bottom")
    ax.set_xticks(x, data.stages)
    ax.set_ylim(0, 1.08)
    ax.set_xlim(-0.4, len(data.stages) - 0.5)
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    ax.set_ylabel("share of customers reaching the stage")
    style(ax)
    ax.legend(loc="upper right", fontsize=9, frameon=False)

