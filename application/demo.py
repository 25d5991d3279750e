"""`journey demo`: the whole pipeline on the bundled example log."""
from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from application.calibrate import run_calibrate
from application.compare import run_compare
from application.hotspots import run_hotspots
from application.simulate import run_simulate
from sim.defaults import DEFAULT_DRAWS
from sim.limits import sha256_of

DEMO_SCENARIOS = ("checkout_fix.toml", "double_email.toml", "drop_ads.toml")
DEMO_SPLIT = "2024-04-01"
DEMO_FORECAST_START = "2024-07-01"  # the demo log ends 2024-06-27
DEMO_ROLLOUT = "2024-07-15"


def demo_file(name: str) -> Path:
    """A file bundled in the `scenarios` package (demo data, example scenarios)."""
    return Path(str(resources.files("scenarios").joinpath(name)))


def demo_command(out: Path, *, customers: int, quiet: bool) -> None:
    """The command: each step's line on the terminal as the step ends."""
    from application.terminal import echo

    for line in run_demo(out, customers=customers, quiet=quiet):
        echo(line)


def run_demo(out: Path, *, customers: int = 200_000, trials: int = 60, quiet: bool = False) -> Iterator[str]:
    """Run each step, yielding one line per step for the terminal."""
    from application.backtest import run_backtest
    from application.forecast import run_forecast
    from application.optimize import run_optimize
    from application.report import build_report

    out = Path(out)
    events = demo_file("demo/events.csv.gz")
    model_path = out / "model.json"
    model = run_calibrate(events, model_path)
    yield (f"1 calibrate  {model.log_summary['customers']} customers, {model.log_summary['rows']} rows "
           f"-> {model_path}")

    # the example scenarios point at the bundled copy of this model (identical numbers)
    bundled = demo_file("demo/model.json")
    path, record = run_simulate(bundled, customers=customers, seed=1, replications=5, engine="fast",
                                out=out / "simulate", progress=None, draws=DEFAULT_DRAWS)
    summary = record.to_dict()
    lo, hi = summary["expected_conversion_rate_interval"]
    yield (f"2 simulate   {customers:,} customers x 5: conversion {100 * summary['conversion_rate']:.2f} %, "
           f"expected {100 * summary['expected_conversion_rate']:.2f} % (95 % interval {100 * lo:.1f} to "
           f"{100 * hi:.1f} % from the {model.log_summary['customers']:,} customers of the log) -> {path}")

    ranking = run_hotspots(bundled, top=3, out=out / "hotspots.json")
    worst = ranking.hotspots[0]
    yield (f"3 hotspots   worst point: {worst['touchpoint']} in {worst['stage']} -> {out / 'hotspots.json'}")

    scenarios = [demo_file(f"examples/{name}") for name in DEMO_SCENARIOS]
    path, comparison = run_compare(bundled, scenarios, customers=customers, seed=1, replications=5,
                                   engine="fast", jobs=1, out=out / "compare", quiet=quiet, draws=DEFAULT_DRAWS)
    records = comparison.to_dict()["scenarios"]
    best_i = max(range(len(records)), key=lambda i: records[i]["uplift"])
    best_sc = records[best_i]
    ulo, uhi = best_sc["uplift_interval"]
    yield (f"4 compare    best: {best_sc['name']} {100 * best_sc['uplift']:+.2f} points [{100 * ulo:+.2f}, "
           f"{100 * uhi:+.2f}] (data and simulation) -> {path}")

    path, forecast = run_forecast([bundled, scenarios[best_i]], start=DEMO_FORECAST_START, weeks=12,
                                  rollout=DEMO_ROLLOUT, seed=1, out=out / "forecast", draws=DEFAULT_DRAWS)
    total = forecast.to_dict()["targets"][-1]["total"]
    flo, fhi = total["uplift_interval"]
    yield (f"5 forecast   {best_sc['name']} rolled out {DEMO_ROLLOUT}: {total['uplift']:+.0f} conversions over "
           f"12 weeks [{flo:+.0f}, {fhi:+.0f}] -> {path}")

    path, staffing = run_compare(demo_file("examples/sales_chat_6_agents.toml"),
                                 [demo_file("examples/sales_chat_capacity.toml")], customers=None, seed=1,
                                 replications=3, engine="auto", jobs=1, out=out / "capacity", quiet=quiet,
                                 draws=DEFAULT_DRAWS)
    short = staffing.to_dict()["scenarios"][0]
    slo, shi = short.get("uplift_interval") or short["uplift_ci"]
    yield (f"6 capacity   SimPy queues: {short['name']} instead of 6: {100 * short['uplift']:+.2f} points "
           f"[{100 * slo:+.2f}, {100 * shi:+.2f}] -> {path}")

    # a study of its own per bundled model: a folder left by an older journey's demo would otherwise be
    # resumed, and refused (its study was made for another model)
    study = f"demo budget, model {sha256_of(bundled)[:12]}"
    path, best = run_optimize(demo_file("examples/budget.toml"), trials=trials, seed=1, storage=None,
                              study=study, workers=1, pareto=False, customers=customers, out=out / "optimize",
                              quiet=quiet, draws=DEFAULT_DRAWS)
    olo, ohi = best["expected_uplift_interval"]
    yield (f"7 optimize   {trials} trials: expected uplift {100 * best['expected_uplift']:+.2f} points "
           f"[{100 * olo:+.2f}, {100 * ohi:+.2f}] (data) for {best['spend']:.0f} spent -> {path}")

    path, backtest = run_backtest(events, split=DEMO_SPLIT, stages=None, conversion_stage=None,
                                  inactivity_days=30.0, mapping=None, out=out / "backtest")
    conv = model.conversion_stage
    yield (f"8 backtest   later cohort reaching {conv}: predicted {100 * backtest['predicted'][conv]:.1f} %, "
           f"observed {100 * backtest['observed'][conv]:.1f} %, earlier customers "
           f"{100 * backtest['naive'][conv]:.1f} % -> {path}")

    report = build_report([out / "simulate", out / "compare", out / "forecast", out / "capacity", out / "optimize",
                           out / "backtest"], out / "report.html")
    yield f"9 report     open {report}"
