"""Progress bars for the libraries' `on_progress(done, total)` callbacks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

COLUMNS = (
    TextColumn("[progress.description]{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
)


@contextlib.contextmanager
def progress_bar(console: Console, description: str) -> Iterator[Callable[[int, int], None]]:
    """A transient rich bar; yields the callback that moves it (`done` of `total`)."""
    with progress_bars(console, description) as (update,):
        yield update


@contextlib.contextmanager
def progress_bars(console: Console, *descriptions: str) -> Iterator[tuple[Callable[[int, int], None], ...]]:
    """Transient rich bars, one per description, shown together (e.g. sub-networks, and batches
    inside the current one); yields one callback per bar."""
    with Progress(*COLUMNS, console=console, transient=True) as progress:
        tasks = [progress.add_task(d, total=None) for d in descriptions]
        yield tuple(_mover(progress, task) for task in tasks)


def _mover(progress: Progress, task: TaskID) -> Callable[[int, int], None]:
    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return update
