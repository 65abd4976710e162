"""The evaluation package's one logger (``realcam.eval``) and progress bars."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

LOGGER_NAME = "realcam.eval"
logger = logging.getLogger(LOGGER_NAME)
T = TypeVar("T")


def setup_logging(verbose: bool = False) -> None:
    """Attach a rich handler to the package logger once (CLI entry points call this)."""
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if any(getattr(h, "_realcam_eval", False) for h in logger.handlers):
        return
    try:
        from rich.console import Console
        from rich.logging import RichHandler

        # stderr: stdout carries the commands' JSON.
        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    except ImportError:  # pragma: no cover - rich is a dependency
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._realcam_eval = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False


def progress(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate with a rich progress bar (a plain iteration when disabled or not on a terminal)."""
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True, console=Console(stderr=True))
