"""Per-clip absolute scale against synthetic ground truth (contract steps 1-5 and 7)."""

import os
from pathlib import Path

import numpy as np
import pytest

from annotate.camera import metric_c2w
from annotate.clip import ClipConfig, DepthStage, annotate_clip, finish_stage, triangulate_stage
from annotate.depth import DepthAnythingPredictor, DepthConfig, sample_bilinear
from annotate.manifest import resolve_paths
from annotate.re10k import read_camera_file, write_camera_file
from annotate.scale import clip_statistics, frame_scales, point_ratios
from annotate.synth import load_ground_truth, read_manifest_rows
from annotate.video import read_frames, write_video


@pytest.fixture(scope="module")
def stage1(scale_clips, tmp_path_factory):
    """Triangulated records of the three clips (stage 1 once, reused with several depth sources)."""
    sfm_tmp = tmp_path_factory.mktemp("sfm_tmp")
    cfg = ClipConfig()
    cfg.sfm.tmp_dir = str(sfm_tmp)
    rows = [resolve_paths(r, scale_clips) for r in read_manifest_rows(scale_clips / "manifest.csv")]
    recs = {r["clip_id"]: triangulate_stage(r, cfg) for r in rows}
    assert not list(sfm_tmp.iterdir()), "per-clip temporary folders must be removed"
    return cfg, rows, recs, load_ground_truth(scale_clips)


def _with_depth(rec, path):
    rec = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in rec.items()}
    rec["depth_path"] = str(path)
    return rec


def test_exact_depth_within_one_percent(stage1):
    cfg, rows, recs, truth = stage1
    for cid, rec in recs.items():
        assert rec["status"] == "ok", rec["error"]
        assert rec["num_points"] > 300 and rec["reprojection_error"] < 1.5
        out = finish_stage(DepthStage(cfg.depth)(dict(rec)), cfg)
        true = truth[cid]["scale"]
        assert abs(out["scale"] / true - 1) < 0.01, (cid, out["scale"], true)
        frame_err = np.abs(out["frame_scale"][np.isfinite(out["frame_scale"])] / true - 1)
        assert np.median(frame_err) < 0.01
        assert np.isfinite(out["frame_scale"]).mean() > 0.9
        # c2w_metric is the true metric trajectory relative to frame 0.
        np.testing.assert_allclose(out["c2w_metric"].reshape(-1, 4, 4), np.array(truth[cid]["c2w_metric_rel0"]),
                                   atol=0.01 * max(1.0, np.abs(truth[cid]["c2w_metric_rel0"]).max()))
        assert out["scale_min"] <= out["scale"] <= out["scale_max"]


def test_noisy_depth_with_outliers_within_three_percent(stage1, tmp_path):
    cfg, rows, recs, truth = stage1
    rng = np.random.default_rng(0)
    for row in rows:
        depth = np.load(row["depth_path"])["depth"]
        noisy = depth * np.exp(rng.normal(0.0, 0.1, size=depth.shape))  # zero-mean in log space
        outliers = rng.random(depth.shape) < 0.05
        noisy[outliers] = rng.uniform(0.2, 15.0, size=outliers.sum())
        path = tmp_path / f"{row['clip_id']}.npz"
        np.savez(path, depth=noisy.astype(np.float32))
        out = finish_stage(DepthStage(cfg.depth)(_with_depth(recs[row["clip_id"]], path)), cfg)
        true = truth[row["clip_id"]]["scale"]
        assert abs(out["scale"] / true - 1) < 0.03
        assert np.nanmedian(np.abs(out["frame_scale"] / true - 1)) < 0.03


def test_depth_at_other_resolution_is_resampled(stage1, tmp_path):
    cfg, rows, recs, truth = stage1
    row = rows[0]
    depth = np.load(row["depth_path"])["depth"]
    half = depth[:, ::2, ::2]  # 160x90 maps for 320x180 frames
    np.savez(tmp_path / "half.npz", depth=half)
    out = finish_stage(DepthStage(cfg.depth)(_with_depth(recs[row["clip_id"]], tmp_path / "half.npz")), cfg)
    assert abs(out["scale"] / truth[row["clip_id"]]["scale"] - 1) < 0.02


