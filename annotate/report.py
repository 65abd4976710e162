"""What an annotation run produced: counts, failure reasons, the scale distribution, and plots.

    python -m annotate report OUT [--clip CLIP_ID] [--out DIR] [key=value ...]

Writes (default ``OUT/report/``): ``scale_hist.png`` (scale_min / scale_max with the filter's cut-offs),
``frame_scale_spread.png`` (per clip max/min and coefficient of variation of the frame scales), for one clip
``clip_<id>_trajectory.png`` (camera path in relative and in metric units) and ``clip_<id>_points.png``
(paper Fig. 4 style: triangulated points times the scale beside the metric-depth points, same keypoints,
in the camera frame). The clip's observations are recomputed on the fly from the input manifest recorded
in manifest.json (one clip, seconds); ``report.md`` lists everything.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annotate import output
from annotate.command import Command

log = logging.getLogger("realcam")


class ReportError(RuntimeError):
    pass


@dataclass
class ReportConfig:
    out: str  # annotation output folder
    clip: str = ""  # clip for the trajectory and point plots ('' = the first kept clip)
    report_dir: str = ""  # where plots and report.md go ('' = report/ in the output folder)


@dataclass
class Report:
    folder: Path
    text: str = ""
    plots: dict[str, str] = field(default_factory=dict)  # file name -> caption
    clip: str = ""


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def frame_spread(frame_scales: list) -> tuple[np.ndarray, np.ndarray]:
    """Per clip: max/min and coefficient of variation of its finite frame scales."""
    ratio, cv = [], []
    for fs in frame_scales:
        v = np.asarray([x for x in fs if x is not None], np.float64)
        v = v[np.isfinite(v)]
        if len(v):
            ratio.append(v.max() / v.min())
            cv.append(v.std() / v.mean())
    return np.array(ratio), np.array(cv)


def summary_text(t, mj: dict) -> str:
    rows = t.select(["clip_id", "split", "status", "error", "keep", "scale", "scale_min", "scale_max"]).to_pylist()
    lines = [f"# Annotation report: {len(rows)} clips", ""]
    splits = sorted({r["split"] for r in rows})
    lines += ["| split | rows | ok | failed | kept |", "|---|---|---|---|---|"]
    for sp in splits + ["all"]:
        sel = [r for r in rows if sp == "all" or r["split"] == sp]
        lines.append(f"| {sp} | {len(sel)} | {sum(r['status'] == 'ok' for r in sel)} | "
                     f"{sum(r['status'] != 'ok' for r in sel)} | {sum(bool(r['keep']) for r in sel)} |")
    fails = Counter(output.error_kind(r["error"]) for r in rows if r["status"] != "ok")
    lines += ["", "## Failure reasons", ""]
    if fails:
        example = {}
        for r in rows:
            if r["status"] != "ok":
                example.setdefault(output.error_kind(r["error"]), r)
        for k, n in fails.most_common():
            ex = example[k]
            lines.append(f"- {k}: {n} (e.g. `{ex['clip_id']}`: {ex['error'][:200]})")
    else:
        lines.append("- none")
    ok = [r for r in rows if r["status"] == "ok"]
    lines += ["", "## Scale distribution (ok clips, metres per relative unit)", ""]
    if ok:
        lines += ["| | min | 2% | 25% | median | 75% | 98% | max |", "|---|---|---|---|---|---|---|---|"]
        for c in ("scale", "scale_min", "scale_max"):
            v = np.array([r[c] for r in ok], np.float64)
            q = np.quantile(v, [0, 0.02, 0.25, 0.5, 0.75, 0.98, 1])
            lines.append(f"| {c} | " + " | ".join(f"{x:.4g}" for x in q) + " |")
    filt = mj.get("filter", {})
    th = filt.get("thresholds", {})
    if th:
        lines += ["", f"Filter (quantile {filt.get('quantile')}): scale_max in {th.get('scale_max')}, "
                      f"scale_min in {th.get('scale_min')}; kept {filt.get('kept')} of {len(ok)} ok clips."]
    return "\n".join(lines) + "\n"


def plot_scales(t, mj: dict, folder: Path) -> dict[str, str]:
    plt = _plt()
    ok = t.filter(t.column("status").to_numpy(zero_copy_only=False) == "ok")
    th = mj.get("filter", {}).get("thresholds", {})
    out = {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, col in zip(axes, ("scale_min", "scale_max")):
        v = ok.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
        v = v[np.isfinite(v) & (v > 0)]
        if len(v):
            bins = np.geomspace(v.min() * 0.95, v.max() * 1.05, min(60, max(10, len(v) // 3)))
            ax.hist(v, bins=bins, color="tab:blue", alpha=0.8)
            ax.set_xscale("log")
        for x in th.get(col) or []:
            if x is not None:
                ax.axvline(x, color="tab:red", ls="--", lw=1)
        ax.set_title(f"{col} (red: filter cut-offs)")
        ax.set_xlabel("metres per relative unit")
        ax.set_ylabel("clips")
    fig.tight_layout()
    fig.savefig(folder / "scale_hist.png", dpi=110)
    plt.close(fig)
    out["scale_hist.png"] = "Histograms of scale_min and scale_max over ok clips; dashed: the quantile filter's bounds."

    ratio, cv = frame_spread(ok.column("frame_scale").to_pylist())
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, v, title in ((axes[0], ratio, "max / min frame scale per clip"),
                         (axes[1], cv, "coefficient of variation of frame scales")):
        if len(v):
            ax.hist(v, bins=min(50, max(10, len(v) // 3)), color="tab:green", alpha=0.8)
        ax.set_title(title)
        ax.set_ylabel("clips")
    fig.tight_layout()
    fig.savefig(folder / "frame_scale_spread.png", dpi=110)
    plt.close(fig)
    out["frame_scale_spread.png"] = ("Spread of the frame scales within each ok clip (a consistent clip has "
                                     "max/min near 1 and a small CV).")
    return out


def recompute_observations(out: Path, clip_id: str, mj: dict) -> dict:
    """The clip's keypoint observations (relative depth z, metric depth) from its input files."""
    from annotate.clip import DepthStage, triangulate_stage
    from annotate.config import from_dict
    from annotate.job import JobConfig
    from annotate.manifest import read_manifest, resolve_paths

    manifest = Path(mj.get("input_manifest", ""))
    if not manifest.is_file():
        raise FileNotFoundError(f"input manifest {manifest} (from manifest.json) not found")
    cfg = from_dict(JobConfig, mj.get("config", {}))
    rows, _ = read_manifest(manifest)
    row = next((r for r in rows if r.get("clip_id") == clip_id), None)
    if row is None:
        raise ReportError(f"{clip_id} is not in {manifest}")
    rec = triangulate_stage(resolve_paths(row, manifest.parent), cfg.clip, keep_frames=True)
    rec = DepthStage(cfg.clip.depth)(rec)
    rec.pop("_frames", None)
    if rec["status"] != "ok":
        raise RuntimeError(rec["error"])
    return rec


