"""The Pareto figure of `journey optimize --pareto`: the best split's conversion at each budget level."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ParetoData:
    """The front's budgets, spends and conversions, the chosen split and the baseline."""

    spend: list[float]
    value: list[float]
    budget: list[float]
    chosen_spend: float
    chosen_value: float
    baseline: float


def pareto_data(best: dict[str, Any]) -> ParetoData | None:
    """The figure's data from best.json; None without a front."""
    front = best.get("pareto") or []
    if not front:
        return None
    return ParetoData(spend=[float(p["spend"]) for p in front],
                      value=[float(p["expected_conversion_rate"]) for p in front],
                      budget=[float(p["budget"]) for p in front], chosen_spend=float(best["spend"]),
                      chosen_value=float(best["expected_conversion_rate"]),
                      baseline=float(best["baseline_expected_conversion_rate"]))


def draw_pareto(data: ParetoData, ax: Any) -> None:
    """Conversion against budget, the baseline dashed, the chosen split starred."""
    ax.plot(data.budget, data.value, "-o", color="#08519c", ms=5, lw=2, label="best split at this budget")
    ax.axhline(data.baseline, color="#7F7F7F", lw=1, ls="--", label="nothing spent")
    ax.plot([data.chosen_spend], [data.chosen_value], "*", color="#E15759", ms=14, label="chosen split")
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.2f}%")
    ax.set_xlabel("budget")
    ax.set_ylabel("expected conversion")
    ax.legend(frameon=False, fontsize=9, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
