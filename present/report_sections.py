"""The HTML of each section of the report: text, tables and the figures drawn from the runs' records."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from present.figures.backtest import (
    OverTimeData,
    backtest_data,
    draw_backtest,
    draw_reach_by_age,
    draw_weekly,
    over_time_data,
)
from present.figures.common import figure, pct, points
from present.figures.evidence import draw_evidence, dwell_rows, evidence_data
from present.figures.funnel import draw_funnel, funnel_data
from present.figures.journey_map import draw_emotion_curve, draw_journey_map, journey_map_data
from present.figures.optimization import (
    allocation_data,
    draw_allocation,
    draw_history,
    draw_money_response,
    draw_response,
    history_data,
    marginal_words,
    money_response_data,
    response_data,
)
from present.figures.uplift import draw_persona_uplift, draw_uplift, persona_uplift_data, uplift_data
from present.report_headline import fitted_on
from present.report_html import Page, ci_text, esc, fallback_box, share, table, when
from present.report_runs import ModelRef, Run
from sim.hotspots import attribution

TOP_RISKS = 3


def compare_section(page: Page, runs: list[Run]) -> None:
    """Uplift per scenario: a figure and table per comparison, and who gains per persona."""
    parts = page.section("scenarios", "Uplift per scenario")
    parts.append("<p>Each scenario against the same baseline customers (common random numbers): the bar and "
                 "whisker are the simulated change in conversion with its 95% interval, the diamond the exact "
                 "expectation of the model. Where the run drew the model's parameters (compare --draws), the "
                 "interval also holds the uncertainty of the data the model was fitted on, and the chance of a "
                 "gain is the share of those draws in which the scenario converts more. An interval that "
                 "crosses zero is no evidence of a change.</p>")
    for r in runs:
        d = uplift_data(r.data)
        if not d.names:
            parts.append(f"<p>{esc(r.label)}: no scenarios.</p>")
            continue
        fig = figure(11, 0.9 + 0.75 * len(d.names))
        draw_uplift(d, fig.add_subplot())
        page.figure(parts, f"uplift-{r.path.name}", f"Uplift per scenario ({r.path.name})", fig, d)
        extra = ["", ""] if d.with_data else []
        rows = [["baseline", pct(d.base_rate), pct(d.base_expected) if not math.isnan(d.base_expected)
                 else "", "", "", "", *extra]]
        records = r.data["scenarios"]
        for i, n in enumerate(d.names):
            e = d.expected_uplift[i]
            ex = d.expected_conversion_rate[i]
            row = [n, pct(d.conversion_rate[i]), pct(ex) if not math.isnan(ex) else "",
                   points(d.uplift[i], 2), f"[{points(d.ci[i][0], 2)}, {points(d.ci[i][1], 2)}]",
                   points(e, 2) if not math.isnan(e) else ""]
            if d.with_data:
                rec = records[i]
                row += [f"{100 * float(rec['probability_positive']):.0f}%", _verdict_words(rec)]
            rows.append(row)
        head = ["scenario", "conversion (simulated)", "expected", "uplift",
                "95% interval (data and simulation)" if d.with_data else "95% interval (simulation)",
                "expected uplift", *(["chance of a gain", "verdict"] if d.with_data else [])]
        parts.append(table(head, rows, "num"))
        behind = (r.data.get("data_uncertainty") or {}).get("customers_behind_model")
        if d.with_data and behind:
            parts.append(f"<p>The model behind these numbers was fitted on {int(behind):,} real customers.</p>")
        said = [f"{sc.get('name')}: {n}" for sc in r.data.get("scenarios", []) for n in sc.get("notes", [])]
        if said:  # a capped factor, a scenario that named another model: said where the numbers are
            parts.append("<ul class='notes'>" + "".join(f"<li>{esc(n)}</li>" for n in said) + "</ul>")
        pu = persona_uplift_data(r.data)
        if pu is not None:
            parts.append("<p>Who gains: the change in conversion per persona (bars: the model's exact expectation; "
                         "dots: simulated).</p>")
            fig = figure(11, 0.9 + 0.3 * len(pu.scenarios) * max(len(pu.personas), 2))
            draw_persona_uplift(pu, fig.add_subplot())
            page.figure(parts, f"uplift-personas-{r.path.name}", "Uplift per persona", fig, pu)


def _verdict_words(record: dict[str, Any]) -> str:
    """A comparison record's verdict in plain words."""
    verdict = record.get("verdict")
    if verdict == "gain":
        return "a gain"
    if verdict == "loss":
        return "a loss"
    more = record.get("customers_to_tell")
    return "the data cannot tell yet" + (f" (about {int(more):,} customers would)" if more else "")


