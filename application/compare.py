"""`journey compare`: a baseline and what-if scenarios, simulated with common random numbers, into a run directory."""
from __future__ import annotations

from pathlib import Path

from application.cluster import check_runner, dask_client, scheduler_args
from application.context import RunContext
from application.progress import progress_bar
from application.rundir import check_run_out, run_directory
from sim.compare import Comparison, cohort_size, compare_targets, comparison_csv
from sim.simulate import load_target


def compare_command(base: str | Path, scenarios: list[str | Path], *, customers: int | None, seed: int | None,
                    replications: int, engine: str, jobs: int, draws: int, out: str | Path | None,
                    quiet: bool, scheduler: str | None = None, workers: int = 2) -> None:
    """The command: size and --jobs checked first, the comparison run, its table on the terminal."""
    from application.terminal import echo, render_comparison, render_note
    from sim.limits import run_size
    from sim.simulate import jobs_note

    run_size(customers or 1, replications)  # at once: a cohort of R = 1 runs in batches, not replications
    if scheduler is None:  # (with one, run_compare refuses --jobs above 1)
        render_note(jobs_note(jobs, replications))
    path, comparison = run_compare(base, scenarios, customers=customers, seed=seed, replications=replications,
                                   engine=engine, jobs=jobs, out=out, quiet=quiet, draws=draws, scheduler=scheduler,
                                   workers=workers)
    render_comparison(comparison.to_dict())
    echo(f"-> {path / 'comparison.json'}")


def run_compare(base: str | Path, scenarios: list[str | Path], *, customers: int | None = None,
                seed: int | None = None, replications: int = 1, engine: str = "auto", jobs: int = 1,
                out: str | Path | None = None, quiet: bool = False, draws: int = 0, scheduler: str | None = None,
                workers: int = 2) -> tuple[Path, Comparison]:
    """Load, simulate with common random numbers, write comparison.json, comparison.csv and uplift.png;
    ``scheduler``: the replications (or batches) on a Dask cluster, same results."""
    check_runner(jobs, scheduler)
    base_target = load_target(base)
    targets = [load_target(path, on=base_target) for path in scenarios]
    ctx = RunContext.from_option(seed)
    if out is not None:  # before the work; run_directory checks again
        check_run_out(out, [p for t in (base_target, *targets) for p in t.inputs])
    n = cohort_size(customers, base_target, targets)
    total = n * replications * (1 + len(targets))
    with dask_client(scheduler, workers) as client, progress_bar("comparing", total, quiet=quiet) as advance:
        comparison = compare_targets(base_target, targets, customers=customers, streams=ctx,
                                     replications=replications, engine=engine, jobs=jobs, progress=advance,
                                     draws=draws, client=client)
    inputs: list[Path] = []
    for target in [base_target, *targets]:
        inputs.extend(p for p in target.inputs if p not in inputs)
    args = {"base": str(base), "scenarios": [str(s) for s in scenarios], "customers": customers, "seed": ctx.seed,
            "replications": replications, "engine": engine, "jobs": jobs, "draws": draws}
    args.update(scheduler_args(scheduler, workers))
    record = comparison.to_dict()
    with run_directory("compare", out, args, inputs, seed=ctx.seed) as run:
        run.json("comparison.json", record)
        run.text("comparison.csv", comparison_csv(comparison))
        from present.figures.common import render_png  # matplotlib only once the numbers are in
        from present.figures.uplift import draw_uplift, uplift_data

        data = uplift_data(record)
        run.text("uplift.png", render_png(draw_uplift, data, 12, 1.6 + 0.6 * len(data.names)))
    return run.final, comparison
