"""Terminal output: the tables the CLI shows after a command (the only module that prints).

Each function takes the record a command returned and renders it with rich; nothing here computes.
"""
from __future__ import annotations

import sys
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f} %"


def _pp(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:+.{digits}f}"


def table_console():
    """A console for tables on stdout."""


    # a pipe or file gets a wide table rather than rich's 80-column default
    return Console() if sys.stdout.isatty() else Console(width=140)


def render_comparison(comparison: dict[str, Any]) -> None:
    """The comparison as a table on stdout (uplift in percentage points)."""

    base = comparison["base"]
    horizon = comparison.get("horizon_days")
    title = (f"{comparison['customers']:,} customers x {comparison['replications']}, seed {comparison['seed']}, "
             f"{comparison['engine']} engine; conversion = reached {comparison['conversion_stage']}"
             + (f" within {horizon:g} days" if horizon else ""))
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("scenario")
    table.add_column("conversion", justify="right")
    table.add_column("95 % CI", justify="right")
    table.add_column("expected", justify="right")
    table.add_column("uplift pp", justify="right")
    table.add_column("95 % CI pp", justify="right")
    table.add_column("expected pp", justify="right")
    table.add_column("relative", justify="right")
    lo, hi = base["conversion_rate_ci"]
    table.add_row(f"{base['name']} (base)", _pct(base["conversion_rate"]), f"{100 * lo:.2f}-{100 * hi:.2f}",
                  _pct(base["expected_conversion_rate"]), "", "", "", "")
    for sc in comparison["scenarios"]:
        lo, hi = sc["conversion_rate_ci"]
        ulo, uhi = sc["uplift_ci"]
        rel = sc["relative_uplift"]
        table.add_row(sc["name"], _pct(sc["conversion_rate"]), f"{100 * lo:.2f}-{100 * hi:.2f}",
                      _pct(sc["expected_conversion_rate"]), _pp(sc["uplift"]), f"{_pp(ulo)} to {_pp(uhi)}",
                      _pp(sc["expected_uplift"]), "-" if rel is None else f"{100 * rel:+.1f} %",
                      style=None if sc["significant"] else "dim")
    console = table_console()
    console.print(table)
    console.print(f"uplift = scenario minus base (pp = percentage points); interval: {comparison['uplift_ci_method']}"
                  "; dim rows: the interval contains 0", style="dim")
    for sc in comparison["scenarios"]:
        if sc.get("expected_note"):
            console.print(f"note, {sc['name']}: {sc['expected_note']}")


