"""`journey demo`: the whole pipeline on the bundled example log."""
from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from calibration.calibrate import run_calibrate
from sim.simulate import run_simulate


def demo_file(name: str) -> Path:
    """A file bundled in the `scenarios` package (demo data, example scenarios)."""
    return Path(str(resources.files("scenarios").joinpath(name)))


def run_demo(out: Path, *, customers: int = 200_000, quiet: bool = False) -> Iterator[str]:
    """Run each step, yielding one line per step for the terminal."""
    out = Path(out)
    events = demo_file("demo/events.csv.gz")
    model_path = out / "model.json"
    model = run_calibrate(events, model_path)
    yield (f"calibrated {model.log_summary['customers']} customers ({model.log_summary['rows']} rows) "
           f"-> {model_path}")
    path, summary = run_simulate(model_path, customers=customers, seed=1, replications=5, engine="fast",
                                 out=out / "simulate")
    lo, hi = summary["conversion_rate_ci"]
    yield (f"simulated {customers} customers x 5: conversion {summary['conversion_rate']:.4f} "
           f"[{lo:.4f}, {hi:.4f}], expected {summary['expected_conversion_rate']:.4f} -> {path}")
