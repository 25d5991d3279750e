"""Simulation of a model or scenario: targets loaded, replications run, the summary record built (nothing written)."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sim.engines.result import EngineResult
from sim.errors import InputError
from sim.exact import evaluate
from sim.limits import finite, run_size
from sim.model import Model
from sim.summary import Summary, add_data_intervals, no_evidence_note, summarize

ENGINES = ("auto", "fast", "simpy")


class Streams(Protocol):
    """A run's random streams by name, as application.context.RunContext gives them."""

    @property
    def seed(self) -> int:
        """The root seed, recorded in the outputs."""

    def stream(self, name: str) -> np.random.SeedSequence:
        """A fresh SeedSequence of the named stream."""

    def sampler_seed(self, offset: int = 0, worker: int = 0) -> int:
        """The optimizer's sampler seed for (trials already in the study, worker)."""


@dataclass
class Target:
    """What a MODEL_OR_SCENARIO argument resolves to: the model with the scenario applied."""

    model: Model
    base_model: Model
    model_path: Path
    scenario: Any | None = None  # sim.scenario.Scenario
    source: Path | None = None
    notes: list[str] = field(default_factory=list)  # lines for the user (a capped factor, another model)

    @property
    def name(self) -> str:
        """baseline, or the scenario's name."""
        if self.scenario is not None:
            return self.scenario.name
        return "baseline"

    @property
    def inputs(self) -> list[Path]:
        """The files the target was read from (scenario, model)."""
        return [p for p in (self.source, self.model_path) if p is not None]


def load_target(path: str | Path, *, on: Target | None = None) -> Target:
    """A model JSON, or a scenario TOML (its model loaded and its changes applied).

    With ``on`` (compare's base), a scenario TOML is applied to the base's model instead of the
    model its file names; a note says so when the two differ in content.
    """
    path = Path(path)
    if path.suffix.lower() == ".toml":
        from sim.scenario import apply, load_scenario

        scenario = load_scenario(path)
        notes: list[str] = []
        if on is not None:
            base, model_path = on.base_model, on.model_path
            if not _same_file(scenario.model_path, model_path):
                notes.append(f"{path.name} names the model {scenario.model_path}; compare applied it to the "
                             f"base's model {model_path}, as every scenario is (`journey simulate {path}` "
                             "runs it on its own model)")
        else:
            base, model_path = Model.load(scenario.model_path), scenario.model_path
        model = apply(base, scenario, file=path, notes=notes)
        return Target(model=model, base_model=base, model_path=model_path, scenario=scenario, source=path,
                      notes=notes)
    model = Model.load(path)
    return Target(model=model, base_model=model, model_path=path, scenario=None, source=path)


def target_draws(base: Target, targets: list[Target], draws: int, streams: Streams, horizon_days: float | None):
    """Every target's exact outcomes on the same parameter draws of ``base``'s model (None without counts).

    A scenario is applied to each draw; a target that is another model JSON gets draws of its own
    from the same stream (the run's "draws").
    """
    from sim.uncertainty import evaluate_draws, has_evidence, parameter_draws, scenario_draws

    if draws < 0:
        raise InputError("must not be negative", where="--draws", value=draws)
    if not has_evidence(base.base_model):
        return None
    common = parameter_draws(base.base_model, draws, streams.stream("draws"))
    out = []
    for target in targets:
        if target.base_model is base.base_model:
            models = common
        elif has_evidence(target.base_model):
            models = parameter_draws(target.base_model, draws, streams.stream("draws"))
        else:
            return None
        out.append(evaluate_draws(scenario_draws(models, target.scenario), horizon_days))
    return out


def _same_file(a: Path, b: Path) -> bool:
    """The same model by content (two paths to one file, or two copies of it)."""
    from sim.limits import sha256_of

    try:
        return a.resolve() == b.resolve() or sha256_of(a) == sha256_of(b)
    except OSError:
        return False


def choose_engine(engine: str, targets: list[Target]) -> str:
    """One engine for all the targets of a run: auto is simpy when any file has [capacity], else fast."""
    if engine not in ENGINES:
        raise InputError("unknown engine", where="--engine", value=engine, hint="use auto, fast or simpy")
    if engine != "auto":
        return engine
    has_capacity = any(t.scenario is not None and t.scenario.capacity for t in targets)
    return "simpy" if has_capacity else "fast"


def _run_one(args: tuple, progress: Callable[[int], None] | None = None) -> EngineResult:
    """One replication; ``progress`` (fast engine) advances per chunk of customers, not at the end."""
    engine, model, n, ss, horizon, arrival, capacity = args
    if engine == "simpy":
        from sim.engines import agents

        result = agents.run(model, n, ss, horizon_days=horizon, arrival_days=arrival, capacity=capacity)
        if progress is not None:
            progress(n)
        return result
    from sim.engines import fast

    return fast.run(model, n, ss, horizon_days=horizon, arrival_days=arrival, progress=progress)


