"""`journey report DIR... --out report.html`: one self-contained page from run directories.

Each DIR is a simulate, compare, optimize or backtest run directory (recognised by summary.json,
comparison.json, best.json or backtest.json), or a folder whose sub-folders are (e.g. the demo's
``results/demo``). Figures are inlined as base64 PNG, so the page opens from a file with no network;
the PNGs (and each figure's data as JSON) are also written to ``<report stem>_figures/`` beside it,
because a report never writes into the run directories it reads.
"""
from __future__ import annotations

from pathlib import Path

from application.rundir import (
    REPORT_GENERATOR,
    check_output_file,
    check_run_out,
    run_directory,
    utc_now,
    write_text_atomic,
)
from present.report import render
from present.report_runs import RESULT_FILES, load_runs
from sim.errors import InputError

MAX_BYTES = 5_000_000


def build_report(dirs: list[Path], out: Path) -> Path:
    """Read the run directories, draw the figures, write ``out`` and ``<out stem>_figures/``."""
    out = Path(out)
    if out.is_dir():
        raise InputError("is a directory", file=out, where="--out", hint="give the HTML file to write, e.g. "
                         "--out report.html")
    runs = load_runs([Path(d) for d in dirs])
    fig_dir = out.parent / f"{out.stem}_figures"
    read = sorted({p for r in runs for p in r.path.iterdir() if p.is_file()})
    check_output_file(out, "report", read)  # before the work: never a run's file, never a user's file
    check_run_out(fig_dir, read)
    page = render(runs, generated=utc_now(), generator=REPORT_GENERATOR)
    size = len(page.html.encode("utf-8"))
    if size > MAX_BYTES:
        raise InputError(f"the report would be {size / 1e6:.1f} MB, over the {MAX_BYTES / 1e6:.0f} MB limit",
                         where="DIR", value=len(runs), hint="report fewer run directories at once")
    args = {"dirs": [str(d) for d in dirs], "out": str(out)}
    inputs = sorted({r.path / name for r in runs for name in (*RESULT_FILES, "manifest.json")
                     if (r.path / name).is_file()})
    # the figures folder belongs to this report: rebuilt whole, so no stale figure survives
    with run_directory("report", fig_dir, args, inputs) as run:
        for name, content in page.files().items():
            if isinstance(content, bytes):
                run.text(name, content)
            else:
                run.json(name, content)
    return write_text_atomic(out, page.html)
