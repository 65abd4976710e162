"""``python -m train --config train/configs/tiny.yaml [key=value ...]`` (or under ``accelerate launch -m train``).

Rerunning with the same ``run.output_dir`` resumes from its newest complete checkpoint; ``resume=none`` starts
afresh (refusing a non-empty folder unless ``overwrite=true``). See train/training-contract.md. Before anything
starts or is written a preflight checks every input path, the checkpoint format and the launch, and lists every
problem with its fix (exit code 2); ``--check`` (``make check-assets``) runs only that.
"""

from __future__ import annotations

import argparse
import sys

from annotate.command import Command


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", action="store_true",
                   help="check the inputs only (paths, checkpoint, tokenizer; not the launch) and exit: 0 when all "
                        "is in place (make check-assets)")


def run(cfg, args: argparse.Namespace) -> int:
    """Preflight, then train (``--check``: the preflight's inputs part only)."""
    from .preflight import check_train, launch_command

    check_train(cfg, args.config, args.overrides, launch=not args.check).raise_if_any()
    if args.check:  # the assets only: where it is checked (a login node) is rarely where it runs
        print(f"preflight passed: every input of {args.config or 'the default config'} is in place")
        if cfg.run.deepspeed:
            print(f"launch it with: {launch_command(args.config, args.overrides)} (= make train), or add "
                  "run.deepspeed='' for one process")
        return 0
    from .trainer import TrainingError, train

    try:
        train(cfg)
    except TrainingError as e:  # the run stopped itself (non-finite steps or weights); good checkpoints kept
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def command() -> Command:
    from .config import TrainConfig, check, read_preset

    return Command(TrainConfig, run, "python -m train", __doc__, flags={}, options=_options,
                   presets="trainer preset (train/configs/*.yaml) or a run's config.yaml",
                   load_preset=read_preset, check=check)


def main(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(main())
