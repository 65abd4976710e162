"""Training dataset: frame sampling, ResizeCrop intrinsics, relative cameras and the three scale options,
determinism, skipping unreadable videos, captions, and the resumable rank-sharded sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from annotate.camera import ResizeCrop, relative_to, w2c_to_c2w
from train.config import DataConfig
from train.data import CameraVideoDataset, ResumableSampler, choose_frames, load_clips

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_cfg(train_annotations) -> DataConfig:
    return DataConfig(annotation_dir=str(train_annotations["annotation_dir"]),
                      manifest=str(train_annotations["manifest"]), frames=8, height=32, width=48,
                      stride_range=(1, 10), val_stride=2, num_workers=0)


def test_kept_clips_of_split(data_cfg, train_annotations, tmp_path):
    import pyarrow as pa

    from annotate.output import read_table, write_shard

    rows = train_annotations["rows"]
    assert all(r["status"] == "ok" for r in rows)
    train = load_clips(data_cfg, "train")
    train_ids = sorted(r["clip_id"] for r in rows if r["split"] == "train")
    assert sorted(c["clip_id"] for c in train) == train_ids and len(train_ids) == 4
    assert len(load_clips(data_cfg, "test")) == 2
    # a clip the filter dropped (keep=False) is not a training clip
    table = read_table(train_annotations["annotation_dir"])
    dropped = train_ids[1]
    keep = [cid != dropped for cid in table.column("clip_id").to_pylist()]
    table = table.set_column(table.schema.get_field_index("keep"), "keep", pa.array(keep, pa.bool_()))
    write_shard(tmp_path / "annotation", 0, table)
    cfg = DataConfig(**{**data_cfg.__dict__, "annotation_dir": str(tmp_path / "annotation")})
    assert sorted(c["clip_id"] for c in load_clips(cfg, "train")) == [c for c in train_ids if c != dropped]


def test_sample_geometry(data_cfg):
    ds = CameraVideoDataset(data_cfg, train=True, seed=1)
    s = ds[(0, 1)]
    assert s["video"].shape == (3, 8, 32, 48) and -1 <= s["video"].min() and s["video"].max() <= 1
    clip = next(c for c in ds.clips if c["clip_id"] == s["clip_id"])
    idx = s["frame_indices"].numpy()
    assert np.all(np.diff(idx) == s["stride"]) and 1 <= s["stride"] <= 2  # 16 frames: stride <= 15 // 7
    k = s["cond_index"]
    torch.testing.assert_close(s["c2w"][k], torch.eye(4), atol=1e-5, rtol=0)
    plan = ResizeCrop.plan((64, 96), (32, 48))
    torch.testing.assert_close(s["intrinsics"], torch.from_numpy(plan.intrinsics(clip["intrinsics"][idx])).float())


def test_choose_frames_reduces_stride_for_short_clips():
    rng = np.random.default_rng(0)
    idx, stride = choose_frames(rng, n=16, frames=8, stride_range=10, random_start=False)
    assert stride == 2 and idx[-1] == 14
    for _ in range(50):
        idx, stride = choose_frames(rng, 40, 16, (1, 10), True)
        assert 1 <= stride <= 2 and idx[0] >= 0 and idx[-1] < 40


def test_validation_uses_frame_zero_and_fixed_stride(data_cfg):
    ds = CameraVideoDataset(data_cfg, train=False, seed=1)
    s = ds[0]
    assert s["cond_index"] == 0 and s["stride"] == 2 and s["frame_indices"][0] == 0


def test_deterministic_per_seed_epoch_index(data_cfg):
    a = CameraVideoDataset(data_cfg, train=True, seed=5)
    b = CameraVideoDataset(data_cfg, train=True, seed=5)
    s1, s2 = a[(3, 2)], b[(3, 2)]
    assert torch.equal(s1["video"], s2["video"]) and torch.equal(s1["c2w"], s2["c2w"])
    assert s1["cond_index"] == s2["cond_index"] and torch.equal(s1["frame_indices"], s2["frame_indices"])
    draws = {(a[(e, 2)]["frame_indices"].tolist().__str__(), a[(e, 2)]["cond_index"]) for e in range(6)}
    assert len(draws) > 1  # epochs draw differently


def test_scale_sources_scale_translations_exactly(data_cfg):
    key = (0, 0)
    out = {}
    for src in ("condition_frame", "clip", "relative"):
        cfg = DataConfig(**{**data_cfg.__dict__, "scale_source": src})
        out[src] = CameraVideoDataset(cfg, train=True, seed=2)[key]
    ds = CameraVideoDataset(data_cfg, train=True, seed=2)
    clip = next(c for c in ds.clips if c["clip_id"] == out["relative"]["clip_id"])
    idx, k = out["relative"]["frame_indices"].numpy(), out["relative"]["cond_index"]
    rel = relative_to(w2c_to_c2w(clip["w2c"][idx]), k)
    torch.testing.assert_close(out["relative"]["c2w"], torch.from_numpy(rel).float())
    for src, factor in (("condition_frame", clip["frame_scale"][idx[k]]), ("clip", clip["scale"])):
        c2w = out[src]["c2w"]
        torch.testing.assert_close(c2w[:, :3, :3], out["relative"]["c2w"][:, :3, :3])  # rotations untouched
        torch.testing.assert_close(c2w[:, :3, 3], torch.from_numpy(rel[:, :3, 3] * factor).float())
        assert out[src]["scale"] == pytest.approx(factor)
    # NaN frame scale of the condition frame: falls back to the clip scale
    clips = [dict(c, frame_scale=np.full_like(c["frame_scale"], np.nan)) for c in ds.clips]
    nan = CameraVideoDataset(data_cfg, train=True, seed=2, clips=clips)[key]
    torch.testing.assert_close(nan["c2w"], out["clip"]["c2w"])


def test_unreadable_video_is_skipped_and_counted(data_cfg, tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    clips = load_clips(data_cfg, "train")
    clips[0] = dict(clips[0], video_path=str(bad))
    ds = CameraVideoDataset(data_cfg, train=True, seed=0, clips=clips)
    s = ds[(0, 0)]
    assert s["clip_id"] == clips[1]["clip_id"] and s["skipped"] == 1
    assert ds.skipped == 1 and ds.skipped_ids == [clips[0]["clip_id"]]


def test_captions_csv_and_json(data_cfg, tmp_path):
    clip = load_clips(data_cfg, "test")[0]["clip_id"]
    (tmp_path / "c.csv").write_text(f"clip_id,caption\n{clip},a tidy room\n")
    (tmp_path / "c.json").write_text(json.dumps({f"{clip}.mp4": ["a kitchen"]}))
    for name, text in (("c.csv", "a tidy room"), ("c.json", "a kitchen")):
        cfg = DataConfig(**{**data_cfg.__dict__, "captions": str(tmp_path / name)})
        assert CameraVideoDataset(cfg, train=False)[0]["caption"] == text
    assert CameraVideoDataset(data_cfg, train=False)[0]["caption"] == ""


def test_sampler_shards_disjoint_and_resumes():
    samplers = [ResumableSampler(10, 2, rank=r, world=2, seed=3) for r in range(2)]
    keys = [list(s) for s in samplers]
    assert len(keys[0]) == len(keys[1]) == 4  # 10 // (2 ranks * 2) = 2 batches of 2 per rank
    assert not set(keys[0]) & set(keys[1])
    s = samplers[0]
    s.advance()
    state = s.state_dict()
    fresh = ResumableSampler(10, 2, rank=0, world=2, seed=3)
    fresh.load_state_dict(state)
    assert list(fresh) == keys[0][2:]
    s.advance()
    assert s.state_dict() == {"epoch": 1, "position": 0} and list(s) != keys[0]


def test_uint8_samples_scale_to_the_float_samples_exactly(data_cfg):
    from train.data import collate, to_unit_range

    flt = CameraVideoDataset(data_cfg, train=True, seed=4)
    u8 = CameraVideoDataset(data_cfg, train=True, seed=4, uint8=True)
    for key in ((0, 0), (1, 3)):
        a, b = flt[key], u8[key]
        assert b["video"].dtype == torch.uint8 and b["video"].shape == a["video"].shape
        assert torch.equal(to_unit_range(b["video"]), a["video"])  # the trainer's scaling: the same floats
        assert torch.equal(b["c2w"], a["c2w"]) and torch.equal(b["frame_indices"], a["frame_indices"])
    batch = collate([u8[(0, 0)], u8[(0, 1)]])
    assert batch["video"].is_contiguous() and batch["video"].dtype == torch.uint8
    ref = collate([flt[(0, 0)], flt[(0, 1)]])["video"]
    assert torch.equal(to_unit_range(batch["video"]), ref) and to_unit_range(ref) is ref  # floats pass through


def test_bench_train_print_config_round_trip(tmp_path, capsys):
    from train.bench_train import cli, command

    argv = ["--config", "train/configs/tiny.yaml", "run.batch_size=2", "--loader-gop", "30", "loader_crf=18",
            "--loader-only"]
    cfg, _ = command().parse(argv)
    assert (cfg.train_config, cfg.overrides, cfg.loader_gop, cfg.loader_crf, cfg.loader_only) == \
        ("train/configs/tiny.yaml", ["run.batch_size=2"], 30, 18, True)  # foreign keys: training overrides
    assert cli([*argv, "--print-config"]) == 0
    (tmp_path / "bench.yaml").write_text(capsys.readouterr().out)
    assert command().parse(["--config", str(tmp_path / "bench.yaml")])[0] == cfg
    assert cli(["--print-config", "run.batch_sise=2"]) == 2  # a mistyped key fails before anything runs
    assert "run.batch_sise" in capsys.readouterr().err
