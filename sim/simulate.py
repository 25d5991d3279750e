"""`journey simulate`: a model or scenario in, replications run, summary.json out."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from application.rundir import check_output_file, check_run_out, run_directory
from sim.engines.result import EngineResult
from sim.errors import InputError
from sim.exact import evaluate
from sim.limits import finite, run_size
from sim.model import Model
from sim.summary import add_data_intervals, no_evidence_note, summarize, weekly_csv

ENGINES = ("auto", "fast", "simpy")


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
        if self.scenario is not None:
            return self.scenario.name
        return "baseline"

    @property
    def inputs(self) -> list[Path]:
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


def target_draws(base: Target, targets: list[Target], draws: int, seed: int, horizon_days: float | None):
    """Every target's exact outcomes on the same parameter draws of ``base``'s model (None without counts).

    A scenario is applied to each draw; a target that is another model JSON gets draws of its own
    from the same stream.
    """
    from sim.uncertainty import draw_seed, evaluate_draws, has_evidence, parameter_draws, scenario_draws

    if draws < 0:
        raise InputError("must not be negative", where="--draws", value=draws)
    if not has_evidence(base.base_model):
        return None
    common = parameter_draws(base.base_model, draws, draw_seed(seed))
    out = []
    for target in targets:
        if target.base_model is base.base_model:
            models = common
        elif has_evidence(target.base_model):
            models = parameter_draws(target.base_model, draws, draw_seed(seed))
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


def resolve_seed(seed: int | None) -> int:
    """A missing seed becomes a fresh one that is recorded, so every run can be repeated."""
    if seed is None:
        return int(np.random.SeedSequence().entropy % (2**63))
    if seed < 0:
        raise InputError("must not be negative", where="--seed", value=seed)
    return int(seed)


def replication_seeds(seed: int, replications: int) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence(seed).spawn(replications)


def choose_engine(engine: str, target: Target) -> str:
    if engine not in ENGINES:
        raise InputError("unknown engine", where="--engine", value=engine, hint="use auto, fast or simpy")
    capacity = getattr(target.scenario, "capacity", None) if target.scenario is not None else None
    if engine == "auto":
        return "simpy" if capacity else "fast"
    return engine


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


def run_replications(model: Model, customers: int, seed: int, replications: int, *, engine: str = "fast",
                     horizon_days: float | None = None, arrival_days: float | None = None,
                     capacity: dict | None = None, jobs: int = 1,
                     progress: Callable[[int], None] | None = None) -> list[EngineResult]:
    """R independent replications (SeedSequence.spawn); identical results for any ``jobs``."""
    if customers < 1:
        raise InputError("must be at least 1", where="--customers", value=customers)
    if replications < 1:
        raise InputError("must be at least 1", where="--replications", value=replications)
    if jobs < 1:
        raise InputError("must be at least 1", where="--jobs", value=jobs)
    run_size(customers, replications)  # before the seeds are spawned: 10^9 of them fill memory
    tasks = [(engine, model, customers, ss, horizon_days, arrival_days, capacity)
             for ss in replication_seeds(seed, replications)]
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


def simulate_target(target: Target, *, customers: int | None = None, seed: int | None = None,
                    replications: int = 1, engine: str = "auto", horizon_days: float | None = None,
                    jobs: int = 1, progress: Callable[[int], None] | None = None, draws: int = 0
                    ) -> tuple[dict[str, Any], list[EngineResult]]:
    sc = target.scenario
    n = customers if customers is not None else (getattr(sc, "customers", None) or 100_000)
    horizon = horizon_days if horizon_days is not None else getattr(sc, "horizon_days", None)
    finite(horizon, "--horizon-days", positive=True)
    arrival = getattr(sc, "arrival_days", None)
    capacity = getattr(sc, "capacity", None) or None
    seed = resolve_seed(seed)
    chosen = choose_engine(engine, target)
    results = run_replications(target.model, n, seed, replications, engine=chosen, horizon_days=horizon,
                               arrival_days=arrival, capacity=capacity, jobs=jobs, progress=progress)
    exact = evaluate(target.model, horizon_days=horizon)
    summary = summarize(target.model, results, exact, customers=n, seed=seed, engine=chosen, horizon_days=horizon)
    summary["name"] = target.name
    if target.notes:
        summary["notes"] = list(target.notes)
    if draws:
        drawn = target_draws(target, [target], draws, seed, horizon)
        if drawn is None:
            summary["data_uncertainty"] = no_evidence_note(draws)
        else:
            add_data_intervals(summary, target.model, drawn[0], draws)
    if chosen == "simpy" and capacity:
        summary["expected_note"] = ("expected_conversion_rate ignores capacity limits (queues and patience); "
                                    "it is the unlimited-capacity answer")
    return summary, results


def run_simulate(path: str | Path, *, customers: int | None, seed: int | None, replications: int,
                 engine: str, out: str | Path | None, horizon_days: float | None = None, jobs: int = 1,
                 events_out: str | Path | None = None, progress: Callable[[int], None] | None = None,
                 draws: int = 0) -> tuple[Path, dict[str, Any]]:
    target = load_target(path)
    seed = resolve_seed(seed)
    if out is not None:  # fail before the work, not after it
        check_run_out(out, target.inputs)
    if events_out is not None:
        from application.events_out import check_events_path

        check_events_path(events_out)
        check_output_file(events_out, "events", target.inputs, where="--events-out")
        if out is not None and Path(events_out).resolve().is_relative_to(Path(out).resolve()):
            raise InputError("is inside --out, which is replaced whole when the run is complete",
                             where="--events-out", value=str(events_out), hint="write it beside --out")
    args = {"target": str(path), "customers": customers, "seed": seed, "replications": replications,
            "engine": engine, "horizon_days": horizon_days, "jobs": jobs,
            "events_out": str(events_out) if events_out else None, "draws": draws}
    summary, results = simulate_target(target, customers=customers, seed=seed, replications=replications,
                                       engine=engine, horizon_days=horizon_days, jobs=jobs, progress=progress,
                                       draws=draws)
    with run_directory("simulate", out, args, target.inputs, seed=seed) as run:
        run.json("summary.json", summary)
        run.text("weekly.csv", weekly_csv(results))
        from present import plots  # matplotlib only once the numbers are in

        run.text("funnel.png", plots.render_png(plots.draw_funnel, plots.funnel_data(summary, target.model), 9, 5))
        if events_out is not None:
            from application.events_out import write_event_log

            write_event_log(target.model, summary["customers"], seed, events_out,
                            horizon_days=summary["horizon_days"],
                            arrival_days=getattr(target.scenario, "arrival_days", None))
    return run.final, summary
