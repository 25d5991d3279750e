"""Figures of the report: each is a plain data record (``*_data``) and a drawing (``draw_*``).

The data functions do the arithmetic and are tested on numbers; the drawings only lay the record out
on a matplotlib ``Axes`` (Agg backend, no pyplot state). Colours are fixed per name: personas and
scenarios each get a palette keyed by their sorted names, so a name has the same colour everywhere.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from sim.exact import evaluate
from sim.model import Model
from sim.summary import wilson

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
    return f"{100 * x:.{digits}f}%"


def points(x: float, digits: int = 1) -> str:
    """An absolute change of a rate in percentage points, signed."""
    return f"{100 * x:+.{digits}f} pts"


def figure(width: float, height: float) -> Figure:
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


def _style(ax: Axes, grid: str = "y") -> None:
    """Open top and right, light grid lines along ``grid`` behind the data."""
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis=grid, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


# ---- funnel --------------------------------------------------------------------------------------
@dataclass
class FunnelData:
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
    _style(ax)
    ax.legend(loc="upper right", fontsize=9, frameon=False)


# ---- journey map ---------------------------------------------------------------------------------
@dataclass
class JourneyMapData:
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
    inter = np.einsum("p,pst->st", w, ex.interactions)[:S1]  # expected interactions per customer
    prior = np.einsum("p,pst->st", w, model.share)[:S1]  # fallback weights for unvisited cells
    weights = np.where(inter.sum(axis=1, keepdims=True) > 0, inter, prior)
    wp = np.einsum("p,pst->pst", w, ex.interactions)[:, :S1]
    wp_prior = np.einsum("p,pst->pst", w, model.share)[:, :S1]
    visited = wp.sum(axis=0) > 0
    wp = np.where(visited[None], wp, wp_prior)
    tot = np.maximum(wp.sum(axis=0), 1e-300)

    def mix(arr: np.ndarray) -> np.ndarray:
        return (wp * arr[:, :S1]).sum(axis=0) / tot

    share = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)
    if persona is not None:  # one persona: its own parameters, as calibrated
        share = model.share[model.persona_index(persona), :S1]
    adv = mix(model.advance.sum(axis=-1))
    drop = mix(model.drop)
    lost = 1000.0 * np.einsum("p,pst->st", w, ex.drop_offs)[:S1]
    reach = (w @ ex.reach)[:S1]
    # lapse: of the customers who move into a stage, the share who leave at once
    flow = ex.flow[:, :, 1:].sum(axis=1)  # [P, S] moves into each stage
    lapse_n = np.einsum("p,pu->u", w, flow * model.lapse)[:S1]
    lapse_d = np.einsum("p,pu->u", w, flow)[:S1]
    lapse = np.where(lapse_d > 0, lapse_n / np.maximum(lapse_d, 1e-300), 0.0)
    order = np.argsort(-lost, axis=None, kind="stable")
    risk = []
    for rank, flat in enumerate(order[:top], start=1):
        s, t = np.unravel_index(flat, lost.shape)
        if lost[s, t] <= 0:
            break
        risk.append({"rank": rank, "touchpoint": model.touchpoints[t], "stage": model.stages[s],
                     "lost_per_1000": round(float(lost[s, t]), 3), "drop_off": round(float(drop[s, t]), 6)})
    pooled = None
    if model.counts:
        # thin: fewer decided interactions than the estimator trusts, even with the personas together
        decided = model.counts["decided"][w > 0].sum(axis=0)[:S1]
        pooled = (decided < model.estimator.get("sparse_below", 30)).T.tolist()
    emotion = emotion_n = None
    experience = experience if experience is not None else model.extras.get("experience")
    if experience:
        emotion, emotion_n = [], []
        for s in range(S1):
            cells = experience.get(model.stages[s], {})
            n = sum(int(c["n"]) for c in cells.values())
            emotion.append(sum(float(c["mean"]) * int(c["n"]) for c in cells.values()) / n if n else None)
            emotion_n.append(n)
    return JourneyMapData(
        title=title, stages=list(model.stages[:S1]), touchpoints=list(model.touchpoints),
        share=share.T.tolist(), advance=adv.T.tolist(), drop_off=drop.T.tolist(), lost_per_1000=lost.T.tolist(),
        risk=risk, reach=[float(x) for x in reach], lapse=[float(x) for x in lapse],
        lapse_lost_per_1000=[1000.0 * float(x) for x in lapse_n], pooled=pooled,
        emotion=emotion, emotion_n=emotion_n, final_stage=model.stages[-1],
    )


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


# ---- model evidence ------------------------------------------------------------------------------
@dataclass
class EvidenceData:
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


# ---- scenarios -----------------------------------------------------------------------------------
@dataclass
class UpliftData:
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
    _style(ax, grid="x")
    ax.set_ylim(-0.6, len(data.names) - 0.4)


@dataclass
class PersonaUpliftData:
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
    _style(ax, grid="x")


# ---- optimization --------------------------------------------------------------------------------
@dataclass
class AllocationData:
    names: list[str]
    spend: list[float]
    max_spend: list[float | None]
    budget: float | None
    total: float


def allocation_data(best: dict[str, Any]) -> AllocationData:
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
    _style(ax, grid="x")


@dataclass
class HistoryData:
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
    ax.plot(data.number, data.value, "o", color="#9ecae1", ms=4, label="trial")
    ax.step(data.number, data.best_so_far, where="post", color="#08519c", lw=2, label="best so far")
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.1f}%")
    ax.set_xlabel("trial")
    ax.set_ylabel("expected conversion")
    ax.legend(frameon=False, fontsize=9, loc="lower right")
    _style(ax)


@dataclass
class ResponseData:
    names: list[str]
    levers: list[str]
    spend_grid: list[list[float]]
    effect: list[list[float]]  # e(spend) = max_effect * spend / (spend + half_saturation)
    chosen_spend: list[float | None]
    chosen_effect: list[float | None]


def response_effect(spend, max_effect: float, half_saturation: float):
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
    _style(ax)


@dataclass
class MoneyResponseData:
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
        _style(ax)
    axes[0].set_ylabel(f"revenue back, {data.customers:,} customers")
    axes[0].legend(frameon=False, fontsize=8, loc="upper left")


# ---- backtest ------------------------------------------------------------------------------------
@dataclass
class BacktestData:
    split: str
    stages: list[str]
    predicted: list[float]
    observed: list[float]
    naive: list[float]
    error: list[float]
    naive_error: list[float]
    extra: dict[str, Any] = field(default_factory=dict)


def backtest_data(bt: dict[str, Any]) -> BacktestData:
    stages = [s for s in bt["observed"] if s in bt["predicted"]]

    def get(key: str) -> list[float]:
        rec = bt.get(key, {}) or {}
        return [float(rec.get(s, math.nan)) for s in stages]

    return BacktestData(split=str(bt["split"]), stages=stages, predicted=get("predicted"), observed=get("observed"),
                        naive=get("naive"), error=get("error"), naive_error=get("naive_error"))


def draw_backtest(data: BacktestData, ax: Axes) -> None:
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
    _style(ax)


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

