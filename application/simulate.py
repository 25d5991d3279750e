"""`journey simulate`: a model or scenario in, replications run, a run directory with summary.json out."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from application.cluster import check_runner, dask_client, scheduler_args
from application.context import RunContext
from application.rundir import check_output_file, check_run_out, run_directory
from sim.errors import InputError
from sim.simulate import jobs_note, load_target, simulate_target
from sim.summary import Summary, weekly_csv


def simulate_command(target: str | Path, *, customers: int | None, seed: int | None, replications: int,
                     engine: str, horizon_days: float | None, jobs: int, events_out: str | Path | None, draws: int,
                     out: str | Path | None, quiet: bool, scheduler: str | None = None, workers: int = 2) -> None:
    """The command: a note on --jobs, the run under a progress bar, the summary on the terminal."""
    from application.progress import progress_bar
    from application.terminal import echo, render_note, render_summary

    if scheduler is None:  # (with one, run_simulate refuses --jobs above 1)
        render_note(jobs_note(jobs, replications))
    total = (customers or 0) * replications
    with progress_bar("simulating", total or None, quiet=quiet) as advance:
        path, summary = run_simulate(target, customers=customers, seed=seed, replications=replications,
                                     engine=engine, out=out, horizon_days=horizon_days, jobs=jobs,
                                     events_out=events_out, progress=advance, draws=draws, scheduler=scheduler,
                                     workers=workers)
    render_summary(summary.to_dict())
    echo(f"-> {path / 'summary.json'}")


def _check_events_out(events_out: str | Path, out: str | Path | None, inputs: list[Path]) -> None:
    """Fail before the work: --events-out must be a new (or journey's) Parquet file beside --out."""
    from application.events_out import check_events_path

    check_events_path(events_out)
    check_output_file(events_out, "events", inputs, where="--events-out")
    if out is not None and Path(events_out).resolve().is_relative_to(Path(out).resolve()):
        raise InputError("is inside --out, which is replaced whole when the run is complete",
                         where="--events-out", value=str(events_out), hint="write it beside --out")


def run_simulate(path: str | Path, *, customers: int | None, seed: int | None, replications: int,
                 engine: str, out: str | Path | None, horizon_days: float | None = None, jobs: int = 1,
                 events_out: str | Path | None = None, progress: Callable[[int], None] | None = None,
                 draws: int = 0, scheduler: str | None = None, workers: int = 2) -> tuple[Path, Summary]:
    """Simulate, then write the run directory (summary.json, weekly.csv, funnel.png) and the event log;
    ``scheduler``: the replications on a Dask cluster (``local``: one of ``workers`` here), same results."""
    check_runner(jobs, scheduler)
    target = load_target(path)
    ctx = RunContext.from_option(seed)
    if out is not None:  # fail before the work, not after it
        check_run_out(out, target.inputs)
    if events_out is not None:
        _check_events_out(events_out, out, target.inputs)
    args = {"target": str(path), "customers": customers, "seed": ctx.seed, "replications": replications,
            "engine": engine, "horizon_days": horizon_days, "jobs": jobs,
            "events_out": str(events_out) if events_out else None, "draws": draws}
    args.update(scheduler_args(scheduler, workers))
    with dask_client(scheduler, workers) as client:
        summary, results = simulate_target(target, customers=customers, streams=ctx, replications=replications,
                                           engine=engine, horizon_days=horizon_days, jobs=jobs, progress=progress,
                                           draws=draws, client=client)
    with run_directory("simulate", out, args, target.inputs, seed=ctx.seed) as run:
        run.json("summary.json", summary.to_dict())
        run.text("weekly.csv", weekly_csv(results))
        from present.figures.common import render_png  # matplotlib only once the numbers are in
        from present.figures.funnel import draw_funnel, funnel_data

        data = funnel_data(summary.to_dict(), target.model)
        run.text("funnel.png", render_png(draw_funnel, data, 9, 5))
        if events_out is not None:
            from application.events_out import write_event_log

            write_event_log(target.model, summary.customers, ctx.stream("events"), events_out,
                            horizon_days=summary.horizon_days,
                            arrival_days=getattr(target.scenario, "arrival_days", None))
    return run.final, summary
