"""RealEstate10K camera files: exact round trip on real files, and a named error for each malformed case."""

from pathlib import Path

import numpy as np
import pytest

from annotate.re10k import (
    CameraFileError,
    format_camera_text,
    parse_camera_data_text,
    read_camera_file,
    write_camera_file,
    youtube_id,
)

from .conftest import RE10K_DIR

REAL = sorted(RE10K_DIR.glob("*.txt"))


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_read_write_is_exact(path, tmp_path):
    traj = read_camera_file(path)
    assert len(traj) == 16 and traj.w2c.shape == (16, 3, 4) and traj.intrinsics.shape == (16, 4)
    assert traj.youtube_id and traj.youtube_id in traj.url
    out = tmp_path / path.name
    write_camera_file(out, traj)
    assert out.read_bytes() == path.read_bytes()


def _lines(path=REAL[0]):
    return Path(path).read_text().splitlines()


def _write(tmp_path, lines, name="bad.txt"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def _replace_field(line, col, value):
    f = line.split()
    f[col] = value
    return " ".join(f)


@pytest.mark.parametrize("case,line_no,message", [
    ("columns", 3, "expected 19 columns, found 18"),
    ("non_numeric", 4, "column 9 'abc' is not a number"),
    ("non_finite", 5, "column 12 is not finite"),
    ("not_orthonormal", 6, "rotation is not orthonormal"),
    ("timestamps", 7, "does not increase"),
])
def test_malformed_lines_name_file_and_line(tmp_path, case, line_no, message):
    lines = _lines()
    i = line_no - 1
    if case == "columns":
        lines[i] = " ".join(lines[i].split()[:-1])
    elif case == "non_numeric":
        lines[i] = _replace_field(lines[i], 8, "abc")
    elif case == "non_finite":
        lines[i] = _replace_field(lines[i], 11, "nan")
    elif case == "not_orthonormal":
        lines[i] = _replace_field(lines[i], 7, "0.5")
    elif case == "timestamps":
        lines[i] = _replace_field(lines[i], 0, lines[i - 1].split()[0])
    p = _write(tmp_path, lines)
    with pytest.raises(CameraFileError) as e:
        read_camera_file(p)
    assert str(e.value).startswith(f"{p}:{line_no}: ")
    assert message in str(e.value)
    assert e.value.line == line_no


def test_rotation_tolerance_is_configurable(tmp_path):
    lines = _lines()
    lines[1] = _replace_field(lines[1], 7, f"{float(lines[1].split()[7]) + 2e-3:.9f}")
    p = _write(tmp_path, lines)
    with pytest.raises(CameraFileError, match="not orthonormal"):
        read_camera_file(p)
    assert len(read_camera_file(p, rotation_tol=1e-2)) == 16


@pytest.mark.parametrize("content", ["", "https://www.youtube.com/watch?v=abc\n", "\n\n"])
def test_empty_file(tmp_path, content):
    p = tmp_path / "empty.txt"
    p.write_text(content)
    with pytest.raises(CameraFileError, match="empty file") as e:
        read_camera_file(p)
    assert str(p) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(CameraFileError, match="cannot read"):
        read_camera_file(tmp_path / "nope.txt")


def test_values_parsed_in_contract_order():
    traj = read_camera_file(REAL[0])
    first = [float(x) for x in _lines()[1].split()]
    assert traj.timestamps_us[0] == int(first[0])
    np.testing.assert_array_equal(traj.intrinsics[0], first[1:5])
    np.testing.assert_array_equal(traj.w2c[0].reshape(-1), first[7:])
    assert format_camera_text(traj) == REAL[0].read_text()


@pytest.mark.parametrize("url,vid", [("https://www.youtube.com/watch?v=QShWPZxTDoE", "QShWPZxTDoE"),
                                     ("https://youtu.be/-aldZQifF2U", "-aldZQifF2U"), ("not a url", "")])
def test_youtube_id(url, vid):
    assert youtube_id(url) == vid


@pytest.mark.parametrize("field,value,message", [
    (1, "0", "focal length fx (column 2) is 0; it must be positive"),
    (2, "-0.9", "focal length fy (column 3) is -0.9; it must be positive"),
    (1, "612.5", "focal length fx (column 2) is 612.5, implausible for a normalised value"),
    (3, "320", "principal point cx (column 4) is 320, far outside the image"),
    (4, "-0.8", "principal point cy (column 5) is -0.8, far outside the image"),
])
def test_bad_intrinsics_name_file_and_line(tmp_path, field, value, message):
    lines = _lines()
    lines[5] = _replace_field(lines[5], field, value)
    p = _write(tmp_path, lines)
    with pytest.raises(CameraFileError) as e:
        read_camera_file(p)
    assert str(e.value).startswith(f"{p}:6: {message}") and e.value.line == 6


def test_bad_intrinsics_fail_the_clip_before_its_video_is_read(tmp_path):
    """The camera file is checked first: the clip fails on its focal length although its video is missing."""
    from annotate.clip import ClipConfig, triangulate_stage

    lines = _lines()
    lines[2] = _replace_field(lines[2], 1, "0.000000000")
    pose = _write(tmp_path, lines)
    row = {"clip_id": "c", "split": "test", "pose_path": str(pose), "video_path": str(tmp_path / "absent.mp4")}
    rec = triangulate_stage(row, ClipConfig())
    assert rec["status"] == "failed"
    assert rec["error"] == f"malformed camera file: {pose}:3: focal length fx (column 2) is 0; it must be positive"


def test_camera_data_layout_read_and_errors_name_file_and_line(tmp_path):
    # The evaluation layout: 18 numbers a row, pixel intrinsics, 0 0, w2c; no URL, no timestamp.
    traj = read_camera_file(REAL[0])
    rows = [" ".join(f"{v:.9f}" for v in (*(i * 256), 0, 0, *w.reshape(-1))) for i, w in zip(traj.intrinsics, traj.w2c)]
    path = tmp_path / "clip.txt"
    path.write_text("\n".join(rows) + "\n")
    intr, w2c = parse_camera_data_text(path.read_text(), path)
    np.testing.assert_allclose(intr, traj.intrinsics * 256, atol=1e-9)
    np.testing.assert_array_equal(w2c, traj.w2c)
    fields = rows[1].split()
    bad = [rows[0], " ".join(fields[:6] + ["x"] + fields[7:])]
    with pytest.raises(CameraFileError, match=r"clip\.txt:2: column 7 'x' is not a number"):
        parse_camera_data_text("\n".join(bad), path)
    with pytest.raises(CameraFileError, match=r"clip\.txt:1: expected 18 columns \(camera_data layout\), found 19"):
        parse_camera_data_text(rows[0] + " 1", path)
    with pytest.raises(CameraFileError, match="no pose lines"):
        parse_camera_data_text("\n\n", path)


def test_camera_data_writer_round_trips_through_the_reader(tmp_path):
    from annotate.re10k import parse_camera_data_text, write_camera_data_file

    # a camera 2 m along +x looking down +z, turned 90 degrees about y: w2c written out by hand
    c2w = np.eye(4)[None].repeat(2, 0)
    c2w[1, :3, :3] = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]
    c2w[1, :3, 3] = [2.0, 0.0, 0.0]
    intr = np.array([[100.0, 120.0, 64.0, 48.0]] * 2)
    path = tmp_path / "clip.txt"
    write_camera_data_file(path, intr, c2w)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and len(lines[1].split()) == 18
    assert all(len(f.split(".")[1]) == 10 for f in lines[1].split())  # 10 decimals, as the authors' files
    assert [float(f) for f in lines[1].split()[6:]] == [0, 0, -1, 0, 0, 1, 0, 0, 1, 0, 0, -2]
    got_intr, got_w2c = parse_camera_data_text(path.read_text(), path)
    np.testing.assert_allclose(got_intr, intr)
    np.testing.assert_allclose(got_w2c[1], [[0, 0, -1, 0], [0, 1, 0, 0], [1, 0, 0, -2]], atol=1e-12)
