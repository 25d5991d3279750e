"""`journey optimize`: search the split, simulate the best one, and write the run directory.

scenario ─▶ checks ─▶ sim.optimize.search (study in --out or --storage; trials bar)
─▶ best split (Pareto front, simulation, intervals, money) ─▶ BestSplit
─▶ best.json, best.toml, trials.csv, PNGs (+ the study files kept) in one run directory
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from application.progress import progress_bar
from application.rundir import check_run_out, default_run_dir, run_directory, utc_now
from sim.errors import InputError
from sim.limits import run_size, sha256_of
from sim.model import Model
from sim.optimize import (
    DEFAULT_JOURNAL,
    PARETO_LEVELS,
    TORN,
    BestSplit,
    Objective,
    ObjectiveSpec,
    Problem,
    SearchResult,
    SpendSpace,
    StorageSpec,
    Store,
    best_split,
    chosen_trial,
    count_complete,
    fingerprint,
    make_objective,
    pareto_front,
    parse_storage,
    per_level_trials,
    quiet_optuna,
    search,
    simulate_split,
    trial_states,
)
from sim.scenario import Scenario, load_scenario


@dataclass(frozen=True)
class OptimizeRun:
    """One `journey optimize` run once its inputs are checked: the problem and the run's options."""

    problem: Problem
    scenario_path: Path
    spec: StorageSpec
    study_name: str
    fp: str  # the study's fingerprint
    trials: int
    workers: int
    pareto: bool
    customers: int | None
    final: Path
    started: str
    quiet: bool

    def args(self) -> dict[str, Any]:
        """The manifest's arguments."""
        p = self.problem
        return {"scenario": str(self.scenario_path), "trials": self.trials, "seed": p.streams.seed,
                "storage": self.spec.label,
                "study": self.study_name, "workers": self.workers, "pareto": self.pareto,
                "customers": self.customers, "out": str(self.final), "draws": p.draws,
                "objective": p.objective.spec.label}


def run_optimize(scenario_path: str | Path, *, trials: int, seed: int | None, storage: str | None,
                 study: str | None, workers: int, pareto: bool, customers: int | None, out: str | Path | None,
                 quiet: bool = False, draws: int = 0, objective: str = "point") -> tuple[Path, dict[str, Any]]:
    """Search the split, simulate the best one, write best.json / best.toml / trials.csv / figures.

    With ``draws`` > 0, best.json also says how sure the data is of the split (the chosen split, the
    even split and the baseline on the same parameter draws)."""
    run_size(customers or 1, 1)
    run = prepare(scenario_path, trials=trials, seed=seed, storage=storage, study=study, workers=workers,
                  pareto=pareto, customers=customers, out=out, quiet=quiet, draws=draws, objective=objective)
    p = run.problem
    quiet_optuna()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="optuna")
        found = search(p.model, p.scenario, p.space, p.objective, spec=run.spec, study_name=run.study_name, fp=run.fp,
                       trials=trials, streams=p.streams, workers=workers,
                       progress_factory=lambda n: progress_bar("trials", n, quiet=quiet), draws=draws)
    # the bar's ETA is the trials'; checking the best split (a simulation, the draws) can take as long again,
    # so it gets its own line instead of a bar stuck at 100 % (the Pareto front has its own bar)
    status = contextlib.nullcontext() if pareto else progress_bar("simulating and checking the best split", None,
                                                                   quiet=quiet)
    try:
        with status:
            record = finish(run, found)
            return write_run(run, found, record)
    finally:
        found.store.close()


