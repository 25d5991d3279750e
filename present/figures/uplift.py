"""Uplift per scenario (simulated with intervals, exact expectation) and per persona."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from present.figures.common import OBSERVED_COLOUR, SCENARIO_COLOURS, Record, palette, style


@dataclass
class UpliftData(Record):
    """Each scenario's change in conversion against the base, simulated and expected."""

    base_rate: float
    base_expected: float
    names: list[str]
    uplift: list[float]
    ci: list[list[float]]
    expected_uplift: list[float]
    conversion_rate: list[float]
    expected_conversion_rate: list[float]
    colours: dict[str, str]
    conversion_stage: str = ""
    with_data: bool = False  # the intervals include the calibration data's uncertainty
    expected_note: str = ""  # why there is no exact expectation (queues): no diamond at a meaningless 0


def uplift_data(comparison: dict[str, Any]) -> UpliftData:
    """The record of comparison.json; the intervals include the data's uncertainty where every scenario has it."""
    base = comparison["base"]
    sc = comparison["scenarios"]
    names = [str(s["name"]) for s in sc]
    with_data = bool(sc) and all(s.get("uplift_interval") for s in sc)
    key = "uplift_interval" if with_data else "uplift_ci"
    return UpliftData(
        base_rate=float(base["conversion_rate"]), base_expected=float(base.get("expected_conversion_rate", math.nan)),
        names=names, uplift=[float(s["uplift"]) for s in sc], ci=[[float(x) for x in s[key]] for s in sc],
        with_data=with_data,
        expected_uplift=[math.nan if s.get("expected_note") else float(s.get("expected_uplift", math.nan))
                         for s in sc],
        expected_note=next((str(s["expected_note"]) for s in sc if s.get("expected_note")), ""),
        conversion_rate=[float(s["conversion_rate"]) for s in sc],
        expected_conversion_rate=[float(s.get("expected_conversion_rate", math.nan)) for s in sc],
        colours=palette(names, SCENARIO_COLOURS),
        conversion_stage=str(base.get("conversion_stage", "")),
    )


def draw_uplift(data: UpliftData, ax: Axes) -> None:
    """A bar and whisker per scenario, a diamond at the exact expectation."""
    y = np.arange(len(data.names))[::-1]
    up = np.array(data.uplift) * 100
    ci = np.array(data.ci).reshape(-1, 2) * 100
    for yi, name, u, (lo, hi), e in zip(y, data.names, up, ci, data.expected_uplift):
        c = data.colours[name]
        ax.barh(yi, u, color=c, alpha=0.35, height=0.6)
        ax.errorbar([u], [yi], xerr=[[max(u - lo, 0.0)], [max(hi - u, 0.0)]], fmt="o", color=c, ms=7, capsize=6, lw=2)
        if not math.isnan(e):
            ax.plot([100 * e], [yi], marker="D", color=OBSERVED_COLOUR, ms=6, ls="none")
        ax.annotate(f"{u:+.2f} pts  [{lo:+.2f}, {hi:+.2f}]", (max(hi, 0), yi), textcoords="offset points",
                    xytext=(8, 0), va="center", fontsize=9.5)
    ax.axvline(0, color=OBSERVED_COLOUR, lw=1)
    ax.set_yticks(y, data.names, fontsize=10)
    lo_all = min(0.0, float(ci.min()) if ci.size else 0.0)
    hi_all = max(0.0, float(ci.max()) if ci.size else 0.0)
    span = max(hi_all - lo_all, 0.5)
    ax.set_xlim(lo_all - 0.08 * span, hi_all + 0.45 * span)
    what = ("95% interval with the calibration data's uncertainty" if data.with_data else
            "95% interval of simulation noise")
    diamond = ("no exact expectation: it ignores capacity limits (queues), so only the simulation answers"
               if data.expected_note else "diamond: exact expectation")
    ax.set_xlabel(f"change in conversion ({data.conversion_stage or 'conversion'} reached), percentage points\n"
                  f"bar + whisker: simulated, {what}\n{diamond}")
    style(ax, grid="x")
    ax.set_ylim(-0.6, len(data.names) - 0.4)


@dataclass
class PersonaUpliftData(Record):
    """Change in conversion per scenario and persona, exact and simulated."""

    scenarios: list[str]
    personas: list[str]
    expected: list[list[float]]  # [scenario][persona] exact change in conversion
    simulated: list[list[float]]  # [scenario][persona], NaN where absent
    colours: dict[str, str]


def persona_uplift_data(comparison: dict[str, Any]) -> PersonaUpliftData | None:
    """Change in conversion per persona and scenario, when the comparison carries it."""
    scen = [s for s in comparison["scenarios"] if isinstance(s.get("personas"), dict) and s["personas"]]
    if not scen:
        return None
    personas = sorted({p for s in scen for p in s["personas"]})

    def val(rec: Any, key: str) -> float:
        v = rec.get(key) if isinstance(rec, dict) else None
        return float(v) if v is not None else math.nan

    return PersonaUpliftData(
        scenarios=[str(s["name"]) for s in scen], personas=personas,
        expected=[[val(s["personas"].get(p), "expected_uplift") for p in personas] for s in scen],
        simulated=[[val(s["personas"].get(p), "uplift") for p in personas] for s in scen],
        colours=palette(personas))


def draw_persona_uplift(data: PersonaUpliftData, ax: Axes) -> None:
    """A bar per persona within each scenario, dots at the simulated change."""
    P = len(data.personas)
    h = 0.8 / P
    ys = np.arange(len(data.scenarios))[::-1]
    for k, p in enumerate(data.personas):
        y = ys + (P - 1) / 2 * h - k * h
        ex = np.array([row[k] for row in data.expected]) * 100
        sim = np.array([row[k] for row in data.simulated]) * 100
        ax.barh(y, ex, height=h * 0.9, color=data.colours[p], label=p)
        ax.plot(sim, y, "o", color=OBSERVED_COLOUR, ms=3.5, ls="none",
                label="simulated" if k == 0 else None)
    ax.axvline(0, color=OBSERVED_COLOUR, lw=1)
    ax.set_yticks(ys, data.scenarios)
    ax.set_xlabel("change in conversion per persona, percentage points (bars: exact expectation; dots: simulated)")
    ax.legend(frameon=False, fontsize=9, loc="best")
    style(ax, grid="x")
