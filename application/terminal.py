"""Terminal output: the tables the CLI shows after a command (the only module that prints).

Each function takes the record a command returned and renders it with rich; nothing here computes.
"""
from __future__ import annotations

import io
import os
import sys
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table


def echo(line: str) -> None:
    """One plain line on stdout (a run's path, a demo step), as the CLI's own lines are written."""
    typer.echo(line)


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f} %"


def _pp(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:+.{digits}f}"


def table_console():
    """A console for tables on stdout."""
    # a pipe or file gets a wide table rather than rich's 80-column default, unless COLUMNS says otherwise
    return Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=140)


def fits(table: Table, console: Console) -> bool:
    """Whether rich draws the table at the console's width without cutting a word short ("…") or
    squeezing a column away (its header's first word missing)."""
    probe = Console(width=console.width, file=io.StringIO(), color_system=None)
    probe.print(table)
    text = probe.file.getvalue()
    return "…" not in text and all(str(c.header).split()[0] in text for c in table.columns if str(c.header).strip())


def _behind(record: dict[str, Any], simulation: bool = True) -> str:
    """Plain words on what an interval includes."""
    data = record.get("data_uncertainty") or {}
    if not data.get("draws"):
        return "simulation noise only" + (f" ({data['note']})" if data.get("note") else "")
    n = data.get("customers_behind_model")
    who = f"the {n:,} real customers the model was fitted on" if n else "the data the model was fitted on"
    return f"the uncertainty from {who}" + (" and simulation noise" if simulation else "")


def render_summary(summary: dict[str, Any]) -> None:
    """A simulate run in two lines: the expected conversion with its interval, then the simulation."""
    console = table_console()
    stage = summary["conversion_stage"]
    horizon = summary.get("horizon_days")
    within = f" within {horizon:g} days" if horizon else ""
    lo, hi = summary["conversion_rate_ci"]
    if summary.get("expected_conversion_rate_interval"):
        elo, ehi = summary["expected_conversion_rate_interval"]
        console.print(f"conversion (reached {stage}{within}): {_pct(summary['expected_conversion_rate'])} expected, "
                      f"95 % interval {_pct(elo)} to {_pct(ehi)} (from {_behind(summary, simulation=False)})")
    else:
        console.print(f"conversion (reached {stage}{within}): {_pct(summary['expected_conversion_rate'])} expected "
                      f"({_behind(summary)})")
    console.print(f"simulated: {_pct(summary['conversion_rate'])} of {summary['customers']:,} customers x "
                  f"{summary['replications']}, 95 % interval {_pct(lo)} to {_pct(hi)} (simulation noise only)")
    if "expected_revenue_per_customer" in summary:
        from sim.money import money_label

        cur = summary.get("currency")
        band = summary.get("expected_revenue_per_customer_interval")
        console.print(f"revenue: {money_label(summary['expected_revenue_per_customer'], cur)} per customer expected"
                      + (f" (95 % interval {money_label(band[0], cur)} to {money_label(band[1], cur)})" if band else "")
                      + f", {money_label(summary['expected_revenue'], cur)} for {summary['customers']:,} customers",
                      highlight=False)
    for note in summary.get("notes", []):
        console.print(f"note: {note}", soft_wrap=True)  # one line, for grep and logs


