"""`journey drift`: drift.json in a run directory."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from application.rundir import check_run_out, run_directory
from calibration.drift import check_same_names, drift
from sim.limits import finite
from sim.model import Model


def run_drift(old: str | Path, new: str | Path, *, alpha: float = 0.05, out: str | Path | None = None,
              terminal: bool = False) -> tuple[Path, dict[str, Any]]:
    """Test two model files for drift and write drift.json; returns the run directory and the record.
    ``terminal``: show the ranked changes and where they went, as the CLI does."""
    finite(alpha, "--alpha", positive=True)
    old, new = Path(old), Path(new)
    if out is not None:
        check_run_out(out, [old, new])
    m_old, m_new = Model.load(old), Model.load(new)
    check_same_names(m_old, m_new, old, new)
    result = drift(m_old, m_new, alpha=alpha).to_dict()
    with run_directory("drift", out, {"old": str(old), "new": str(new), "alpha": alpha}, [old, new]) as run:
        run.json("drift.json", result)
    if terminal:
        import typer

        from application.terminal import render_drift

        render_drift(result)
        typer.echo(f"-> {run.final / 'drift.json'}")
    return run.final, result
