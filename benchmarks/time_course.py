"""Time course on a real log: P(conversion within h days of arrival), model vs the log itself.

    python benchmarks/time_course.py LOG --mapping MAPPING [--dwell phases] [--days 7 14 30 60]

The model is calibrated on the whole log (as `journey calibrate LOG --mapping MAPPING`). For each
h, the log's own rate is over the customers observable h days (arrival at least h days before the
log's end): the share that reached the conversion stage within h days of arrival. The model's
answer is the exact one (sim.exact.evaluate with horizon_days=h) for the same cohort's persona mix.
Also prints the end rate (no horizon) of the model and the observed end rate of customers
observable 120 days.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration.estimate import estimate  # noqa: E402
from calibration.load import load_events  # noqa: E402
from sim.exact import evaluate  # noqa: E402


def observed(log, days: float) -> tuple[float, np.ndarray, int]:
    """(the log's rate within ``days``, the cohort's persona counts, cohort size) for customers observable that long."""
    cust = log.customer
    first = np.r_[True, cust[1:] != cust[:-1]]
    arrive = log.time[first]
    conv_row = log.stage >= log.conversion_index
    conv_time = np.full(arrive.size, np.inf)
    idx = np.flatnonzero(conv_row)
    np.minimum.at(conv_time, cust[idx], log.time[idx])
    cohort = arrive <= log.end - days
    hit = (conv_time - arrive <= days) & cohort
    personas = np.bincount(log.persona_of_customer[cohort], minlength=len(log.personas))
    return float(hit.sum() / max(cohort.sum(), 1)), personas, int(cohort.sum())


def main() -> None:
    """Print the table: days, cohort, log, model, model - log."""
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--mapping", default=None)
    ap.add_argument("--dwell", default=None, help="way_out, plain or phases (default: estimate's default)")
    ap.add_argument("--days", type=float, nargs="+", default=[7, 14, 30, 60])
    args = ap.parse_args()
    log = load_events(args.log, mapping=args.mapping)
    t0 = time.perf_counter()
    model = estimate(log) if args.dwell is None else estimate(log, dwell=args.dwell)
    fit_s = time.perf_counter() - t0
    print(f"dwell: {model.estimator['dwell'].split(':')[0]}  (estimate {fit_s:.1f} s)")
    print(f"{'days':>5} {'cohort':>7} {'log':>7} {'model':>7} {'diff':>7}")
    for h in args.days:
        rate, mix, n = observed(log, h)
        ex = evaluate(model, horizon_days=h)
        pred = float(mix @ ex.conversion_by_persona / mix.sum())
        print(f"{h:5.0f} {n:7d} {rate:7.2%} {pred:7.2%} {pred - rate:+7.2%}")
    rate, mix, n = observed(log, 120)
    end = float(mix @ evaluate(model).conversion_by_persona / mix.sum())
    print(f"  end   model {end:.2%} (no horizon); log within 120 days {rate:.2%} ({n} customers)")


if __name__ == "__main__":
    main()