def funnel_section(page: Page, runs: list[Run], refs: dict[int, ModelRef | None]) -> None:
    """The funnel of each simulation with its persona table (and the discovered personas, if any)."""
    parts = page.section("funnel", "Funnel per persona, stage by stage")
    parts.append("<p>Share of customers who reach each stage. Lines: what the model expects for each persona; "
                 "black squares: the simulated share of all customers with its 95% interval; diamonds at the "
                 "conversion stage: each persona's simulated conversion with its interval.</p>")
    for r in runs:
        ref = refs.get(id(r))
        model = (ref.applied or ref.model) if ref else None
        d = funnel_data(r.data, model)
        fig = figure(11, 4.6)
        draw_funnel(d, fig.add_subplot())
        page.figure(parts, f"funnel-{r.path.name}", f"Funnel: {r.label}", fig, d, caption=f"{r.label}. {d.ci_note}.")
        rows = [[p, f"{rec.get('share', math.nan) * 100:.0f}%" if "share" in rec else "", f"{rec['customers']:,}",
                 pct(float(rec["conversion_rate"])), ci_text(rec["conversion_rate_ci"])
                 if "conversion_rate_ci" in rec else "", pct(float(rec.get("expected_conversion_rate",
                                                                                  math.nan)))]
                for p, rec in sorted(r.data["personas"].items())]
        parts.append(table(["persona", "mix", "customers", "conversion", "95% interval", "expected"], rows, "num"))
        found = ref.model.extras.get("personas_discovered") if ref else None
        if isinstance(found, dict) and found.get("profiles"):  # personas discovered from behaviour: say who they are
            parts.append(f"<p>Personas discovered from behaviour (K = {esc(found.get('chosen_k'))} by "
                         f"{esc(found.get('criterion'))}), as calibrated:</p><ul>"
                         + "".join(f"<li><b>{esc(n)}</b>: {esc(p.get('description', ''))}</li>"
                                   for n, p in found["profiles"].items()) + "</ul>")


def map_section(page: Page, refs: list[ModelRef]) -> None:
    """The journey map of each distinct model, its top risk points and the touchpoints' credit."""
    parts = page.section("map", "Journey map")
    parts.append(f"<p>Stages as columns, touchpoints as rows, all personas together. Each cell: the touchpoint's "
                 f"share of the stage's interactions, the chance an interaction there moves the customer on, and "
                 f"the chance it ends the journey (the colour). Framed: the {TOP_RISKS} points where most journeys "
                 f"are expected to end (drop-off rate x traffic). Header: share of customers who reach the stage "
                 f"and who leave right on entering it (lapse).</p>")
    for ref in refs:
        d = journey_map_data(ref.model, top=TOP_RISKS)
        T = len(d.touchpoints)
        # map and emotion curve share their columns: the colour bar gets its own column of the grid
        emo = 1.6 if d.emotion else 0.0
        fig = figure(12, 1.9 + 0.95 * T + emo)
        gs = fig.add_gridspec(2, 2, height_ratios=[max(emo, 0.01), 0.95 * T + 1.2], width_ratios=[60, 1])
        draw_journey_map(d, fig.add_subplot(gs[1, 0]), cax=fig.add_subplot(gs[1, 1]))
        if d.emotion:
            ax_e = fig.add_subplot(gs[0, 0])
            draw_emotion_curve(d, ax_e)
            ax_e.set_title("emotion curve: mean satisfaction (1-5) of the stage's interactions", fontsize=10,
                           loc="left")
        page.figure(parts, "journey-map", f"Journey map ({ref.path.name})", fig, d,
                    caption=f"model {ref.path}" + ("" if d.emotion else "; no satisfaction scores in the log, so no "
                                                    "emotion curve"))
        if d.risk:
            rows = [[f"#{x['rank']}", x["touchpoint"], x["stage"], pct(x["drop_off"]),
                     f"{x['lost_per_1000']:.1f}"] for x in d.risk]
            parts.append("<p>Top risk-of-leaving points:</p>" + table(
                ["rank", "touchpoint", "stage", "P(interaction ends journey)", "journeys lost per 1000 customers"],
                rows, "num"))
        credit = attribution(ref.model)
        if credit:
            rows = [[a["touchpoint"], share(a["removal_effect"]), share(a["attributed_share"]),
                     "" if a["conversions_per_1000_attributed"] is None else
                     f"{a['conversions_per_1000_attributed']:.1f}"] for a in credit]
            parts.append("<p>Conversions credited to each touchpoint. Removal effect (as in Markov attribution): "
                         "the share of conversions lost if every journey that meets the touchpoint ended there; "
                         "attributed share: the removal effects scaled to add up to 100%. Compare a scenario that "
                         "removes a touchpoint, where customers meet their other touchpoints instead.</p>")
            parts.append(table(["touchpoint", "removal effect", "attributed share",
                                 "conversions per 1000 customers"], rows, "num"))


