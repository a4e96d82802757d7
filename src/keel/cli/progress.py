"""The command line's one progress bar: Rich, on stderr, fed by the library's callbacks.

The library reports progress as plain callbacks (``progress(done, total)`` from
``keel.data.add`` or ``keel.scoring.predict_file``, ``progress(stage, done,
total)`` from profiling and drift) and never draws anything; commands wrap the
call in :func:`progress_bar` and pass the bar, or its :meth:`ProgressBar.stage`,
as that callback::

    with progress_bar("scoring rows.csv", "rows", enabled=flag) as bar:
        predict_file(uri, "rows.csv", "out.parquet", progress=bar)

The bar is drawn only when stderr is a terminal (or when ``enabled=True``
forces it, as ``--progress`` does), and it clears itself when the work ends:
stdout stays the command's result alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar:
    """One row per task: its label, a bar, the percentage, ``done/total unit``, elapsed time.

    Args:
        label: the main task's label, e.g. ``"adding"`` or ``"scoring rows.csv"``.
        unit: what is counted: ``"files"``, ``"rows"``, ``"steps"``.
        enabled: ``None`` draws when stderr is a terminal, ``True`` always,
            ``False`` never.
    """

    def __init__(self, label: str, unit: str, *, enabled: bool | None = None) -> None:
        self.label = label
        self.unit = unit
        self.enabled = enabled
        # Rich loads with the first bar, not with every command module that can show one.
        from rich.console import Console

        # Lines printed through this console while the bar runs appear above it.
        self.console = Console(
            stderr=True, highlight=False, soft_wrap=True, force_terminal=True if enabled else None
        )
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressBar:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]{task.description}[/bold]"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=self.enabled is False or not self.console.is_terminal,
        )
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __call__(self, done: int, total: int | None) -> None:
        """Move the main task to ``done`` of ``total`` (``None``: not known yet)."""
        self.stage(self.label, done, total)

    def stage(self, stage: str, done: int, total: int | None) -> None:
        """Move the task named ``stage`` (added on first use) to ``done`` of ``total``."""
        if self._bar is None:
            return
        task = self._tasks.get(stage)
        if task is None:
            task = self._tasks[stage] = self._bar.add_task(stage, total=total, count="")
        count = f"{done:,}/{total:,} {self.unit}" if total is not None else f"{done:,} {self.unit}"
        self._bar.update(task, completed=done, total=total, count=count)


@contextlib.contextmanager
def progress_bar(
    label: str = "", unit: str = "", *, enabled: bool | None = None
) -> Iterator[ProgressBar]:
    """A :class:`ProgressBar` running for the duration of the block.

    Args:
        label: the main task's label (what ``bar(done, total)`` moves).
        unit: what is counted, shown after the count.
        enabled: ``None`` draws when stderr is a terminal, ``True`` always, ``False`` never.
    """
    with ProgressBar(label, unit, enabled=enabled) as bar:
        yield bar
