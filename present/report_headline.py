"""The report's one-line answer at the top of the page."""
from __future__ import annotations

import math
from typing import Any

from present.figures.backtest import backtest_data
from present.figures.common import pct, points
from present.report_runs import Run


def _money_words(rec: dict[str, Any], cur: str | None, profit: bool = False) -> str | None:
    """'+1.8 pts, +42 k revenue per 100 k customers' where a record has revenue (sim/money.py)."""
    from sim.money import money_label, per_100k

    if "expected_revenue_uplift_per_customer" not in rec:
        return None
    text = (f"{points(float(rec['expected_uplift']), 1)}, "
            f"{per_100k(float(rec['expected_revenue_uplift_per_customer']), cur)}")
    if profit:
        roi = rec.get("roi")
        text += (f"; profit {money_label(float(rec['expected_profit']), cur)} for {int(rec['profit_customers']):,} "
                 "customers" + (f", return on the spend {roi:.2f}" if roi is not None else ""))
    return text


def headline_data(runs: list[Run]) -> dict[str, Any]:
    """The one-line answer: the best scenario's projected change with its interval; else the best
    budget split's expected change; else the simulated conversion with its interval."""
    comps = [r for r in runs if r.kind == "compare"]
    if comps and any(r.data["scenarios"] for r in comps):
        return _compare_headline(comps)
    opts = [r for r in runs if r.kind == "optimize"]
    if opts:
        return _optimize_headline(opts)
    sims = [r for r in runs if r.kind == "simulate"]
    if sims:
        return _simulate_headline(sims)
    forecasts = [r for r in runs if r.kind == "forecast"]
    if forecasts:
        return _forecast_headline(forecasts[0].data)
    return _backtest_headline([r for r in runs if r.kind == "backtest"][0].data)


def _forecast_headline(fc: dict[str, Any]) -> dict[str, Any]:
    """The forecast's baseline conversions over its weeks, and each scenario's change with its interval."""
    base, *others = fc["targets"]
    text = (f"Forecast from {fc['start']}: {base['total']['conversions']:,.0f} customers reach "
            f"{fc.get('conversion_stage', 'conversion')} over {fc['weeks']} weeks without a change")
    lines = []
    for t in others:
        x = t["total"]
        iv = x.get("uplift_interval")
        lines.append(f"{t['name']} from {fc.get('rollout', fc['start'])}: {x.get('uplift', 0):+,.0f} conversions"
                     + (f" (95 % interval {iv[0]:+,.0f} to {iv[1]:+,.0f})" if iv else ""))
    return {"kind": "forecast", "text": text, "others": lines, "best": fc}


def _compare_headline(comps: list[Run]) -> dict[str, Any]:
    """The best scenario's projected change with its interval, and a line per other scenario."""
    rows = []
    for r in comps:
        base = r.data["base"]
        behind = (r.data.get("data_uncertainty") or {}).get("customers_behind_model")
        for sc in r.data["scenarios"]:
            total = sc.get("uplift_interval")  # data and simulation together, when the run drew
            lo, hi = (float(x) for x in (total or sc["uplift_ci"]))
            rows.append({"name": str(sc["name"]), "base": float(base["conversion_rate"]),
                         "rate": float(sc["conversion_rate"]), "uplift": float(sc["uplift"]),
                         "ci": [lo, hi], "expected_uplift": sc.get("expected_uplift"),
                         "stage": base.get("conversion_stage", "the conversion stage"),
                         "customers": base.get("customers"), "with_data": total is not None,
                         "behind": behind, "to_tell": sc.get("customers_to_tell"),
                         "probability_positive": sc.get("probability_positive"),
                         "money": _money_words(sc, base.get("currency"))})
    top = max(rows, key=lambda x: x["uplift"])
    lo, hi = top["ci"]
    if top["with_data"]:
        fitted = (f"the model was fitted on {int(top['behind']):,} real customers" if top["behind"]
                  else "the model's own data")
        more = (f"; about {int(top['to_tell']):,} customers in the calibration log would tell"
                if top["to_tell"] else "")
        verdict = (f"the whole interval, which includes the uncertainty of the data {fitted} and simulation "
                   "noise, is above zero: a real gain" if lo > 0 else
                   "the whole interval (data the model was fitted on and simulation) is below zero: "
                   "conversion would fall" if hi < 0 else
                   f"the interval includes zero once the uncertainty of the data ({fitted}) is counted: "
                   f"the data cannot tell yet{more}")
    else:
        verdict = ("the whole interval is above zero, but it covers simulation noise only (run compare with "
                   "--draws for the data's uncertainty)" if lo > 0 else
                   "the whole interval is below zero (simulation noise only)" if hi < 0 else
                   "the interval includes zero: not distinguishable from no change")
    text = (f"Projected conversion change for \u201c{top['name']}\u201d: {points(top['uplift'], 2)} "
            f"(95% interval {points(lo, 2)} to {points(hi, 2)}), from {pct(top['base'])} "
            f"to {pct(top['rate'])} of customers reaching {top['stage']}; {verdict}."
            + (f" In money: {top['money']}." if top["money"] else ""))
    others = [f"{x['name']}: {points(x['uplift'], 2)} [{points(x['ci'][0], 2)}, "
              f"{points(x['ci'][1], 2)}]" for x in rows if x is not top]
    return {"kind": "compare", "text": text, "others": others, "best": top}