def render_hotspots(ranking: dict[str, Any]) -> None:
    """The ranking as a table on stdout."""


    horizon = ranking.get("horizon_days")
    table = Table(title=f"Risk-of-leaving points: {ranking['name']} (expected conversion "
                        f"{100 * ranking['expected_conversion_rate']:.2f} %"
                        + (f" within {horizon:g} days" if horizon else "") + ")",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for col, just in (("#", "right"), ("stage", "left"), ("touchpoint", "left"), ("lost /1000", "right"),
                      ("of losses", "right"), ("drop-off", "right"), ("gain if drop-off -10 %, pp", "right"),
                      ("gain #", "right"), ("if removed, pp", "right")):
        table.add_column(col, justify=just)
    for c in ranking["hotspots"]:
        removed = c["uplift_if_removed"]
        stage = c["stage"] + (" *" if c["after_conversion"] else "")
        table.add_row(str(c["rank"]), stage, c["touchpoint"], f"{c['lost_per_1000']:.1f}",
                      "-" if c["share_of_losses"] is None else f"{100 * c['share_of_losses']:.1f} %",
                      "-" if c["drop_off_rate"] is None else f"{100 * c['drop_off_rate']:.1f} %",
                      f"{100 * c['gain_if_drop_cut_10pct']:+.3f}", str(c["rank_by_gain"]),
                      "only one" if removed is None else f"{100 * removed:+.3f}")
    console = table_console()
    console.print(table)
    lapsed = ", ".join(f"{k} {v:.1f}" for k, v in ranking["lapsed_per_1000"].items())
    console.print(f"* after conversion: losses there do not change conversion. Journeys lost per 1000 customers: "
                  f"{ranking['lost_per_1000_total']:.1f} in all; left on entering a stage (no touchpoint to "
                  f"blame): {lapsed}", style="dim")


def render_best(best: dict[str, Any]) -> None:
    """A compact table of the split on stdout (the CLI's one place that prints)."""

    table = Table(title=f"{best['scenario']}: best split after {best['trials']} trials", title_justify="left")
    for col, just in (("investment", "left"), ("lever", "left"), ("spend", "right"), ("range", "right"),
                      ("effect", "right")):
        table.add_column(col, justify=just)
    for inv in best["investments"]:
        rng = "fixed" if inv["fixed"] else f"{inv['min_spend']:g}-{inv['max_spend']:g}"
        sign = "-" if inv["lever"] == "drop_off" else "+"
        table.add_row(inv["name"], f"{inv['lever']} ({inv['touchpoint']})", f"{inv['spend']:,.2f}", rng,
                      f"{sign}{100 * inv['effect']:.1f}%")
    console = Console()
    console.print(table)
    up = best["expected_uplift"]
    rel = best.get("expected_uplift_relative")
    lo, hi = best["conversion_rate_ci"]
    conv, base = best["expected_conversion_rate"], best["baseline_expected_conversion_rate"]
    console.print(f"spend {best['spend']:,.2f} of {best['budget']:,.2f}; expected conversion {100 * conv:.2f}% vs "
                  f"{100 * base:.2f}% baseline: uplift {100 * up:+.2f} pts"
                  + (f" ({100 * rel:+.1f}%)" if rel is not None else ""), highlight=False)
    console.print(f"simulated {best['customers']} x {best['replications']}: {100 * best['conversion_rate']:.2f}% "
                  f"[{100 * lo:.2f}, {100 * hi:.2f}]; study {best['study']!r} in {best['storage']}", highlight=False)


def render_backtest(result: dict[str, Any]) -> None:
    """The backtest as a table on the terminal."""

    c = result["customers"]
    table = Table(title=f"backtest at {result['split']}: fit on {c['fit']:,} customers, "
                        f"predict {c['later']:,} later ones", title_justify="left")
    for col in ("stage", "predicted", "observed", "naive", "error", "naive error"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for stage in result["observed"]:
        mark = " *" if stage == result["conversion_stage"] else ""
        table.add_row(stage + mark, *(f"{100 * result[k][stage]:.1f}%" for k in ("predicted", "observed", "naive")),
                      *(f"{100 * result[k][stage]:.1f} pts" for k in ("error", "naive_error")))
    Console().print(table)


def render_warnings(fallbacks: list[dict[str, Any]]) -> None:
    """One warning line on stderr per place where the data could not tell (an estimator fallback)."""

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    for rec in fallbacks:
        console.print(f"warning: {rec['message']}", style="yellow", markup=False)


def render_drift(result: dict[str, Any], top: int = 15) -> None:
    """The ranked changes as a table on the terminal."""

    console = Console()
    head = (f"{result['significant']} of {result['tests']} estimates changed beyond noise "
            f"(FDR {result['alpha']}); expected conversion {100 * result['old_expected_conversion_rate']:.2f}% -> "
            f"{100 * result['new_expected_conversion_rate']:.2f}%")
    if not result["changes"]:
        console.print(head)
        return
    table = Table(title=head, title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("what changed (persona)", overflow="fold")
    for col in ("old", "new", "q", "conversion"):
        table.add_column(col, justify="right", no_wrap=True)
    for rec in result["changes"][:top]:
        fmt = {"gap_rate": lambda v: f"{v:.3g}/d", "leave_speed": lambda v: f"x{v:.3g}"}.get(
            rec["kind"], lambda v: f"{100 * v:.1f}%")
        where = " at ".join(x for x in (rec["touchpoint"], rec["stage"]) if x)
        if rec.get("way_out"):
            where += f" by {rec['way_out']}"
        table.add_row(str(rec["rank"]), f"{rec['kind']} {where} ({rec['persona']})".replace("  ", " "),
                      fmt(rec["old"]), fmt(rec["new"]), f"{rec['q_value']:.1g}",
                      f"{round(100 * rec['conversion_effect'], 2) + 0.0:+.2f} pts")  # + 0.0: no "-0.00"
    console.print(table)
    if len(result["changes"]) > top:
        console.print(f"... {len(result['changes']) - top} more in drift.json")
