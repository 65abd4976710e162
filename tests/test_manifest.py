"""Manifest validation happens before any work: every offending row is listed and OUT is never created."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from annotate.manifest import ManifestError, load, read_manifest, validate, write_manifest

HEADER = "clip_id,split,pose_path,video_path,depth_path\n"


def _csv(tmp_path, body: str, header: str = HEADER):
    p = tmp_path / "m.csv"
    p.write_text(header + body)
    return p


BAD_BODY = (
    "good_1,train,a.txt,a.mp4,\n"     # row 1 fine
    "../x,train,b.txt,b.mp4,\n"       # row 2 unsafe id
    "a b,train,c.txt,c.mp4,\n"        # row 3 unsafe id
    "dup,train,d.txt,d.mp4,\n"        # row 4 duplicate (with 6)
    "empty_split,,e.txt,e.mp4,\n"     # row 5 empty split
    "dup,test,f.txt,f.mp4,\n"         # row 6 duplicate (with 4)
    ",train,g.txt,g.mp4,\n"           # row 7 empty id
)


def test_every_offending_row_is_listed(tmp_path):
    with pytest.raises(ManifestError) as ei:
        load(_csv(tmp_path, BAD_BODY))
    probs = ei.value.problems
    text = "\n".join(probs)
    assert "row 1 " not in text
    for row, needle in ((2, "'../x'"), (3, "'a b'"), (4, "duplicate"), (5, "empty split"), (6, "duplicate"),
                        (7, "empty clip_id")):
        assert any(p.startswith(f"row {row} ") and needle in p for p in probs), (row, needle, probs)
    assert len(probs) == 6


def test_missing_columns_and_empty_manifest(tmp_path):
    with pytest.raises(ManifestError, match="missing column.*video_path"):
        load(_csv(tmp_path, "a,train,a.txt\n", header="clip_id,split,pose_path\n"))
    with pytest.raises(ManifestError, match="no rows"):
        load(_csv(tmp_path, ""))


def test_depth_path_is_optional_and_parquet_round_trips(tmp_path):
    rows = [{"clip_id": "c1", "split": "train", "pose_path": "p/c1.txt", "video_path": "v/c1.mp4"}]
    cols = ("clip_id", "split", "pose_path", "video_path")
    write_manifest(rows, tmp_path / "m.parquet", columns=cols)
    got, names = read_manifest(tmp_path / "m.parquet")
    assert got == rows and names == list(cols)
    validate(got, names)
    write_manifest(rows, tmp_path / "m.csv", columns=cols)
    assert load(tmp_path / "m.csv") == rows


def test_run_refuses_to_start_and_writes_nothing(tmp_path):
    from annotate.job import run

    out = tmp_path / "out"
    with pytest.raises(ManifestError):
        run(_csv(tmp_path, BAD_BODY), out)
    assert not out.exists()
    # the command line: exit status 2, every row named on stderr, still no OUT
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    p = subprocess.run([sys.executable, "-m", "annotate", "run", str(tmp_path / "m.csv"), str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    for row in (2, 3, 4, 5, 6, 7):
        assert f"row {row} " in p.stderr
    assert not out.exists()


def test_a_column_named_twice_is_refused(tmp_path):
    # today's csv.DictReader would keep the last 'split' silently
    p = _csv(tmp_path, "c1,train,a.txt,a.mp4,test\n", header="clip_id,split,pose_path,video_path, split\n")
    with pytest.raises(ManifestError) as ei:
        load(p)
    assert ei.value.problems == ["column 'split' appears 2 times (columns 2, 5)"]
    assert str(p) in str(ei.value)
    import pyarrow as pa
    import pyarrow.parquet as pq

    arr = pa.array(["x"])
    pq.write_table(pa.Table.from_arrays([arr] * 5, names=["clip_id", "split", "pose_path", "video_path", "clip_id"]),
                   tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match=r"column 'clip_id' appears 2 times \(columns 1, 5\)"):
        load(tmp_path / "m.parquet")


def test_non_utf8_manifest_names_the_rows(tmp_path):
    from annotate.job import run

    p = tmp_path / "m.csv"
    p.write_bytes((HEADER + "a,train,a.txt,a.mp4,\n"
                   "b,train,caf\u00e9/b.txt,b.mp4,\n"     # row 2, line 3: latin-1 e-acute
                   "\n"                                   # blank lines are not rows
                   "c,train,c.txt,c.mp4,\n"
                   "d,train,d.txt,\u00fcber/d.mp4,\n").encode("latin-1"))  # row 4, line 6
    out = tmp_path / "out"
    with pytest.raises(ManifestError) as ei:
        run(p, out)
    assert ei.value.problems == [
        "row 2 (line 3): not UTF-8 text (byte 0xe9); save the manifest as UTF-8",
        "row 4 (line 6): not UTF-8 text (byte 0xfc); save the manifest as UTF-8"]
    assert not out.exists()
    p.write_bytes(b"clip_id,spl\xefit,pose_path,video_path\n")
    with pytest.raises(ManifestError, match=r"the header \(line 1\): not UTF-8 text \(byte 0xef\)"):
        load(p)
    # UTF-8 with a byte-order mark (what spreadsheet programs write) is fine
    p.write_bytes(("\ufeff" + HEADER + "a,train,caf\u00e9.txt,a.mp4,\n").encode("utf-8"))
    assert load(p)[0]["pose_path"] == "caf\u00e9.txt"


def test_depth_unit_values(tmp_path):
    header = "clip_id,split,pose_path,video_path,depth_path,depth_unit\n"
    rows = load(_csv(tmp_path, "a,train,a.txt,a.mp4,a.npz,mm\nb,train,b.txt,b.mp4,b.npz,m\nc,train,c.txt,c.mp4,,\n",
                     header))
    assert [r["depth_unit"] for r in rows] == ["mm", "m", ""]
    with pytest.raises(ManifestError) as ei:
        load(_csv(tmp_path, "a,train,a.txt,a.mp4,a.npz,cm\nb,train,b.txt,b.mp4,,mm\n", header))
    assert ei.value.problems == ["row 1 (clip_id 'a'): depth_unit 'cm' is not one of m, mm",
                                 "row 2 (clip_id 'b'): depth_unit 'mm' without a depth_path"]
    # written manifests keep the column
    write_manifest(rows, tmp_path / "w.csv")
    assert [r["depth_unit"] for r in load(tmp_path / "w.csv")] == ["mm", "m", ""]
