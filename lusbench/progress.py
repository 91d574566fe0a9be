"""Progress on stderr: a live bar on a terminal, plain log lines elsewhere (CI, pipes, files)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


def live_output_wanted(stream: TextIO) -> bool:
    """Bars only on an interactive terminal and never when ``CI`` is set (docs/cli.md)."""
    return stream.isatty() and not os.environ.get("CI")


class _PlainBar:
    """The bar interface without drawing: keeps the count so callers need no special case."""

    def __init__(self) -> None:
        self.completed = 0

    def update(self, completed: int | None = None, description: str | None = None) -> None:
        if completed is not None:
            self.completed = completed


class _RichBar:
    def __init__(self, progress: Any, task_id: Any) -> None:
        self._progress, self._task_id = progress, task_id
        self.completed = 0

    def update(self, completed: int | None = None, description: str | None = None) -> None:
        if completed is not None:
            self.completed = completed
        self._progress.update(self._task_id, completed=completed, description=description)


class Progress:
    """Notes and bars for long work, all on ``stream`` (stderr by default); ``quiet`` silences notes."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = live_output_wanted(self.stream) and not quiet
        self._console: Any = None
        if self.live:
            from rich.console import Console

            self._console = Console(file=self.stream)

    def note(self, message: str) -> None:
        if self.quiet:
            return
        if self._console is not None:
            self._console.print(f"[dim]{message}[/dim]", highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    @contextmanager
    def task(self, description: str, total: int, unit: str = "steps") -> Iterator[_PlainBar | _RichBar]:
        """A bar counting ``total`` ``unit`` (e.g. "epochs, all folds"), with its elapsed and remaining time."""
        if not self.live:
            yield _PlainBar()
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        # Labelled: a bare "12/36 0:00:41 0:01:20" does not say what is counted nor which time is which.
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                   TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("remaining"), TimeRemainingColumn())
        with RichProgress(*columns, console=self._console, transient=True) as progress:
            yield _RichBar(progress, progress.add_task(description, total=total))
