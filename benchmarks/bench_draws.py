"""What the calibration's uncertainty costs `compare`: 200 parameter draws for base + 3 scenarios.

    python benchmarks/bench_draws.py [--draws 200] [--customers 100000] [--rounds 5]

Times `compare_targets` on the bundled demo model with the three demo scenarios, with --draws 0
and with --draws N, in alternating rounds, and prints the added seconds (median and spread).
Also with a 30-day horizon, where every draw needs a matrix exponential per persona.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from application.context import RunContext  # noqa: E402
from sim.compare import compare_targets  # noqa: E402
from sim.simulate import load_target  # noqa: E402
from sim.uncertainty import evaluate_draws, parameter_draws, scenario_draws  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    base = load_target(ROOT / "scenarios/demo/model.json")
    scenarios = [load_target(ROOT / "scenarios/examples" / f, on=base)
                 for f in ("checkout_fix.toml", "double_email.toml", "drop_ads.toml")]
    added = []
    for _ in range(args.rounds):
        times = {}
        for draws in (0, args.draws):
            t = time.perf_counter()
            compare_targets(base, scenarios, customers=args.customers, streams=RunContext(1), draws=draws)
            times[draws] = time.perf_counter() - t
        added.append(times[args.draws] - times[0])
    print(f"compare, demo model, base + 3 scenarios, {args.customers:,} customers: {args.draws} draws add "
          f"{statistics.median(added):.2f} s (median of {args.rounds}; min {min(added):.2f}, max {max(added):.2f})")
    for horizon in (None, 30.0):
        t = time.perf_counter()
        models = parameter_draws(base.base_model, args.draws, RunContext(1).stream("draws"))
        for target in [base, *scenarios]:
            evaluate_draws(scenario_draws(models, target.scenario), horizon)
        label = "no horizon" if horizon is None else f"{horizon:g}-day horizon"
        print(f"  draws and exact evaluations alone, {label}: {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
