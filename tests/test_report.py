"""`annotate report`: counts, failure reasons, scale distribution, plots and report.md."""

from __future__ import annotations

import pytest

from annotate.__main__ import main
from annotate.report import frame_spread, report


def test_report_plots_and_markdown(annotated_sample, tmp_path):
    rep = report(annotated_sample, report_dir=tmp_path / "rep", quiet=True)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| all | 12 | 6 | 6 |" in md  # rows, ok, failed
    for kind in ("unreadable video", "malformed camera file", "frame-count mismatch", "too few frames"):
        assert kind in md
    assert "scale_max" in md and "Filter (quantile 0.02)" in md
    names = {"scale_hist.png", "frame_scale_spread.png", f"clip_{rep.clip}_trajectory.png",
             f"clip_{rep.clip}_points.png"}
    assert names == set(rep.plots)
    for n in names:
        png = tmp_path / "rep" / n
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"]({n})" in md


def test_report_cli_chosen_and_failed_clip(annotated_sample, tmp_path, capsys):
    assert main(["report", str(annotated_sample), "--clip", "bad_rotation", "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "`bad_rotation` failed" in md
    assert "report.md" in capsys.readouterr().out
    assert main(["report", str(annotated_sample), "--clip", "nope", "--out", str(tmp_path / "r2")]) == 2


def test_frame_spread():
    ratio, cv = frame_spread([[1.0, 2.0, float("nan")], [float("nan")], [3.0, 3.0]])
    assert list(ratio) == [2.0, 1.0] and cv[1] == 0.0
    assert len(cv) == 2 and cv[0] == pytest.approx(0.5 / 1.5)  # population std of [1, 2] over its mean