def evidence_section(page: Page, refs: list[ModelRef]) -> None:
    """What each model was calibrated from: the log, the priors it fell back on, the counts per cell."""
    parts = page.section("evidence", "Model evidence")
    for ref in refs:
        d = evidence_data(ref.model)
        m = ref.model
        log = m.log_summary
        if log:
            first, last = esc(when(log.get("first_timestamp"))), esc(when(log.get("last_timestamp")))
            parts.append(f"<p>Calibrated from {int(log.get('rows', 0)):,} rows of {int(log.get('customers', 0)):,} "
                         f"customers ({first} to {last}): "
                         f"{int(log.get('customers_completed', 0)):,} completed, {int(log.get('customers_ended', 0)):,}"
                         f" ended, {int(log.get('customers_in_progress', 0)):,} still in progress.</p>")
        warning = fallback_box(m.estimator.get("fallbacks"))
        if warning:
            parts.append(warning)
        if d is None:
            parts.append("<p>The model carries no counts.</p>")
            continue
        fig = figure(12, 1.4 + 0.5 * len(d.touchpoints))
        draw_evidence(d, fig.add_subplot())
        page.figure(parts, "evidence", f"Model evidence ({ref.path.name})", fig, d, caption=f"model {ref.path}")
        rows = dwell_rows(m)
        if rows:
            parts.append("<p>Time in each stage by way out (mean days from entering the stage to leaving it; "
                         "speed 1 = the same for every way out):</p>")
            parts.append(table(["stage", "way out", "share of leavers", "mean days", "leave speed"],
                                [[a, "drop-off" if b == "drop_off" else f"moved on to {b}", f"{100 * c:.1f} %",
                                  f"{d_:.1f}", f"{e:.2f}"] for a, b, c, d_, e in rows],
                                cls="num"))



def _optimize_sure(b: dict[str, Any]) -> str:
    """How sure the data is of the chosen split, in plain words (HTML-escaped); empty without draws."""
    if "expected_uplift_interval" not in b:
        note = (b.get("data_uncertainty") or {}).get("note")
        return f"<p>{esc(note)}</p>" if note else ""
    lo, hi = (float(x) for x in b["expected_uplift_interval"])
    verdict = ("a real gain" if lo > 0 else "conversion would fall" if hi < 0 else
               "the interval includes zero: the data cannot tell yet whether this split gains")
    text = (f"95% interval of the gain: {points(lo, 2)} to {points(hi, 2)}, given {fitted_on(b)}: "
            f"{verdict}. Chance that it beats spending nothing: {100 * float(b['probability_beats_baseline']):.0f}%; "
            f"that it beats an even split of the budget: {100 * float(b['probability_beats_even_split']):.0f}% "
            f"(an even split gains {points(float(b['even_split_expected_uplift']), 2)}).")
    st = b.get("stability")
    if st:
        near = round(float(st["share_of_draws_near_best"]) * int(st["draws"]))
        spread = ", ".join(f"{name} {lo_:,.0f} to {hi_:,.0f}" for name, (lo_, hi_) in st["best_spend_range"].items()
                           if hi_ > lo_)
        text += (f" On {near} of {st['draws']} plausible versions of the data, this split is within 1% of the best "
                 "one for that version" + (f"; the best spends range over {spread}" if spread else "") + ".")
    objective = str(b.get("objective") or "point")
    k = f"{b['objective_draws']} " if b.get("objective_draws") else ""
    if objective == "mean":
        text += f" Chosen for the best average over {k}plausible versions of the data."
    elif objective.startswith("q"):
        text += (f" Chosen for the best gain that {100 - int(objective[1:])}% of {k}plausible versions of the "
                 "data reach or beat (a cautious choice).")
    return f"<p>{esc(text)}</p>"


