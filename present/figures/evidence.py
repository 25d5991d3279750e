"""The model's evidence: the counts behind each cell, the thin ones hatched; and time in each stage."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from present.figures.common import Record, palette
from sim.exact import evaluate
from sim.model import Model


@dataclass
class EvidenceData(Record):
    """Decided and total interactions per persona, touchpoint and non-final stage; which cells are thin."""

    personas: list[str]
    stages: list[str]  # non-final
    touchpoints: list[str]
    decided: dict[str, list[list[int]]]  # persona -> [touchpoint][stage] interactions with a known outcome
    interactions: dict[str, list[list[int]]]
    pooled: dict[str, list[list[bool]]]
    sparse_below: int
    n_pooled: int
    n_cells: int


def evidence_data(model: Model) -> EvidenceData | None:
    """Counts behind each cell; cells with fewer decided interactions than the estimator's
    ``sparse_below`` lean on the pooled estimate. None when the model carries no counts."""
    if not model.counts:
        return None
    S1 = model.n_stages - 1
    sparse = int(model.estimator.get("sparse_below", 30))
    dec = model.counts["decided"][:, :S1]
    inter = model.counts["interactions"][:, :S1]
    pooled = dec < sparse
    return EvidenceData(
        personas=list(model.personas), stages=list(model.stages[:S1]), touchpoints=list(model.touchpoints),
        decided={p: dec[i].T.astype(int).tolist() for i, p in enumerate(model.personas)},
        interactions={p: inter[i].T.astype(int).tolist() for i, p in enumerate(model.personas)},
        pooled={p: pooled[i].T.tolist() for i, p in enumerate(model.personas)},
        sparse_below=sparse, n_pooled=int(pooled.sum()), n_cells=int(pooled.size),
    )


def draw_evidence(data: EvidenceData, ax: Axes) -> None:
    """Counts per cell on a log colour scale, personas side by side; thin cells hatched red."""
    S, T = len(data.stages), len(data.touchpoints)
    grid = np.concatenate([np.array(data.decided[p]) for p in data.personas], axis=1)  # [T, P*S]
    im = ax.imshow(np.log10(grid + 1.0), cmap="Blues", vmin=0, vmax=max(np.log10(grid.max() + 1.0), 1) * 1.3,
                   aspect="auto")
    pooled = np.concatenate([np.array(data.pooled[p]) for p in data.personas], axis=1)
    for t in range(T):
        for c in range(grid.shape[1]):
            if pooled[t, c]:
                ax.add_patch(Rectangle((c - 0.5, t - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#d62728",
                                       lw=0, zorder=3))
            ax.text(c, t, f"{grid[t, c]:,}", ha="center", va="center", fontsize=9,
                    color="#b00000" if pooled[t, c] else "#1a1a1a", fontweight="bold" if pooled[t, c] else None,
                    zorder=4)
    ax.set_xticks(range(grid.shape[1]), [s for _ in data.personas for s in data.stages], fontsize=8.5,
                  rotation=20)
    ax.set_yticks(range(T), data.touchpoints, fontsize=9.5)
    ax.tick_params(length=0)
    colours = palette(data.personas)
    for k, p in enumerate(data.personas):
        if k:
            ax.axvline(k * S - 0.5, color="white", lw=5)
        ax.text(k * S + (S - 1) / 2, -0.75, p, ha="center", va="bottom", fontsize=10.5, fontweight="bold",
                color=colours[p])
    ax.set_ylim(T - 0.5, -1.2)
    ax.spines[:].set_visible(False)
    ax.set_xlabel(f"decided interactions per persona x stage x touchpoint; hatched red: fewer than "
                  f"{data.sparse_below}, so the estimate leans on the pooled one ({data.n_pooled} of "
                  f"{data.n_cells} cells)", fontsize=9)
    del im


def dwell_rows(model: Model) -> list[list[str | float]]:
    """Mean days from entering a stage to leaving it, by way out, personas mixed by how many leave
    that way; rows [stage, way out, share of leavers, mean days, leave speed]."""
    ex = evaluate(model)
    w = model.persona_share[:, None, None] * ex.flow  # [P, S, 1+S] customers leaving s by o
    days = 1.0 / np.maximum(model.leave_rates(), 1e-300)
    rows: list[list[str | float]] = []
    for s in range(model.n_stages - 1):
        total = w[:, s].sum()
        for o in model.ways(s):
            n = w[:, s, o].sum()
            if total <= 0 or n <= 0:
                continue
            rows.append([model.stages[s], model.way_name(o), float(n / total), float((w[:, s, o] @ days[:, s, o]) / n),
                         float((w[:, s, o] @ model.leave_speed[:, s, o]) / n)])
    return rows

