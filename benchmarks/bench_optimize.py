"""Optimizer benchmark: storage speed, wall time of 200 persisted trials, regret against SLSQP.

    python benchmarks/bench_optimize.py            # full (about 2-4 minutes on 2 cores)
    python benchmarks/bench_optimize.py --quick    # fewer seeds and problems

Prints
  (a) trials/s of the same search (budget.toml, TPE, 200 trials, one process) per storage: in memory,
      the journal file `journey optimize` uses by default (one fsync per trial), Optuna's stock
      journal file backend (an fsync per write), SQLite file, and PostgreSQL when a server can be
      started here (binaries under /usr/lib/postgresql/*/bin; as root it runs as user postgres);
  (b) wall time of 200 persisted trials: the in-process study (default journal) and the whole
      `journey optimize budget.toml --trials 200` process (imports, search, simulation of the best
      split with 5 x 100 000 customers, files and figures); target < 5 s;
  (c) wall time of `journey optimize --workers 1` and `--workers 2` on one study (journal file, SQLite);
  (d) regret after 50, 100 and 200 trials: 1 - (best uplift found) / (uplift of the SLSQP optimum on
      the same exact evaluator, multi-start), over several seeds, on budget.toml and on random
      investment problems over known-truth worlds; target within 1 % after 200.
Timings repeat (best and median shown) with the load average: other processes on a small machine
add noise.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from application.context import RunContext  # noqa: E402
from sim.model import Model  # noqa: E402
from sim.optimize import (  # noqa: E402
    Objective,
    Slots,
    SpendSpace,
    StorageSpec,
    make_sampler,
    open_storage,
    run_trials,
)
from sim.scenario import Budget, Investment, Scenario, load_scenario  # noqa: E402
from tests.pgserver import PostgresUnavailable, temporary_postgres  # noqa: E402
from tests.reference_optimizer import reference_optimum  # noqa: E402
from tests.worlds import make_world  # noqa: E402

BUDGET_TOML = ROOT / "scenarios" / "examples" / "budget.toml"
CHECKPOINTS = (50, 100, 200)
optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---- (a) storages ------------------------------------------------------------------------------
@contextmanager
def postgres_server():
    """Yield a URL of a throwaway local PostgreSQL server, or None when one cannot be started."""
    server = temporary_postgres("bench")
    try:
        url = server.__enter__()
    except (PostgresUnavailable, RuntimeError) as exc:
        print(f"PostgreSQL: {exc}")
        yield None
        return
    try:
        yield url.replace("postgresql://", "postgresql+psycopg2://")  # plain RDBStorage, no journey fallback
    finally:
        server.__exit__(None, None, None)


def timed_study(opened, objective: Objective, space: SpendSpace, trials: int, name: str) -> float:
    """Seconds for ``trials`` persisted trials on one opened storage."""
    storage, sync = opened
    start = time.perf_counter()
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                sampler=make_sampler(RunContext(1)))
    study.enqueue_trial(space.even_params())
    run_trials(study, space, objective, target=trials, slots=Slots(trials), sync=sync)
    return time.perf_counter() - start


def file_storages(tmp: Path):
    """(label, factory) pairs; each factory returns a fresh (storage, sync after each trial or None)."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    counter = iter(range(10_000))

    def journal_default():
        store = open_storage(StorageSpec("journal", str(tmp / f"j{next(counter)}.log"), "bench"))
        return store.storage, store.sync  # one fsync per trial, as `journey optimize` does

    def stock_journal():
        return JournalStorage(JournalFileBackend(str(tmp / f"s{next(counter)}.log"))), None

    return [("in memory", lambda: (None, None)),
            ("journal file (default)", journal_default),
            ("journal file (Optuna stock)", stock_journal),
            ("SQLite file", lambda: (optuna.storages.RDBStorage(f"sqlite:///{tmp}/q{next(counter)}.db"), None))]


