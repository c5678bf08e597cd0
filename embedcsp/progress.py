"""Progress of long work, reported as it happens (stages and a bar over verification).

The pipeline calls a `Progress` it is handed; it never prints. `SILENT` is the
default for the library; the CLI uses `TerminalProgress` on stderr when stderr
is a terminal and JSON was not asked for (see docs/cli.md).
"""

from __future__ import annotations

import time
from typing import Protocol


class Progress(Protocol):
    def stage(self, name: str) -> None:
        """A new stage starts: 'solving', 'planning', 'verifying', ..."""

    def advance(self, done: int, total: int) -> None:
        """Work of the current stage done so far, in the stage's own units."""

    def close(self) -> None:
        """The work is over; remove anything transient."""


class _Silent:
    def stage(self, name: str) -> None:
        pass

    def advance(self, done: int, total: int) -> None:
        pass

    def close(self) -> None:
        pass


SILENT: Progress = _Silent()


class TerminalProgress:
    """Stage lines on a rich console; a bar once a stage has run for `bar_after` seconds."""

    def __init__(self, console, bar_after: float = 1.0):
        from rich.progress import (
            BarColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.console = console
        self.bar_after = bar_after
        self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                                 transient=True)
        self._task = None
        self._name = ""
        self._started = 0.0

    def stage(self, name: str) -> None:
        self._stop_bar()
        self._name, self._started = name, time.perf_counter()
        self.console.print(f"[dim]{name}...[/dim]", highlight=False)

    def advance(self, done: int, total: int) -> None:
        if self._task is None:
            if time.perf_counter() - self._started < self.bar_after:
                return
            self._bar.start()
            self._task = self._bar.add_task(self._name, total=total)
        self._bar.update(self._task, completed=done, total=total)

    def _stop_bar(self) -> None:
        if self._task is not None:
            self._bar.stop()
            self._task = None

    def close(self) -> None:
        self._stop_bar()
