"""`journey forecast`: weekly arrivals, conversions and revenue from a start date, base and scenarios.

Writes forecast.json (sim.forecast.Forecast), forecast.csv, forecast.png and the manifest.
"""
from __future__ import annotations

from pathlib import Path

from application.context import RunContext
from application.rundir import check_run_out, run_directory
from sim.errors import InputError
from sim.forecast import Forecast, TargetInput, build, check_plan, epoch_day, forecast_csv
from sim.limits import finite
from sim.simulate import load_target


def run_forecast(paths: list[str | Path], *, start: str, weeks: int, rollout: str | None = None,
                 ramp_weeks: int = 0, arrivals_per_week: float | None = None, draws: int = 200,
                 seed: int | None = None, out: str | Path | None = None,
                 terminal: bool = False) -> tuple[Path, Forecast]:
    """The forecast of the base (the first argument's model) and every scenario among ``paths``."""
    from sim import arrivals as arr
    from sim.uncertainty import has_evidence, parameter_draws, scenario_draws

    if not paths:
        raise InputError("no model or scenario given", where="MODEL_OR_SCENARIO")
    plan = check_plan(weeks=weeks, start_day=epoch_day(start, "--start"),
                      rollout_day=None if rollout is None else epoch_day(rollout, "--rollout"), ramp_weeks=ramp_weeks)
    if draws < 0:
        raise InputError("must not be negative", where="--draws", value=draws)
    if arrivals_per_week is not None:
        finite(arrivals_per_week, "--arrivals-per-week")
        if arrivals_per_week <= 0:
            raise InputError("must be above 0", where="--arrivals-per-week", value=arrivals_per_week)
    first = load_target(paths[0])
    targets = [first] if first.scenario is not None else []
    targets += [load_target(p, on=first) for p in paths[1:]]
    for t in targets:
        if t.scenario is None:
            raise InputError("only the first argument may be a model; the others are scenario files",
                             file=t.source, where="MODEL_OR_SCENARIO")
    ctx = RunContext.from_option(seed)
    inputs: list[Path] = []
    for t in [first, *targets]:
        inputs.extend(p for p in t.inputs if p not in inputs)
    if out is not None:
        check_run_out(out, inputs)
    base = first.base_model
    notes = [n.replace("compare applied it", "forecast applies it") for t in targets for n in t.notes]
    try:
        fitted = arr.from_model_arrivals(base.arrivals)
    except InputError:
        if arrivals_per_week is None:
            raise
        fitted = None
    arrivals = fitted
    if arrivals_per_week is not None:
        given = arr.constant(arrivals_per_week, "--arrivals-per-week")
        arrivals = arr.with_history(fitted, given) if fitted is not None else given
    drawn = parameter_draws(base, draws, ctx.stream("draws")) if draws > 0 and has_evidence(base) else None
    if draws > 0 and drawn is None:
        notes.append("the model keeps no counts: no parameter draws, so no intervals")
    inputs_t = [TargetInput(name="baseline", model=base, draws=drawn, is_base=True)]
    for t in targets:
        own = t.scenario.arrivals_per_week
        inputs_t.append(TargetInput(
            name=t.name, model=t.model, draws=scenario_draws(drawn, t.scenario) if drawn is not None else None,
            arrivals=arr.constant(own, f"scenario arrivals_per_week ({t.source.name})") if own else None))
    record = build(base, inputs_t, arrivals, plan, seed=ctx.seed, draws=draws if drawn is not None else 0,
                   stream=ctx.stream("forecast"), notes=notes)
    args = {"targets": [str(p) for p in paths], "start": start, "weeks": weeks, "rollout": rollout,
            "ramp_weeks": ramp_weeks, "arrivals_per_week": arrivals_per_week, "draws": draws, "seed": ctx.seed}
    result = record.to_dict()
    from present.figures.forecast import forecast_png  # matplotlib only once the numbers are in

    png = forecast_png(result)
    with run_directory("forecast", out, args, inputs, seed=ctx.seed) as run:
        run.json("forecast.json", result)
        run.text("forecast.csv", forecast_csv(result))
        run.text("forecast.png", png)
    if terminal:
        from application.terminal import echo, render_forecast

        render_forecast(result)
        echo(f"-> {run.final / 'forecast.json'}")
    return run.final, record
