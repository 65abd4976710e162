"""The evaluation package's logger (``realcam.eval``) on the project's one set-up (:mod:`annotate.log`)."""

from __future__ import annotations

import logging

from annotate.log import get_logger, progress, progress_bar
from annotate.log import setup_logging as _setup_logging

__all__ = ["logger", "progress", "progress_bar", "setup_logging"]

logger = get_logger("eval")


def setup_logging(verbose: bool = False) -> None:
    """Evaluation commands log INFO by default (their progress lines), DEBUG with ``--verbose``."""
    _setup_logging(2 if verbose else 0, default=logging.INFO)
