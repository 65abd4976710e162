"""``python -m annotate {fetch,extract,index,import-colmap,import-nerfstudio,run,report,synth} ...``: the
annotation stages from the command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "synth":  # its own parser
        from annotate import synth

        synth.main(argv[1:])
        return 0
    from annotate import extract, fetch, imports, index, job, report

    p = argparse.ArgumentParser(prog="python -m annotate",
                                description="Absolute-scale camera annotation of RealEstate10K-style clips.")
    sub = p.add_subparsers(dest="cmd", required=True)
    fetch.add_arguments(sub.add_parser("fetch", help="download the videos of the camera files (yt-dlp)"))
    extract.add_arguments(sub.add_parser("extract", help="cut downloaded videos at the camera files' timestamps"))
    index.add_arguments(sub.add_parser("index", help="build a clip manifest from a RealEstate10K download"))
    imports.add_arguments(sub.add_parser("import-colmap", help="a COLMAP model as a RealEstate10K clip"), "colmap")
    imports.add_arguments(sub.add_parser("import-nerfstudio", help="a nerfstudio transforms.json as a "
                                         "RealEstate10K clip"), "nerfstudio")
    job.add_arguments(sub.add_parser("run", help="annotate a clip manifest with Ray (resumable)"))
    report.add_arguments(sub.add_parser("report", help="counts, failure reasons and plots of an output folder"))
    sub.add_parser("synth", help="synthetic clips with ground truth (see python -m annotate synth -h)")
    args, extra = p.parse_known_args(argv)
    if args.cmd == "run":  # key=value overrides may also come after the options
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.cmd == "index":
        return index.run_from_args(args)
    if args.cmd == "extract":
        return extract.run_from_args(args)
    if args.cmd == "fetch":
        return fetch.run_from_args(args)
    if args.cmd in ("import-colmap", "import-nerfstudio"):
        return imports.run_from_args(args, args.cmd.split("-")[1])
    if args.cmd == "run":
        return job.run_from_args(args)
    return report.run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
