"""Reading only the wanted frames (seek to the keyframe before the first, restart at keyframes between wanted
frames, stop after the last) returns exactly the frames of a full decode, for closed and open GOPs, frame
folders and pixelSplat chunks."""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from annotate.video import _seek_frames, read_frames

N, GOP, H, W = 60, 12, 48, 64
INDEX_SETS = [[0, 1, 2, 3], [10, 11, 12, 13, 14], [46, 47, 59], [3, 11, 19, 27, 35, 43, 51, 59],
              [59], [30], [25, 5, 40]]


def drawn(i: int) -> np.ndarray:
    """A frame with its index drawn as 6 black/white bits (8x8 blocks) over a texture."""
    rng = np.random.default_rng(i)
    img = (rng.integers(0, 256, (H, W, 3)) // 4 + 96).astype(np.uint8)
    for b in range(6):
        img[:16, b * 10:b * 10 + 8] = 255 if (i >> b) & 1 else 0
    return img


def drawn_index(img: np.ndarray) -> int:
    return sum(1 << b for b in range(6) if img[4:12, b * 10 + 2:b * 10 + 6].mean() > 128)


def encode(path, pts=None, open_gop: bool = False) -> None:
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=30)  # default preset: B-frames, so decode order != packet order
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": "18", "g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0"}
        if open_gop:  # keyframes that are not IDR: B-frames after them in decode order refer to the GOP before
            s.options |= {"x264-params": "open-gop=1"}
        tb = Fraction(1, 30 if pts is None else 1000)
        s.codec_context.time_base = tb
        for i in range(N):
            f = av.VideoFrame.from_ndarray(drawn(i), format="rgb24")
            f.pts, f.time_base = (i if pts is None else pts[i]), tb
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("seek") / "clip.mp4"
    encode(path)
    return path


def test_video_seek_equals_full_decode(video):
    full = read_frames(video)
    assert len(full) == N and [drawn_index(f) for f in full] == list(range(N))
    with av.open(str(video)) as c:  # the keyframes are where the test needs them: GOP boundaries cross sets
        keys = [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]
    assert keys == list(range(0, N, GOP))
    for idx in INDEX_SETS:
        assert _seek_frames(video, set(idx)) is not None  # the seek path, not the fallback
        got = read_frames(video, idx)
        assert np.array_equal(got, full[idx]), idx
        assert [drawn_index(f) for f in got] == idx


def test_open_gop_leading_pictures_keep_their_references(tmp_path):
    path = tmp_path / "open.mp4"
    encode(path, open_gop=True)
    with av.open(str(path)) as c:  # a keyframe followed (in decode order) by pictures shown before it
        order = [(round(p.pts / 512), p.is_keyframe) for p in c.demux(video=0) if p.size]
    k = next(n for n, (i, key) in enumerate(order) if key and i > 0)
    assert order[k + 1][0] < order[k][0]
    full = read_frames(path)
    for idx in INDEX_SETS + [[10, 11, 12, 13], [22, 23, 35, 47]]:
        assert _seek_frames(path, set(idx)) is not None, idx  # found by seeking further back, not the fallback
        assert np.array_equal(read_frames(path, idx), full[idx]), idx


def test_irregular_pts_fall_back_to_decoding_from_start(tmp_path):
    path = tmp_path / "vfr.mp4"
    encode(path, pts=[round(i * 33.3) + (40 if i >= 30 else 0) for i in range(N)])  # a 40 ms gap at frame 30
    full = read_frames(path)
    assert [drawn_index(f) for f in full] == list(range(N))
    for idx in ([40, 41, 50], [29, 30, 31], [5, 6]):
        assert _seek_frames(path, set(idx)) is None  # timing cannot prove the index: decode from the start
        assert np.array_equal(read_frames(path, idx), full[idx]), idx
        assert [drawn_index(f) for f in read_frames(path, idx)] == idx


def test_missing_frame_is_named(video):
    from annotate.video import VideoError

    with pytest.raises(VideoError, match="frame 60 requested"):
        read_frames(video, [58, 59, 60])


def test_folders_and_chunks_read_only_wanted_frames(tmp_path):
    import io

    folder = tmp_path / "frames"
    folder.mkdir()
    blobs = []
    for i in range(N):
        Image.fromarray(drawn(i)).save(folder / f"{i}.png")
        buf = io.BytesIO()
        Image.fromarray(drawn(i)).save(buf, format="JPEG", quality=95)
        blobs.append(torch.tensor(list(buf.getvalue()), dtype=torch.uint8))
    torch.save([{"key": "clipA", "images": blobs}], tmp_path / "000000.torch")
    (folder / "7.png").write_bytes(b"not an image")  # never decoded unless asked for
    chunk = f"{tmp_path / '000000.torch'}#clipA"
    full_chunk = read_frames(chunk)
    for idx in ([0, 1, 2], [10, 11, 12, 13], [59], [3, 11, 19, 27, 35, 43, 51, 59]):
        got = read_frames(folder, idx)
        assert np.array_equal(got, np.stack([drawn(i) for i in idx]))
        assert np.array_equal(read_frames(chunk, idx), full_chunk[idx])
        assert [drawn_index(f) for f in read_frames(chunk, idx)] == idx
    # the loaded chunk is kept for the next read, but a rewritten chunk is read again
    torch.save([{"key": "clipA", "images": blobs[::-1][:N - 1]}], tmp_path / "000000.torch")  # another size
    assert [drawn_index(f) for f in read_frames(chunk, [0, 1])] == [N - 1, N - 2]


def test_pixels_are_ffmpegs_rgb_conversion(video):
    """The reader's one-scaler, one-thread RGB conversion gives PyAV's ``to_ndarray(format="rgb24")`` pixels."""
    with av.open(str(video)) as c:
        ref = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert np.array_equal(read_frames(video), ref)
    assert np.array_equal(read_frames(video, [3, 11, 19]), ref[[3, 11, 19]])


def test_long_runs_of_non_reference_b_frames(tmp_path):
    """Clips written with b-pyramid=none and up to 7 B-frames (none of them a reference: the encoding that
    decodes fewest pictures per sample) read the same frames by seeking as by a full decode."""
    from annotate.video import write_video

    path = tmp_path / "nopyr.mp4"
    write_video(path, np.stack([drawn(i) for i in range(N)]), crf=18, gop=30, x264_params="b-pyramid=none:bframes=7")
    full = read_frames(path)
    assert [drawn_index(f) for f in full] == list(range(N))
    for idx in INDEX_SETS:
        assert _seek_frames(path, set(idx)) is not None
        assert np.array_equal(read_frames(path, idx), full[idx]), idx
