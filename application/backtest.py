"""`journey backtest`: backtest.json, the fitted model.json and backtest.png in a run directory."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from application.context import RunContext
from application.rundir import check_run_out, run_directory
from calibration.backtest import backtest
from calibration.estimate import DEFAULT_INACTIVITY_DAYS, dwell_used
from sim.defaults import DEFAULT_DRAWS
from sim.errors import InputError
from sim.limits import finite

# without --seed the backtest is still repeatable: the same log and split give the same backtest.json
DEFAULT_SEED = 0


def run_backtest(events: str | Path, *, split: str, stages: str | list[str] | None = None,
                 conversion_stage: str | None = None, inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
                 mapping: str | Path | None = None, out: str | Path | None = None,
                 censoring: str = "cure", dwell: str | None = None, touch_order: int = 0,
                 draws: int = DEFAULT_DRAWS, seed: int | None = None,
                 terminal: bool = False) -> tuple[Path, dict[str, Any]]:
    """Backtest and write the run directory; returns it and the backtest.json record. ``terminal``: show
    the table, the estimator's warnings and where it went, as the CLI does.

    ``draws`` parameter draws (0: none) give the weekly predictions their 95 % intervals, seeded by
    ``seed`` (default DEFAULT_SEED) through the run's "draws" and "backtest" streams.
    """
    finite(inactivity_days, "--inactivity-days")
    if draws < 0:
        raise InputError("must not be negative", where="--draws", value=draws)
    ctx = RunContext.from_option(DEFAULT_SEED if seed is None else seed)
    if out is not None:
        check_run_out(out, [events, mapping])  # before the work; run_directory checks again
    record, model = backtest(events, split=split, stages=stages, conversion_stage=conversion_stage,
                             inactivity_days=inactivity_days, mapping=mapping, censoring=censoring, dwell=dwell,
                             touch_order=touch_order, draws=draws, draw_stream=ctx.stream("draws"),
                             stream=ctx.stream("backtest"))
    result = record.to_dict()
    args = {"events": str(events), "split": split, "stages": ",".join(model.stages),
            "conversion_stage": model.conversion_stage, "inactivity_days": inactivity_days, "censoring": censoring,
            "dwell": dwell_used(model), "mapping": str(mapping) if mapping else None}
    if touch_order:  # only when asked: earlier runs' manifests stay as they were
        args["touch_order"] = touch_order
    args.update(draws=draws, seed=ctx.seed)
    from present.figures.backtest import backtest_png  # matplotlib only once the numbers are in

    png = backtest_png(result)
    with run_directory("backtest", out, args, [events, mapping], seed=ctx.seed,
                       known_hashes={str(events): model.log_summary["sha256"]}) as run:
        run.json("backtest.json", result)
        run.text("model.json", model.to_json())
        run.text("backtest.png", png)
    if terminal:
        import typer

        from application.terminal import render_backtest, render_warnings

        render_backtest(result)
        render_warnings(result.get("fallbacks", []))
        typer.echo(f"-> {run.final / 'backtest.json'}")
    return run.final, result
