"""The RealEstate10K path end to end (issue 13): camera file -> fetch (from 127.0.0.1) -> extract -> index ->
annotation, giving the clip's scale."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from annotate.clip import annotate_clip
from annotate.extract import ExtractConfig, extract
from annotate.fetch import FetchConfig, fetch
from annotate.index import index
from annotate.manifest import load, resolve_paths
from annotate.re10k import read_camera_file
from annotate.video import read_frames, write_video
from tests.test_fetch import Server


def test_fetch_extract_index_annotate(annot_sample, tmp_path):
    row = list(csv.DictReader(open(annot_sample / "manifest.csv")))[0]
    traj = read_camera_file(annot_sample / row["pose_path"])
    frames = read_frames(annot_sample / row["video_path"])
    # The "YouTube video": the clip's frames at its camera timestamps (from 1 s on), other frames before it.
    first = int(round(traj.timestamps_us[0] * 30 / 1e6))
    assert np.allclose(traj.timestamps_us, (first + np.arange(len(traj))) * 1e6 / 30, atol=1)
    video = np.concatenate([np.zeros((first,) + frames.shape[1:], np.uint8), frames])
    served = tmp_path / "served"
    served.mkdir()
    write_video(served / f"{traj.youtube_id}.mp4", video, fps=30, crf=0)  # lossless: only the cut re-encodes
    root = tmp_path / "re10k"
    (root / "RealEstate10K" / "train").mkdir(parents=True)
    shutil.copy(annot_sample / row["pose_path"], root / "RealEstate10K" / "train" / f"{row['clip_id']}.txt")
    (root / "depth" / "train").mkdir(parents=True)
    shutil.copy(annot_sample / row["depth_path"], root / "depth" / "train" / f"{row['clip_id']}.npz")
    with Server(served) as srv:
        res = fetch(root, FetchConfig(workers=1, backoff_s=0.01,
                                      url_template=f"http://127.0.0.1:{srv.port}/{{youtube_id}}.mp4"), progress=False)
    assert res.counts["ok"] == 1
    cut = extract(root, ExtractConfig(height=0, workers=1, crf=0), progress=False)
    assert (cut.ok, cut.failed) == (1, 0) and cut.max_error_us <= 1
    manifest = tmp_path / "m.csv"
    index(root, manifest, quiet=True)
    (r,) = load(manifest)
    r = resolve_paths(r, manifest.parent)
    assert f"video_clips/train/{traj.youtube_id}/" in r["video_path"]
    np.testing.assert_array_equal(read_frames(r["video_path"]).shape, frames.shape)
    got, ref = annotate_clip(r), annotate_clip(resolve_paths(row, annot_sample))
    assert got["status"] == ref["status"] == "ok"
    assert got["scale"] == pytest.approx(ref["scale"], rel=0.005)  # re-encoded frames: nearly the same scale
