"""The backtest: reach rates predicted, observed and by what earlier customers did."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from present.figures.common import OBSERVED_COLOUR, Record, figure, png_bytes, style


@dataclass
class BacktestData(Record):
    """Per stage: predicted, observed and naive reach rates, and the errors of both predictions."""

    split: str
    stages: list[str]
    predicted: list[float]
    observed: list[float]
    naive: list[float]
    error: list[float]
    naive_error: list[float]
    extra: dict[str, Any] = field(default_factory=dict)


def backtest_data(bt: dict[str, Any]) -> BacktestData:
    """The record of backtest.json: the stages both sides have."""
    stages = [s for s in bt["observed"] if s in bt["predicted"]]

    def get(key: str) -> list[float]:
        rec = bt.get(key, {}) or {}
        return [float(rec.get(s, math.nan)) for s in stages]

    return BacktestData(split=str(bt["split"]), stages=stages, predicted=get("predicted"), observed=get("observed"),
                        naive=get("naive"), error=get("error"), naive_error=get("naive_error"))


def draw_backtest(data: BacktestData, ax: Axes) -> None:
    """Three bars per stage, with both errors written above them."""
    x = np.arange(len(data.stages))
    w = 0.26
    for k, (label, vals, colour) in enumerate((("observed", data.observed, OBSERVED_COLOUR),
                                               ("model (predicted)", data.predicted, "#0072B2"),
                                               ("what earlier customers did", data.naive, "#BBBBBB"))):
        ax.bar(x + (k - 1) * w, vals, width=w, color=colour, label=label)
    for xi, e, ne in zip(x, data.error, data.naive_error):
        if not math.isnan(e):
            # two short lines per stage: one long line ran into the next stage's
            ax.text(xi, 1.03, f"model off by {100 * e:.1f} pts\nearlier customers {100 * ne:.1f}", ha="center",
                    va="bottom", fontsize=8, color="#444444", linespacing=1.1)
    ax.set_xticks(x, data.stages)
    ax.set_ylim(0, 1.14)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    ax.set_ylabel(f"reach rate, customers starting after {data.split}")
    ax.legend(frameon=False, fontsize=9, loc="upper right", bbox_to_anchor=(1.0, 0.94))
    style(ax)


def backtest_png(result: dict[str, Any]) -> bytes:
    """The backtest figure (PNG bytes) of a backtest.json record."""
    fig = figure(11.0, 5.0)
    draw_backtest(backtest_data(result), fig.add_subplot())
    return png_bytes(fig)