def test_scaling_translations_divides_the_scale(stage1, tmp_path):
    cfg, rows, recs, truth = stage1
    row = rows[1]
    traj = read_camera_file(row["pose_path"])
    traj.w2c[:, :, 3] *= 2.5
    pose = tmp_path / "scaled.txt"
    write_camera_file(pose, traj)
    base = annotate_clip(row, cfg)
    scaled = annotate_clip(dict(row, pose_path=str(pose)), cfg)
    assert scaled["status"] == "ok"
    assert abs(scaled["scale"] * 2.5 / base["scale"] - 1) < 1e-3
    np.testing.assert_allclose(scaled["c2w_metric"], base["c2w_metric"], atol=1e-3 * np.abs(base["c2w_metric"]).max())


def test_tiny_depth_anything_from_local_folder(stage1, tiny_depth_model):
    """A saved tiny Depth Anything V2 goes through the same loading and inference path as the real one."""
    cfg, rows, recs, truth = stage1
    dcfg = DepthConfig(model=str(tiny_depth_model), batch_size=5)
    predictor = DepthAnythingPredictor(dcfg)
    assert type(predictor.model).__name__ == "DepthAnythingForDepthEstimation"
    assert predictor.max_depth == 20.0 and predictor.device.type == "cpu"
    row = rows[0]
    rec = _with_depth(recs[row["clip_id"]], "")
    out_rec = DepthStage(dcfg, predictor)(rec)
    assert out_rec["status"] == "ok" and out_rec["max_depth"] == 20.0
    # Depth at keypoints equals the model's full maps sampled bilinearly at the keypoints.
    frames = read_frames(row["video_path"])
    maps = predictor.predict(frames)
    assert maps.shape == frames.shape[:3] and np.all((maps > 0) & (maps < 20))
    xy = out_rec["obs_xy"].reshape(-1, 2)
    expect = np.concatenate([sample_bilinear(maps[f], xy[out_rec["obs_frame"] == f])
                             for f in np.unique(out_rec["obs_frame"])])
    order = np.argsort(out_rec["obs_frame"], kind="stable")
    np.testing.assert_allclose(out_rec["obs_metric"][order], expect, rtol=1e-5)
    out = finish_stage(out_rec, cfg)
    assert out["status"] == "ok" and np.isfinite(out["scale"])
    # Loading by name goes through the same code: offline, an unknown hub id fails with a clear message.
    with pytest.raises(RuntimeError, match="cannot load depth model"):
        DepthAnythingPredictor(DepthConfig(model="depth-anything/not-a-real-model-hf", local_files_only=True))


# ------------------------------------------------------------------------------------ failures


def _fail(row, cfg=None):
    out = annotate_clip(row, cfg or ClipConfig())
    assert out["status"] == "failed" and out["error"] and "\n" not in out["error"]
    assert np.isnan(out["scale"])
    return out["error"]


def test_failure_reasons(stage1, tmp_path):
    cfg, rows, recs, truth = stage1
    row = rows[0]
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_bytes(b"\x00not a video" * 100)
    assert _fail(dict(row, video_path=str(bad_video))).startswith(f"unreadable video: {bad_video}")
    assert _fail(dict(row, video_path=str(tmp_path / "missing.mp4"))).startswith("unreadable video:")

    short = tmp_path / "short.mp4"
    write_video(short, read_frames(row["video_path"])[:10])
    err = _fail(dict(row, video_path=str(short)))
    assert err.startswith("frame-count mismatch:") and "10 frames" in err and "24 pose lines" in err

    lines = Path(row["pose_path"]).read_text().splitlines()
    lines[3] = " ".join(lines[3].split()[:-2])
    bad_pose = tmp_path / "bad_pose.txt"
    bad_pose.write_text("\n".join(lines) + "\n")
    err = _fail(dict(row, pose_path=str(bad_pose)))
    assert err.startswith(f"malformed camera file: {bad_pose}:4:")

    grey = tmp_path / "grey.mp4"
    write_video(grey, np.full((24, 180, 320, 3), 128, np.uint8))
    sfm_tmp = tmp_path / "sfm"
    sfm_tmp.mkdir()
    c = ClipConfig()
    c.sfm.tmp_dir = str(sfm_tmp)
    assert _fail(dict(row, video_path=str(grey)), c).startswith("too few 3D points:")
    assert not list(sfm_tmp.iterdir()), "temporary folder removed on error too"

    c = ClipConfig()
    c.scale.min_points = 100000
    assert _fail(row, c).startswith("no valid frame scale:")


