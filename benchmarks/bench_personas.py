"""Persona discovery speed: plain `journey calibrate` against `--personas auto` on a 1 M-event log.

    python benchmarks/bench_personas.py [--rows 1000000] [--keep] [--repeats 2]

Generates a known-truth log with tests/worlds.py (make_world(3), three personas) and writes it
without its persona column, then times both calibrations as fresh processes and prints seconds
and the ratio, with the K table and the discovered shares against the truth.
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

from worlds import make_world, simulate_log  # noqa: E402


def make_log(path: Path, rows: int) -> list[float]:
    world = make_world(3)
    events = simulate_log(world, int(rows / 6.4), seed=5, arrival_days=365.0).events
    events.drop(columns="persona").to_csv(path, index=False)
    return sorted(world.persona_share.tolist(), reverse=True)


def timed(args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'journey'; from cli import app; app()", *args],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", action="store_true", help="keep and reuse the generated log in /tmp")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    folder = Path(tempfile.gettempdir()) / "journey-bench" if args.keep else Path(tempfile.mkdtemp())
    folder.mkdir(exist_ok=True)
    log = folder / f"events-nopersona-{args.rows}.csv"
    truth = make_log(log, args.rows) if not (args.keep and log.exists()) else None
    plain = [timed(["calibrate", str(log), "--out", str(folder / "plain.json")]) for _ in range(args.repeats)]
    auto = [timed(["calibrate", str(log), "--out", str(folder / "auto.json"), "--personas", "auto"])
            for _ in range(args.repeats)]
    model = json.loads((folder / "auto.json").read_text())
    found = model["personas_discovered"]
    rows = sum(1 for _ in log.open()) - 1
    print(f"log: {rows:,} rows, {model['log']['customers']:,} customers ({log})")
    for r in found["table"]:
        print(f"  K={r['k']}: log-likelihood {r['log_likelihood']:,.1f}  BIC {r['bic']:,.1f}")
    shares = [p["share"] for p in found["profiles"].values()]
    print(f"chosen K = {found['chosen_k']} ({found['criterion']}); shares {shares}"
          + (f", truth {[round(x, 4) for x in truth]}" if truth else ""))
    print(f"plain calibrate:        {min(plain):.2f} s (runs {', '.join(f'{x:.2f}' for x in plain)})")
    print(f"--personas auto:        {min(auto):.2f} s (runs {', '.join(f'{x:.2f}' for x in auto)})")
    print(f"ratio (best of each):   {min(auto) / min(plain):.1f}x")


if __name__ == "__main__":
    main()