def optimize_section(page: Page, runs: list[Run]) -> None:
    """Each optimization's best split, how sure the data is of it, and its figures."""
    parts = page.section("optimization", "Optimization")
    for r in runs:
        b = r.data
        parts.append(f"<h3>{esc(r.label)}</h3><p>Best split found after {esc(b.get('trials', '?'))} trials "
                     f"(study {esc(b.get('study', ''))}): expected conversion "
                     f"{pct(float(b['expected_conversion_rate']), 2)} against "
                     f"{pct(float(b['baseline_expected_conversion_rate']), 2)} without the investments "
                     f"({points(float(b['expected_uplift']), 2)}).</p>" + _optimize_sure(b))
        a = allocation_data(b)
        if a.names:
            fig = figure(11, 1.0 + 0.55 * len(a.names))
            draw_allocation(a, fig.add_subplot())
            page.figure(parts, f"allocation-{r.path.name}", "Allocation", fig, a)
        h = history_data(r.tables.get("trials", []), maximize=str(b.get("direction", "maximize")) != "minimize")
        if h is not None:
            fig = figure(11, 3.6)
            draw_history(h, fig.add_subplot())
            page.figure(parts, f"history-{r.path.name}", "Optimization history", fig, h,
                        caption=f"{len(h.number)} completed trials" + (f"; {h.skipped} not completed or infeasible"
                                                                        if h.skipped else ""))
        elif "trials" in r.tables:
            parts.append("<p>trials.csv holds no completed trial with a value.</p>")
        else:
            parts.append("<p>No trials.csv in the run directory: no history to draw.</p>")
        resp = response_data(b.get("investments", []) or [], b.get("allocation"))
        if resp is not None:
            fig = figure(11, 3.8)
            draw_response(resp, fig.add_subplot())
            page.figure(parts, f"response-{r.path.name}", "Response curves", fig, resp,
                        caption="effect of each lever against spend, e = max_effect x spend / (spend + "
                                "half_saturation); dots: the chosen spends")
        money = money_response_data(b)
        if money is not None:
            fig = figure(max(5.5, 3.6 * len(money.names)), 3.6)
            draw_money_response(money, fig)
            marks = "; ".join(f"{n}: spend {s:,.0f}, {marginal_words(m)}"
                              + ("" if roi is None else f", roi {roi:.2f}")
                              for n, s, m, roi in zip(money.names, money.chosen_spend, money.marginal_return,
                                                      money.roi))
            page.figure(parts, f"response-money-{r.path.name}", "Revenue back per investment", fig, money,
                        caption=f"exact revenue an investment brings back over its spend range, the others at "
                                f"their chosen spends; dashed: the spend itself (above it, profit); the short line "
                                f"at the chosen spend has the marginal return as its slope. {marks}")


def backtest_section(page: Page, runs: list[Run]) -> None:
    """Each backtest's figure, table and the priors its fit fell back on."""
    parts = page.section("backtest", "Backtest")
    for r in runs:
        d = backtest_data(r.data)
        fig = figure(11, 4.0)
        draw_backtest(d, fig.add_subplot())
        page.figure(parts, f"backtest-{r.path.name}", f"Backtest ({r.path.name})", fig, d,
                    caption=f"{r.label}: fitted on rows before {d.split}, predicting customers who start after it")
        rows = [[s, pct(p), pct(o), pct(n), f"{100 * e:.2f}", f"{100 * ne:.2f}"]
                for s, p, o, n, e, ne in zip(d.stages, d.predicted, d.observed, d.naive, d.error, d.naive_error)]
        parts.append(table(["stage", "model", "observed", "earlier customers", "model off by (pts)",
                             "earlier customers off by (pts)"],
                            rows, "num"))
        over = over_time_data(r.data)
        if over is not None:
            fig = figure(11, 3.8)
            grid = fig.add_gridspec(1, 2)
            draw_reach_by_age(over, fig.add_subplot(grid[0, 0]))
            draw_weekly(over, fig.add_subplot(grid[0, 1]))
            mae = over.mae
            page.figure(parts, f"backtest-time-{r.path.name}", f"Backtest over time ({r.path.name})", fig, over,
                        caption=f"left: share of the later customers reaching {over.stage} within each age; right: "
                                f"weekly conversions after {over.split}, MAE forecast "
                                f"{mae.get('predicted', float('nan')):.1f} against {over.baseline} "
                                f"{mae.get('seasonal_naive', float('nan')):.1f}" + _coverage_words(over.coverage))
            if over.predicted_lo:
                parts.append(_weekly_table(over))
        warning = fallback_box(r.data.get("fallbacks"))
        if warning:
            parts.append(warning)


