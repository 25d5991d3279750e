"""The optimization's figures: the allocation, the history of trials, the response curves (effect and money)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from present.figures.common import (
    BASELINE_COLOUR,
    OBSERVED_COLOUR,
    SCENARIO_COLOURS,
    Record,
    figure,
    palette,
    png_bytes,
    style,
)


@dataclass
class AllocationData(Record):
    """Spend per investment, its maximum and the budget."""

    names: list[str]
    spend: list[float]
    max_spend: list[float | None]
    budget: float | None
    total: float


def allocation_data(best: dict[str, Any]) -> AllocationData:
    """The record of best.json's allocation."""
    alloc = best.get("allocation", {})
    names = list(alloc)
    inv = {str(i.get("name")): i for i in best.get("investments", []) if isinstance(i, dict)}
    budget = best.get("budget")
    if isinstance(budget, dict):
        budget = budget.get("total")
    return AllocationData(names=names, spend=[float(alloc[n]) for n in names],
                          max_spend=[float(inv[n]["max_spend"]) if n in inv and inv[n].get("max_spend") is not None
                                     else None for n in names],
                          budget=float(budget) if budget is not None else None,
                          total=float(best.get("spend", sum(float(v) for v in alloc.values()))))


def draw_allocation(data: AllocationData, ax: Axes) -> None:
    """A bar per investment over a grey bar of its maximum."""
    y = np.arange(len(data.names))[::-1]
    colours = palette(data.names, SCENARIO_COLOURS)
    for yi, name, sp, mx in zip(y, data.names, data.spend, data.max_spend):
        if mx is not None:
            ax.barh(yi, mx, color="#eeeeee", height=0.6)
        ax.barh(yi, sp, color=colours[name], height=0.6)
        ax.annotate(f"{sp:,.1f}", (sp, yi), textcoords="offset points", xytext=(5, 0), va="center", fontsize=9.5)
    ax.set_yticks(y, data.names)
    title = f"spend {data.total:,.1f}" + (f" of budget {data.budget:,.1f}" if data.budget is not None else "")
    ax.set_xlabel(title + (" (grey: the lever's maximum)" if any(m is not None for m in data.max_spend) else ""))
    style(ax, grid="x")


@dataclass
class HistoryData(Record):
    """The completed trials' values in order and the best so far."""

    number: list[int]
    value: list[float]
    best_so_far: list[float]
    maximize: bool = True
    skipped: int = 0  # trials that did not complete (pruned, failed, infeasible)


def history_data(rows: list[dict[str, str]], *, maximize: bool = True) -> HistoryData | None:
    """Completed trials in order, with the best value so far. None when no trial has a value."""
    pts = []
    skipped = 0
    for row in rows:
        state = str(row.get("state", "COMPLETE")).upper()
        try:
            v = float(row.get("value", ""))
            n = int(float(row.get("number", len(pts))))
        except ValueError:
            skipped += 1
            continue
        if state != "COMPLETE" or math.isnan(v):
            skipped += 1
            continue
        feasible = str(row.get("feasible", "true")).lower() not in ("false", "0")
        if not feasible:
            skipped += 1
            continue
        pts.append((n, v))
    if not pts:
        return None
    pts.sort()
    vals = np.array([v for _, v in pts])
    best = np.maximum.accumulate(vals) if maximize else np.minimum.accumulate(vals)
    return HistoryData(number=[n for n, _ in pts], value=vals.tolist(), best_so_far=best.tolist(),
                       maximize=maximize, skipped=skipped)


def draw_history(data: HistoryData, ax: Axes) -> None:
    """Each trial as a dot, the best so far as a step line."""
    ax.plot(data.number, data.value, "o", color="#9ecae1", ms=4, label="trial")
    ax.step(data.number, data.best_so_far, where="post", color="#08519c", lw=2, label="best so far")
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.1f}%")
    ax.set_xlabel("trial")
    ax.set_ylabel("expected conversion")
    ax.legend(frameon=False, fontsize=9, loc="lower right")
    style(ax)


@dataclass
class ResponseData(Record):
    """Each lever's effect over its spend range and at the chosen spend."""

    names: list[str]
    levers: list[str]
    spend_grid: list[list[float]]
    effect: list[list[float]]  # e(spend) = max_effect * spend / (spend + half_saturation)
    chosen_spend: list[float | None]
    chosen_effect: list[float | None]


