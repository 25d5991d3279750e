"""Shared fixtures: a known-truth world, its censored log on disk, and the calibrated model."""
from __future__ import annotations

import os
import sys
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # as cli.py: small matrices
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from worlds import make_world, simulate_log  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO_EVENTS = ROOT / "scenarios" / "demo" / "events.csv.gz"
DEMO_MODEL = ROOT / "scenarios" / "demo" / "model.json"


@pytest.fixture(scope="session")
def world():
    """True model of a world used by the estimator tests (seed 11)."""
    return make_world(11)


@pytest.fixture(scope="session")
def world_log(world, tmp_path_factory):
    """40 k customers over 180 days, log cut at day 180 (censored), with noise rows."""
    journeys = simulate_log(world, 40_000, seed=111, arrival_days=180.0, backward_noise=0.05, after_final=0.3)
    path = tmp_path_factory.mktemp("world") / "events.csv"
    journeys.events.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def world_model(world_log):
    from calibration.calibrate import calibrate

    return calibrate(world_log)


@pytest.fixture(scope="session")
def demo_model_path(tmp_path_factory):
    """A calibrated copy of the bundled demo model in a temporary folder."""
    from application.calibrate import run_calibrate

    path = tmp_path_factory.mktemp("demo") / "model.json"
    run_calibrate(DEMO_EVENTS, path)
    return path
