"""`journey backtest`: backtest.json, the fitted model.json and backtest.png in a run directory."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from application.rundir import check_run_out, run_directory
from calibration.backtest import backtest
from calibration.estimate import DEFAULT_INACTIVITY_DAYS, dwell_used
from sim.limits import finite


def run_backtest(events: str | Path, *, split: str, stages: str | list[str] | None = None,
                 conversion_stage: str | None = None, inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
                 mapping: str | Path | None = None, out: str | Path | None = None,
                 censoring: str = "cure", dwell: str | None = None, touch_order: int = 0,
                 terminal: bool = False) -> tuple[Path, dict[str, Any]]:
    """Backtest and write the run directory; returns it and the backtest.json record. ``terminal``: show
    the table, the estimator's warnings and where it went, as the CLI does."""
    finite(inactivity_days, "--inactivity-days")
    if out is not None:
        check_run_out(out, [events, mapping])  # before the work; run_directory checks again
    record, model = backtest(events, split=split, stages=stages, conversion_stage=conversion_stage,
                             inactivity_days=inactivity_days, mapping=mapping, censoring=censoring, dwell=dwell,
                             touch_order=touch_order)
    result = record.to_dict()
    args = {"events": str(events), "split": split, "stages": ",".join(model.stages),
            "conversion_stage": model.conversion_stage, "inactivity_days": inactivity_days, "censoring": censoring,
            "dwell": dwell_used(model), "mapping": str(mapping) if mapping else None}
    if touch_order:  # only when asked: earlier runs' manifests stay as they were
        args["touch_order"] = touch_order
    from present.figures.backtest import backtest_png  # matplotlib only once the numbers are in

    png = backtest_png(result)
    with run_directory("backtest", out, args, [events, mapping],
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
