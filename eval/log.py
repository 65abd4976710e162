"""The evaluation package's logger (``realcam.eval``) on the project's one set-up (:mod:`annotate.log`)."""

from __future__ import annotations

import logging

from annotate.log import get_logger, progress, progress_bar

__all__ = ["ERRORS", "LOG_LEVEL", "logger", "progress", "progress_bar"]

logger = get_logger("eval")
LOG_LEVEL = logging.INFO  # evaluation commands log INFO (their progress lines) without -v
ERRORS = (ValueError, FileNotFoundError, RuntimeError)  # bad inputs: the commands print one ``error:`` line, exit 2
