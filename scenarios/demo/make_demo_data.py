"""Regenerate the bundled demo log from the project's seeded world generator.

Run from the repository root:  python scenarios/demo/make_demo_data.py
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from worlds import make_world, simulate_log  # noqa: E402

if __name__ == "__main__":
    world = make_world(seed=2024)
    journeys = simulate_log(world, 6000, seed=2025, arrival_days=180.0)
    out = Path(__file__).with_name("events.csv.gz")
    journeys.events.to_csv(out, index=False, compression={"method": "gzip", "mtime": 0})
    print(f"wrote {len(journeys.events)} rows to {out}")