def bench_storages(trials: int, repeats: int) -> list[tuple[str, int, list[float]]]:
    """(a) per-trial cost of each storage."""
    sc = load_scenario(BUDGET_TOML)
    space, objective = SpendSpace.from_scenario(sc), Objective(Model.load(sc.model_path), sc)
    tmp = Path(tempfile.mkdtemp(prefix="bench-opt-"))
    rows = []

    def measure(label, factory, n):
        times = [timed_study(factory(), objective, space, n, f"b{k}") / n for k in range(repeats)]
        rows.append((label, n, times))

    try:
        for label, factory in file_storages(tmp):
            measure(label, factory, trials if label != "SQLite file" else min(trials, 100))  # SQLite is slow
        # the server last: its start writes a lot, which slows every fsync for a while
        with postgres_server() as pg_url:
            if pg_url is None:
                print("PostgreSQL: no server could be started here; its row is left out")
            else:
                measure("PostgreSQL (local server)", lambda: (optuna.storages.RDBStorage(pg_url), None), trials)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


# ---- (b) wall time of 200 persisted trials -----------------------------------------------------
def bench_wall(repeats: int) -> tuple[list[float], list[float]]:
    """(b) wall time of 200 persisted trials: in process and as a whole `journey optimize` process."""
    sc = load_scenario(BUDGET_TOML)
    space, objective = SpendSpace.from_scenario(sc), Objective(Model.load(sc.model_path), sc)
    tmp = Path(tempfile.mkdtemp(prefix="bench-wall-"))
    inproc, whole = [], []
    try:
        for k in range(repeats):
            store = open_storage(StorageSpec("journal", str(tmp / f"in{k}.log"), "bench"))
            start = time.perf_counter()
            study = optuna.create_study(storage=store.storage, study_name="w", direction="maximize",
                                        sampler=make_sampler(RunContext(1)))
            study.enqueue_trial(space.even_params())
            run_trials(study, space, objective, target=200, slots=Slots(200), sync=store.sync)
            inproc.append(time.perf_counter() - start)
            start = time.perf_counter()
            subprocess.run(["journey", "optimize", str(BUDGET_TOML), "--trials", "200", "--seed", "1",
                            "--customers", "100000", "--out", str(tmp / f"run{k}"), "-q"], check=True,
                           capture_output=True, cwd=ROOT)
            whole.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return inproc, whole