def _optimize_headline(opts: list[Run]) -> dict[str, Any]:
    """The best budget split's expected change, with its interval where the run drew the data."""
    b = max(opts, key=lambda r: float(r.data["expected_uplift"])).data
    interval = b.get("expected_uplift_interval")
    if interval:
        lo, hi = (float(x) for x in interval)
        verdict = ("the whole interval is above zero: a real gain" if lo > 0 else
                   "the whole interval is below zero: conversion would fall" if hi < 0 else
                   "the interval includes zero: the data cannot tell yet")
        sure = (f" (95% interval {points(lo, 2)} to {points(hi, 2)}, given "
                f"{fitted_on(b)}; {verdict})")
    else:
        sure = " (exact, no sampling noise; the data's uncertainty not included)"
    text = (f"The best budget split found ({len(b['allocation'])} levers, spend {float(b.get('spend', 0)):,.1f}) "
            f"changes expected conversion by {points(float(b['expected_uplift']), 2)}, from "
            f"{pct(float(b['baseline_expected_conversion_rate']))} to "
            f"{pct(float(b['expected_conversion_rate']))}{sure}."
            + (f" In money: {_money_words(b, b.get('currency'), profit=True)}." if "expected_profit" in b else ""))
    return {"kind": "optimize", "text": text, "others": [], "best": b}


def _simulate_headline(sims: list[Run]) -> dict[str, Any]:
    """The first simulation's conversion with its interval, and a line per other simulation."""
    s = sims[0].data
    lo, hi = s["conversion_rate_ci"]
    text = (f"Simulated conversion: {pct(float(s['conversion_rate']))} of customers reach "
            f"{s['conversion_stage']} (95% interval {pct(float(lo))} to {pct(float(hi))}, "
            f"{int(s['customers']):,} customers x {int(s.get('replications', 1))}); the model expects "
            f"{pct(float(s.get('expected_conversion_rate', math.nan)))}.")
    others = [f"{r.label}: {pct(float(r.data['conversion_rate']))} "
              f"[{pct(float(r.data['conversion_rate_ci'][0]))}, "
              f"{pct(float(r.data['conversion_rate_ci'][1]))}]" for r in sims[1:]]
    return {"kind": "simulate", "text": text, "others": others, "best": s}


def _backtest_headline(bt: dict[str, Any]) -> dict[str, Any]:
    """How far the backtest's reach rates are off, against going by earlier customers."""
    d = backtest_data(bt)
    err = _mean([e for e in d.error if not math.isnan(e)])
    nerr = _mean([e for e in d.naive_error if not math.isnan(e)])
    text = (f"Backtest from {d.split}: the model's reach rates are off by {100 * err:.1f} percentage points on "
            f"average; going by what earlier customers did is off by {100 * nerr:.1f}.")
    return {"kind": "backtest", "text": text, "others": [], "best": bt}


def _mean(xs: list[float]) -> float:
    """The mean (NaN of none)."""
    return sum(xs) / len(xs) if xs else math.nan


def fitted_on(best: dict[str, Any]) -> str:
    """What an optimization's model was fitted on, in words."""
    n = (best.get("data_uncertainty") or {}).get("customers_behind_model")
    return f"the {int(n):,} real customers the model was fitted on" if n else "the data the model was fitted on"