# ------------------------------------------------------------------------------------ units


def test_point_ratios_skip_invalid_and_saturated():
    metric = np.array([2.0, 0.0, np.nan, 20.0, 19.9, 4.0, 3.0])
    z = np.array([1.0, 1.0, 1.0, 1.0, 1.0, -1.0, np.inf])
    r = point_ratios(metric, z, max_depth=20.0)
    np.testing.assert_array_equal(np.isfinite(r), [True, False, False, False, True, False, False])
    assert r[0] == 2.0 and np.isclose(r[4], 19.9)
    assert np.isfinite(point_ratios(metric, z, None)[3])


def test_frame_scales_and_clip_statistics():
    frame = np.array([0] * 25 + [1] * 5 + [2] * 30)
    ratios = np.concatenate([np.full(25, 2.0), np.full(5, 9.0), np.linspace(1, 3, 30)])
    ratios[0] = np.nan
    scales, counts = frame_scales(frame, ratios, 4, min_points=20)
    np.testing.assert_array_equal(counts, [24, 5, 30, 0])
    assert scales[0] == 2.0 and np.isnan(scales[1]) and np.isclose(scales[2], 2.0) and np.isnan(scales[3])
    assert clip_statistics(np.array([1.0, np.nan, 3.0, 2.0], np.float32)) == (2.0, 1.0, 3.0)
    with pytest.raises(ValueError, match="no valid frame scale"):
        clip_statistics(np.array([np.nan], np.float32))


def test_bilinear_sampling_convention():
    h, w = 6, 8
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    ramp = (1.0 + 2.0 * u + 3.0 * v).astype(np.float32)  # value = f(pixel centre)
    xy = np.array([[0.5, 0.5], [3.25, 2.75], [7.5, 5.5]], np.float32)
    np.testing.assert_allclose(sample_bilinear(ramp, xy), 1 + 2 * xy[:, 0] + 3 * xy[:, 1], rtol=1e-6)
    ramp[2, 3] = 0
    assert np.isnan(sample_bilinear(ramp, np.array([[3.25, 2.75]], np.float32))[0])


def test_metric_cameras_recover_the_rendered_trajectory(scale_clips):
    # The camera files hold the rendered metric path in another world, shrunk by 1 / scale (annotate.synth);
    # with the true scale, contract step 7 must give back the rendered path relative to frame 0.
    truth = load_ground_truth(scale_clips)
    for row in read_manifest_rows(scale_clips / "manifest.csv"):
        gt = truth[row["clip_id"]]
        traj = read_camera_file(scale_clips / row["pose_path"])
        rendered = np.array(gt["c2w_metric_rel0"])
        np.testing.assert_allclose(metric_c2w(traj.w2c, gt["scale"]), rendered, atol=1e-6)
        # Relative to frame 3: that frame is the identity, the metric distances between cameras are the same.
        m3 = metric_c2w(traj.w2c, gt["scale"], ref=3)
        np.testing.assert_array_equal(m3[3], np.eye(4))
        dist = lambda c: np.linalg.norm(c[:, None, :3, 3] - c[None, :, :3, 3], axis=-1)  # noqa: E731
        np.testing.assert_allclose(dist(m3), dist(rendered), atol=1e-6)


# ------------------------------------------------------------------------------------ precomputed depth files


