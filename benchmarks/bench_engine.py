"""Engine benchmark: the project's fast engine against two baselines, on the same W1-like model, in one run.

    python benchmarks/bench_engine.py            # full: 10 M fast, 20 k naive SimPy, 1 M numpy loop
    python benchmarks/bench_engine.py --quick    # smaller sizes, fewer repeats (about 30 s)

Prints customers/s of
  (a) the fast engine (sim/engines/fast.py: each stage's outcome, time and tries drawn directly),
  (b) a naive baseline: one SimPy process per customer, one Python draw per decision,
  (c) a plain numpy cohort loop: interaction by interaction, vectorised over the active customers,
  (d) the project's SimPy engine (sim/engines/agents.py, for capacity), for reference,
then the ratios fast / naive SimPy (target >= 100) and fast / numpy loop (target >= 1), and the
whole-process wall time and peak memory of `journey simulate MODEL --customers 10000000` (target
< 5 s and < 1 GB). Each timing is repeated: best, median and spread are shown, with the load
average, because other processes on a small machine add noise.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from pathlib import Path

import numpy as np
import simpy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.engines import agents, fast  # noqa: E402
from sim.exact import evaluate  # noqa: E402
from sim.model import Model  # noqa: E402
from tests.worlds import make_world  # noqa: E402


# ---- (b) naive SimPy: the textbook way ------------------------------------------------------------
def naive_simpy(model: Model, n: int, seed: int) -> float:
    """One SimPy process per customer, Python's random for every draw; returns the conversion rate."""
    rnd = random.Random(seed)
    P, S, T = model.n_personas, model.n_stages, model.n_touchpoints
    persona_cum = np.cumsum(model.persona_share).tolist()
    tp_cum = np.cumsum(model.share, axis=-1).tolist()
    out_cum = [[[np.cumsum([model.drop[p, s, t], *model.advance[p, s, t, s + 1:]]).tolist() for t in range(T)]
                for s in range(S)] for p in range(P)]
    rate, lapse = model.rate.tolist(), model.lapse.tolist()
    conv, final = model.conversion_index, S - 1
    interactions = [0] * (P * S * T)
    converted = [0]
    env = simpy.Environment()

    def customer(p: int):
        s = 0
        while True:
            t = min(bisect_right(tp_cum[p][s], rnd.random()), T - 1)
            interactions[(p * S + s) * T + t] += 1
            out = out_cum[p][s][t]
            k = bisect_right(out, rnd.random())
            if k == 0:
                return
            if k < len(out):
                if s < conv <= s + k:
                    converted[0] += 1
                s += k
                if s == final or rnd.random() < lapse[p][s]:
                    return
            yield env.timeout(rnd.expovariate(rate[p][s]))

    def source():
        for _ in range(n):
            yield env.timeout(rnd.expovariate(n / model.arrival_days))
            env.process(customer(min(bisect_right(persona_cum, rnd.random()), P - 1)))

    env.process(source())
    env.run()
    return converted[0] / n


# ---- (c) a plain numpy cohort loop --------------------------------------------------------------
def numpy_loop(model: Model, n: int, seed: int) -> float:
    """Interaction by interaction, vectorised over the customers still active; same aggregates as fast."""
    rng = np.random.default_rng(seed)
    P, S, T = model.n_personas, model.n_stages, model.n_touchpoints
    conv, final = model.conversion_index, S - 1
    persona = np.minimum(np.searchsorted(np.cumsum(model.persona_share), rng.random(n), side="right"), P - 1)
    arrive = rng.random(n) * model.arrival_days
    clock = arrive.copy()
    tp_cum = np.cumsum(model.share, axis=-1)
    out_cum = np.cumsum(np.concatenate([model.drop[..., None], model.advance], axis=-1), axis=-1)
    gap = np.where(model.rate > 0, 1.0 / np.maximum(model.rate, 1e-300), 0.0)
    stage = np.zeros(n, dtype=np.int64)
    interactions = np.zeros(P * S * T, dtype=np.int64)
    drop_offs = np.zeros(P * S * T, dtype=np.int64)
    conv_time = []
    idx = np.arange(n)
    while idx.size:
        p, s = persona[idx], stage[idx]
        t = np.minimum((rng.random(idx.size)[:, None] >= tp_cum[p, s]).sum(axis=1), T - 1)
        cell = (p * S + s) * T + t
        interactions += np.bincount(cell, minlength=P * S * T)
        k = (rng.random(idx.size)[:, None] >= out_cum[p, s, t]).sum(axis=1)
        drop = k == 0
        drop_offs += np.bincount(cell[drop], minlength=P * S * T)
        moved = (k >= 1) & (k <= S)
        new = np.where(moved, k - 1, s)
        crossed = moved & (s < conv) & (new >= conv)
        conv_time.append(clock[idx[crossed]])
        stage[idx] = new
        lapsed = moved & (new < final)
        lapsed[lapsed] = rng.random(int(lapsed.sum())) < model.lapse[p[lapsed], new[lapsed]]
        idx = idx[~(drop | lapsed | (new == final))]
        clock[idx] += rng.standard_exponential(idx.size) * gap[persona[idx], stage[idx]]
    # the same aggregates as the fast engine: reach per persona and stage, weekly series
    at_highest = np.bincount(persona * S + stage, minlength=P * S).reshape(P, S)
    reached = np.cumsum(at_highest[:, ::-1], axis=1)[:, ::-1]
    np.bincount((np.concatenate(conv_time) / 7).astype(np.int64))
    np.bincount((arrive / 7).astype(np.int64))
    return float(reached[:, conv].sum() / n)


