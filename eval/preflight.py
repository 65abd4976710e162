"""Preflight of ``python -m eval generate`` and ``python -m eval run``: every input exists with the expected kind
before a model, Ray or a process group starts and before the output folder is created (annotate/preflight.py)."""

from __future__ import annotations

from pathlib import Path

from annotate.preflight import (
    Problems,
    need_annotation_dir,
    need_depth_model,
    need_file,
    need_folder,
    need_manifest,
    need_output_folder,
)

ASSETS = "train/assets.md"


def check_generate(cfg) -> Problems:
    """Every problem of an ``eval generate`` config (:class:`eval.generate.GenerateConfig`)."""
    from train.preflight import check_model_options

    pb = Problems("python -m eval generate")
    need_output_folder(pb, cfg.out_dir, "--out")
    need_annotation_dir(pb, cfg.annotation_dir, "--annotations")
    need_manifest(pb, cfg.manifest, "--manifest")
    check_model_options(pb, cfg.model)
    if cfg.clips:
        need_file(pb, cfg.clips, "--clips", "a text file of clip ids, one a line")
    if cfg.captions:
        need_file(pb, cfg.captions, "--captions", f"a CSV or JSON of captions ({ASSETS})", (".csv", ".json"))
    if cfg.camera_cfg != 1.0:
        pb.add("camera CFG other than 1.0 is not implemented (the paper's evaluation uses 1.0)", "drop --camera-cfg")
    if cfg.depth == "model" or (cfg.depth == "auto" and not cfg.model.tiny):
        need_depth_model(pb, cfg.depth_model, "--depth-model")
    return pb


def check_run(cfg) -> Problems:
    """Every problem of an ``eval run`` config (:class:`eval.run.EvalRunConfig`)."""
    pb = Problems("python -m eval run")
    fix = "give the experiment folder that python -m eval generate wrote (samples/, gt_video/, camera_data/)"
    if need_folder(pb, cfg.exp_dir, "EXP_DIR", fix):
        exp = Path(cfg.exp_dir)
        if not any((exp / sub).is_dir() and any((exp / sub).iterdir())
                   for sub in ("samples", "gt_video", "camera_data")):
            pb.add(f"EXP_DIR {cfg.exp_dir!r}: no clips (expected samples/*.mp4, gt_video/*.mp4, camera_data/*.txt)",
                   fix)
    need_output_folder(pb, cfg.out_dir, "--out")
    if cfg.cache_dir:
        need_output_folder(pb, cfg.cache_dir, "--cache")
    fvd = cfg.fvd
    weights = (fvd.videogpt_weights, fvd.styleganv_torchscript) if fvd is not None else (None, None)
    for key, path in zip(("--videogpt-i3d", "--styleganv-i3d"), weights):
        if path:
            need_file(pb, path, key, f"the I3D weights for FVD ({ASSETS}, 'I3D')", (".pt", ".pth"))
    if cfg.poses:
        need_depth_model(pb, cfg.depth_model, "--depth-model")
    return pb