def comparison_table(comparison: dict[str, Any], narrow: int = 0) -> Table:
    """The comparison table; narrow 1: numbers in unbreakable cells (intervals on two lines), headers on
    several lines, only names and verdicts wrap, "customers would tell" below the table; 2: also
    without the expected column (it stays in comparison.json)."""
    base = comparison["base"]
    horizon = comparison.get("horizon_days")
    with_data = bool((comparison.get("data_uncertainty") or {}).get("draws"))
    title = (f"{comparison['customers']:,} customers x {comparison['replications']}, seed {comparison['seed']}, "
             f"{comparison['engine']} engine; conversion = reached {comparison['conversion_stage']}"
             + (f" within {horizon:g} days" if horizon else ""))
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    nl = "\n" if narrow else " "
    table.add_column("scenario", overflow="fold", min_width=8 if narrow else None)
    heads = ["conversion", f"uplift{nl}pp", f"95 %{nl}interval{nl}pp" if narrow else "95 % interval pp",
             *([] if narrow > 1 else [f"expected{nl}pp"]), f"chance of{nl}a gain" if with_data else "relative"]
    for head in heads:
        table.add_column(head, justify="right", no_wrap=bool(narrow))
    if with_data:
        table.add_column("verdict", overflow="fold")
    elo, ehi = base.get("expected_conversion_rate_interval") or base["conversion_rate_ci"]
    blank = [""] * (len(table.columns) - 2)
    table.add_row(f"{base['name']} (base)", f"{_pct(base['conversion_rate'])}{nl}[{100 * elo:.1f}-{100 * ehi:.1f}]",
                  *blank)
    for sc in comparison["scenarios"]:
        ulo, uhi = sc.get("uplift_interval") or sc["uplift_ci"]
        cells = [sc["name"], _pct(sc["conversion_rate"]), _pp(sc["uplift"]), f"{_pp(ulo)} to{nl}{_pp(uhi)}",
                 *([] if narrow > 1 else [_pp(sc["expected_uplift"])])]
        if with_data and "verdict" not in sc:  # queues: simulated only, no data interval (see data_note)
            lo, hi = sc["uplift_ci"]
            cells += ["-", "a gain (simulation only)" if lo > 0 else "a loss (simulation only)" if hi < 0 else
                      "cannot tell (simulation only)"]
            decided = sc["significant"]
        elif with_data:
            verdict = {"gain": "a gain", "loss": "a loss"}.get(sc["verdict"], "the data cannot tell yet")
            if sc["verdict"] == "cannot tell" and sc.get("customers_to_tell") and not narrow:
                verdict += f" (~{sc['customers_to_tell']:,} customers would tell)"
            cells += [f"{100 * sc['probability_positive']:.0f} %", verdict]
            decided = sc["verdict"] != "cannot tell"
        else:
            rel = sc["relative_uplift"]
            cells.append("-" if rel is None else f"{100 * rel:+.1f} %")
            decided = sc["significant"]
        table.add_row(*cells, style=None if decided else "dim")
    return table


def render_comparison(comparison: dict[str, Any]) -> None:
    """The comparison as a table on stdout (uplift in percentage points)."""
    console = table_console()
    for narrow in (0, 1, 2):  # the first layout rich draws without cutting a word
        table = comparison_table(comparison, narrow)
        if fits(table, console):
            break
    console.print(table)
    if narrow:
        for sc in comparison["scenarios"]:
            if sc.get("verdict") == "cannot tell" and sc.get("customers_to_tell"):
                console.print(f"{sc['name']}: ~{sc['customers_to_tell']:,} customers would tell", style="dim")
    console.print(f"uplift = scenario minus base (pp = percentage points); base conversion: expected interval in "
                  f"brackets; uplift intervals include {_behind(comparison)}; dim rows: the interval contains 0",
                  style="dim")
    for sc in comparison["scenarios"]:
        if "expected_revenue_uplift_per_customer" in sc:
            from sim.money import per_100k

            cur = comparison["base"].get("currency")
            band = sc.get("expected_revenue_uplift_per_customer_interval")
            console.print(f"money, {sc['name']}: {_pp(sc['expected_uplift'])} pts, "
                          f"{per_100k(sc['expected_revenue_uplift_per_customer'], cur)}"
                          + (f" (95 % interval {per_100k(band[0], cur).split(' revenue')[0]} to "
                             f"{per_100k(band[1], cur).split(' revenue')[0]})" if band else ""), highlight=False)
    for sc in comparison["scenarios"]:
        if sc.get("data_note"):
            console.print(f"note, {sc['name']}: {sc['data_note']}", soft_wrap=True)
        for note in sc.get("notes", []):
            console.print(f"note, {sc['name']}: {note}", soft_wrap=True)
        if sc.get("expected_note"):
            console.print(f"note, {sc['name']}: {sc['expected_note']}")