# ---- timing ----------------------------------------------------------------------------------
def timed(fn) -> tuple[float, float, object]:
    """Wall and CPU seconds of one call, and its result."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def describe(times: list[float]) -> str:
    best, med = min(times), statistics.median(times)
    spread = (max(times) - best) / best * 100
    return f"best {best:7.3f} s  median {med:7.3f} s  spread +{spread:4.0f}% ({len(times)} runs)"


# Run by a fresh, small interpreter: a child forked from this (big) process would report this
# process's memory as its own peak RSS; the launcher's children start small.
_LAUNCHER = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.perf_counter() - t0
if proc.returncode:
    sys.exit(proc.stderr.decode(errors="replace"))
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def whole_process(model_path: Path, customers: int, repeats: int) -> tuple[list[float], list[int]]:
    """Wall time and peak RSS (bytes) of `journey simulate` as a fresh process, per run."""
    journey = shutil.which("journey")
    head = [journey] if journey else [sys.executable, "-m", "cli"]
    walls, peaks = [], []
    for i in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [*head, "simulate", str(model_path), "--customers", str(customers),
                   "--seed", "1", "--quiet", "--out", str(Path(tmp) / f"run{i}")]
            out = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], cwd=ROOT, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"journey simulate failed: {out.stderr}")
            wall, maxrss_kb = out.stdout.split()
            walls.append(float(wall))
            peaks.append(int(maxrss_kb) * 1024)  # Linux reports kilobytes
    return walls, peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    ap.add_argument("--seed", type=int, default=0, help="world seed for tests/worlds.make_world")
    args = ap.parse_args()
    quick = args.quick
    n_fast = 2_000_000 if quick else 10_000_000
    n_naive = 5_000 if quick else 20_000
    n_loop = 200_000 if quick else 1_000_000
    n_agents = 5_000 if quick else 20_000
    n_proc = 10_000_000
    repeats = 3 if quick else 5  # rounds

    model = make_world(args.seed)
    exact = evaluate(model)
    per_customer = float(exact.persona_share @ exact.interactions.sum(axis=(1, 2)))
    print(f"model: tests/worlds.make_world({args.seed}): {model.n_stages} stages, {model.n_touchpoints} touchpoints, "
          f"{model.n_personas} personas, {per_customer:.2f} interactions per customer, "
          f"expected conversion {exact.conversion_rate:.4f}")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, numpy {np.__version__}, "
          f"simpy {simpy.__version__}; load average before: {os.getloadavg()[0]:.2f}")
    print()

    fast.run(model, 100_000, 1)  # warm caches and lazy imports
    naive_simpy(model, 1_000, 1)
    # Rounds interleave the engines, so that load from other processes hits them alike.
    cases = {
        "fast engine": (n_fast, lambda: fast.run(model, n_fast, 1).conversion_rate),
        "naive SimPy (1 process/customer)": (n_naive, lambda: naive_simpy(model, n_naive, 1)),
        "numpy cohort loop": (n_loop, lambda: numpy_loop(model, n_loop, 1)),
        "project SimPy engine (agents.py)": (n_agents, lambda: agents.run(model, n_agents, 1).conversion_rate),
    }
    walls: dict[str, list[float]] = {name: [] for name in cases}
    cpus: dict[str, list[float]] = {name: [] for name in cases}
    conv: dict[str, float] = {}
    for _ in range(repeats):
        for name, (_, fn) in cases.items():
            w, c, conv[name] = timed(fn)
            walls[name].append(w)
            cpus[name].append(c)

    print(f"{'engine':36s} {'customers':>11s} {'customers/s':>13s}  wall time{'':33s} {'CPU best':>9s}  conversion")
    for name, (n, _) in cases.items():
        print(f"{name:36s} {n:11,d} {n / min(walls[name]):13,.0f}  {describe(walls[name])} "
              f"{min(cpus[name]):8.3f}s  {conv[name]:.4f}")
    print()

    def ratio(a: str, b: str) -> tuple[float, str]:
        na, nb = cases[a][0], cases[b][0]
        per_round = [(na / wa) / (nb / wb) for wa, wb in zip(walls[a], walls[b])]
        best = (na / min(walls[a])) / (nb / min(walls[b]))
        by_cpu = (na / min(cpus[a])) / (nb / min(cpus[b]))
        return best, (f"{best:7,.0f}x  (per round {min(per_round):,.0f}x .. {max(per_round):,.0f}x; "
                      f"by CPU time {by_cpu:,.0f}x)")

    r_naive, text = ratio("fast engine", "naive SimPy (1 process/customer)")
    print(f"fast / naive SimPy : {text}   target >= 100x")
    r_loop, text = ratio("fast engine", "numpy cohort loop")
    print(f"fast / numpy loop  : {text}   target >= 1x")
    print()

    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "w1.json"
        model_path.write_text(model.to_json())
        proc_walls, peaks = whole_process(model_path, n_proc, 3)
        start_walls, start_peaks = whole_process(model_path, 1, 3)
    print(f"journey simulate --customers {n_proc:,d} (whole process): {describe(proc_walls)}; "
          f"peak RSS {max(peaks) / 2**20:.0f} MiB   target < 5 s, < 1 GiB")
    print(f"journey simulate --customers 1 (start-up and fixed costs):  {describe(start_walls)}; "
          f"peak RSS {max(start_peaks) / 2**20:.0f} MiB")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    ok = r_naive >= 100 and r_loop >= 1 and min(proc_walls) < 5 and max(peaks) < 2**30
    print("targets:", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
