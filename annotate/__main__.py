"""``python -m annotate {fetch,extract,index,import-colmap,import-nerfstudio,run,report,synth} ...``: the
annotation stages from the command line. Each is a typed config plus ``main(cfg)`` in its module, with a
command line generated from the config (annotate/command.py)."""

from __future__ import annotations

import sys

COMMANDS = {
    "fetch": ("annotate.fetch", "download the videos of the camera files (yt-dlp)"),
    "extract": ("annotate.extract", "cut downloaded videos at the camera files' timestamps"),
    "index": ("annotate.index", "build a clip manifest from a RealEstate10K download"),
    "import-colmap": ("annotate.imports:cli_colmap", "a COLMAP model as a RealEstate10K clip"),
    "import-nerfstudio": ("annotate.imports:cli_nerfstudio",
                          "a nerfstudio transforms.json as a RealEstate10K clip"),
    "run": ("annotate.job_cli", "annotate a clip manifest with Ray (resumable)"),
    "report": ("annotate.report", "counts, failure reasons and plots of an output folder"),
    "synth": ("annotate.synth", "synthetic clips with ground truth"),
}


def main(argv: list[str] | None = None) -> int:
    from annotate.command import dispatch

    return dispatch(COMMANDS, argv, "python -m annotate",
                    "Absolute-scale camera annotation of RealEstate10K-style clips.")


if __name__ == "__main__":
    sys.exit(main())