# ---- (c) worker processes ---------------------------------------------------------------------
def bench_workers(trials: int) -> list[tuple[str, int, float]]:
    """Whole-process wall time of `journey optimize --workers K` on one study, per storage."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    rows = []
    try:
        for label, storage in (("journal file (default)", None), ("SQLite file", "study.db")):
            for k in (1, 2):
                out = tmp / f"{k}-{label[:4]}"
                cmd = ["journey", "optimize", str(BUDGET_TOML), "--trials", str(trials), "--seed", "1",
                       "--customers", "10000", "--workers", str(k), "--out", str(out), "-q"]
                if storage is not None:
                    cmd += ["--storage", str(tmp / f"{k}-{storage}")]
                start = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
                rows.append((label, k, time.perf_counter() - start))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


# ---- (d) regret --------------------------------------------------------------------------------
def random_problem(seed: int) -> tuple[Model, Scenario]:
    """A known-truth world with 3-6 random levers (some may hurt) and a budget that binds."""
    rng = np.random.default_rng(seed)
    model = make_world(seed)
    invs = []
    for i in range(int(rng.integers(3, 7))):
        lever = str(rng.choice(["drop_off", "advance", "exposure"]))
        invs.append(Investment(name=f"lever{i}", touchpoint=str(rng.choice(model.touchpoints)), lever=lever,
                               max_effect=float(rng.uniform(0.2, 0.8 if lever == "drop_off" else 1.0)),
                               half_saturation=float(rng.uniform(10, 80)), min_spend=float(rng.choice([0, 0, 10])),
                               max_spend=float(rng.uniform(50, 200))))
    total = float(sum(i.max_spend for i in invs) * rng.uniform(0.2, 0.8))
    return model, Scenario(model="truth", investment=invs, budget=Budget(total=total))


def regret_curve(model: Model, sc: Scenario, seeds: int) -> tuple[np.ndarray, float]:
    """Each seed's regret at each checkpoint against the reference optimum, and that optimum's uplift."""
    space, objective = SpendSpace.from_scenario(sc), Objective(model, sc)
    base = objective.baseline
    runs = []
    for seed in range(seeds):
        study = optuna.create_study(direction="maximize", sampler=make_sampler(RunContext(seed)))
        study.enqueue_trial(space.even_params())
        run_trials(study, space, objective, target=max(CHECKPOINTS), slots=Slots(max(CHECKPOINTS)))
        runs.append(np.maximum.accumulate([t.value for t in study.trials]))
    found = max(r[-1] for r in runs)
    best_spends = max(study.trials, key=lambda t: t.value).user_attrs["spends"]
    opt, _ = reference_optimum(objective, space, starts=8, extra_starts=[best_spends])
    opt = max(opt, found)  # SLSQP is a local method: never report negative regret
    regret = np.array([[1 - (r[c - 1] - base) / (opt - base) for c in CHECKPOINTS] for r in runs])
    return regret, opt - base


def main() -> None:
    """Run the benchmarks and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    repeats = 2 if args.quick else 3
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; optuna {optuna.__version__}")

    print("\n(a) trials per second, 200-trial TPE study on budget.toml (4 levers), one process")
    print(f"{'storage':32s} {'trials':>6s} {'best ms/trial':>14s} {'median':>8s} {'trials/s':>9s}")
    for label, n, per in bench_storages(200, repeats):
        print(f"{label:32s} {n:6d} {1e3 * min(per):14.1f} {1e3 * statistics.median(per):8.1f} {1 / min(per):9.0f}")

    print("\n(b) wall time of 200 persisted trials (default journal file), target < 5 s")
    inproc, whole = bench_wall(repeats)
    print(f"{'in-process study':32s} best {min(inproc):5.2f} s  median {statistics.median(inproc):5.2f} s")
    print(f"{'whole journey optimize process':32s} best {min(whole):5.2f} s  median {statistics.median(whole):5.2f} s")

    trials = 200 if args.quick else 400
    print(f"\n(c) worker processes: whole `journey optimize --trials {trials}` process, one study")
    for label, k, wall in bench_workers(trials):
        print(f"{label:32s} --workers {k}: {wall:6.2f} s")

    print("\n(d) regret against the SLSQP optimum: 1 - uplift found / best uplift (mean and worst over seeds)")
    seeds = 3 if args.quick else 5
    problems = [("budget.toml", *(lambda s: (Model.load(s.model_path), s))(load_scenario(BUDGET_TOML)))]
    problems += [(f"world {s}", *random_problem(s)) for s in (range(100, 103) if args.quick else range(100, 108))]
    head = " ".join(f"{f'after {c}':>17s}" for c in CHECKPOINTS)
    print(f"{'problem':14s} {'levers':>6s} {'opt uplift':>10s} {head}")
    worst = np.zeros(len(CHECKPOINTS))
    for label, model, sc in problems:
        regret, up = regret_curve(model, sc, seeds)
        worst = np.maximum(worst, regret.max(axis=0))
        cells = " ".join(f"{100 * regret[:, j].mean():7.2f}% ({100 * regret[:, j].max():5.2f}%)"
                         for j in range(len(CHECKPOINTS)))
        print(f"{label:14s} {len(sc.investment):6d} {100 * up:9.2f}p {cells}")
    print("worst over all problems and seeds: " + ", ".join(f"after {c}: {100 * w:.2f}%"
                                                          for c, w in zip(CHECKPOINTS, worst)))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
