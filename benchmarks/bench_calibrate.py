"""Calibration speed: a 10 M-event CSV through a whole `journey calibrate` process.

    python benchmarks/bench_calibrate.py [--rows 10000000] [--keep]

Generates a known-truth log with tests/worlds.py (written once to a temporary folder, or reused
with --keep), then times `journey calibrate` as a fresh process (wall, CPU, peak memory) three
times, and checks the calibrated expected conversion against the truth.
Targets on the 2-core machine: under 15 s and under 4 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402

from sim.exact import evaluate  # noqa: E402
from worlds import make_world, simulate_log  # noqa: E402


def make_log(path: Path, rows: int) -> None:
    world = make_world(3)
    customers = int(rows / 6.4)  # this world averages ~6.4 logged interactions per customer
    events = simulate_log(world, customers, seed=5, arrival_days=365.0).events
    ts = pc.cast(pa.array(events["timestamp"].to_numpy(), type=pa.string()), pa.timestamp("us", "UTC"))
    table = pa.table({
        "customer_id": pa.array(events["customer_id"].str.slice(1).to_numpy()),
        "timestamp": pc.cast(pc.floor_temporal(ts, unit="millisecond"), pa.string()),
        "touchpoint": pa.array(events["touchpoint"].to_numpy()),
        "stage": pa.array(events["stage"].to_numpy()),
        "persona": pa.array(events["persona"].to_numpy()),
    })
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="none"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--keep", action="store_true", help="keep and reuse the generated log in /tmp")
    ap.add_argument("--make", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make:
        make_log(Path(args.make), args.rows)
        return
    folder = Path(tempfile.gettempdir()) / "journey-bench" if args.keep else Path(tempfile.mkdtemp())
    folder.mkdir(exist_ok=True)
    log = folder / f"events-{args.rows}.csv"
    if not log.exists():  # in a child process, so its memory does not count against calibrate's
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--make", str(log), "--rows", str(args.rows)], check=True)
        print(f"generated {log} in {time.perf_counter() - t:.1f} s")
    n_rows = sum(1 for _ in log.open("rb")) - 1
    print(f"log: {n_rows:,} rows, {log.stat().st_size / 1e6:.0f} MB")
    walls, cpus, peaks = [], [], []
    for i in range(3):
        out = folder / f"model-{i}.json"
        t = time.perf_counter()
        proc = subprocess.Popen(["journey", "calibrate", str(log), "--out", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU and peak memory
        walls.append(time.perf_counter() - t)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"journey calibrate failed on {log}")
        cpus.append(usage.ru_utime + usage.ru_stime)
        peaks.append(usage.ru_maxrss / 1024 / 1024)
    peak_gb = max(peaks)
    truth = evaluate(make_world(3)).conversion_rate
    model = json.loads(out.read_text())
    from sim.model import Model

    got = evaluate(Model.from_dict(model)).conversion_rate
    print(f"journey calibrate, whole process: best {min(walls):.2f} s, median {np.median(walls):.2f} s, "
          f"spread {max(walls) - min(walls):.2f} s; CPU {np.median(cpus):.2f} s; peak RSS {peak_gb:.2f} GB")
    print(f"throughput {n_rows / min(walls) / 1e6:.2f} M rows/s; target < 15 s and < 4 GB: "
          f"{'met' if max(walls) < 15 and peak_gb < 4 else 'NOT met'}")
    print(f"expected conversion: truth {truth:.4f}, calibrated {got:.4f}")


if __name__ == "__main__":
    main()
