"""What every figure shares: colours, number words, the Agg figure, PNG bytes, axis style, JSON records.

The drawings lay a record out on a matplotlib ``Axes`` (Agg backend, no pyplot state). Colours are
fixed per name: personas and scenarios each get a palette keyed by their sorted names, so a name has
the same colour everywhere.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import asdict
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# colour-blind-friendly qualitative palettes (Okabe-Ito for personas, Tableau for scenarios)
PERSONA_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
SCENARIO_COLOURS = ("#4E79A7", "#F28E2B", "#59A14F", "#E15759", "#76B7B2", "#EDC948", "#B07AA1", "#FF9DA7",
                    "#9C755F")
BASELINE_COLOUR = "#7F7F7F"
OBSERVED_COLOUR = "#222222"


def palette(names, colours=PERSONA_COLOURS) -> dict[str, str]:
    """A colour per name, fixed by the names' sorted order (same names, same colours)."""
    return {name: colours[i % len(colours)] for i, name in enumerate(sorted(set(names)))}


def pct(x: float, digits: int = 1) -> str:
    """A rate as a percentage."""
    return f"{100 * x:.{digits}f}%"


def points(x: float, digits: int = 1) -> str:
    """An absolute change of a rate in percentage points, signed."""
    return f"{100 * x:+.{digits}f} pts"


def figure(width: float, height: float) -> Figure:
    """A constrained-layout figure on its own Agg canvas (inches, 100 dpi)."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes; no software line in the metadata, and light compression (the page stays far below 5 MB)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # an emoji or CJK name the font lacks is drawn as a box, not a warning
        warnings.filterwarnings("ignore", message=r"(?s).*[Gg]lyph .* missing from", category=UserWarning)
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None}, pil_kwargs={"compress_level": 3})
    return buf.getvalue()


def render_png(draw, data: Any, width: float, height: float) -> bytes:
    """One figure drawn from its data record, as PNG bytes (for run directories)."""
    fig = figure(width, height)
    draw(data, fig.add_subplot())
    return png_bytes(fig)


def style(ax: Axes, grid: str = "y") -> None:
    """Open top and right, light grid lines along ``grid`` behind the data."""
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis=grid, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def weekly_axes(ax: Axes, weeks: list[str], *, ticks: int, xlabel: str, ylabel: str, legend_size: int) -> None:
    """A figure of weeks 1..n: about ``ticks`` week labels (month-day), counts from 0, legend, style."""
    x = list(range(1, len(weeks) + 1))
    step = max(1, len(x) // ticks)
    ax.set_xticks(x[::step], [w[5:] for w in weeks[::step]], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, fontsize=legend_size, loc="lower right")
    style(ax)


def json_ready(obj: Any) -> Any:
    """JSON-ready: NaN becomes null."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    return obj


class Record:
    """Base of the figures' data records (dataclasses): their JSON beside the PNG."""

    def to_dict(self) -> dict[str, Any]:
        """The record's fields in declaration order, NaN as null."""
        return json_ready(asdict(self))
