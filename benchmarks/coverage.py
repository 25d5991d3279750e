"""Coverage of the data intervals on known worlds: how often the 95 % interval holds the truth.

    python benchmarks/coverage.py [--world 720] [--samples 20] [--customers 40000] [--draws 200]

For one true world (tests/worlds.py), draws independent censored 180-day logs, calibrates each,
and computes the 95 % data intervals of the base conversion and of three what-ifs (drop-off,
exposure, removal) from the calibration's parameter draws. Prints coverage, mean width and the
z-scores' mean and spread (estimate - truth over the draws' sd: 0 and 1 when the intervals are honest).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from application.context import RunContext  # noqa: E402
from calibration.estimate import estimate  # noqa: E402
from calibration.load import load_events  # noqa: E402
from sim.exact import evaluate  # noqa: E402
from sim.scenario import Scenario, apply  # noqa: E402
from sim.uncertainty import Interval, parameter_draws  # noqa: E402
from worlds import make_world, simulate_log  # noqa: E402

CHANGES = {
    "base": None,
    "drop_off": {"touchpoint": "checkout", "stage": "consideration", "drop_off": 0.7},
    "exposure": {"touchpoint": "email", "exposure": 2.0},
    "removal": {"touchpoint": "ad", "remove": True},
}


def conversion(model, change):
    if change is not None:
        model = apply(model, Scenario.model_validate({"model": "m.json", "change": [change]}))
    return evaluate(model).conversion_rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=int, default=720)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--customers", type=int, default=40_000)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--first-seed", type=int, default=50_000)
    args = ap.parse_args()
    world = make_world(args.world)
    base_truth = conversion(world, None)
    truth = {k: conversion(world, c) - (0.0 if c is None else base_truth) for k, c in CHANGES.items()}
    hits = {k: 0 for k in CHANGES}
    widths = {k: [] for k in CHANGES}
    z = {k: [] for k in CHANGES}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.csv"
        for i in range(args.samples):
            simulate_log(world, args.customers, seed=args.first_seed + i, arrival_days=180.0,
                         observe_days=180.0).events.to_csv(path, index=False)
            model = estimate(load_events(path))
            models = parameter_draws(model, args.draws, RunContext(i).stream("draws"))
            base = np.array([conversion(m, None) for m in models])
            point_base = conversion(model, None)
            for name, change in CHANGES.items():
                values = base if change is None else np.array([conversion(m, change) for m in models]) - base
                point = point_base if change is None else conversion(model, change) - point_base
                lo, hi = Interval(values).bounds
                hits[name] += lo <= truth[name] <= hi
                widths[name].append(hi - lo)
                z[name].append((point - truth[name]) / max(values.std(ddof=1), 1e-300))
    print(f"world {args.world}, {args.samples} samples of {args.customers:,} customers, {args.draws} draws "
          f"({time.perf_counter() - started:.0f} s)")
    print(f"{'number':<10} {'truth':>9} {'coverage':>9} {'mean width':>11} {'z mean':>7} {'z sd':>6}")
    for name in CHANGES:
        print(f"{name:<10} {truth[name]:>+9.4f} {hits[name] / args.samples:>9.2f} {np.mean(widths[name]):>11.4f} "
              f"{np.mean(z[name]):>7.2f} {np.std(z[name]):>6.2f}")


if __name__ == "__main__":
    main()