def render_hotspots(ranking: dict[str, Any]) -> None:
    """The ranking as a table on stdout."""
    horizon = ranking.get("horizon_days")
    table = Table(title=f"Risk-of-leaving points: {ranking['name']} ("
                        + ("by revenue lost; " if ranking.get("ranked_by") == "revenue lost" else "")
                        + "expected conversion "
                        f"{100 * ranking['expected_conversion_rate']:.2f} %"
                        + (f" within {horizon:g} days" if horizon else "") + ")",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for col, just in (("#", "right"), ("stage", "left"), ("touchpoint", "left"), ("lost /1000", "right"),
                      ("of losses", "right"), ("drop-off", "right"), ("gain if drop-off -10 %, pp", "right"),
                      ("rank by gain", "right"), ("if removed, pp", "right")):
        table.add_column(col, justify=just)
    money = any("revenue_lost_per_1000" in c for c in ranking["hotspots"])
    if money:
        cur = ranking.get("currency")
        table.add_column("revenue lost /1000" + (f", {cur}" if cur else ""), justify="right")
    def with_interval(x: float, interval: list[float] | None) -> str:
        text = f"{100 * x:+.3f}"
        return text if not interval else f"{text} [{100 * interval[0]:+.2f}, {100 * interval[1]:+.2f}]"

    for c in ranking["hotspots"]:
        removed = c["uplift_if_removed"]
        stage = c["stage"] + (" *" if c["after_conversion"] else "")
        table.add_row(str(c["rank"]), stage, c["touchpoint"], f"{c['lost_per_1000']:.1f}",
                      "-" if c["share_of_losses"] is None else f"{100 * c['share_of_losses']:.1f} %",
                      "-" if c["drop_off_rate"] is None else f"{100 * c['drop_off_rate']:.1f} %",
                      with_interval(c["gain_if_drop_cut_10pct"], c.get("gain_if_drop_cut_10pct_interval")),
                      str(c["rank_by_gain"]),
                      "only one" if removed is None else with_interval(removed, c.get("uplift_if_removed_interval")),
                      *([f"{c['revenue_lost_per_1000']:,.0f}"] if money else []))
    console = table_console()
    console.print(table)
    if ranking.get("data_uncertainty"):
        console.print(f"gains in points, with 95 % intervals from {_behind(ranking, simulation=False)} in brackets",
                      style="dim")
    lapsed = ", ".join(f"{k} {v:.1f}" for k, v in ranking["lapsed_per_1000"].items())
    console.print(f"* after conversion: losses there do not change conversion. Journeys lost per 1000 customers: "
                  f"{ranking['lost_per_1000_total']:.1f} in all; left on entering a stage (no touchpoint to "
                  f"blame): {lapsed}", style="dim")
    credit = ranking.get("attribution")
    if not credit:
        return
    console.print()
    table = Table(title="Conversions credited to each touchpoint", title_justify="left", box=box.SIMPLE_HEAD)
    for col, just in (("touchpoint", "left"), ("removal effect", "right"), ("attributed share", "right"),
                      ("conversions /1000", "right")):
        table.add_column(col, justify=just)
    for a in credit:
        per_1000 = a["conversions_per_1000_attributed"]
        effect = _pct(a["removal_effect"], 1)
        if a.get("removal_effect_interval"):
            lo, hi = a["removal_effect_interval"]
            effect += f" [{100 * lo:.1f}-{100 * hi:.1f}]"
        table.add_row(a["touchpoint"], effect, _pct(a["attributed_share"], 1),
                      "-" if per_1000 is None else f"{per_1000:.1f}")
    console.print(table)
    console.print("removal effect (as in Markov attribution): the share of conversions lost if every journey that "
                  "meets the touchpoint ended there; attributed share: the removal effects scaled to add "
                  "up to 100 %. Compare \"if removed\" above, where customers meet their other touchpoints instead.",
                  style="dim")
    if ranking.get("attribution_warning"):
        console.print(f"note: {ranking['attribution_warning']}", soft_wrap=True)


def best_lines(best: dict[str, Any]) -> list[str]:
    """What the data says of the chosen split, in plain words (empty when the run did not draw)."""
    up = best["expected_uplift"]
    if "expected_uplift_interval" not in best:
        data = best.get("data_uncertainty") or {}
        return [f"note: {data['note']}"] if data.get("note") else []
    lo, hi = best["expected_uplift_interval"]
    n = (best.get("data_uncertainty") or {}).get("customers_behind_model")
    who = f"the {n:,} real customers the model was fitted on" if n else "the data the model was fitted on"
    if lo > 0:
        verdict = "a real gain"
    elif hi < 0:
        verdict = "conversion would fall"
    else:
        verdict = "the data cannot tell yet whether it gains"
    lines = [f"expected gain of this split: {_pp(up)} points of conversion (95 % interval {_pp(lo)} to {_pp(hi)}, "
             f"given {who}): {verdict}",
             f"chance it beats spending nothing: {100 * best['probability_beats_baseline']:.0f} %; chance it beats "
             f"an even split of the budget: {100 * best['probability_beats_even_split']:.0f} % (an even split "
             f"gains {_pp(best['even_split_expected_uplift'])} points)"]
    st = best.get("stability")
    if st:
        spread = ", ".join(f"{name} {a:,.0f}-{b:,.0f}" for name, (a, b) in st["best_spend_range"].items() if b > a)
        lines.append(f"stability: on {round(st['share_of_draws_near_best'] * st['draws'])} of {st['draws']} "
                     "plausible versions of the data this split is within 1 % of the best one"
                     + (f"; the best spends vary: {spread}" if spread else ""))
    objective = str(best.get("objective") or "point")
    k = f"{best['objective_draws']} " if best.get("objective_draws") else ""
    if objective == "mean":
        lines.append(f"chosen for the best average conversion over {k}plausible versions of the data")
    elif objective.startswith("q"):
        lines.append(f"chosen for the best gain that {100 - int(objective[1:])} % of {k}plausible versions of "
                     "the data reach or beat (a cautious choice)")
    return lines


def render_best(best: dict[str, Any]) -> None:
    """A compact table of the split on stdout (the CLI's one place that prints)."""
    console = Console()
    for note in best.get("notes", []):
        console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    for line in best_lines(best):
        console.print(line, highlight=False, markup=False)
    table = Table(title=f"{best['scenario']}: best split after {best['trials']} trials", title_justify="left")
    for col, just in (("investment", "left"), ("lever", "left"), ("spend", "right"), ("range", "right"),
                      ("effect", "right")):
        table.add_column(col, justify=just)
    for inv in best["investments"]:
        rng = "fixed" if inv["fixed"] else f"{inv['min_spend']:g}-{inv['max_spend']:g}"
        sign = "-" if inv["lever"] == "drop_off" else "+"
        table.add_row(inv["name"], f"{inv['lever']} ({inv['touchpoint']})", f"{inv['spend']:,.2f}", rng,
                      f"{sign}{100 * inv['effect']:.1f}%")
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
    if "expected_profit" in best:
        from sim.money import money_label

        cur, roi = best.get("currency"), best.get("roi")
        console.print(f"money ({best['maximize']}): revenue {money_label(best['expected_revenue_uplift'], cur)} more "
                      f"for {best['profit_customers']:,} customers, profit {money_label(best['expected_profit'], cur)}"
                      + (" [{}, {}]".format(*(money_label(x, None) for x in best["expected_profit_interval"]))
                         if best.get("expected_profit_interval") else "")
                      + (f", roi {roi:.2f}" if roi is not None else ""), highlight=False)
    if best.get("unspent_reason"):
        console.print(f"note: {best['unspent_reason']}", soft_wrap=True, highlight=False)
    if "target_reached" in best:
        console.print(f"target uplift {_pp(best['target_uplift'])} pts "
                      + ("reached" if best["target_reached"] else "not reached within the budget"), highlight=False)


def render_backtest(result: dict[str, Any]) -> None:
    """The backtest as a table on the terminal."""
    c = result["customers"]
    table = Table(title=f"backtest at {result['split']}: fit on {c['fit']:,} customers, "
                        f"predict {c['later']:,} later ones", title_justify="left")
    # headers on two lines and unbreakable numbers: the table fits 80 columns; only long stage names fold
    table.add_column("stage", overflow="fold")
    for col in ("model", "observed", "earlier\ncustomers", "model\noff by", "earlier\noff by"):
        table.add_column(col, justify="right", no_wrap=True)
    for stage in result["observed"]:
        mark = " *" if stage == result["conversion_stage"] else ""
        table.add_row(stage + mark, *(f"{100 * result[k][stage]:.1f}%" for k in ("predicted", "observed", "naive")),
                      *(f"{100 * result[k][stage]:.1f} pts" for k in ("error", "naive_error")))
    console = table_console()
    console.print(table)
    console.print("reach of each stage among the later customers: the model's prediction, what was observed, and "
                  "what earlier customers of the same age did; * the conversion stage", style="dim")
    wk = result.get("weekly_conversions") or {}
    if wk.get("mae"):
        if wk.get("coverage"):
            _weekly_backtest_table(console, wk, result["conversion_stage"])
        m = wk["mae"]
        console.print(f"weekly conversions over the {wk['weeks']} full weeks after the split: mean absolute error "
                      f"{m['predicted']:.1f} (forecast), {m['seasonal_naive']:.1f} (earlier weeks: "
                      f"{wk['baseline'].removeprefix('seasonal naive: ')}); "
                      f"{m['predicted_given_arrivals']:.1f} with the actual arrivals; observed "
                      f"{wk['mean_observed']:.1f} a week", soft_wrap=True, highlight=False)
        cov = wk.get("coverage")
        if cov:
            p, g = cov["predicted"], cov["predicted_given_arrivals"]
            console.print(f"inside the 95 % interval: {p['inside']} of {p['weeks']} weeks (forecast), "
                          f"{g['inside']} of {g['weeks']} (with the actual arrivals)", soft_wrap=True,
                          highlight=False)


def _weekly_backtest_table(console: Console, wk: dict[str, Any], stage: str) -> None:
    """The weeks after the split: observed against both predictions with their 95 % intervals."""
    table = Table(title=f"customers reaching {stage} per week after the split", title_justify="left")
    table.add_column("week of", no_wrap=True)
    for col in ("observed", "forecast [95 %]", "with actual\narrivals [95 %]", "earlier\nweeks"):
        table.add_column(col, justify="right", no_wrap=True)

    def cell(row: dict[str, Any], key: str) -> str:
        lo, hi = row[f"{key}_interval"]
        # a week outside its interval is marked: that miss is surprising
        mark = "" if lo <= row["observed"] <= hi else " !"
        return f"{row[key]:,.0f} [{lo:,.0f}-{hi:,.0f}]{mark}"

    rows = wk["rows"]
    n = len(rows)
    shown = list(range(n)) if n <= 16 else [*range(6), None, *range(n - 6, n)]
    for k in shown:
        if k is None:
            table.add_row("...", "", "", "", "")
            continue
        r = rows[k]
        naive = "" if r["seasonal_naive"] is None else f"{r['seasonal_naive']:,.0f}"
        table.add_row(r["start"], f"{r['observed']:,}", cell(r, "predicted"), cell(r, "predicted_given_arrivals"),
                      naive)
    console.print(table)
    console.print("[lo-hi]: 95 % interval (parameters, arrivals, outcome noise); ! observed outside it",
                  style="dim", markup=False)


def render_personas(record: dict[str, Any]) -> None:
    """Discovered personas: the K table (log-likelihood, BIC) and each persona's profile in words."""
    console = table_console()
    table = Table(title=f"personas discovered: K = {record['chosen_k']} by {record['criterion']}",
                  title_justify="left", box=box.SIMPLE)
    for col in ("K", "log-likelihood", "BIC", "parameters"):
        table.add_column(col, justify="right")
    for row in record["table"]:
        mark = " *" if row["k"] == record["chosen_k"] else ""
        table.add_row(f"{row['k']}{mark}", f"{row['log_likelihood']:,.1f}", f"{row['bic']:,.1f}",
                      str(row["parameters"]))
    console.print(table)
    if record.get("customers_in_fit", record["customers"]) < record["customers"]:  # said: a sample, not all
        console.print(record["fit"][0].upper() + record["fit"][1:], markup=False, highlight=False)
    for name, prof in record.get("profiles", {}).items():
        console.print(f"{name}: {prof['description']}", markup=False, highlight=False)


def render_note(note: str | None) -> None:
    """One note line on stderr (a hint, not a result: the JSON stays the same on every machine)."""
    if note:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"note: {note}", markup=False)


