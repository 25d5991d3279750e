"""Progress bars for long work: rich in a terminal, silent otherwise (or with --quiet)."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(description: str, total: float, *, quiet: bool = False) -> Iterator[Callable[[float], None]]:
    """Yield ``advance(amount)``; draws a bar on stderr only when it is a terminal."""
    if quiet or not sys.stderr.isatty():
        yield lambda amount: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda amount: bar.advance(task, amount)


@contextmanager
def read_progress(show: bool = True) -> Iterator[Callable[[str, int, int], None] | None]:
    """Yield ``progress(what, done, total)`` for a long read (one bar per ``what``: reading, summing), drawn on
    stderr only when it is a terminal; None otherwise, so the library skips the bookkeeping."""
    if not show or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f} %"),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=max(total, 1))
            bar.update(tasks[what], completed=done, total=max(total, 1))

        yield progress