def plot_clip(row: dict, rec: dict | None, folder: Path) -> dict[str, str]:
    plt = _plt()
    from annotate.camera import intrinsics_to_pixels, relative_to, unproject, w2c_to_c2w

    cid, nf, scale = row["clip_id"], row["num_frames"], row["scale"]
    out = {}
    w2c = np.asarray(row["w2c"], np.float64).reshape(nf, 3, 4)
    rel = relative_to(w2c_to_c2w(w2c), 0)
    met = np.asarray(row["c2w_metric"], np.float64).reshape(nf, 4, 4)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, c2w, unit in ((axes[0], rel, "relative units"), (axes[1], met, "metres")):
        c = c2w[:, :3, 3]
        ax.plot(c[:, 0], c[:, 2], "-o", ms=3)
        fwd = c2w[:, :3, 2]
        step = max(1, nf // 8)
        span = max(np.ptp(c[:, [0, 2]], axis=0).max(), 1e-9)
        ax.quiver(c[::step, 0], c[::step, 2], fwd[::step, 0], fwd[::step, 2], color="tab:orange",
                  angles="xy", scale_units="xy", scale=4 / span, width=0.004)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel(f"x ({unit})")
        ax.set_ylabel(f"z ({unit})")
        ax.set_title(f"camera path, {unit}")
    fig.suptitle(f"{cid}: scale {scale:.4g} m per relative unit")
    fig.tight_layout()
    name = f"clip_{cid}_trajectory.png"
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    out[name] = f"Camera centres of {cid} (top view, x-z, relative to frame 0) in relative and in metric units."

    if rec is None:
        return out
    fr = np.asarray(rec["obs_frame"])
    f = int(np.bincount(fr).argmax())  # the frame with the most points
    sel = fr == f
    xy = np.asarray(rec["obs_xy"], np.float64).reshape(-1, 2)[sel]
    z_tri = np.asarray(rec["obs_z"], np.float64)[sel] * scale
    z_met = np.asarray(rec["obs_metric"], np.float64)[sel]
    intr = intrinsics_to_pixels(np.asarray(row["intrinsics"], np.float64).reshape(nf, 4)[f], rec["frame_w"],
                                rec["frame_h"])
    ray_x = unproject(xy[:, 0], xy[:, 1], 1.0, intr)[:, 0]  # x / z of each keypoint's ray
    good = np.isfinite(z_met) & (z_met > 0)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ax = axes[0]
    ax.scatter(ray_x * z_tri, z_tri, s=4, label="triangulated x scale", alpha=0.7)
    ax.scatter(ray_x[good] * z_met[good], z_met[good], s=4, label="metric depth", alpha=0.7)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m)")
    ax.set_title(f"frame {f}: {sel.sum()} points, camera frame (top view)")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.scatter(z_met[good], z_tri[good], s=4, alpha=0.7)
    if good.any():
        lim = [0, max(z_met[good].max(), z_tri[good].max()) * 1.05]
        ax.plot(lim, lim, "k--", lw=1)
    ax.set_xlabel("metric depth (m)")
    ax.set_ylabel("triangulated depth x scale (m)")
    ax.set_title("per point")
    fig.suptitle(f"{cid}: triangulated points x scale vs metric-depth points")
    fig.tight_layout()
    name = f"clip_{cid}_points.png"
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    out[name] = (f"Frame {f} of {cid}: the triangulated points multiplied by the clip scale beside the points "
                 f"back-projected with the metric depth at the same keypoints (they coincide when the scale is right).")
    return out


