"""Shared test fixtures: small synthetic clips with exact ground truth, and tiny saved models.

Everything here is generated in-process (no downloads); session-scoped so the suite renders once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

FIXTURES = Path(__file__).parent / "fixtures"
RE10K_DIR = FIXTURES / "re10k_poses"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: extra intra-op threads only add contention on shared CI cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def scale_clips(tmp_path_factory) -> Path:
    """Three 24-frame 320x180 clips (a real RealEstate10K path, a walk, an orbit) with exact depth."""
    from annotate.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("scale_clips")
    generate(SynthConfig(out=str(out), clips=3, frames=24, width=320, height=180, seed=7,
                         trajectories=["re10k", "walk", "orbit"], workers=2))
    return out


def make_tiny_depth_anything(folder: str | os.PathLike, max_depth: int = 20, size: int = 98) -> Path:
    """A Depth Anything V2 metric model with random weights, saved like the hub checkpoints are."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=size, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, depth_estimation_type="metric", max_depth=max_depth,
                              neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=16, head_hidden_size=16,
                              reassemble_hidden_size=32)
    import torch

    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(cfg)
    proc = DPTImageProcessorPil(do_resize=True, size={"height": size, "width": size}, keep_aspect_ratio=True,
                                ensure_multiple_of=14, resample=3, do_rescale=True, do_normalize=True,
                                image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    folder = Path(folder)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_depth_model(tmp_path_factory) -> Path:
    return make_tiny_depth_anything(tmp_path_factory.mktemp("tiny_depth_anything"))


# ------------------------------------------------------------------------------------------------ annotation job
# (issue 4) One small synthetic sample shared by tests/test_job.py, test_report.py and test_index.py, plus bad
# clips of every kind and one in-process run of the job over both.


@pytest.fixture(scope="session")
def annot_sample(tmp_path_factory) -> Path:
    """Six 16-frame 160x96 clips (every trajectory kind, train and test) with exact depth and ground truth."""
    from annotate.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("annot_sample")
    generate(SynthConfig(out=str(out), clips=6, frames=16, width=160, height=96, seed=0, workers=2))
    return out


def make_bad_clips(sample: Path) -> list[dict]:
    """One manifest row per kind of bad clip, files under ``sample/bad`` (paths relative to ``sample``)."""
    import csv

    import numpy as np

    good = list(csv.DictReader(open(sample / "manifest.csv")))[0]
    cam = (sample / good["pose_path"]).read_text().splitlines()
    bad = sample / "bad"
    bad.mkdir(exist_ok=True)

    def camera(name, lines):
        (bad / f"{name}.txt").write_text("\n".join(lines) + "\n")
        return f"bad/{name}.txt"

    rot = cam[3].split()
    rot[7] = str(float(rot[7]) * 1.5)  # scales one rotation entry: not orthonormal
    rows = {
        "bad_missing_video": (good["pose_path"], "videos/does_not_exist.mp4"),
        "bad_corrupt_video": (good["pose_path"], "bad/corrupt.mp4"),
        "bad_frame_count": (camera("frame_count", cam[:13]), good["video_path"]),
        "bad_rotation": (camera("rotation", cam[:3] + [" ".join(rot)] + cam[4:]), good["video_path"]),
        "bad_columns": (camera("columns", cam[:5] + [" ".join(cam[5].split()[:-1])] + cam[6:]), good["video_path"]),
        "bad_too_few_frames": (camera("too_few", cam[:2]), good["video_path"]),
    }
    (bad / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    return [{"clip_id": k, "split": "train", "pose_path": p, "video_path": v, "depth_path": good["depth_path"]}
            for k, (p, v) in rows.items()]


@pytest.fixture(scope="session")
def annot_manifest(annot_sample) -> Path:
    """The six good clips plus the six bad ones."""
    import csv

    from annotate.manifest import write_manifest

    rows = list(csv.DictReader(open(annot_sample / "manifest.csv"))) + make_bad_clips(annot_sample)
    path = annot_sample / "with_bad.csv"
    write_manifest(rows, path)
    return path


@pytest.fixture(scope="session")
def annotated_sample(annot_manifest, tmp_path_factory) -> Path:
    """The job run in-process (local Ray, 2 CPUs) over ``annot_manifest``; shards of at most 4 rows."""
    from annotate.job import JobConfig, run

    out = tmp_path_factory.mktemp("annotated") / "out"
    cfg = JobConfig(shard_rows=4, progress=False)
    cfg.ray.num_cpus = 2
    cfg.ray.object_store_mb = 256
    run(annot_manifest, out, cfg)
    return out


# ------------------------------------------------------------------------------------------------ trainer
# (issue 6) Tiny annotated clips for tests/test_train_*.py: rendered, annotated per clip in-process
# (annotate.clip.annotate_clip with the exact depth), written as one contract shard with keep=True for ok rows.


@pytest.fixture(scope="session")
def train_annotations(tmp_path_factory) -> dict:
    """{"manifest": path, "annotation_dir": path}: six 16-frame 96x64 clips (4 train, 2 test)."""
    import csv

    import pyarrow as pa

    from annotate.clip import annotate_clip
    from annotate.manifest import resolve_paths
    from annotate.output import rows_to_table, write_shard
    from annotate.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("train_clips")
    sample = root / "sample"
    generate(SynthConfig(out=str(sample), clips=6, frames=16, width=96, height=64, seed=3, test_every=3,
                         trajectories=["walk", "pan", "orbit", "zoom", "re10k"], workers=2))
    manifest = sample / "manifest.csv"
    rows = [annotate_clip(resolve_paths(r, sample)) for r in csv.DictReader(open(manifest))]
    table = rows_to_table(rows)
    ok = [r["status"] == "ok" for r in rows]
    table = table.set_column(table.schema.get_field_index("keep"), "keep", pa.array(ok, pa.bool_()))
    table = table.set_column(table.schema.get_field_index("filter_reason"), "filter_reason",
                             pa.array(["" if k else "failed" for k in ok], pa.string()))
    out = root / "annotation"
    write_shard(out, 0, table)
    return {"manifest": manifest, "annotation_dir": out, "rows": rows}
