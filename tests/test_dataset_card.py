"""The released dataset describes itself (issue 13): the card's Hugging Face YAML header points at the shards,
and every shard's Parquet schema carries units, axes and the meaning of NaN as field metadata."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from annotate import output
from annotate.clip import ClipConfig, empty_record, finish_stage

CARD = Path(__file__).resolve().parents[1] / "data_manifests" / "DATASET_CARD.md"


def test_card_yaml_header():
    text = CARD.read_text()
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert m, "the card must start with a YAML header between --- lines"
    head = yaml.safe_load(m.group(1))
    assert head["license"] == "cc-by-4.0" and head["pretty_name"]
    assert head["size_categories"] == ["10K<n<100K"]
    (cfg,) = head["configs"]
    (files,) = cfg["data_files"]
    assert fnmatch.fnmatch(f"{output.CLIPS_DIR}/part-00012.parquet", files["path"])
    body = text[m.end():]
    missing = [f.name for f in output.SCHEMA if f"`{f.name}`" not in body]
    assert not missing, f"columns not described in the card: {missing}"


def test_shards_carry_field_metadata(tmp_path):
    rec = finish_stage(empty_record({"clip_id": "a", "split": "train", "pose_path": "x", "video_path": "y"}),
                       ClipConfig())
    output.write_shard(tmp_path, 0, output.rows_to_table([rec]))
    schema = pq.read_schema(next((tmp_path / output.CLIPS_DIR).glob("*.parquet")))
    meta = {f.name: f.metadata or {} for f in schema}
    assert meta["scale"][b"unit"] == b"metres per relative unit" and b"NaN" in meta["scale"][b"description"]
    assert meta["timestamps_us"][b"unit"] == b"microseconds"
    assert meta["c2w_metric"][b"unit"] == b"metres"
    assert b"x right, y down, z forward" in meta["c2w_metric"][b"description"]
    assert b"NaN" in schema.metadata[b"conventions"]
    assert output.read_table(tmp_path).schema.field("frame_scale").metadata[b"unit"] == b"metres per relative unit"
