"""The one atomic writer and JSON sanitiser (annotate/files.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotate.files import (
    TMP_PREFIX,
    atomic_path,
    atomic_write_text,
    clean_temp,
    json_safe,
    json_text,
    write_json,
)


def test_atomic_path_replaces_only_on_success(tmp_path):
    dest = tmp_path / "sub" / "t.parquet"
    with atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.name.startswith(TMP_PREFIX) and not tmp.name.endswith(".parquet")
        pq.write_table(pa.table({"a": [1, 2]}), tmp)
        assert not dest.exists()  # readers see nothing until the block ends
    assert pq.read_table(dest).column("a").to_pylist() == [1, 2]
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(dest) as tmp:
            pq.write_table(pa.table({"a": [3]}), tmp)
            raise RuntimeError("disk full")
    assert pq.read_table(dest).column("a").to_pylist() == [1, 2]  # the old file, untouched
    assert sorted(p.name for p in dest.parent.iterdir()) == ["t.parquet"]  # no temp file left


def test_keep_suffix_for_writers_that_add_one(tmp_path):
    dest = tmp_path / "d.npz"
    with atomic_path(dest, keep_suffix=True) as tmp:
        assert tmp.suffix == ".npz"
        np.savez_compressed(tmp, depth=np.arange(3))  # would write tmp + ".npz" without the suffix
    with np.load(dest) as z:
        assert z["depth"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["d.npz"]


def test_failed_rename_leaves_no_temp_and_clean_temp(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write_text(tmp_path / "d", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    (tmp_path / f"{TMP_PREFIX}a.parquet.1.0").write_text("left by a killed writer")
    (tmp_path / "keep.txt").write_text("x")
    assert clean_temp(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "keep.txt"]


def test_json_safe_numpy_paths_and_nonfinite(tmp_path):
    obj = {"f": np.float32(0.5), "i": np.int64(3), "a": np.arange(2), "p": Path("x/y"), "t": (1, 2),
           "nan": [float("nan"), np.float64("inf")], "ok": [None, True, "s"]}
    assert json_safe(obj, nonfinite_as_null=True) == {"f": 0.5, "i": 3, "a": [0, 1], "p": "x/y", "t": [1, 2],
                                                      "nan": [None, None], "ok": [None, True, "s"]}
    kept = json.loads(json_text(obj))  # non-finite numbers kept as the NaN / Infinity tokens by default
    assert math.isnan(kept["nan"][0]) and kept["nan"][1] == math.inf
    with pytest.raises(ValueError):
        json_text(obj, allow_nan=False)
    with pytest.raises(TypeError, match="object"):
        json_safe({"x": object()})
    path = write_json(tmp_path / "o.json", {"b": np.float32(1.5)})
    assert path.read_text() == '{\n "b": 1.5\n}\n'
