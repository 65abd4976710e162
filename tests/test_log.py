"""The one logging set-up and progress helper (annotate/log.py)."""

from __future__ import annotations

import logging

from annotate.log import get_logger, level_of, progress, progress_bar, setup_logging


def test_levels_handler_once_and_ranks(capsys):
    root = logging.getLogger("realcam")
    before = (root.level, list(root.handlers))
    try:
        assert (level_of(0), level_of(1), level_of(2), level_of(0, logging.INFO)) == \
            (logging.WARNING, logging.INFO, logging.DEBUG, logging.INFO)
        setup_logging(1)
        setup_logging(1)  # a second command in one process replaces the handler instead of adding one
        assert sum(getattr(h, "_realcam", False) for h in root.handlers) == 1
        get_logger("train").info("visible %d", 1)
        get_logger("train").debug("hidden")
        err = capsys.readouterr().err
        assert "INFO visible 1" in err and "hidden" not in err
        setup_logging(2, main_process=False, rank=3)  # another rank: warnings only, lines name the rank
        get_logger("eval").info("not on rank 3")
        get_logger("eval").warning("careful")
        err = capsys.readouterr().err
        assert "not on rank 3" not in err and "WARNING [rank 3] careful" in err
    finally:
        for h in [h for h in root.handlers if getattr(h, "_realcam", False)]:
            root.removeHandler(h)
        for h in before[1]:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(before[0])


def test_progress_yields_everything_enabled_or_not():
    assert list(progress(range(5), "x", enabled=False)) == list(range(5))
    assert list(progress(iter(range(3)), "y")) == [0, 1, 2]
    with progress_bar("z", 2, enabled=False) as bar:
        bar.advance()
        bar.update(completed=2, info="done")
        assert not bar.enabled
