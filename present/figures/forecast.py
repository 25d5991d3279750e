"""The forecast: weekly conversions of the base and each scenario, with their 95 % bands."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from matplotlib.axes import Axes

from present.figures.common import BASELINE_COLOUR, SCENARIO_COLOURS, Record, figure, palette, png_bytes, weekly_axes


@dataclass
class ForecastData(Record):
    """Per target: weekly conversions and their bands (NaN where the record has none)."""

    start: str
    rollout: str
    weeks: list[str]
    names: list[str]
    conversions: list[list[float]]
    lower: list[list[float]]
    upper: list[list[float]]
    stage: str = "decision"
    extra: dict[str, Any] = field(default_factory=dict)


def forecast_data(fc: dict[str, Any]) -> ForecastData:
    """The figure's record of a forecast.json."""
    targets = fc["targets"]
    weeks = [w["start"] for w in targets[0]["weeks"]] if targets else []

    def band(t: dict[str, Any], k: int) -> list[float]:
        return [float(w["conversions_interval"][k]) if w.get("conversions_interval") else math.nan
                for w in t["weeks"]]

    return ForecastData(start=str(fc["start"]), rollout=str(fc.get("rollout", fc["start"])), weeks=weeks,
                        names=[t["name"] for t in targets],
                        conversions=[[float(w["conversions"]) for w in t["weeks"]] for t in targets],
                        lower=[band(t, 0) for t in targets], upper=[band(t, 1) for t in targets],
                        stage=str(fc.get("conversion_stage", "decision")))


def draw_forecast(data: ForecastData, ax: Axes) -> None:
    """One line per target with its band; the rollout week marked."""
    colours = palette([n for n in data.names[1:]], SCENARIO_COLOURS)
    x = list(range(1, len(data.weeks) + 1))
    for i, name in enumerate(data.names):
        colour = BASELINE_COLOUR if i == 0 else colours[name]
        ax.plot(x, data.conversions[i], color=colour, linewidth=2, marker="o", markersize=3, label=name)
        if not all(math.isnan(v) for v in data.lower[i]):
            ax.fill_between(x, data.lower[i], data.upper[i], color=colour, alpha=0.15, linewidth=0)
    offset = (date.fromisoformat(data.rollout) - date.fromisoformat(data.start)).days / 7.0
    if 0 < offset < len(x):  # the rollout inside the weeks shown: mark it where it falls
        ax.axvline(offset + 0.5, color="#444444", linestyle="--", linewidth=1)
        ax.text(offset + 0.6, ax.get_ylim()[1], f"rollout {data.rollout}", va="top", fontsize=8, color="#444444")
    weekly_axes(ax, data.weeks, ticks=12, xlabel=f"week starting (from {data.start})",
                ylabel=f"conversions per week (reached {data.stage})", legend_size=9)


def forecast_png(result: dict[str, Any]) -> bytes:
    """The forecast figure (PNG bytes) of a forecast.json record."""
    fig = figure(11.0, 5.0)
    draw_forecast(forecast_data(result), fig.add_subplot())
    return png_bytes(fig)