def prepare(scenario_path: str | Path, *, trials: int, seed: int | None, storage: str | None, study: str | None,
            workers: int, pareto: bool, customers: int | None, out: str | Path | None, quiet: bool, draws: int,
            objective: str) -> OptimizeRun:
    """Check the options and inputs before anything is written; the study's folder made if it is --out."""
    from application.context import RunContext

    if trials < 1:
        raise InputError("must be at least 1", where="--trials", value=trials)
    if workers < 1:
        raise InputError("must be at least 1", where="--workers", value=workers)
    if customers is not None and customers < 1:
        raise InputError("must be at least 1", where="--customers", value=customers)
    if draws < 0:
        raise InputError("must not be negative", where="--draws", value=draws)
    spec_obj = ObjectiveSpec.parse(objective)
    if spec_obj.uses_draws and draws == 0:
        raise InputError("needs parameter draws", where="--objective", value=objective,
                         hint="drop --draws 0 (or give --draws 1 or more), or use --objective point")
    started = utc_now()
    scenario_path = Path(scenario_path)
    scenario = load_scenario(scenario_path)
    space = SpendSpace.from_scenario(scenario)
    model = Model.load(scenario.model_path)
    if spec_obj.uses_draws:
        from sim.uncertainty import has_evidence

        if not has_evidence(model):
            raise InputError("the model file keeps no counts to draw from", file=scenario.model_path,
                             where="--objective", value=objective,
                             hint="recalibrate with `journey calibrate`, or use --objective point")
    ctx = RunContext.from_option(seed)
    baseline = Objective(model, scenario).baseline  # also checks touchpoints, stages and personas first
    objective_fn = make_objective(model, scenario, spec_obj, draws, ctx)
    study_name = study if study is not None else str(scenario.name)
    if not study_name.strip():
        raise InputError("must not be empty", where="--study", value=study_name)
    fp = fingerprint(scenario, sha256_of(scenario.model_path), spec_obj, draws, ctx.seed)
    final, spec = _study_folder(out, storage, [scenario_path, scenario.model_path])
    return OptimizeRun(problem=Problem(scenario, model, space, objective_fn, baseline, ctx, draws),
                       scenario_path=scenario_path, spec=spec, study_name=study_name, fp=fp, trials=trials,
                       workers=workers, pareto=pareto, customers=customers, final=final, started=started,
                       quiet=quiet)


def _study_folder(out: str | Path | None, storage: str | None, inputs: list[Path]) -> tuple[Path, StorageSpec]:
    """The run's final folder, checked, and the storage; the folder is made now when the study's journal
    goes into it (no --storage)."""
    final = Path(out) if out is not None else default_run_dir("optimize")
    if final.exists() and not final.is_dir():
        raise InputError("output path exists and is not a directory", file=final, hint="choose another --out")
    check_run_out(final, inputs)  # the study goes into --out before the run
    spec = parse_storage(storage, final)
    if storage is None:
        try:
            final.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the output folder ({exc.strerror})", file=final) from None
    return final, spec


def finish(run: OptimizeRun, found: SearchResult) -> BestSplit:
    """After the search: the Pareto front if asked, the best split simulated, its record."""
    p = run.problem
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="optuna")
        chosen = chosen_trial(found.study, p.objective)
        complete = count_complete(found.study)
        front, per_level = None, per_level_trials(run.trials)
        if run.pareto:
            with progress_bar("pareto", per_level * (PARETO_LEVELS - 1), quiet=run.quiet) as advance:
                front = pareto_front(p.space, Objective(p.model, p.scenario, maximize="conversion"), chosen.spends,
                                     chosen.value, streams=p.streams, trials_per_level=per_level, progress=advance)
    n_sim = run.customers if run.customers is not None else (p.scenario.customers or 100_000)
    simulation = simulate_split(p.objective, chosen.spends, customers=n_sim, streams=p.streams)
    return best_split(p, chosen, study=run.study_name, storage=run.spec.label, trials=complete,
                      states=trial_states(found.study), customers=n_sim, simulation=simulation,
                      notes=found.store.notes, front=front, per_level=per_level)


