"""``python -m train --config train/configs/tiny.yaml [key=value ...]`` (or under ``accelerate launch -m train``).

Rerunning with the same ``run.output_dir`` resumes from its newest complete checkpoint; ``resume=none`` starts
afresh (refusing a non-empty folder unless ``overwrite=true``). See train/training-contract.md.
"""

from __future__ import annotations

import argparse
import sys

from annotate.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="trainer preset (train/configs/*.yaml) or a run's config.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=5e-5 run.max_steps=200")
    args = p.parse_args(argv)
    from .config import load_train_config

    try:
        cfg = load_train_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .trainer import TrainingError, train

    try:
        train(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingError as e:  # the run stopped itself (non-finite steps or weights); good checkpoints kept
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
