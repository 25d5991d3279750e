"""Replications here and on a Dask cluster: wall time of `journey simulate` with --jobs 1, --jobs N and
--scheduler local --workers N, in one run, and whether every way writes the same summary.json.

    python benchmarks/bench_replications.py [--customers 2000000] [--replications 8] [--workers 2]

Each way is a fresh process (the cluster's start-up included); the model is the demo's.
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "scenarios" / "demo" / "model.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=2_000_000)
    ap.add_argument("--replications", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="journey-bench-reps-"))
    ways = {"--jobs 1": [], f"--jobs {args.workers}": ["--jobs", str(args.workers)],
            f"--scheduler local --workers {args.workers}": ["--scheduler", "local", "--workers", str(args.workers)]}
    rows, first = [], None
    for i, (name, extra) in enumerate(ways.items()):
        run = out / f"run-{i}"
        cmd = ["journey", "simulate", str(MODEL), "--customers", str(args.customers), "--replications",
               str(args.replications), "--seed", "1", "--draws", "0", "--quiet", "--out", str(run), *extra]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        summary = (run / "summary.json").read_bytes()
        first = summary if first is None else first
        rows.append((name, wall, summary == first))
    n = args.customers * args.replications
    print(f"| way | wall s | M customers/s | same summary.json |  ({args.replications} x {args.customers:,})")
    print("|---|---:|---:|---|")
    for name, wall, same in rows:
        print(f"| {name} | {wall:.1f} | {n / wall / 1e6:.2f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