def report(out: str | Path, clip: str | None = None, report_dir: str | Path | None = None,
           quiet: bool = False) -> Report:
    out = Path(out)
    if not output.list_shards(out):
        raise FileNotFoundError(f"{out}: no shards under {out / output.CLIPS_DIR}")
    output.check_shards(out)  # a damaged shard is named here, not met as an ArrowInvalid traceback below
    folder = Path(report_dir) if report_dir else out / "report"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK | os.X_OK)
    except OSError as e:
        raise ReportError(f"cannot create the report folder {folder} ({e.strerror}); "
                          f"choose another with --out DIR") from None
    if not writable:
        raise ReportError(f"the report folder {folder} is read-only; choose another with --out DIR")
    mj = output.read_manifest_json(out)
    t = output.read_table(out)
    rep = Report(folder, summary_text(t, mj))
    rep.plots.update(plot_scales(t, mj, folder))

    ok_rows = [r for r in t.select(["clip_id", "status", "keep"]).to_pylist() if r["status"] == "ok"]
    if clip is None and ok_rows:
        kept = [r["clip_id"] for r in ok_rows if r["keep"]] or [r["clip_id"] for r in ok_rows]
        clip = sorted(kept)[0]
    notes = []
    if clip:
        ids = t.column("clip_id").to_pylist()
        if clip not in ids:
            raise ReportError(f"{clip} is not in {out}")
        row = t.slice(ids.index(clip), 1).to_pylist()[0]
        rep.clip = clip
        if row["status"] != "ok":
            notes.append(f"Clip `{clip}` failed ({row['error']}); no plots for it.")
        else:
            try:
                rec = recompute_observations(out, clip, mj)
            except Exception as e:  # noqa: BLE001 - the rest of the report is still useful
                notes.append(f"Points of `{clip}` not plotted: {e.__class__.__name__}: {e}")
                rec = None
            rep.plots.update(plot_clip(row, rec, folder))
    md = rep.text + "\n## Plots\n\n" + "".join(f"- [{n}]({n}): {c}\n" for n, c in rep.plots.items())
    if notes:
        md += "\n" + "\n".join(f"> {n}" for n in notes) + "\n"
    (folder / "report.md").write_text(md)
    rep.text = md
    if not quiet:
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(rep.text))
        print(f"report: {folder / 'report.md'}")
    return rep


def main(cfg: ReportConfig) -> Report:
    """The report of ``cfg.out`` (:func:`report`; printed)."""
    return report(cfg.out, cfg.clip or None, cfg.report_dir or None)


def command() -> Command:
    return Command(ReportConfig, lambda cfg, args: main(cfg), "python -m annotate report",
                   __doc__.split("\n\n")[0], positionals=("out",), flags={"--clip": "clip", "--out": "report_dir"},
                   errors=(FileNotFoundError, output.ShardError, ReportError))


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