def render_warnings(fallbacks: list[dict[str, Any]]) -> None:
    """One warning line on stderr per place where the data could not tell (an estimator fallback)."""
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    for rec in fallbacks:
        console.print(f"warning: {rec['message']}", style="yellow", markup=False)


def render_drift(result: dict[str, Any], top: int = 15) -> None:
    """The ranked changes as a table on the terminal."""
    console = Console()
    head = (f"{result['significant']} of {result['tests']} estimates changed beyond noise "
            f"(at most {100 * result['alpha']:g} % of those flagged may be chance); "
            f"expected conversion {100 * result['old_expected_conversion_rate']:.2f}% -> "
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


def render_forecast(fc: dict[str, Any]) -> None:
    """The forecast: weekly conversions per target (with intervals), the totals, the arrivals' fit."""
    console = table_console()
    targets = fc["targets"]
    table = Table(title=f"forecast from {fc['start']}, {fc['weeks']} weeks: customers reaching "
                        f"{fc['conversion_stage']} per week" + (f" (rollout {fc['rollout']})" if len(targets) > 1
                                                                 else ""), title_justify="left")
    table.add_column("week of", no_wrap=True)
    table.add_column("arrivals", justify="right", no_wrap=True)
    for t in targets:
        table.add_column(t["name"], justify="right", no_wrap=True)

    def cell(w: dict[str, Any]) -> str:
        iv = w.get("conversions_interval")
        text = f"{w['conversions']:,.0f}" + (f" [{iv[0]:,.0f}-{iv[1]:,.0f}]" if iv else "")
        if "uplift" in w:
            text += f" ({w['uplift']:+,.0f})"
        return text

    n = fc["weeks"]
    shown = list(range(n)) if n <= 16 else [*range(6), None, *range(n - 6, n)]
    for k in shown:
        if k is None:
            table.add_row("...", "", *("" for _ in targets))
            continue
        w0 = targets[0]["weeks"][k]
        table.add_row(w0["start"], f"{w0['arrivals']:,.0f}", *(cell(t["weeks"][k]) for t in targets))
    tot = [t["total"] for t in targets]
    table.add_row("total", f"{tot[0]['arrivals']:,.0f}", *(
        f"{x['conversions']:,.0f}" + (f" ({x['uplift']:+,.0f})" if "uplift" in x else "") for x in tot))
    console.print(table)
    a = fc["arrivals"]
    fitted = ", ".join(a["components"])
    console.print(f"arrivals: {a['source']} ({fitted})", highlight=False)
    for comp, why in a.get("reasons", {}).items():
        if comp != "level":
            console.print(f"  {comp}: {why}", style="dim", highlight=False)
    for t in targets[1:]:
        x = t["total"]
        if "uplift_interval" in x:
            lo, hi = x["uplift_interval"]
            console.print(f"{t['name']}: {x['uplift']:+,.0f} conversions over the {n} weeks, 95 % [{lo:+,.0f}, "
                          f"{hi:+,.0f}]" + (" (a gain)" if lo > 0 else " (a loss)" if hi < 0
                                           else " (the data cannot tell yet)"), highlight=False)
    console.print("[lo-hi]: 95 % interval (parameters, arrivals, outcome noise); (+n): against the baseline"
                  if fc.get("draws") else "no intervals (--draws 0)", style="dim", markup=False)
    for note in fc.get("notes", []):
        console.print(f"note: {note}", soft_wrap=True, highlight=False)