def _coverage_words(cov: dict[str, dict[str, int]]) -> str:
    """The caption's words on how many observed weeks fell inside the 95 % intervals."""
    if not cov:
        return ""
    p, g = cov["predicted"], cov["predicted_given_arrivals"]
    return (f"; observed inside the 95 % interval (band) {p['inside']} of {p['weeks']} weeks, "
            f"{g['inside']} of {g['weeks']} with the actual arrivals (thin lines)")


def _weekly_table(over: OverTimeData) -> str:
    """The weeks after the split: observed, both predictions with their 95 % intervals, seasonal naive."""
    def iv(lo: float, hi: float, obs: float) -> str:
        return f"{lo:,.0f} to {hi:,.0f}" + ("" if lo <= obs <= hi else " (outside)")

    rows = [[w, f"{o:,.0f}", f"{p:,.1f}", iv(pl, ph, o), f"{g:,.1f}", iv(gl, gh, o),
             "" if math.isnan(n) else f"{n:,.0f}"]
            for w, o, p, pl, ph, g, gl, gh, n in zip(over.weeks, over.observed, over.predicted, over.predicted_lo,
                                                     over.predicted_hi, over.predicted_given_arrivals,
                                                     over.given_arrivals_lo, over.given_arrivals_hi,
                                                     over.seasonal_naive)]
    return table(["week of", "observed", "forecast", "95 %", "with the actual arrivals", "95 %",
                  "seasonal naive"], rows, "num")


def forecast_section(page: Page, runs: list[Run]) -> None:
    """Each forecast's weekly conversions figure (base against scenarios, with bands) and its totals."""
    from present.figures.forecast import draw_forecast, forecast_data

    parts = page.section("forecast", "Forecast")
    for r in runs:
        d = forecast_data(r.data)
        fig = figure(11, 4.0)
        draw_forecast(d, fig.add_subplot())
        arrivals = r.data.get("arrivals") or {}
        page.figure(parts, f"forecast-{r.path.name}", f"Forecast ({r.path.name})", fig, d,
                    caption=f"{r.label}: conversions per week from {d.start}, bands 95 % (parameters, arrivals, "
                            f"outcome noise); arrivals: {arrivals.get('source', '?')} "
                            f"({', '.join(arrivals.get('components', []))})")
        rows = []
        for t in r.data["targets"]:
            x = t["total"]
            iv, uiv = x.get("conversions_interval"), x.get("uplift_interval")
            rows.append([t["name"], f"{x['conversions']:,.0f}", f"{iv[0]:,.0f} to {iv[1]:,.0f}" if iv else "-",
                         f"{x['uplift']:+,.0f}" if "uplift" in x else "-",
                         f"{uiv[0]:+,.0f} to {uiv[1]:+,.0f}" if uiv else "-"])
        parts.append(table(["target", f"conversions, {r.data['weeks']} weeks", "95 % interval",
                            "against the baseline", "95 % interval"], rows, "num"))


def seed_text(seed: Any) -> str:
    """A run that draws nothing at random records no seed: say so rather than "None"."""
    return "not used" if seed is None or seed == "" else str(seed)


def manifest_section(page: Page, runs: list[Run], refs: list[ModelRef]) -> None:
    """Provenance: command, arguments, seed, version, time and input hashes of every run and model."""
    parts = page.section("manifest", "Provenance")
    rows = []
    for r in runs:
        m = r.manifest or {}
        inputs = "; ".join(f"{Path(k).name} {str(v)[:12]}" for k, v in (m.get("inputs") or {}).items())
        rows.append([str(r.path), m.get("command", r.kind), " ".join(m.get("argv", [])) or
                     ", ".join(f"{k}={v}" for k, v in (m.get("arguments") or {}).items()),
                     seed_text(m.get("seed", r.data.get("seed"))), m.get("journey_version", ""),
                     f"{m.get('started', '')} \u2192 {m.get('finished', '')}", inputs or ""])
    for ref in refs:
        m = ref.model.provenance or {}
        inputs = "; ".join(f"{Path(k).name} {str(v)[:12]}" for k, v in (m.get("inputs") or {}).items())
        rows.append([str(ref.path), m.get("command", "calibrate"), " ".join(m.get("argv", [])),
                     seed_text(m.get("seed")), m.get("journey_version", ""),
                     f"{m.get('started', '')} \u2192 {m.get('finished', '')}", inputs])
    parts.append(table(["run", "command", "as typed", "seed", "version", "time (UTC)", "inputs (sha256)"], rows,
                        "prov"))
    notes = [n for r in runs for n in r.notes]
    if notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{esc(n)}</li>" for n in dict.fromkeys(notes)) + "</ul>")
