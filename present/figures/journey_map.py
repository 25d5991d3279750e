"""The journey map: stages x touchpoints, each cell's share, advance and drop-off, the top risk points,
with the emotion curve (mean satisfaction per stage) above it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from present.figures.common import Record, pct
from sim.exact import evaluate
from sim.model import Model


@dataclass
class JourneyMapData(Record):
    """The map's numbers, per touchpoint (row) and non-final stage (column)."""

    title: str
    stages: list[str]  # columns: the non-final stages, where touchpoints act
    touchpoints: list[str]  # rows
    share: list[list[float]]  # [touchpoint][stage] share of the stage's interactions
    advance: list[list[float]]  # P(the interaction moves the customer to any later stage)
    drop_off: list[list[float]]  # P(the interaction ends the journey)
    lost_per_1000: list[list[float]]  # expected journeys ended at the cell per 1000 arriving customers
    risk: list[dict[str, Any]]  # top cells by lost_per_1000: {rank, touchpoint, stage, lost_per_1000, drop_off}
    reach: list[float]  # P(reach the column's stage), persona mix
    lapse: list[float]  # P(leave at once on entering the stage), persona mix
    lapse_lost_per_1000: list[float]
    pooled: list[list[bool]] | None = None  # thin cell: few decided interactions, the estimate leans on pooling
    emotion: list[float | None] | None = None  # mean satisfaction (1-5) per column stage
    emotion_n: list[int] | None = None
    final_stage: str = ""


def journey_map_data(model: Model, persona: str | None = None, *, top: int = 3,
                     experience: dict[str, Any] | None = None) -> JourneyMapData:
    """The map's numbers. ``persona=None`` mixes the personas weighted by their expected interactions
    (so share x drop_off x interactions adds up to the expected drop-offs); a persona gives its own
    parameters unchanged. Risk points: the cells where most journeys are expected to end.
    """
    S1 = model.n_stages - 1
    ex = evaluate(model)
    if persona is None:
        w = model.persona_share.copy()
        title = "all personas"
    else:
        w = np.zeros(model.n_personas)
        w[model.persona_index(persona)] = 1.0
        title = persona
    share, wp, tot = _cell_weights(model, ex, w, S1)
    if persona is not None:  # one persona: its own parameters, as calibrated
        share = model.share[model.persona_index(persona), :S1]

    def mix(arr: np.ndarray) -> np.ndarray:
        return (wp * arr[:, :S1]).sum(axis=0) / tot

    adv = mix(model.advance.sum(axis=-1))
    drop = mix(model.drop)
    lost = 1000.0 * np.einsum("p,pst->st", w, ex.drop_offs)[:S1]
    reach = (w @ ex.reach)[:S1]
    lapse, lapse_n = _lapse(model, ex, w, S1)
    pooled = None
    if model.counts:
        # thin: fewer decided interactions than the estimator trusts, even with the personas together
        decided = model.counts["decided"][w > 0].sum(axis=0)[:S1]
        pooled = (decided < model.estimator.get("sparse_below", 30)).T.tolist()
    experience = experience if experience is not None else model.extras.get("experience")
    emotion, emotion_n = _emotion(model, experience, S1) if experience else (None, None)
    return JourneyMapData(
        title=title, stages=list(model.stages[:S1]), touchpoints=list(model.touchpoints),
        share=share.T.tolist(), advance=adv.T.tolist(), drop_off=drop.T.tolist(), lost_per_1000=lost.T.tolist(),
        risk=_risk_points(model, lost, drop, top), reach=[float(x) for x in reach], lapse=[float(x) for x in lapse],
        lapse_lost_per_1000=[1000.0 * float(x) for x in lapse_n], pooled=pooled,
        emotion=emotion, emotion_n=emotion_n, final_stage=model.stages[-1],
    )


def _cell_weights(model: Model, ex: Any, w: np.ndarray, S1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The touchpoints' share of each stage's interactions under the persona weights ``w``, and the
    per-persona weights [P, S, T] (with their total) that mix a cell's parameters."""
    inter = np.einsum("p,pst->st", w, ex.interactions)[:S1]  # expected interactions per customer
    prior = np.einsum("p,pst->st", w, model.share)[:S1]  # fallback weights for unvisited cells
    weights = np.where(inter.sum(axis=1, keepdims=True) > 0, inter, prior)
    wp = np.einsum("p,pst->pst", w, ex.interactions)[:, :S1]
    wp_prior = np.einsum("p,pst->pst", w, model.share)[:, :S1]
    visited = wp.sum(axis=0) > 0
    wp = np.where(visited[None], wp, wp_prior)
    tot = np.maximum(wp.sum(axis=0), 1e-300)
    share = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)
    return share, wp, tot


def _lapse(model: Model, ex: Any, w: np.ndarray, S1: int) -> tuple[np.ndarray, np.ndarray]:
    """Of the customers who move into a stage, the share who leave at once; and those leavers per customer."""
    flow = ex.flow[:, :, 1:].sum(axis=1)  # [P, S] moves into each stage
    lapse_n = np.einsum("p,pu->u", w, flow * model.lapse)[:S1]
    lapse_d = np.einsum("p,pu->u", w, flow)[:S1]
    lapse = np.where(lapse_d > 0, lapse_n / np.maximum(lapse_d, 1e-300), 0.0)
    return lapse, lapse_n