def _depth_row(tmp_path, row, depth_file, unit=""):
    """The clip's row as a user writes it: a manifest with depth_path (relative) and depth_unit, loaded and
    resolved the way the job does."""
    from annotate.manifest import load, write_manifest

    m = tmp_path / "manifest.csv"
    write_manifest([dict(row, depth_path=os.path.relpath(depth_file, tmp_path), depth_unit=unit)], m)
    return resolve_paths(load(m)[0], tmp_path)


def _depth_out(stage1, row):
    """Stages 2 and 3 on the clip's triangulated record with the row's depth fields (what stage 1 copies)."""
    cfg, _, recs, _ = stage1
    rec = dict(recs[row["clip_id"]], depth_path=row["depth_path"], depth_unit=row["depth_unit"])
    return finish_stage(DepthStage(cfg.depth)(rec), cfg)


def _refused(out, path, reason):
    assert out["status"] == "failed" and np.isnan(out["scale"])
    assert out["error"].startswith(f"bad depth file: {path}: {reason}"), out["error"]


def test_uint16_millimetre_depth_needs_its_unit(stage1, tmp_path):
    cfg, rows, recs, truth = stage1
    row = rows[0]
    metres = np.load(row["depth_path"])["depth"]
    mm = tmp_path / "mm.npz"
    np.savez(mm, depth=np.round(metres * 1000).astype(np.uint16))
    # without a unit: refused (it used to give scale ~391 for a true 0.39, marked ok)
    _refused(_depth_out(stage1, _depth_row(tmp_path, row, mm)), mm,
             "integer depth (uint16) needs the manifest's depth_unit column (m or mm)")
    # stage 1 carries the unit from the manifest row into the record
    assert triangulate_stage(_depth_row(tmp_path, dict(row, video_path="absent.mp4"), mm, "mm"),
                             cfg)["depth_unit"] == "mm"
    # depth_unit=mm: the same scale as the float map in metres, within 1% of the truth
    out = _depth_out(stage1, _depth_row(tmp_path, row, mm, "mm"))
    ref = _depth_out(stage1, _depth_row(tmp_path, row, row["depth_path"]))
    assert out["status"] == "ok", out["error"]
    assert abs(out["scale"] / ref["scale"] - 1) < 1e-3
    assert abs(out["scale"] / truth[row["clip_id"]]["scale"] - 1) < 0.01
    # the wrong unit is implausible: thousands of metres
    out = _depth_out(stage1, _depth_row(tmp_path, row, mm, "m"))
    _refused(out, mm, "depth of ")
    assert out["error"].endswith(" is beyond the plausible 1000 m (depth_unit is 'm'; wrong unit?)")


def test_npy_depth_works_like_npz(stage1, tmp_path):
    cfg, rows, recs, truth = stage1
    row = rows[1]
    npy = tmp_path / "d.npy"
    np.save(npy, np.load(row["depth_path"])["depth"])
    out = _depth_out(stage1, _depth_row(tmp_path, row, npy))
    ref = _depth_out(stage1, _depth_row(tmp_path, row, row["depth_path"]))
    assert out["status"] == "ok" and out["scale"] == ref["scale"]
    np.save(npy, np.array([{"depth": 1.0}] * 24, dtype=object))  # never unpickled
    _refused(_depth_out(stage1, _depth_row(tmp_path, row, npy)), npy, "depth has dtype object")


