"""`journey hotspots`: rank a model's risk-of-leaving points, show them, and write them as JSON on request."""
from __future__ import annotations

from pathlib import Path

from application.context import RunContext
from sim.hotspots import Hotspots, check_options, check_ranking, rank_target
from sim.simulate import load_target


def hotspots_command(model: str | Path, *, top: int, out: str | Path | None, draws: int, seed: int | None,
                     by: str) -> None:
    """The command: the ranking computed (and written with --out), then shown as tables."""
    from application.terminal import render_hotspots

    render_hotspots(run_hotspots(model, top=top, out=out, draws=draws, seed=seed, by=by).to_dict())


def run_hotspots(path: str | Path, *, top: int = 10, out: str | Path | None = None, draws: int = 0,
                 seed: int | None = None, by: str = "journeys") -> Hotspots:
    """Rank the risk-of-leaving points of a model (or of a scenario's changed model); write them to ``out``."""
    check_options(top, draws, by)
    target = load_target(path)
    check_ranking(by, target, path)
    if out is not None:
        from application.rundir import check_output_file

        check_output_file(out, "hotspots", target.inputs)
    ctx = RunContext.from_option(seed) if draws else None  # a seed only matters to the draws
    record = rank_target(target, top=top, draws=draws, streams=ctx, by=by)
    if out is not None:
        from application.rundir import write_json

        write_json(out, record.to_dict())
    return record
