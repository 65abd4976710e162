"""`annotate fetch` (issue 13): yt-dlp downloads from a server on 127.0.0.1 (its generic extractor takes a direct
URL), a 404 and a private video are logged outcomes, errors are retried, partial files never count as done."""

from __future__ import annotations

import csv
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from annotate.__main__ import main
from annotate.fetch import FetchConfig, classify, fetch
from annotate.re10k import CameraTrajectory, write_camera_file
from annotate.video import read_frames, write_video

IDS = ("vidOK000001", "vidOK000002", "vidFLAKY001", "vidGONE0001", "vidPRIV0001")


class Server:
    """Serves ``folder`` on 127.0.0.1; the first request for a FLAKY video gets a 503, GONE ones 404,
    PRIV ones 403 with YouTube's message. Counts requests and the most served at once."""

    def __init__(self, folder: Path):
        self.requests: dict[str, int] = {}
        self.active = self.max_active = 0
        lock = threading.Lock()
        srv = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(folder), **kw)

            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.strip("/").split(".")[0]
                with lock:
                    n = srv.requests[name] = srv.requests.get(name, 0) + 1
                    srv.active += 1
                    srv.max_active = max(srv.max_active, srv.active)
                try:
                    time.sleep(0.15)  # long enough for downloads to overlap
                    if "GONE" in name:
                        self.send_error(404)
                    elif "PRIV" in name:
                        self.send_error(403, "Private video. Sign in if you've been granted access to this video")
                    elif "FLAKY" in name and n == 1:
                        self.send_error(503)
                    else:
                        super().do_GET()
                finally:
                    with lock:
                        srv.active -= 1

            do_HEAD = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def make_root(tmp_path: Path) -> tuple[Path, Path]:
    served = tmp_path / "served"
    served.mkdir()
    frames = np.random.default_rng(0).integers(0, 255, (6, 32, 48, 3), dtype=np.uint8)
    for yt in IDS:
        if "GONE" not in yt and "PRIV" not in yt:
            write_video(served / f"{yt}.mp4", frames, fps=30)
    root = tmp_path / "re10k"
    for i, yt in enumerate(IDS):
        split = "test" if i % 2 else "train"
        for c in range(2 if i == 0 else 1):  # two clips share the first video: downloaded once
            write_camera_file(root / "RealEstate10K" / split / f"clip{i}{c}.txt",
                              CameraTrajectory(f"https://www.youtube.com/watch?v={yt}", np.array([0, 33333]),
                                               np.tile([0.5, 0.9, 0.5, 0.5], (2, 1)), np.tile(np.eye(3, 4), (2, 1, 1))))
    return root, served


def test_classify():
    assert classify("[youtube] abc: Video unavailable. This video has been removed by the uploader") == "unavailable"
    assert classify("[youtube] abc: Private video. Sign in if you've been granted access") == "private"
    assert classify("Unable to download webpage: HTTP Error 404: Not Found") == "unavailable"
    assert classify("HTTP Error 503: Service Unavailable") == "error"


def test_fetch_from_local_server(tmp_path):
    root, served = make_root(tmp_path)
    videos = root / "videos"
    videos.mkdir()
    (videos / "vidOK000002.mp4.part").write_bytes(b"half a download")  # a killed run's partial file
    with Server(served) as srv:
        cfg = FetchConfig(workers=2, retries=2, backoff_s=0.05,
                          url_template=f"http://127.0.0.1:{srv.port}/{{youtube_id}}.mp4")
        res = fetch(root, cfg, progress=False)
        assert res.counts == {"ok": 3, "unavailable": 1, "private": 1, "error": 0}
        for yt in ("vidOK000001", "vidOK000002", "vidFLAKY001"):
            assert (videos / f"{yt}.mp4").read_bytes() == (served / f"{yt}.mp4").read_bytes()
        assert read_frames(videos / "vidOK000002.mp4").shape == (6, 32, 48, 3)
        assert not list(videos.glob("*.part"))
        assert srv.max_active <= 2  # bounded concurrency
        rows = {r["youtube_id"]: r for r in csv.DictReader(open(videos / "fetch_log.csv"))}
        assert rows["vidFLAKY001"]["status"] == "ok" and rows["vidFLAKY001"]["attempts"] == "2"  # retried
        assert rows["vidGONE0001"]["status"] == "unavailable" and "404" in rows["vidGONE0001"]["reason"]
        assert rows["vidGONE0001"]["attempts"] == "1"  # gone is final: no retries
        assert rows["vidPRIV0001"]["status"] == "private"
        assert rows["vidOK000001"]["clips"] == "2"
        # Resume: nothing is asked for again (done, or known gone).
        before = dict(srv.requests)
        res2 = fetch(root, cfg, progress=False)
        assert res2.skipped == 5 and sum(res2.counts.values()) == 0 and srv.requests == before
        # Unless asked to: gone videos are tried again and stay gone.
        cfg.retry_unavailable = True
        assert fetch(root, cfg, progress=False).counts["unavailable"] == 1


def test_fetch_errors_are_logged_not_raised(tmp_path, capsys):
    root, _ = make_root(tmp_path)
    # Nothing listens on this port: every video is an error after its retries, the command still succeeds.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["fetch", str(root), "--workers", "3", "--retries", "1", "--backoff", "0.01",
                 "--url-template", f"http://127.0.0.1:{port}/{{youtube_id}}.mp4"]) == 0
    assert "5 error(s)" in capsys.readouterr().out
    rows = list(csv.DictReader(open(root / "videos" / "fetch_log.csv")))
    assert {r["status"] for r in rows} == {"error"} and all(r["attempts"] == "2" for r in rows)
    assert main(["fetch", str(tmp_path / "nope")]) == 2


@pytest.mark.parametrize("bad", [{"workers": 0}, {"retries": -1}])
def test_fetch_config_checked(tmp_path, bad):
    with pytest.raises(ValueError):
        fetch(tmp_path, FetchConfig(**bad), progress=False)