def response_effect(spend, max_effect: float, half_saturation: float):
    """Diminishing returns: max_effect x spend / (spend + half_saturation)."""
    spend = np.asarray(spend, dtype=float)
    return max_effect * spend / (spend + half_saturation)


def response_data(investments: list[dict[str, Any]], allocation: dict[str, float] | None = None,
                  points_per_curve: int = 60) -> ResponseData | None:
    """Diminishing-returns curves of the levers that declare max_effect and half_saturation."""
    allocation = allocation or {}
    names, levers, grids, effects, cs, ce = [], [], [], [], [], []
    for inv in investments:
        try:
            me, hs = float(inv["max_effect"]), float(inv["half_saturation"])
        except (KeyError, TypeError, ValueError):
            continue
        name = str(inv.get("name", f"investment {len(names) + 1}"))
        top = inv.get("max_spend")
        spend = allocation.get(name, inv.get("spend"))
        hi = float(top) if top is not None else max(4 * hs, float(spend or 0) * 1.5)
        lo = float(inv.get("min_spend") or 0.0)
        grid = np.linspace(lo, max(hi, lo + 1e-9), points_per_curve)
        names.append(name)
        levers.append(str(inv.get("lever", "")))
        grids.append(grid.tolist())
        effects.append(response_effect(grid, me, hs).tolist())
        cs.append(float(spend) if spend is not None else None)
        ce.append(float(response_effect(float(spend), me, hs)) if spend is not None else None)
    if not names:
        return None
    return ResponseData(names=names, levers=levers, spend_grid=grids, effect=effects, chosen_spend=cs,
                        chosen_effect=ce)


def draw_response(data: ResponseData, ax: Axes) -> None:
    """A curve per lever, a dot at the chosen spend."""
    colours = palette(data.names, SCENARIO_COLOURS)
    for name, lever, x, y, s, e in zip(data.names, data.levers, data.spend_grid, data.effect, data.chosen_spend,
                                       data.chosen_effect):
        label = f"{name} ({lever})" if lever else name
        ax.plot(x, y, color=colours[name], lw=2, label=label)
        if s is not None:
            ax.plot([s], [e], "o", color=colours[name], ms=8, mec="white", mew=1.5)
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    ax.set_xlabel("spend")
    ax.set_ylabel("effect e(spend)")
    ax.legend(frameon=False, fontsize=9)
    style(ax)


@dataclass
class MoneyResponseData(Record):
    """Each investment's revenue contribution over its spend (exact, from best.json's response_curves),
    with the chosen spend and the marginal return there."""

    names: list[str]
    spend: list[list[float]]
    revenue_uplift: list[list[float]]  # customers x (revenue with that spend - revenue with none there)
    chosen_spend: list[float]
    chosen_revenue_uplift: list[float]
    marginal_return: list[float | None]  # revenue per unit of one more unit of spend (1 = break even)
    roi: list[float | None]
    customers: int
    currency: str | None = None


def money_response_data(best: dict[str, Any]) -> MoneyResponseData | None:
    """The revenue curves of best.json, None when it has none."""
    curves = best.get("response_curves") or {}
    invs = {str(inv.get("name")): inv for inv in best.get("investments") or []}
    names = [n for n in curves if n in invs]
    if not names:
        return None
    alloc = best.get("allocation") or {}
    chosen, at, marginal, roi = [], [], [], []
    for name in names:
        inv, x, y = invs[name], curves[name]["spend"], curves[name]["revenue_uplift"]
        spend = float(alloc.get(name, inv.get("spend", 0.0)))
        r = inv.get("roi")
        chosen.append(spend)
        # the revenue the spend brings back is (1 + roi) x spend; without a roi, read off the curve
        at.append(spend * (1.0 + float(r)) if r is not None else float(np.interp(spend, x, y)))
        marginal.append(None if inv.get("marginal_return") is None else float(inv["marginal_return"]))
        roi.append(None if r is None else float(r))
    return MoneyResponseData(names=names, spend=[list(map(float, curves[n]["spend"])) for n in names],
                             revenue_uplift=[list(map(float, curves[n]["revenue_uplift"])) for n in names],
                             chosen_spend=chosen, chosen_revenue_uplift=at, marginal_return=marginal, roi=roi,
                             customers=int(best.get("profit_customers") or 0), currency=best.get("currency"))


