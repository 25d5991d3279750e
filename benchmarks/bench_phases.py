"""Phase-type fit speed: `estimate_stats(st, dwell="phases")` against `dwell="way_out"` on fixed statistics.

    python benchmarks/bench_phases.py [--bpi PATH] [--world] [--tests] [--repeat 3] [--cache DIR]
                                      [--save OUT.npz] [--compare REF.npz] [--profile]

Cases: ``--bpi PATH`` the BPI 2012 log (with scenarios/mappings/bpic2012_mapping.toml); ``--world``
a generated Erlang-4 world of ~2.5 M events (tests/worlds.py, 400 k customers); ``--tests`` the
20 k-customer worlds of tests/test_phases.py (Erlang-4, lognormal), each also with the window
censoring rule (phases only, for the answers). The statistics are
built once per case (``stats_of(log, inactivity_days=30, phases=True)``; kept in ``--cache`` as a
pickle when given), then each dwell model is timed ``--repeat`` times (median reported).
``--save`` writes every array of the phases model (model arrays and counts) to an .npz; ``--compare``
prints the largest absolute difference per array against such a file (another branch's answers).
"""
from __future__ import annotations

import argparse
import cProfile
import pickle
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from calibration.estimate import estimate_stats, stats_of  # noqa: E402
from calibration.load import load_events  # noqa: E402

MAPPING = ROOT / "scenarios" / "mappings" / "bpic2012_mapping.toml"
FIELDS = ("persona_share", "share", "advance", "drop", "lapse", "rate", "leave_speed", "phases")


def world_log(folder: Path, name: str, customers: int, lognormal: bool = False):
    """A test world's log, written to CSV and read back as a user's log is (tests/test_phases.py's worlds)."""
    from worlds import make_world, simulate_log, with_leave_speeds, with_phases

    if lognormal:
        world, kw = with_leave_speeds(make_world(303), seed=303), {"lognormal_sigma": 0.6}
    else:
        world, kw = with_phases(with_leave_speeds(make_world(302), seed=302), 4), {}
    path = folder / f"{name}-events.csv"
    simulate_log(world, customers, seed=412, arrival_days=180.0, observe_days=180.0, **kw).events.to_csv(
        path, index=False)
    return load_events(path)


def stats_for(name: str, make, cache: Path | None):
    """The case's statistics, from the cache when there."""
    file = cache / f"{name}.stats.pkl" if cache else None
    if file is not None and file.exists():
        return pickle.loads(file.read_bytes())
    st = stats_of(make(), inactivity_days=30.0, phases=True)
    if file is not None:
        file.write_bytes(pickle.dumps(st))
    return st


def arrays(model) -> dict[str, np.ndarray]:
    """Every numeric array of a model: its fields and its counts."""
    out = {f: np.asarray(getattr(model, f), dtype=float) for f in FIELDS if getattr(model, f) is not None}
    out.update({f"counts.{k}": np.asarray(v, dtype=float) for k, v in model.counts.items()})
    chosen = model.estimator.get("dwell_phases", {})
    out["chosen"] = np.array([chosen[k] for k in sorted(chosen)], dtype=float)
    return out


def timed(st, repeat: int, **options):
    """(median seconds, each run's seconds, the model) of `estimate_stats` with these options."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        model = estimate_stats(st, inactivity_days=30.0, **options)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, model


def compare(name: str, got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    """The largest absolute difference per array (shape changes and missing arrays said as such)."""
    for key in sorted(set(got) | set(ref)):
        if key not in got or key not in ref:
            print(f"  {name} {key}: only in {'reference' if key in ref else 'this run'}")
        elif got[key].shape != ref[key].shape:
            print(f"  {name} {key}: shape {got[key].shape} vs {ref[key].shape}")
        else:
            diff = float(np.abs(got[key] - ref[key]).max(initial=0.0))
            print(f"  {name} {key}: max |diff| {diff:.3g}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bpi", help="the BPI 2012 events (bpic2012_events.csv.gz)")
    ap.add_argument("--world", action="store_true", help="the generated Erlang-4 world (~2.5 M events)")
    ap.add_argument("--tests", action="store_true", help="the 20 k-customer worlds of tests/test_phases.py")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", help="folder keeping each case's statistics between runs")
    ap.add_argument("--save", help="write the phases models' arrays to this .npz")
    ap.add_argument("--compare", help="an .npz from --save to diff against")
    ap.add_argument("--profile", action="store_true", help="cProfile one phases fit per case")
    args = ap.parse_args()
    cache = Path(args.cache) if args.cache else None
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp())
    cases = []  # (name, the log, timed against way_out)
    if args.bpi:
        cases.append(("bpi", lambda: load_events(args.bpi, mapping=str(MAPPING)), True))
    if args.world:
        cases.append(("erlang4", lambda: world_log(folder, "erlang4", 400_000), True))
    if args.tests:
        cases.append(("test_erlang", lambda: world_log(folder, "test_erlang", 20_000), False))
        cases.append(("test_lognormal", lambda: world_log(folder, "test_lognormal", 20_000, True), False))
    saved: dict[str, np.ndarray] = {}
    ref = dict(np.load(args.compare)) if args.compare else None
    for name, make, full in cases:
        t0 = time.perf_counter()
        st = stats_for(name, make, cache)
        print(f"{name}: statistics in {time.perf_counter() - t0:.2f} s")
        runs = [("way_out", {"dwell": "way_out"})] if full else []
        runs += [("phases", {"dwell": "phases"})]
        runs += [] if full else [("phases+window", {"dwell": "phases", "censoring": "window"})]
        for label, options in runs:
            med, times, model = timed(st, args.repeat if full else 1, **options)
            print(f"  {label:14s} median {med:.3f} s  ({', '.join(f'{t:.3f}' for t in times)})")
            if options["dwell"] != "phases":
                continue
            got = {f"{name}:{label}/{k}": v for k, v in arrays(model).items()}
            saved.update(got)
            if ref is not None:
                compare(f"{name}:{label}", got, {k: v for k, v in ref.items() if k.startswith(f"{name}:{label}/")})
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(estimate_stats, st, inactivity_days=30.0, dwell="phases")
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    if args.save:
        np.savez(args.save, **saved)


if __name__ == "__main__":
    main()
