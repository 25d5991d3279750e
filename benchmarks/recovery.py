"""Calibration accuracy on worlds the tests never use: truth vs calibrated, via the real CLI.

    python benchmarks/recovery.py [--customers 40000] [--seeds 701 702 703]

For each seed: make a true world, simulate a censored 180-day log, `journey calibrate` it,
`journey simulate` the model, and print true vs expected vs simulated conversion (overall and per
persona) and whether the simulated CI holds the expected value.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from sim.exact import evaluate  # noqa: E402
from worlds import make_world, simulate_log  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=40_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[701, 702, 703])
    ap.add_argument("--mean-gap", type=float, default=None,
                    help="set every stage's mean gap between interactions (days), e.g. 16 for slow journeys")
    ap.add_argument("--censoring", default="cure", help="cure or window")
    args = ap.parse_args()
    print(f"{'seed':>5} {'truth':>7} {'expected':>8} {'error':>7} {'persona err max':>15} "
          f"{'simulated [95% CI]':>26} {'CI holds':>8}")
    for seed in args.seeds:
        world = make_world(seed)
        if args.mean_gap:
            world.rate[:, :-1] = 1.0 / args.mean_gap
        truth = evaluate(world)
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "events.csv"
            simulate_log(world, args.customers, seed=seed + 1, arrival_days=180.0).events.to_csv(log, index=False)
            model = Path(tmp) / "model.json"
            subprocess.run(["journey", "calibrate", str(log), "--out", str(model), "--censoring", args.censoring],
                           check=True, capture_output=True)
            out = Path(tmp) / "sim"
            subprocess.run(["journey", "simulate", str(model), "--customers", "1000000", "--seed", "1",
                            "--replications", "5", "--out", str(out)], check=True, capture_output=True)
            s = json.loads((out / "summary.json").read_text())
        exp = s["expected_conversion_rate"]
        per = max(abs(s["personas"][p]["expected_conversion_rate"] - truth.conversion_by_persona[i])
                  for i, p in enumerate(world.personas))
        lo, hi = s["conversion_rate_ci"]
        print(f"{seed:>5} {truth.conversion_rate:7.4f} {exp:8.4f} {exp - truth.conversion_rate:+7.4f} {per:15.4f} "
              f"{s['conversion_rate']:8.4f} [{lo:.4f}, {hi:.4f}] {str(lo <= exp <= hi):>8}")


if __name__ == "__main__":
    main()