def marginal_words(m: float | None) -> str:
    """The marginal return in words ("-" when unknown)."""
    return "marginal return -" if m is None else f"marginal return {m:.2f}"


def draw_money_response(data: MoneyResponseData, fig: Figure) -> None:
    """A panel per investment: revenue back against spend, the break-even line, the chosen spend with the
    slope of the curve there (the marginal return) drawn and written beside it."""
    from sim.money import money_label

    axes = fig.subplots(1, len(data.names), squeeze=False)[0]
    colours = palette(data.names, SCENARIO_COLOURS)
    for ax, name, x, y, s, v, m in zip(axes, data.names, data.spend, data.revenue_uplift, data.chosen_spend,
                                       data.chosen_revenue_uplift, data.marginal_return):
        ax.plot(x, y, color=colours[name], lw=2, label="revenue back")
        ax.plot(x, x, color=BASELINE_COLOUR, lw=1, ls="--", label="spend (break even)")
        ax.plot([s], [v], "o", color=colours[name], ms=8, mec="white", mew=1.5)
        if m is not None:
            half = 0.12 * (x[-1] - x[0])
            a, b = max(s - half, x[0]), min(s + half, x[-1])
            ax.plot([a, b], [v + m * (a - s), v + m * (b - s)], color=OBSERVED_COLOUR, lw=1)
        ax.annotate(f"{marginal_words(m)}\nat {money_label(s, data.currency)}", (s, v), textcoords="offset points",
                    xytext=(6, -24), fontsize=8)
        ax.xaxis.set_major_formatter(lambda t, _: money_label(t, None))
        ax.yaxis.set_major_formatter(lambda t, _: money_label(t, None))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("spend" + (f" ({data.currency})" if data.currency else ""))
        style(ax)
    axes[0].set_ylabel(f"revenue back, {data.customers:,} customers")
    axes[0].legend(frameon=False, fontsize=8, loc="upper left")


def optimize_figures(best: dict[str, Any], rows: list[dict[str, str]]) -> list[tuple[str, bytes]]:
    """An optimize run's figures as (file name, PNG bytes): history, allocation, response curves, money
    response and Pareto front, as they apply to ``best`` (best.json) and ``rows`` (trials.csv)."""
    from present.figures.pareto import draw_pareto, pareto_data

    figs = []
    hist = history_data(rows)
    if hist is not None:
        fig = figure(8, 3.6)
        ax = fig.add_subplot()
        draw_history(hist, ax)
        # the trials' values are the objective's: its own value of spending nothing
        ax.axhline(best.get("objective_baseline", best["baseline_expected_conversion_rate"]), color="#7F7F7F",
                   lw=1, ls="--", label="nothing spent")
        if str(best.get("objective", "")).startswith("q"):
            ax.set_ylabel(f"uplift, {best['objective'][1:]}th percentile")
        elif best.get("objective") == "mean":
            ax.set_ylabel("expected conversion, mean over the data")
        ax.legend(frameon=False, fontsize=9, loc="lower right")
        figs.append(("history.png", fig))
    alloc = allocation_data(best)
    fig = figure(8, 1.0 + 0.55 * len(alloc.names))
    draw_allocation(alloc, fig.add_subplot())
    figs.append(("allocation.png", fig))
    resp = response_data(best["investments"], best["allocation"])
    if resp is not None:
        fig = figure(8, 3.8)
        draw_response(resp, fig.add_subplot())
        figs.append(("response_curves.png", fig))
    money = money_response_data(best)
    if money is not None:
        fig = figure(max(5.5, 3.6 * len(money.names)), 3.6)
        draw_money_response(money, fig)
        figs.append(("response_money.png", fig))
    par = pareto_data(best)
    if par is not None:
        fig = figure(8, 3.8)
        draw_pareto(par, fig.add_subplot())
        figs.append(("pareto.png", fig))
    return [(name, png_bytes(fig)) for name, fig in figs]
