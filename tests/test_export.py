"""The RealCam-I2V export: frames without a scale carry the clip's scale (the authors' loader indexes the
per-frame scales without a NaN check), the Parquet keeps the NaN, and manifest.json counts the filled frames."""
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from annotate import output


def test_export_fills_frames_without_a_scale(train_annotations, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(train_annotations["annotation_dir"], out)
    (n, shard), = output.list_shards(out)
    t = pq.read_table(shard)
    rows = t.to_pylist()
    ok = [i for i, r in enumerate(rows) if r["status"] == "ok"]
    hole = {ok[0]: [0, 3], ok[1]: [5]}  # frames whose scale is made unknown
    for i, frames in hole.items():
        for f in frames:
            rows[i]["frame_scale"][f] = float("nan")
    output.write_shard(out, n, pa.Table.from_pylist(rows, schema=t.schema))

    output.finalize(out, 0.02)
    kept = pq.read_table(shard).to_pylist()
    assert all(np.isnan(kept[i]["frame_scale"][f]) for i, fs in hole.items() for f in fs)  # Parquet keeps NaN
    mj = json.loads((out / "manifest.json").read_text())
    assert mj["export_filled_frames"] == 3
    for split in {r["split"] for r in rows}:
        d = np.load(out / "export" / f"{split}_per_frame_scale.npz", allow_pickle=True)["arr_0"].item()
        for cid, arr in d.items():
            r = next(r for r in rows if r["clip_id"] == cid)
            assert np.isfinite(arr).all()
            want = np.array(r["frame_scale"], np.float32)
            want[np.isnan(want)] = np.float32(r["scale"])
            np.testing.assert_array_equal(arr, want)
