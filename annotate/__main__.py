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
    from annotate import extract, fetch, imports, index, report
    from annotate import job_cli as job
    from annotate.config import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m annotate",
                                description="Absolute-scale camera annotation of RealEstate10K-style clips.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def cmd(name: str, text: str) -> argparse.ArgumentParser:  # every command's --help shows the defaults
        return sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)

    fetch.add_arguments(cmd("fetch", "download the videos of the camera files (yt-dlp)"))
    extract.add_arguments(cmd("extract", "cut downloaded videos at the camera files' timestamps"))
    index.add_arguments(cmd("index", "build a clip manifest from a RealEstate10K download"))
    imports.add_arguments(cmd("import-colmap", "a COLMAP model as a RealEstate10K clip"), "colmap")
    imports.add_arguments(cmd("import-nerfstudio", "a nerfstudio transforms.json as a RealEstate10K clip"),
                          "nerfstudio")
    job.add_arguments(cmd("run", "annotate a clip manifest with Ray (resumable); every config key below"))
    report.add_arguments(cmd("report", "counts, failure reasons and plots of an output folder"))
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
