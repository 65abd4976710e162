"""The annotate command lines generated from their configs (annotate/command.py): the existing option names map
onto the expected config, ``--print-config`` loaded back with ``--config`` gives the same config, ``--help``
lists every key, and a missing word is a one-line error."""

from __future__ import annotations

import importlib

import pytest

from annotate.bench_clip import BenchClipConfig
from annotate.bench_extract import BenchExtractConfig
from annotate.bench_job import BenchJobConfig
from annotate.config import all_keys
from annotate.extract import ExtractConfig
from annotate.fetch import FetchConfig
from annotate.imports import ColmapImportConfig, NerfstudioImportConfig
from annotate.index import IndexConfig
from annotate.report import ReportConfig
from annotate.synth import SynthConfig


def _job() -> BenchJobConfig:
    cfg = BenchJobConfig(sample="s")
    cfg.job.shard_rows, cfg.job.clip.sfm.max_side, cfg.job.ray.num_cpus = 4, 320, 3
    return cfg


# (module, its command's name for cli(), argv with the existing option names, the config they must give)
CASES = [
    ("annotate.fetch", "cli", ["r", "--max-height", "480", "--min-height", "240", "--workers", "2", "--retries", "1",
                               "--backoff", "0.5", "--url-template", "http://h/{youtube_id}.mp4",
                               "--retry-unavailable", "socket_timeout_s=7"],
     FetchConfig(root="r", max_height=480, min_height=240, workers=2, retries=1, backoff_s=0.5,
                 url_template="http://h/{youtube_id}.mp4", retry_unavailable=True, socket_timeout_s=7.0)),
    ("annotate.extract", "cli", ["r", "--height", "0", "--workers", "1", "--crf", "23", "fps=25"],
     ExtractConfig(root="r", height=0, workers=1, crf=23, fps=25.0)),
    ("annotate.index", "cli", ["r", "m.parquet", "--min-frame-fraction", "0.5"],
     IndexConfig(root="r", out_manifest="m.parquet", min_frame_fraction=0.5)),
    ("annotate.imports", "cli_colmap", ["model/0", "root", "--images", "imgs", "--clip", "c", "--split", "test",
                                        "--fps", "10", "--ignore-distortion"],
     ColmapImportConfig("model/0", "root", "imgs", ignore_distortion=True, clip="c", split="test", fps=10.0)),
    ("annotate.imports", "cli_nerfstudio", ["t.json", "root", "--clip", "c", "--split", "test"],
     NerfstudioImportConfig("t.json", "root", clip="c", split="test")),
    ("annotate.report", "cli", ["outdir", "--clip", "0001", "--out", "rep"],
     ReportConfig("outdir", clip="0001", report_dir="rep")),
    ("annotate.synth", "cli", ["o", "--clips", "3", "--frames", "9", "--width", "64", "--height", "48", "--seed", "2",
                               "--supersample", "2", "--workers", "1", "--trajectories", "orbit", "re10k"],
     SynthConfig(out="o", clips=3, frames=9, width=64, height=48, seed=2, supersample=2, workers=1,
                 trajectories=["orbit", "re10k"])),
    ("annotate.bench_clip", "cli", ["--out", "b.json", "--clip-dir", "cd", "--clips", "1", "--frames", "20",
                                    "--width", "96", "--height", "64", "--seed", "1", "--pipelines", "keyframes",
                                    "--sweep", "--colmap-cli", "--colmap", "/bin/colmap"],
     BenchClipConfig(out="b.json", clip_dir="cd", clips=1, frames=20, width=96, height=64, seed=1,
                     pipelines=["keyframes"], sweep=True, colmap_cli=True, colmap="/bin/colmap")),
    ("annotate.bench_extract", "cli", ["--out", "e.json", "--seconds", "5", "--clips", "2", "--clip-frames", "30",
                                       "--height", "180"],
     BenchExtractConfig(out="e.json", seconds=5.0, clips=2, clip_frames=30, height=180)),
    ("annotate.bench_job", "cli", ["--sample", "s", "--num-cpus", "3", "job.shard_rows=4",
                                   "job.clip.sfm.max_side=320"], _job()),
]


def _command(module: str, cli: str):
    mod = importlib.import_module(module)
    return mod.command({"cli_colmap": "colmap", "cli_nerfstudio": "nerfstudio"}[cli]) if cli != "cli" \
        else mod.command()


@pytest.mark.parametrize("module, cli, argv, want", CASES, ids=[f"{m}.{c}" for m, c, _, _ in CASES])
def test_options_print_config_round_trip_and_help(module, cli, argv, want, tmp_path, capsys):
    cmd = _command(module, cli)
    assert cmd.parse(argv)[0] == want
    assert getattr(importlib.import_module(module), cli)([*argv, "--print-config"]) == 0  # printed, not run
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    assert cmd.parse(["--config", str(printed)])[0] == want
    text = cmd.parser().format_help()
    for key in all_keys(type(want)):
        assert f"\n  {key} (" in text, key


@pytest.mark.parametrize("module, cli, argv, missing", [
    ("annotate.fetch", "cli", [], "missing ROOT"), ("annotate.extract", "cli", [], "missing ROOT"),
    ("annotate.index", "cli", ["r"], "missing OUT_MANIFEST"), ("annotate.report", "cli", [], "missing OUT"),
    ("annotate.imports", "cli_colmap", ["m", "r"], "missing --images"),
    ("annotate.imports", "cli_nerfstudio", ["t.json"], "missing OUT_ROOT")])
def test_missing_words_are_one_line_errors(module, cli, argv, missing, capsys):
    assert getattr(importlib.import_module(module), cli)(argv) == 2
    err = capsys.readouterr().err
    assert missing in err and len(err.strip().splitlines()) == 1


def test_dispatcher_help_names_every_command(capsys):
    from annotate.__main__ import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("fetch", "extract", "index", "import-colmap", "import-nerfstudio", "run", "report", "synth"):
        assert f"\n  {name} " in out, name
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    assert "usage: python -m annotate synth " in " ".join(capsys.readouterr().out.split())
