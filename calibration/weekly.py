"""The backtest's weekly conversions after the split, with `journey forecast`'s 95 % intervals (pure).

Observed weekly conversions against the forecast from the split (the model and arrival pattern
fitted before it), the same forecast given the weeks' actual arrivals, and a seasonal-naive
baseline. With draws, each prediction gets the interval `journey forecast` gives: parameter draws of
the fitted model (sim.uncertainty), paired for the forecast with draws of the arrivals after the
split (fit uncertainty and day-to-day noise), and Poisson outcome noise on each draw's expectation.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from sim.forecast import interval, iso_date, project
from sim.model import Model
from sim.rounding import round6

ONE_YEAR = 364  # days: 52 weeks, so the seasonal-naive week falls on the same weekdays

METHOD = {
    "predicted": "journey forecast from the split: the model and the arrival pattern fitted before it (every "
                 "customer since the log's start; exact)",
    "predicted_given_arrivals": "the same with the weeks' actual arrivals: the journey model alone",
    "observed": "customers first reaching the conversion stage in the week (any arrival date)",
}
INTERVALS = ("95 %, as journey forecast: parameter draws of the model fitted before the split, for "
             "predicted each paired with a draw of the arrivals after it (fit uncertainty and day-to-day "
             "noise), for predicted_given_arrivals the actual arrivals; Poisson outcome noise on each draw's "
             "weekly expectation")


def weekly_conversions(model: Model, *, split_days: float, end: float, t_first: np.ndarray, t_conv: np.ndarray,
                       draws: int = 0, draw_stream: np.random.SeedSequence | None = None,
                       stream: np.random.SeedSequence | None = None) -> dict[str, Any]:
    """Weekly conversions in calendar time after the split: observed, the forecast, and a seasonal-naive baseline.

    ``t_first`` and ``t_conv``: per customer of the whole log, the first interaction and the first
    time at or past the conversion stage (inf: never), in days since 1970; ``end``: the log's end.
    The forecast is `journey forecast`'s: the model and arrival pattern fitted before the split,
    every customer since the log's start counted (those in progress at the split too). Beside it the
    same with the weeks' actual arrivals (the journey model alone), and the seasonal-naive baseline:
    the same week 52 weeks earlier where the log reaches that far back before the split, else the
    last full week before the split repeated.

    ``draws`` > 0 adds 95 % intervals (``predicted_interval``, ``predicted_given_arrivals_interval``
    per week, ``coverage``): parameter draws seeded by ``draw_stream``, arrival paths and outcome
    noise by ``stream`` (both required then).
    """
    from sim.arrivals import from_model_arrivals

    start = int(np.floor(split_days))
    n_weeks = int((end - start) // 7)
    arrivals = from_model_arrivals(model.arrivals)
    out: dict[str, Any] = {"start": iso_date(start), "weeks": n_weeks, "arrivals": arrivals.to_dict()}
    if n_weeks == 0:
        out["note"] = "less than a full week after the split: nothing to compare"
        return out
    first = arrivals.history_first_day
    stop = start + 7 * n_weeks
    days = np.arange(first, stop)
    hist = np.zeros(days.size)
    hist[:arrivals.history.size] = arrivals.history[:days.size]
    future = days >= arrivals.history_end_day
    fitted = np.where(future, arrivals.mean(days), hist)
    actual = np.bincount(np.floor(t_first).astype(np.int64) - first, minlength=days.size)[:days.size].astype(float)
    zero = np.zeros(days.size)

    def weeks_of(daily: np.ndarray) -> np.ndarray:
        """Daily values [..., days from the log's first day] summed into the weeks after the split."""
        sl = daily[..., start - first:]
        return sl.reshape(*sl.shape[:-1], n_weeks, 7).sum(-1)

    pred = weeks_of(project([model], None, fitted[None], None, zero).conversions[0])
    pred_actual = weeks_of(project([model], None, actual[None], None, zero).conversions[0])
    edges = start + 7 * np.arange(n_weeks + 1)
    done = np.isfinite(t_conv)
    obs = np.histogram(t_conv[done], bins=edges)[0].astype(float)
    if start - ONE_YEAR >= first:
        naive = np.histogram(t_conv[done], bins=edges - ONE_YEAR)[0].astype(float)
        idea = "seasonal naive: the same weeks 52 weeks earlier"
        naive[edges[1:] - ONE_YEAR > start] = np.nan  # weeks not yet seen at the split
    else:
        last = float(((t_conv >= start - 7) & (t_conv < start)).sum())
        naive = np.full(n_weeks, last)
        idea = "seasonal naive: the last full week before the split repeated (the log has under a year before it)"
    ok = ~np.isnan(naive)

    def mae(x: np.ndarray) -> float:
        return round6(float(np.abs(x[ok] - obs[ok]).mean())) if ok.any() else float("nan")

    ivs = _intervals(model, draws, draw_stream, stream, arrivals, days, future, fitted, actual, weeks_of)
    if ivs is not None:
        out.update({"draws": int(draws), "seed": int(draw_stream.entropy)})
    rows = []
    for w in range(n_weeks):
        row: dict[str, Any] = {"week": w + 1, "start": iso_date(int(edges[w])), "observed": int(obs[w]),
                               "predicted": round6(pred[w])}
        if ivs is not None:
            row["predicted_interval"] = [round6(ivs["predicted"][0][w]), round6(ivs["predicted"][1][w])]
        row["predicted_given_arrivals"] = round6(pred_actual[w])
        if ivs is not None:
            row["predicted_given_arrivals_interval"] = [round6(ivs["predicted_given_arrivals"][0][w]),
                                                        round6(ivs["predicted_given_arrivals"][1][w])]
        row["seasonal_naive"] = None if np.isnan(naive[w]) else round6(naive[w])
        rows.append(row)
    out.update({
        "baseline": idea,
        "rows": rows,
        "mae": {"predicted": mae(pred), "predicted_given_arrivals": mae(pred_actual), "seasonal_naive": mae(naive)},
    })
    if ivs is not None:
        out["coverage"] = {key: coverage(rows, key) for key in ("predicted", "predicted_given_arrivals")}
    out["mean_observed"] = round6(float(obs.mean()))
    out["method"] = dict(METHOD, **({"intervals": INTERVALS} if ivs is not None else {}))
    return out


def coverage(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    """How many of the weeks' observed conversions lie inside ``key``'s interval (ends included)."""
    inside = sum(r[f"{key}_interval"][0] <= r["observed"] <= r[f"{key}_interval"][1] for r in rows)
    return {"inside": int(inside), "weeks": len(rows)}


def _intervals(model: Model, draws: int, draw_stream: np.random.SeedSequence | None,
               stream: np.random.SeedSequence | None, arrivals, days: np.ndarray, future: np.ndarray,
               fitted: np.ndarray, actual: np.ndarray, weeks_of) -> dict[str, Any] | None:
    """The weekly 95 % intervals of both predictions (None without draws or without the model's counts)."""
    from sim.uncertainty import has_evidence, parameter_draws

    if draws <= 0 or not has_evidence(model):
        return None
    if draw_stream is None or stream is None:
        raise ValueError("draws need draw_stream and stream")
    drawn = parameter_draws(model, draws, draw_stream)
    # as sim.forecast.build: child 0 the arrival paths, child 1 the outcome noise
    seeds = stream.spawn(2)
    paths = np.broadcast_to(fitted, (draws, days.size)).copy()
    out: dict[str, Any] = {}
    if future.any():
        paths[:, future] = arrivals.paths(days[future], np.random.default_rng(seeds[0]), draws)
    noise = np.random.default_rng(seeds[1])
    for key, a in (("predicted", paths), ("predicted_given_arrivals", np.broadcast_to(actual, paths.shape))):
        expect = weeks_of(project(drawn, None, np.ascontiguousarray(a), None, np.zeros(days.size)).conversions)
        out[key] = interval(noise.poisson(np.maximum(expect, 0.0)))
    return out