def write_run(run: OptimizeRun, found: SearchResult, record: BestSplit) -> tuple[Path, dict[str, Any]]:
    """The run directory: best.json, best.toml, trials.csv, figures, the manifest and the study files."""
    p, st = run.problem, found.study
    trials_text = trials_csv(st, p.space)
    with run_directory("optimize", run.final, run.args(), [run.scenario_path, p.scenario.model_path],
                       seed=p.streams.seed) as rd:
        record.trials = count_complete(st)  # as the study stands now: other workers may have added
        best = record.to_dict()
        rd.json("best.json", best)
        rd.text("best.toml", best_toml(p.scenario, record.allocation, rd.final, study=run.study_name,
                                       trials=record.trials))
        rd.text("trials.csv", trials_text)
        write_figures(rd, best, trials_text)
        rd.manifest["started"] = run.started  # the search began before the run directory
        rd.manifest["optimize"] = {"trials_this_run": found.ran, "complete_before": found.complete_before}
        keep_study_files(rd, run.spec, found.store)
    return rd.final, best


def trials_csv(study: Any, space: SpendSpace) -> str:
    """number, state, value, spend per investment, total spend (no times: same seed, same file)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["number", "state", "value", *[f"spend_{n}" for n in space.order], "spend"])
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        spends = t.user_attrs.get("spends")
        alloc = space.allocation(spends) if isinstance(spends, dict) else None
        value = "" if t.value is None else f"{t.value:.12g}"
        cells = [f"{alloc[n]:.10g}" for n in space.order] if alloc else [""] * len(space.order)
        total = f"{sum(alloc.values()):.10g}" if alloc else ""
        writer.writerow([t.number, t.state.name, value, *cells, total])
    return buf.getvalue()


def best_toml(scenario: Scenario, allocation: dict[str, float], run_dir: Path, *, study: str, trials: int) -> str:
    """The scenario with the chosen spends as fixed `spend = ...`, its model path relative to run_dir."""
    import tomli_w

    from sim.tomlio import read_toml

    raw = read_toml(scenario.source) if scenario.source is not None else scenario.model_dump(exclude_none=True)
    raw = dict(raw)
    model = scenario.model_path.resolve()
    try:
        raw["model"] = Path(os.path.relpath(model, run_dir.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        raw["model"] = model.as_posix()
    raw["name"] = f"{scenario.name} (best split)"
    invs = []
    for inv in raw.get("investment", []):
        inv = dict(inv)
        inv["spend"] = allocation[inv["name"]]
        invs.append(inv)
    raw["investment"] = invs
    head = (f"# {scenario.name}: the split chosen by `journey optimize` (study {study!r}, {trials} trials).\n"
            "# Every investment now has a fixed spend: compare it with `journey compare MODEL best.toml`.\n")
    return head + tomli_w.dumps(raw)


def write_figures(run: Any, best: dict[str, Any], trials_text: str) -> None:
    """history.png, allocation.png, response_curves.png, response_money.png and pareto.png, as they apply."""
    from present.figures.optimization import optimize_figures  # matplotlib only once the numbers are in

    for name, png in optimize_figures(best, list(csv.DictReader(io.StringIO(trials_text)))):
        run.text(name, png)


def keep_study_files(run: Any, spec: StorageSpec, store: Store) -> None:
    """Study files living in the final run directory (this run's, or a default one left by an earlier
    run with other options) are linked into the new directory before it replaces the old one."""
    final = run.final.resolve()
    keep = {f for f in (final / DEFAULT_JOURNAL, final / (DEFAULT_JOURNAL + TORN)) if f.is_file()}
    if spec.file is not None and spec.file.resolve().is_relative_to(final):
        keep.add(spec.file.resolve())
        torn = spec.file.resolve().with_name(spec.file.name + TORN)
        if torn.is_file():
            keep.add(torn)
    store.close()
    for path in sorted(keep):
        target = run.file(str(path.relative_to(final)))
        try:
            os.link(path, target)
        except OSError:  # no hard links here: a copy (the original stays until the swap)
            shutil.copy2(path, target)
