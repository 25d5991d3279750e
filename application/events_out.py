"""`simulate --events-out`: the simulated event log written to a Parquet file, atomically.

The rows come from sim.engines.events (pure); this module owns the file: the path check, the
temporary file beside the target, the ParquetWriter and the rename.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from sim.engines.events import event_schema, event_tables
from sim.errors import InputError
from sim.model import Model


def check_events_path(path: str | Path) -> Path:
    """InputError unless ``path`` names a Parquet file that can be written."""
    path = Path(path)
    if path.suffix.lower() != ".parquet":
        raise InputError("the simulated event log is written as Parquet", where="--events-out", value=str(path),
                         hint="give a file name ending in .parquet")
    if path.is_dir():
        raise InputError("is a directory", where="--events-out", value=str(path), hint="give a file name")
    return path


def write_event_log(model: Model, n_customers: int, seed: np.random.SeedSequence | int, path: str | Path, *,
                    horizon_days: float | None = None, arrival_days: float | None = None) -> Path:
    """Simulate ``n_customers`` journeys and write their interactions to ``path`` (Parquet, atomically).

    Customers arrive uniformly over ``arrival_days`` from 2024-01-01T00:00Z. With ``horizon_days``
    a journey's rows later than that many days after its arrival are left out. An int ``seed`` is a
    run's root seed: its "events" stream draws the log.
    """
    import pyarrow.parquet as pq

    from application.context import RunContext

    if not isinstance(seed, np.random.SeedSequence):
        seed = RunContext(int(seed)).stream("events")

    path = check_events_path(path)
    schema = event_schema(model)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
    except OSError as exc:
        raise InputError(f"cannot write the event log here ({exc.strerror})", where="--events-out",
                         value=str(path)) from None
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for table in event_tables(model, n_customers, seed, schema, horizon_days=horizon_days,
                                      arrival_days=arrival_days):
                writer.write_table(table)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write the event log ({exc.strerror or exc})", where="--events-out",
                         value=str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
