"""The Dask client behind `--scheduler` (calibrate, simulate, compare): one started here, or a running one."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sim.errors import InputError


@contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator[object | None]:
    """A Dask client for --scheduler (None without one): a local cluster of ``workers``, or the address given."""
    if scheduler is None:
        yield None
        return
    from calibration.cluster import connect

    with connect(scheduler, workers) as client:
        yield client


def check_runner(jobs: int, scheduler: str | None) -> None:
    """Replications run here on ``--jobs`` processes or on ``--scheduler``'s cluster, not both."""
    if scheduler is not None and jobs > 1:
        raise InputError("runs the replications on processes here; --scheduler runs them on the cluster",
                         where="--jobs", value=jobs, hint="give one of --jobs and --scheduler")


def scheduler_args(scheduler: str | None, workers: int) -> dict:
    """What a manifest records of --scheduler: nothing without one, so other runs' manifests stay as they were."""
    if scheduler is None:
        return {}
    return {"scheduler": scheduler, "workers": workers if scheduler == "local" else None}
