"""Persona discovery speed and memory: plain `journey calibrate` against `--personas auto` (streamed, and
with `--reader memory`) on a 1 M-event log, or on a log given.

    python benchmarks/bench_personas.py [--rows 1000000] [--keep] [--repeats 2]
    python benchmarks/bench_personas.py --log FOLDER --memory-log ONE.parquet --repeats 1
    python benchmarks/bench_personas.py --dask 1,2   # and on a local Dask cluster of 1 and 2 workers

Generates a known-truth log with tests/worlds.py (make_world(3), three personas) and writes it
without its persona column (or takes ``--log``), then runs each calibration as a fresh process and
prints seconds and peak RSS of the process (benchmarks/bench_scale.py's sampler), the ratio, the K
table, the discovered shares against the truth, and whether every path gave the same model. Peak RSS
counts the whole process tree (a local cluster's workers too). ``--dask`` reads Parquet: a CSV log is
written as Parquet beside it first.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_scale import measure  # noqa: E402

from worlds import make_world, simulate_log  # noqa: E402


def make_log(path: Path, rows: int) -> list[float]:
    world = make_world(3)
    events = simulate_log(world, int(rows / 6.4), seed=5, arrival_days=365.0).events
    events.drop(columns="persona").to_csv(path, index=False)
    return sorted(world.persona_share.tolist(), reverse=True)


def timed(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one `journey` run as a fresh process."""
    wall, peak, code = measure([sys.executable, "-c", "import sys; sys.argv[0] = 'journey'; from cli import app; app()",
                                *args], env={**os.environ, "PYTHONPATH": str(ROOT)})
    if code:
        raise SystemExit(f"journey {' '.join(args)} failed ({code})")
    return wall, peak


def _content(path: Path) -> dict:
    data = json.loads(path.read_text())
    data.pop("provenance", None)
    data["log"] = {k: v for k, v in data["log"].items() if k not in ("source", "sha256")}
    return data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", action="store_true", help="keep and reuse the generated log in /tmp")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--log", type=Path, help="an existing log without a persona column (a file or Parquet folder)")
    ap.add_argument("--memory-log", type=Path, help="the same rows as one file, for --reader memory (default --log)")
    ap.add_argument("--dask", default="", help="workers of --scheduler local runs, e.g. 1,2 (none by default)")
    args = ap.parse_args()
    folder = Path(tempfile.gettempdir()) / "journey-bench" if args.keep or args.log else Path(tempfile.mkdtemp())
    folder.mkdir(exist_ok=True)
    truth = None
    if args.log is not None:
        log = args.log
    else:
        log = folder / f"events-nopersona-{args.rows}.csv"
        truth = make_log(log, args.rows) if not (args.keep and log.exists()) else None
    whole = args.memory_log or log
    runs = {
        "plain calibrate": ["calibrate", str(log), "--out", str(folder / "plain.json")],
        "--personas auto (stream)": ["calibrate", str(log), "--out", str(folder / "auto.json"), "--personas", "auto"],
        "--personas auto --reader memory": ["calibrate", str(whole), "--out", str(folder / "auto-memory.json"),
                                            "--personas", "auto", "--reader", "memory"],
    }
    if whole.is_dir():
        del runs["--personas auto --reader memory"]  # the in-memory reader takes one file
    parquet = log
    dask_workers = [int(x) for x in args.dask.split(",") if x]
    if dask_workers and log.is_file() and log.suffix != ".parquet":
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        parquet = log.with_suffix(".parquet")
        if not parquet.exists():
            pq.write_table(pacsv.read_csv(log), parquet)
    for n in dask_workers:
        runs[f"--personas auto, Dask {n} worker{'s' if n > 1 else ''}"] = [
            "calibrate", str(parquet), "--out", str(folder / f"auto-dask-{n}.json"), "--personas", "auto",
            "--scheduler", "local", "--workers", str(n)]
    measured = {name: [timed(cmd) for _ in range(args.repeats)] for name, cmd in runs.items()}
    model = json.loads((folder / "auto.json").read_text())
    found = model["personas_discovered"]
    print(f"log: {model['log']['rows']:,} rows, {model['log']['customers']:,} customers ({log})")
    for r in found["table"]:
        print(f"  K={r['k']}: log-likelihood {r['log_likelihood']:,.1f}  BIC {r['bic']:,.1f}")
    shares = [p["share"] for p in found["profiles"].values()]
    print(f"chosen K = {found['chosen_k']} ({found['criterion']}); shares {shares}"
          + (f", truth {[round(x, 4) for x in truth]}" if truth else ""))
    for name, got in measured.items():
        best = min(got)
        print(f"{name:34s} {best[0]:7.2f} s  peak {max(p for _, p in got):.2f} GB  "
              f"(runs {', '.join(f'{w:.2f}' for w, _ in got)})")
    plain, auto = min(measured["plain calibrate"])[0], min(measured["--personas auto (stream)"])[0]
    print(f"ratio --personas / plain (best of each): {auto / plain:.1f}x")
    if "--personas auto --reader memory" in measured:
        same = _content(folder / "auto.json") == _content(folder / "auto-memory.json")
        print(f"stream and memory give the same model: {'yes' if same else 'NO'}")
    for n in dask_workers:
        same = _content(folder / "auto.json") == _content(folder / f"auto-dask-{n}.json")
        print(f"stream and Dask ({n}) give the same model: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
