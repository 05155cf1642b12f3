"""Progress bars for long operations, on stderr and only on a terminal (logs and pipes stay clean)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: advance(by=1, *, completed=None, total=None, description=""): move the bar on
Advance = Callable[..., None]


def _console() -> Console:
    return Console(stderr=True)


def shown() -> bool:
    """Whether progress bars are shown (stderr is a terminal)."""
    return _console().is_terminal


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Advance]:
    """A bar for `total` steps (None: unknown); yields `advance`."""
    console = _console()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=False,
    )
    task = progress.add_task(description, total=total)

    def advance(
        by: int = 1, *, completed: int | None = None, total: int | None = None, description: str = ""
    ) -> None:
        fields: dict[str, object] = {"description": description} if description else {}
        if total is not None:
            fields["total"] = total
        if completed is not None:
            progress.update(task, completed=completed, **fields)  # type: ignore[arg-type]
        else:
            progress.update(task, advance=by, **fields)  # type: ignore[arg-type]

    with progress:
        yield advance


@contextmanager
def waiting_for(command: str) -> Iterator[Callable[[list[str]], None]]:
    """A one-line spinner `<command>: waiting for A, B`; yields the function that names what is still
    awaited (nothing is shown off a terminal, nor once the list is empty)."""
    console = _console()
    if not console.is_terminal:
        yield lambda _: None
        return
    with console.status(f"{command}: starting") as spinner:

        def update(awaited: list[str]) -> None:
            if awaited:
                spinner.update(f"{command}: waiting for {', '.join(awaited)}")

        yield update