def test_unusable_depth_maps_are_refused_with_the_file_named(stage1, tmp_path):
    cfg, rows, recs, truth = stage1
    row = rows[2]
    depth = np.load(row["depth_path"])["depth"]  # [24, 180, 320] for 320x180 frames
    rng = np.random.default_rng(1)
    cases = {
        "one_px": (depth[:, :1, :1], "depth maps are 1x1 px, need at least 16 px on the short side"),
        "square": (depth[:, :, :180], "depth maps are 180x180 px (aspect 1.000) but the frames are 320x180 "
                                      "(aspect 1.778)"),
        "transposed": (depth[:, ::4, ::4].transpose(0, 2, 1).copy(), "depth maps are 45x80 px (aspect 0.562)"),
        "nan_inf": (np.where(rng.random(depth.shape) < 0.5, np.nan, np.inf).astype(np.float32),
                    "no valid depth: every value is 0, negative or not finite"),
        "all_zero": (np.zeros_like(depth), "no valid depth"),
        "millimetre_floats": (depth * 1000, "depth of "),  # message: "... m at frame N is beyond ..."
        "frames": (depth[:20], "depth has shape [20, 180, 320], expected [24, H, W]"),
        "complex": (depth.astype(np.complex64), "depth has dtype complex64"),
    }
    for name, (arr, reason) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, depth=arr)
        out = _depth_out(stage1, _depth_row(tmp_path, row, path))
        _refused(out, path, reason)
        if name == "millimetre_floats":
            assert out["error"].endswith("is beyond the plausible 1000 m (no depth_unit, so metres; wrong unit?)")
    # invalid pixels (0, NaN, inf, negative) among valid ones are only skipped
    holes = depth.copy()
    holes[:, ::7] = np.nan
    holes[:, 1::7] = np.inf
    holes[:, 2::7] = 0
    holes[:, 3::7] = -1
    np.savez(tmp_path / "holes.npz", depth=holes)
    out = _depth_out(stage1, _depth_row(tmp_path, row, tmp_path / "holes.npz"))
    assert out["status"] == "ok" and abs(out["scale"] / truth[row["clip_id"]]["scale"] - 1) < 0.01
    # not a NumPy file, a truncated one, a missing one
    for name, data, reason in (("text.npz", b"depth,1,2\n", "not a NumPy .npz or .npy file"),
                               ("cut.npz", (tmp_path / "holes.npz").read_bytes()[:50000], "unreadable depth file"),
                               ("missing.npz", None, "no such file")):
        if data is not None:
            (tmp_path / name).write_bytes(data)
        _refused(_depth_out(stage1, _depth_row(tmp_path, row, tmp_path / name)), tmp_path / name, reason)


def _zip_bomb(path, shape, data_bytes):
    """An npz whose member declares ``shape`` float32 and holds ``data_bytes`` zero bytes, deflated."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, \
            zf.open("depth.npy", "w", force_zip64=True) as fp:
        np.lib.format.write_array_header_1_0(fp, {"descr": "<f4", "fortran_order": False, "shape": shape})
        chunk = bytes(1 << 20)
        for start in range(0, data_bytes, len(chunk)):
            fp.write(chunk[:min(len(chunk), data_bytes - start)])


def test_depth_zip_bomb_is_refused_before_decompression(stage1, tmp_path):
    import tracemalloc

    from annotate.config import load_config

    cfg, rows, recs, truth = stage1
    row = rows[0]
    # a real bomb: 21 MiB of zeros in a ~21 kB file, against a limit of 8 MiB set like a user would
    bomb = tmp_path / "bomb.npz"
    shape = (24, 360, 640)
    _zip_bomb(bomb, shape, 24 * 360 * 640 * 4)
    assert bomb.stat().st_size < 100_000
    c = load_config(ClipConfig, None, ["depth.precomputed_max_bytes=8388608"])  # = clip.depth... of a run
    rec = dict(recs[row["clip_id"]], depth_path=str(bomb), depth_unit="")
    tracemalloc.start()
    out = finish_stage(DepthStage(c.depth)(rec), c)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    _refused(out, bomb, "depth [24, 360, 640] float32 is 21 MiB decompressed, above the limit of 8 MiB "
                        "(clip.depth.precomputed_max_bytes)")
    assert peak < 4 << 20, peak  # nothing was decompressed
    # a header that claims 37 GiB over 1 kB of data, against the default limit (2 GiB)
    _zip_bomb(bomb, (24, 20000, 20000), 1024)
    _refused(_depth_out(stage1, _depth_row(tmp_path, row, bomb)), bomb,
             "depth [24, 20000, 20000] float32 is 36621 MiB decompressed, above the limit of 2048 MiB")
