"""Tables and plots from :mod:`eval.run` result folders.

``write_report([results_dir, ...], out_dir)`` writes

- ``table.md`` and ``table.csv``: one row per results folder (a method / setting), laid out like the
  paper's Table 1: RotErr, TransErr_rel, CamMC_rel, TransErr_abs, CamMC_abs, FVD (VideoGPT),
  FVD (StyleGAN-V), and the success rate (clips with at least one surviving trial / clips), followed
  in the Markdown by the failed clips and their errors;
- ``plots/<method>/<clip>.png``: estimated vs ground-truth camera centres (top and front views, each
  normalised by its own largest translation as the relative metrics are), the per-frame rotation
  error, and, when metric scales exist, both estimates in metres.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from annotate.camera import camera_centres, rotation_angle
from annotate.command import Command
from annotate.files import atomic_path, atomic_write_text
from eval.log import logger, progress
from eval.metrics import METRIC_NAMES, normalize_translation

TABLE_COLUMNS = [*METRIC_NAMES, "FVD_videogpt", "FVD_styleganv"]
HEADERS = {"RotErr": "RotErr↓", "TransErr_rel": "TransErr_rel↓", "CamMC_rel": "CamMC_rel↓",
           "TransErr_abs": "TransErr_abs↓", "CamMC_abs": "CamMC_abs↓", "FVD_videogpt": "FVD (VideoGPT)↓",
           "FVD_styleganv": "FVD (StyleGAN-V)↓"}


@dataclass
class ReportConfig:
    results: list[str]  # results folders written by `eval run`
    out_dir: str  # folder of table.md, table.csv and plots/
    names: list[str] | None = None  # row labels; default: the results folders' names
    plots: bool = True  # per-clip trajectory plots (False: tables only)
    max_failures_listed: int = 20  # failed clips listed per results folder in table.md


def load_summary(results_dir: str | Path) -> dict[str, Any]:
    path = Path(results_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run `python -m eval run` first)")
    return json.loads(path.read_text())


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def table_rows(summaries: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for name, s in summaries:
        row: dict[str, Any] = {"method": name}
        for c in TABLE_COLUMNS:
            v = s.get(c)
            row[c] = math.nan if v is None else float(v)
        n, ok = s.get("num_videos"), s.get("num_succeeded")
        row["num_clips"] = n if n is not None else ""
        row["num_succeeded"] = ok if ok is not None else ""
        sr = s.get("success_rate")
        row["success_rate"] = math.nan if sr is None else float(sr)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ["Method", *(HEADERS[c] for c in TABLE_COLUMNS), "Success"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        succ = "–" if r["num_clips"] == "" else \
            f"{r['num_succeeded']}/{r['num_clips']} ({100 * r['success_rate']:.1f}%)" if r["num_clips"] else "0/0"
        cells = [r["method"], *(_fmt(r[c], 2 if c.startswith("FVD") else 4) for c in TABLE_COLUMNS), succ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_clip(npz_path: str | Path, out_png: str | Path, title: str | None = None) -> Path:
    """One PNG comparing the estimated and ground-truth trajectories of a clip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = np.load(npz_path)
    gt, est = z["gt_c2w"], z["sample_c2w"]
    gt_n, est_n = camera_centres(normalize_translation(gt)), camera_centres(normalize_translation(est))
    rot = np.degrees(rotation_angle(gt[:, :3, :3], est[:, :3, :3]))
    s_s, s_g = float(z["scale_sample"]), float(z["scale_gt"])
    fig, axes = plt.subplots(2, 2, figsize=(9, 8))
    for ax, (i, j, lab) in zip(axes[0], [(0, 2, "top view (x, z)"), (0, 1, "front view (x, y)")]):
        ax.plot(gt_n[:, i], gt_n[:, j], "o-", ms=3, label="ground truth (RealEstate10K)")
        ax.plot(est_n[:, i], est_n[:, j], "s--", ms=3, label="estimated from sample")
        ax.plot(gt_n[0, i], gt_n[0, j], "k*", ms=10)
        ax.set_title(f"{lab}, normalised"), ax.set_aspect("equal", adjustable="datalim")
        if j == 1:
            ax.invert_yaxis()  # camera y points down
        ax.legend(fontsize=7)
    axes[1, 0].plot(rot, "o-", ms=3)
    axes[1, 0].set_title(f"rotation error per frame (deg), sum {np.radians(rot).sum():.3f} rad")
    axes[1, 0].set_xlabel("frame")
    ax = axes[1, 1]
    if math.isfinite(s_s) and math.isfinite(s_g):
        g = camera_centres(z["gt_video_c2w"]) * s_g
        e = camera_centres(est) * s_s
        ax.plot(g[:, 0], g[:, 2], "o-", ms=3, label=f"gt video estimate × {s_g:.3g}")
        ax.plot(e[:, 0], e[:, 2], "s--", ms=3, label=f"sample estimate × {s_s:.3g}")
        ax.set_title("metric top view (m)"), ax.set_aspect("equal", adjustable="datalim"), ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no metric scale\n(no depth source)", ha="center", va="center")
        ax.set_axis_off()
    fig.suptitle(title or Path(npz_path).stem)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png, keep_suffix=True) as tmp:  # matplotlib picks the format from the suffix
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return out_png


