"""The backtest: reach rates predicted, observed and by what earlier customers did."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from present.figures.common import OBSERVED_COLOUR, Record, figure, png_bytes, style, weekly_axes


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


@dataclass
class OverTimeData(Record):
    """The backtest over time: conversion reach by age, and weekly conversions after the split."""

    split: str
    stage: str
    ages: list[float]
    age_predicted: list[float]
    age_observed: list[float]
    age_naive: list[float]
    weeks: list[str]
    observed: list[float]
    predicted: list[float]
    predicted_given_arrivals: list[float]
    seasonal_naive: list[float]
    mae: dict[str, float]
    baseline: str
    # 95 % intervals per week (empty: a backtest with --draws 0 or written before them)
    predicted_lo: list[float] = field(default_factory=list)
    predicted_hi: list[float] = field(default_factory=list)
    given_arrivals_lo: list[float] = field(default_factory=list)
    given_arrivals_hi: list[float] = field(default_factory=list)
    coverage: dict[str, dict[str, int]] = field(default_factory=dict)


def over_time_data(bt: dict[str, Any]) -> OverTimeData | None:
    """The over-time record of a backtest.json (None for one written before these keys)."""
    ages = bt.get("reach_by_age") or []
    wk = bt.get("weekly_conversions") or {}
    rows = wk.get("rows") or []
    if not ages and not rows:
        return None

    def col(recs: list[dict[str, Any]], key: str) -> list[float]:
        return [math.nan if r.get(key) is None else float(r[key]) for r in recs]

    def end(key: str, i: int) -> list[float]:
        return [float(r[key][i]) for r in rows] if rows and all(r.get(key) for r in rows) else []

    return OverTimeData(split=str(bt["split"]), stage=str(bt.get("conversion_stage", "")),
                        ages=col(ages, "age_days"), age_predicted=col(ages, "predicted"),
                        age_observed=col(ages, "observed"), age_naive=col(ages, "naive"),
                        weeks=[str(r["start"]) for r in rows], observed=col(rows, "observed"),
                        predicted=col(rows, "predicted"),
                        predicted_given_arrivals=col(rows, "predicted_given_arrivals"),
                        seasonal_naive=col(rows, "seasonal_naive"), mae=dict(wk.get("mae") or {}),
                        baseline=str(wk.get("baseline", "")),
                        predicted_lo=end("predicted_interval", 0), predicted_hi=end("predicted_interval", 1),
                        given_arrivals_lo=end("predicted_given_arrivals_interval", 0),
                        given_arrivals_hi=end("predicted_given_arrivals_interval", 1),
                        coverage=dict(wk.get("coverage") or {}))


def draw_reach_by_age(data: OverTimeData, ax: Axes) -> None:
    """Cumulative reach of the conversion stage by days since arrival: model, observed, earlier customers."""
    ax.plot(data.ages, data.age_observed, color=OBSERVED_COLOUR, marker="o", markersize=3, label="observed")
    ax.plot(data.ages, data.age_predicted, color="#0072B2", marker="o", markersize=3, label="model")
    ax.plot(data.ages, data.age_naive, color="#BBBBBB", marker="o", markersize=3, label="earlier customers")
    ax.set_xscale("symlog", linthresh=7)
    ax.set_xlabel("days since arrival")
    ax.set_ylabel(f"reached {data.stage} within that many days")
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    style(ax)


def draw_weekly(data: OverTimeData, ax: Axes) -> None:
    """Weekly conversions after the split: observed, the forecast (95 % band), the seasonal-naive baseline."""
    x = list(range(1, len(data.weeks) + 1))
    mae = data.mae
    cov = data.coverage

    def inside(key: str) -> str:
        c = cov.get(key)
        return f", {c['inside']} of {c['weeks']} wk in 95 %" if c else ""

    if data.predicted_lo:
        ax.fill_between(x, data.predicted_lo, data.predicted_hi, color="#0072B2", alpha=0.15, linewidth=0,
                        label="95 %, forecast")
    if data.given_arrivals_lo:
        ax.plot(x, data.given_arrivals_lo, color="#56B4E9", linewidth=0.8, alpha=0.7,
                label="95 %, with the actual arrivals")
        ax.plot(x, data.given_arrivals_hi, color="#56B4E9", linewidth=0.8, alpha=0.7)
    ax.plot(x, data.observed, color=OBSERVED_COLOUR, marker="o", markersize=3, label="observed")
    ax.plot(x, data.predicted, color="#0072B2", marker="o", markersize=3,
            label=f"forecast (MAE {mae.get('predicted', math.nan):.1f}{inside('predicted')})")
    ax.plot(x, data.predicted_given_arrivals, color="#56B4E9", linestyle=":",
            label=f"with the actual arrivals (MAE {mae.get('predicted_given_arrivals', math.nan):.1f}"
                  f"{inside('predicted_given_arrivals')})")
    ax.plot(x, data.seasonal_naive, color="#BBBBBB", linestyle="--",
            label=f"seasonal naive (MAE {mae.get('seasonal_naive', math.nan):.1f})")
    weekly_axes(ax, data.weeks, ticks=8, xlabel=f"week starting (split {data.split})",
                ylabel=f"customers reaching {data.stage} per week", legend_size=8)


def backtest_png(result: dict[str, Any]) -> bytes:
    """The backtest figure (PNG bytes) of a backtest.json record: by stage, then over time."""
    over = over_time_data(result)
    fig = figure(11.0, 9.0 if over is not None else 5.0)
    if over is None:
        draw_backtest(backtest_data(result), fig.add_subplot())
        return png_bytes(fig)
    grid = fig.add_gridspec(2, 2, height_ratios=[1.1, 1.0])
    draw_backtest(backtest_data(result), fig.add_subplot(grid[0, :]))
    draw_reach_by_age(over, fig.add_subplot(grid[1, 0]))
    draw_weekly(over, fig.add_subplot(grid[1, 1]))
    return png_bytes(fig)
