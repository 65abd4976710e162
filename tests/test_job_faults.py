"""Issue 12: damaged shards (items 5) and unusable output folders (item 9) of `annotate run` / `annotate report`.

The loopback-only local Ray and the SIGKILLed driver (items 2 and 10) are in tests/test_job.py, on the run that
is killed and resumed there.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from annotate import output
from annotate.__main__ import main
from annotate.manifest import write_manifest
from tests.test_job import ENV, all_shard_ids, validate


def _copy(annotated: Path, dest: Path) -> Path:
    shutil.copytree(annotated, dest, ignore=shutil.ignore_patterns("report"))
    return dest


def _ids(path: Path) -> list[str]:
    return pq.read_table(path, columns=["clip_id"]).column("clip_id").to_pylist()


def _one_line_error(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in text, text
    return lines[0]


# ------------------------------------------------------------------------------------------------ item 5


def test_shard_check_tells_damage_from_rewrites(annotated_sample, tmp_path, capsys):
    out = _copy(annotated_sample, tmp_path / "out")
    assert output.damaged_shards(out) == []
    a, b, c = [p for _, p in output.list_shards(out)][:3]

    # rewritten with other bytes but the same rows (what an interrupted final pass leaves): intact
    pq.write_table(pq.read_table(a), a, compression="snappy")
    # one byte flipped in the last data page of a column chunk: the page checksum catches it
    md = pq.ParquetFile(b).metadata.row_group(0).column(0)
    start = md.dictionary_page_offset if md.has_dictionary_page else md.data_page_offset
    raw = bytearray(b.read_bytes())
    raw[start + md.total_compressed_size - 1] ^= 0xFF  # the chunk's last byte: page data, not a header
    b.write_bytes(bytes(raw))
    # truncated (a copy that stopped half-way)
    c.write_bytes(c.read_bytes()[: c.stat().st_size // 2])
    # a shard a killed run wrote after the last manifest.json, truncated too
    d = out / "clips" / "part-00099.parquet"
    shutil.copy(a, d)
    d.write_bytes(d.read_bytes()[:100])

    bad = dict(output.damaged_shards(out))
    assert set(bad) == {b, c, d}, bad
    assert all("does not parse" in why for why in bad.values())
    assert "differs from manifest.json" in bad[c] and "not in manifest.json" in bad[d]

    # report names each damaged shard in one line instead of an ArrowInvalid traceback, and writes nothing
    capsys.readouterr()  # drop what the direct damaged_shards() call above logged (at an earlier test's level)
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 2
    err = _one_line_error(capsys.readouterr().err)
    for p in (b, c, d):
        assert str(p) in err
    assert "annotate run" in err and not (tmp_path / "rep").exists()
    assert sorted(p.name for p in (out / "clips").iterdir()) == sorted(x.name for x in (a, b, c, d))


def _ray_children() -> list[tuple[int, str]]:
    out = []
    for c in psutil.Process().children(recursive=True):
        try:
            if c.status() != psutil.STATUS_ZOMBIE and (c.name() in ("raylet", "gcs_server")
                                                       or c.name().startswith("ray::")):
                out.append((c.pid, c.name()))
        except psutil.NoSuchProcess:
            pass
    return out


def test_truncated_shard_is_quarantined_and_its_clips_redone(annotated_sample, annot_manifest, tmp_path, caplog):
    out = _copy(annotated_sample, tmp_path / "out")
    shards = [p for _, p in output.list_shards(out)]
    # not the last shard (the redone rows then go to a new index), and the one with the most bad clips (they fail
    # fast when processed again)
    victim = max(shards[:-1], key=lambda p: sum(c.startswith("bad_") for c in _ids(p)))
    lost = _ids(victim)
    kept_rows = {p.name: pq.read_table(p) for p in shards if p != victim}
    damaged = victim.read_bytes()[: victim.stat().st_size * 2 // 3]
    victim.write_bytes(damaged)

    with caplog.at_level(logging.WARNING, logger="realcam"):
        assert main(["run", str(annot_manifest), str(out), "shard_rows=4", "--num-cpus", "2", "--no-progress",
                     "ray.object_store_mb=256"]) == 0
    # the run stopped its local Ray and the watchdog swept it: no Ray process is left below this one
    assert not _ray_children(), _ray_children()
    warned = [r.getMessage() for r in caplog.records if "quarantine" in r.getMessage()]
    assert len(warned) == 1 and str(victim) in warned[0]  # one line naming the shard
    # the damaged file is kept for inspection, byte for byte
    assert (out / "quarantine" / f"{victim.name}.damaged").read_bytes() == damaged
    mj = json.loads((out / "manifest.json").read_text())
    last = mj["runs"][-1]
    assert last["processed"] == len(lost) and last["already_done"] == 12 - len(lost)
    assert [q["moved"] for q in last["quarantined"]] == [f"clips/{victim.name} -> quarantine/{victim.name}.damaged"]
    assert "does not parse" in last["quarantined"][0]["reason"]
    # every manifest clip exactly once, the untouched shards' rows unchanged, the contract holds
    ids = all_shard_ids(out)
    assert sorted(ids) == sorted(r["clip_id"] for r in csv.DictReader(open(annot_manifest)))
    for name, t in kept_rows.items():
        now = pq.read_table(out / "clips" / name)
        assert now.column("clip_id").to_pylist() == t.column("clip_id").to_pylist()
        assert now.column("status").to_pylist() == t.column("status").to_pylist()
        for x, y in zip(now.column("frame_scale").to_pylist(), t.column("frame_scale").to_pylist()):
            np.testing.assert_array_equal(np.array(x, np.float32), np.array(y, np.float32))  # NaN == NaN here
    validate(out, annot_manifest)
    assert output.damaged_shards(out) == []
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0


# ------------------------------------------------------------------------------------------------ item 9


def _manifest(annot_sample: Path, folder: Path) -> Path:
    rows = list(csv.DictReader(open(annot_sample / "manifest.csv")))[:1]
    path = folder / "one.csv"
    write_manifest([{**r, **{k: str(annot_sample / r[k]) for k in ("pose_path", "video_path", "depth_path")}}
                    for r in rows], path)
    return path


def test_out_is_an_existing_file(annot_sample, tmp_path, capsys):
    manifest = _manifest(annot_sample, tmp_path)
    f = tmp_path / "out.txt"
    f.write_text("keep me\n")
    for out in (f, f / "sub"):
        assert main(["run", str(manifest), str(out), "--no-progress"]) == 2
        err = _one_line_error(capsys.readouterr().err)
        assert str(out) in err and "not a folder" in err
    assert f.read_text() == "keep me\n"


def _without_dac_override():
    """preexec_fn that takes root's power to write anywhere (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) out of the
    child's capability bounding set, so a 0555 folder is read-only for it as for any user; None for non-root."""
    if os.geteuid() != 0:
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def drop():
        for cap in (1, 2):
            if libc.prctl(24, cap, 0, 0, 0):  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


def test_out_is_read_only(annot_sample, tmp_path):
    manifest = _manifest(annot_sample, tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        drop = _without_dac_override()
        try:
            probe = subprocess.run([sys.executable, "-c", f"import os; assert not os.access({str(ro)!r}, os.W_OK)"],
                                   preexec_fn=drop, capture_output=True, timeout=60)
        except subprocess.SubprocessError as e:
            pytest.skip(f"cannot make a folder read-only for root here: {e}")
        if probe.returncode:
            pytest.skip("cannot make a folder read-only for root here")
        for out, needle in ((ro, "is read-only"), (ro / "new" / "deeper", "cannot be created")):
            p = subprocess.run([sys.executable, "-m", "annotate", "run", str(manifest), str(out), "--no-progress"],
                               preexec_fn=drop, env=ENV, capture_output=True, text=True, timeout=120)
            assert p.returncode == 2, p.stderr
            err = _one_line_error(p.stderr)
            assert str(out) in err and needle in err, err
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)
