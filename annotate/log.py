"""The project's one logging set-up and one progress helper, both on rich and both on stderr.

Every module logs to ``realcam`` or one of its children (``realcam.train``, ``realcam.eval``,
``realcam.inference``, ...): ``log = get_logger("train")``. Command lines call :func:`setup_logging` once; it
attaches one handler to ``realcam`` (children propagate to it), so the level is set in one place. stdout stays
free for the commands' JSON.

On a terminal the handler is rich's; elsewhere (a pipe, a log file, pytest's capture) it writes plain
``HH:MM:SS LEVEL message`` lines, because rich wraps long lines at 80 columns when it cannot ask a terminal for
its width, which splits paths and breaks grep.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

ROOT = "realcam"
log = logging.getLogger(ROOT)
T = TypeVar("T")


def get_logger(child: str | None = None) -> logging.Logger:
    """``realcam`` or ``realcam.<child>``."""
    return logging.getLogger(f"{ROOT}.{child}" if child else ROOT)


class _StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is at each record: a caller that swaps it (pytest's capture) and closes the
    old one does not leave the handler writing to a closed file."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def level_of(verbose: int | bool = 0, default: int = logging.WARNING) -> int:
    """``-v`` counts: 0 -> ``default`` (quiet: warnings), 1 -> INFO, 2 or more -> DEBUG; never above ``default``."""
    v = int(verbose)
    return min(default, logging.WARNING if v <= 0 else logging.INFO if v == 1 else logging.DEBUG)


def setup_logging(verbose: int | bool = 0, *, default: int = logging.WARNING, main_process: bool = True,
                  rank: int | None = None, logger: str = ROOT) -> logging.Logger:
    """Attach the handler to ``realcam`` (replacing one an earlier call attached) and set its level.

    ``verbose`` and ``default``: see :func:`level_of`. ``main_process=False`` (a non-zero rank of a distributed
    run) logs warnings and errors only; ``rank`` prefixes each line with ``[rank N]`` so the ranks' lines can be
    told apart. The logger keeps propagating to the root logger (pytest's caplog listens there); nothing in the
    project configures the root logger, so lines are not printed twice."""
    lg = logging.getLogger(logger)
    for h in [h for h in lg.handlers if getattr(h, "_realcam", False)]:
        lg.removeHandler(h)
    prefix = f"[rank {rank}] " if rank is not None else ""
    handler: logging.Handler
    if _stderr_is_terminal():
        from rich.console import Console
        from rich.logging import RichHandler

        # Console(stderr=True) looks sys.stderr up at each write, like _StderrHandler
        handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False,
                              log_time_format="%H:%M:%S")
        handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(message)s", "%H:%M:%S"))
    handler._realcam = True  # type: ignore[attr-defined]
    lg.addHandler(handler)
    lg.setLevel(level_of(verbose, default) if main_process else logging.WARNING)
    return lg


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced by an object without isatty
        return False


# ------------------------------------------------------------------------------------------------ progress


class Bar:
    """One rich progress bar (``with progress_bar(...) as bar``); every method is a no-op when disabled."""

    def __init__(self, progress, task):
        self._progress, self._task = progress, task

    def advance(self, n: float = 1, **fields) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n, **fields)

    def update(self, *, completed: float | None = None, total: float | None = None, **fields) -> None:
        """Set the count (``completed``), the ``total`` and the ``info`` text shown after the count."""
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, total=total, **fields)

    @property
    def enabled(self) -> bool:
        return self._progress is not None


@contextmanager
def progress_bar(description: str, total: float | None, *, enabled: bool = True, completed: float = 0,
                 transient: bool = True, info: str = "") -> Iterator[Bar]:
    """A rich bar on stderr: description, bar, done/total, an ``info`` text (``bar.update(info=...)``), elapsed
    time. ``enabled=False`` (``--no-progress``, non-main ranks) yields a bar that draws nothing."""
    if not enabled:
        yield Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=Console(stderr=True),
                  transient=transient) as p:
        yield Bar(p, p.add_task(description, total=total, completed=completed, info=info))


def progress(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True,
             transient: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a progress bar (a plain iteration when disabled)."""
    if not enabled:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total, transient=transient) as bar:
        for item in items:
            yield item
            bar.advance()