def usable_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def jobs_note(jobs: int, replications: int, cores: int | None = None) -> str | None:
    """Why ``--jobs`` > 1 will not speed this run up, in one line (None when it may help).

    Replications are shared out one per process, and the main process keeps a core busy besides the
    workers; on fewer cores the processes take turns and the run is slower than with --jobs 1."""
    if jobs <= 1:
        return None
    if replications == 1:
        return (f"--jobs {jobs} will not help: replications are shared out one per process and this run has "
                "one (give --replications 2 or more, or leave --jobs out)")
    cores = usable_cores() if cores is None else cores
    if cores < jobs + 1:
        return (f"--jobs {jobs} will not help here: this machine gives {cores} core{'s' if cores > 1 else ''}, "
                f"and {jobs} workers need {jobs + 1} with the main process; they take turns and run slower "
                f"than --jobs {max(1, cores - 1)}")
    return None


def run_replications(model: Model, customers: int, seed: np.random.SeedSequence | int, replications: int, *,
                     engine: str = "fast", horizon_days: float | None = None, arrival_days: float | None = None,
                     capacity: dict | None = None, jobs: int = 1,
                     progress: Callable[[int], None] | None = None, client=None) -> list[EngineResult]:
    """R independent replications, the spawn children of ``seed`` (an int: of SeedSequence(seed)).

    The results are the same for any ``jobs``, and on a Dask ``client``'s workers (one task a replication)."""
    if customers < 1:
        raise InputError("must be at least 1", where="--customers", value=customers)
    if replications < 1:
        raise InputError("must be at least 1", where="--replications", value=replications)
    if jobs < 1:
        raise InputError("must be at least 1", where="--jobs", value=jobs)
    run_size(customers, replications)  # before the seeds are spawned: 10^9 of them fill memory
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    tasks = [(engine, model, customers, ss, horizon_days, arrival_days, capacity)
             for ss in children(root, replications)]
    if client is not None:  # (``jobs`` is for a run here)
        return on_cluster(client, tasks, progress)
    if jobs == 1 or replications == 1:
        return [_run_one(task, progress) for task in tasks]
    from concurrent.futures import ProcessPoolExecutor  # lazy: most runs are single-process

    with ProcessPoolExecutor(max_workers=min(jobs, replications)) as pool:
        out = []
        for result in pool.map(_run_one, tasks):
            out.append(result)
            if progress is not None:
                progress(customers)
        return out


def on_cluster(client, tasks: list[tuple], progress: Callable[[int], None] | None = None) -> list[EngineResult]:
    """``(engine, model, customers, seed, horizon, arrival, capacity)`` tasks on a Dask cluster, results in
    task order: the seeds travel with the tasks, so the results are those of a run here. The model goes to
    each worker once."""
    model = client.scatter(tasks[0][1], broadcast=True)
    futures = client.map(_run_with, [model] * len(tasks), [(t[0], *t[2:]) for t in tasks], pure=False)
    out = []
    for task, future in zip(tasks, futures):
        out.append(future.result())
        if progress is not None:
            progress(task[2])
    return out


def _run_with(model: Model, task: tuple) -> EngineResult:
    """One replication on a worker, of the model scattered there."""
    engine, *rest = task
    return _run_one((engine, model, *rest))


def children(root: np.random.SeedSequence, n: int) -> list[np.random.SeedSequence]:
    """The first ``n`` spawn children of ``root``, without spawning (``root`` is left as it was)."""
    return [np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, i), pool_size=root.pool_size)
            for i in range(n)]


EXPECTED_NOTE_CAPACITY = ("expected_conversion_rate ignores capacity limits (queues and patience); "
                          "it is the unlimited-capacity answer")


def simulate_target(target: Target, *, customers: int | None = None, streams: Streams, replications: int = 1,
                    engine: str = "auto", horizon_days: float | None = None, jobs: int = 1,
                    progress: Callable[[int], None] | None = None, draws: int = 0, client=None
                    ) -> tuple[Summary, list[EngineResult]]:
    """Simulate one target: its summary.json record and the replications' results (nothing written);
    ``client``: run the replications on a Dask cluster."""
    sc = target.scenario
    n = customers if customers is not None else (getattr(sc, "customers", None) or 100_000)
    horizon = horizon_days if horizon_days is not None else getattr(sc, "horizon_days", None)
    finite(horizon, "--horizon-days", positive=True)
    arrival = getattr(sc, "arrival_days", None)
    capacity = getattr(sc, "capacity", None) or None
    chosen = choose_engine(engine, [target])
    results = run_replications(target.model, n, streams.stream("replications"), replications, engine=chosen,
                               horizon_days=horizon, arrival_days=arrival, capacity=capacity, jobs=jobs,
                               progress=progress, client=client)
    exact = evaluate(target.model, horizon_days=horizon)
    summary = summarize(target.model, results, exact, customers=n, seed=streams.seed, engine=chosen,
                        horizon_days=horizon)
    summary["name"] = target.name
    if target.notes:
        summary["notes"] = list(target.notes)
    if draws:
        drawn = target_draws(target, [target], draws, streams, horizon)
        if drawn is None:
            summary["data_uncertainty"] = no_evidence_note(draws)
        else:
            add_data_intervals(summary, target.model, drawn[0], draws)
    if chosen == "simpy" and capacity:
        summary["expected_note"] = EXPECTED_NOTE_CAPACITY
    return Summary.of(summary), results