def _risk_points(model: Model, lost: np.ndarray, drop: np.ndarray, top: int) -> list[dict[str, Any]]:
    """The ``top`` cells where most journeys are expected to end (none where nothing is lost)."""
    order = np.argsort(-lost, axis=None, kind="stable")
    risk = []
    for rank, flat in enumerate(order[:top], start=1):
        s, t = np.unravel_index(flat, lost.shape)
        if lost[s, t] <= 0:
            break
        risk.append({"rank": rank, "touchpoint": model.touchpoints[t], "stage": model.stages[s],
                     "lost_per_1000": round(float(lost[s, t]), 3), "drop_off": round(float(drop[s, t]), 6)})
    return risk


def _emotion(model: Model, experience: dict[str, Any], S1: int) -> tuple[list[float | None], list[int]]:
    """Mean satisfaction per stage (touchpoints weighted by their counts) and the counts behind it."""
    emotion: list[float | None] = []
    emotion_n: list[int] = []
    for s in range(S1):
        cells = experience.get(model.stages[s], {})
        n = sum(int(c["n"]) for c in cells.values())
        emotion.append(sum(float(c["mean"]) * int(c["n"]) for c in cells.values()) / n if n else None)
        emotion_n.append(n)
    return emotion, emotion_n


def draw_journey_map(data: JourneyMapData, ax: Axes, cax: Axes | None = None) -> None:
    """The map on ``ax``; its colour bar on ``cax`` (else space taken from ``ax``)."""
    drop = np.array(data.drop_off)
    T, S = drop.shape
    vmax = max(float(drop.max()), 0.05)
    im = ax.imshow(drop, cmap="Reds", vmin=0, vmax=vmax * 1.15, aspect="auto")
    share, adv = np.array(data.share), np.array(data.advance)
    for t in range(T):
        for s in range(S):
            dark = drop[t, s] > 0.62 * vmax
            colour = "white" if dark else "#222222"
            faded = share[t, s] < 0.005
            ax.text(s, t - 0.24, f"{pct(share[t, s], 0)} of visits", ha="center", va="center", fontsize=9.5,
                    color=colour, alpha=0.55 if faded else 1.0)
            ax.text(s, t + 0.01, f"advance {pct(adv[t, s], 0)}", ha="center", va="center", fontsize=9.5,
                    color=colour, alpha=0.55 if faded else 1.0)
            ax.text(s, t + 0.27, f"leave {pct(drop[t, s])}", ha="center", va="center", fontsize=10.5,
                    fontweight="bold", color=colour, alpha=0.55 if faded else 1.0)
            if data.pooled and data.pooled[t][s]:
                ax.text(s + 0.46, t - 0.44, "thin data", ha="right", va="top", fontsize=7, color="#555555",
                        style="italic")
    for r in data.risk:
        t, s = data.touchpoints.index(r["touchpoint"]), data.stages.index(r["stage"])
        ax.add_patch(Rectangle((s - 0.48, t - 0.48), 0.96, 0.96, fill=False, edgecolor="#111111", lw=2.6,
                               zorder=5))
        ax.text(s - 0.44, t - 0.44, f"#{r['rank']}", ha="left", va="top", fontsize=9, fontweight="bold",
                color="white", zorder=6, bbox={"boxstyle": "round,pad=0.15", "fc": "#111111", "ec": "none"})
    labels = []
    for s, name in enumerate(data.stages):
        extra = f"reached {pct(data.reach[s], 0)}"
        if s > 0 and data.lapse[s] > 0.0005:
            extra += f" · lapse {pct(data.lapse[s])}"
        labels.append(f"{name}\n{extra}")
    ax.set_xticks(range(S), labels, fontsize=10)
    ax.xaxis.tick_top()
    ax.set_yticks(range(T), data.touchpoints, fontsize=10)
    ax.tick_params(which="both", length=0)
    ax.set_xticks(np.arange(-0.5, S), minor=True)
    ax.set_yticks(np.arange(-0.5, T), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.spines[:].set_visible(False)
    cb = ax.figure.colorbar(im, cax=cax) if cax is not None else ax.figure.colorbar(im, ax=ax, fraction=0.03,
                                                                                     pad=0.01)
    cb.ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    cb.set_label("P(the interaction ends the journey)")
    if data.risk:
        text = "    ".join(f"#{r['rank']} {r['touchpoint']} in {r['stage']}: {r['lost_per_1000']:.0f}"
                            for r in data.risk)
        ax.set_xlabel(f"framed: the top risk-of-leaving points (journeys lost per 1000 customers)\n{text}",
                      fontsize=10)


def draw_emotion_curve(data: JourneyMapData, ax: Axes) -> None:
    """Mean satisfaction per stage (1-5), aligned with the map's columns."""
    S = len(data.stages)
    ax.set_xlim(-0.5, S - 0.5)
    ax.set_ylim(0.8, 5.4)
    ax.set_yticks([1, 3, 5], ["1 unhappy", "3", "5 happy"], fontsize=8)
    ax.axhline(3, color="#cccccc", lw=0.8, zorder=0)
    ax.spines[["top", "right", "bottom"]].set_visible(False)
    ax.set_xticks([])
    if not data.emotion:
        return
    xs = [s for s in range(S) if data.emotion[s] is not None]
    ys = [data.emotion[s] for s in xs]
    ax.plot(xs, ys, "-o", color="#6a3d9a", lw=2.2, ms=7)
    for x, y in zip(xs, ys):
        ax.annotate(f"{y:.2f}  (n={data.emotion_n[x]:,})", (x, y), textcoords="offset points", xytext=(0, 9),
                    ha="center", fontsize=8.5, color="#6a3d9a")
    ax.set_ylabel("satisfaction", fontsize=9)