def write_report(cfg: ReportConfig) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = cfg.names or [Path(r).resolve().name for r in cfg.results]
    if len(names) != len(cfg.results):
        raise ValueError(f"{len(names)} names for {len(cfg.results)} results folders")
    summaries = [(n, load_summary(r)) for n, r in zip(names, cfg.results)]
    rows = table_rows(summaries)
    buf = io.StringIO(newline="")  # csv's own \r\n line ends, as a file opened with newline=""
    w = csv.DictWriter(buf, fieldnames=["method", *TABLE_COLUMNS, "num_clips", "num_succeeded", "success_rate"])
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "table.csv", buf.getvalue())
    md = ["# Camera control and video quality", "",
          "Sums over the frames of each clip, averaged over trials (pooled 10-std outlier rule) and clips; "
          "RotErr in radians. Relative metrics: RealEstate10K trajectory vs the sample's estimate, each "
          "normalised by its own largest translation. Absolute metrics: metric-scaled estimates of the "
          "sample and the ground-truth video, normalised by the latter's largest translation. "
          "Success: clips with at least one surviving trial.", "", markdown_table(rows)]
    for name, s in summaries:
        fails = s.get("failures") or {}
        if fails:
            md += [f"## Failed clips: {name} ({len(fails)})", ""]
            for clip, errs in list(fails.items())[: cfg.max_failures_listed]:
                md.append(f"- `{clip}`: {'; '.join(sorted(set(errs)))[:300]}")
            if len(fails) > cfg.max_failures_listed:
                md.append(f"- ... and {len(fails) - cfg.max_failures_listed} more (see clips.csv)")
            md.append("")
        if s.get("note"):
            md += [f"Note ({name}): {s['note']}", ""]
        if s.get("fvd_error"):
            md += [f"FVD error ({name}): {s['fvd_error']}", ""]
    atomic_write_text(out / "table.md", "\n".join(md))
    plots = []
    if cfg.plots:
        for name, r in zip(names, cfg.results):
            files = sorted((Path(r) / "trajectories").glob("*.npz"))
            for f in progress(files, f"plots ({name})", total=len(files)):
                try:
                    plots.append(str(plot_clip(f, out / "plots" / name / f"{f.stem}.png", f"{name}: {f.stem}")))
                except Exception as e:  # noqa: BLE001 - a bad file must not stop the table
                    logger.warning("plot of %s failed: %s", f, e)
    logger.info("wrote %s, %s and %d plots", out / "table.md", out / "table.csv", len(plots))
    return {"rows": rows, "plots": plots}


# ------------------------------------------------------------------------------------------------ command line


def main(cfg: ReportConfig) -> dict[str, Any]:
    """:func:`write_report` (the command also prints table.md)."""
    return write_report(cfg)


def _run(cfg: ReportConfig, args: argparse.Namespace) -> int:
    res = main(cfg)
    print((Path(cfg.out_dir) / "table.md").read_text())
    logger.info("%d plots in %s", len(res["plots"]), Path(cfg.out_dir) / "plots")
    return 0


def command() -> Command:
    from eval.log import ERRORS, LOG_LEVEL

    return Command(ReportConfig, _run, "python -m eval report", log_level=LOG_LEVEL, errors=ERRORS, description=
                   "Table-1 style Markdown/CSV and plots from results folders", positionals=("results",),
                   flags={"--out": "out_dir", "--names": "names", "--plots": "plots",
                          "--max-failures-listed": "max_failures_listed"})


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())
