"""Frames in and out, shared by annotate, train and eval. A frame source is one of:

* a video file (PyAV / FFmpeg), one frame per decoded picture;
* a folder of images, in *natural* order (``2.png`` before ``10.png``; names that are timestamps in
  microseconds sort by value, so a clip crossing 10 s or 100 s keeps its order);
* a frame list ``*.frames`` (written by ``annotate index``): ``timestamp_us<TAB>image path`` per line, paths
  relative to the list's folder, an empty path marking a camera line without a frame (reading fails then);
* a clip inside a pixelSplat/MVSplat chunk, ``CHUNK.torch#CLIP_KEY`` (loaded with ``weights_only=True``
  and memory-mapped, so only that clip's JPEG bytes are read).
"""

from __future__ import annotations

import functools
import io
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from annotate.images import ImageError, load_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
# the one list of video containers every stage accepts (extract, index, eval): what FFmpeg reads and RealEstate10K
# downloads / generated samples come as
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif")


class VideoError(ValueError):
    """Unreadable or unsuitable frames; the message names the file."""


FRAME_LIST_SUFFIX = ".frames"
_CHUNK_REF = re.compile(r"^(?P<chunk>.+\.torch)#(?P<key>[^#/\\]+)$")
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: ``2.png`` < ``10.png``, ``99966667.png`` < ``100000000.png``."""
    return tuple((0, int(t), t) if t.isdigit() else (1, 0, t.lower()) for t in _DIGITS.split(name) if t)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The images of a folder in natural order (never string order: see :func:`natural_key`)."""
    return sorted((p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: natural_key(p.name))


def chunk_ref(path: str | os.PathLike) -> tuple[Path, str] | None:
    """``(chunk file, clip key)`` when ``path`` names a clip inside a ``.torch`` chunk, else None."""
    m = _CHUNK_REF.match(str(path))
    if m is None or Path(path).exists():
        return None
    return Path(m["chunk"]), m["key"]


def load_chunk(path: str | os.PathLike) -> list[dict]:
    """A pixelSplat/MVSplat chunk: a list of dicts of tensors and strings. ``weights_only=True`` refuses
    anything but tensors and plain containers, so a downloaded chunk can never run code."""
    import pickle

    import torch

    try:
        try:
            data = torch.load(path, weights_only=True, mmap=True, map_location="cpu")
        except RuntimeError as e:  # the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            data = torch.load(path, weights_only=True, map_location="cpu")
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise VideoError(f"{path}: unreadable chunk ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(data, list) or not all(isinstance(c, dict) for c in data):
        raise VideoError(f"{path}: not a pixelSplat chunk (expected a list of dicts, got {type(data).__name__})")
    return data


def read_frame_list(path: str | os.PathLike) -> list[tuple[int, Path | None]]:
    """``(timestamp_us, image or None)`` per line of a ``.frames`` list."""
    path = Path(path)
    out = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise VideoError(f"{path}: unreadable frame list ({e})") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        stamp, _, rel = line.partition("\t")
        try:
            out.append((int(stamp), path.parent / rel if rel.strip() else None))
        except ValueError:
            raise VideoError(f"{path}:{n}: expected 'timestamp_us<TAB>path', got {line[:80]!r}") from None
    return out


def write_frame_list(path: str | os.PathLike, entries: list[tuple[int, Path | None]], note: str = "") -> None:
    """Write a ``.frames`` list (paths stored relative to its folder), atomically."""
    from annotate.files import atomic_write_text

    path = Path(path)
    base = path.parent.resolve()
    head = "# realcam frame list: camera line timestamp (us) <TAB> image; empty = no frame for that line\n"
    body = "".join(f"{int(t)}\t{os.path.relpath(Path(p).resolve(), base) if p is not None else ''}\n"
                   for t, p in entries)
    atomic_write_text(path, head + (f"# {note}\n" if note else "") + body)


def _image(p: Path | io.BytesIO, name: str) -> np.ndarray:
    try:
        return load_image(p, name)
    except ImageError as e:
        raise VideoError(str(e)) from None


def iter_frames(path: str | os.PathLike, indices: set[int] | None = None,
                threads: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, uint8 [H, W, 3])`` for every frame (or only ``indices``) of a video or image folder.
    ``threads``: decoder threads of a video (0: FFmpeg's choice, one per core plus one)."""
    ref = chunk_ref(path)
    if ref is not None:
        yield from _iter_chunk(*ref, indices)
        return
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file or folder")
    if path.is_dir() or path.suffix == FRAME_LIST_SUFFIX:
        if path.is_dir():
            images: list[Path | None] = list(list_images(path))
        else:
            images = [p for _, p in read_frame_list(path)]
            gone = sum(p is None for p in images)
            if gone:
                raise VideoError(f"{path}: {gone} of {len(images)} camera lines have no frame")
        for i, p in enumerate(images):  # one file per frame: only the wanted ones are opened
            if indices is None or i in indices:
                yield i, _image(p, str(p))
        return
    try:
        if indices is not None:
            if not indices:
                return
            seeked = _seek_frames(path, indices, threads)
            if seeked is not None:
                yield from seeked
                return
        with av.open(str(path)) as container:
            stream = _video_stream(container, path, threads)
            rgb = _rgb()
            last = None if indices is None else max(indices)
            for i, frame in enumerate(container.decode(stream)):
                if indices is None or i in indices:
                    yield i, rgb(frame)
                if last is not None and i >= last:
                    break  # early stop: nothing wanted after this frame
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(f"{path}: unreadable video ({e.__class__.__name__}: {e})") from None


def _rgb() -> Callable[[av.VideoFrame], np.ndarray]:
    """A decoded frame -> uint8 RGB ``[H, W, 3]`` by FFmpeg's swscale (the pixels of ``to_ndarray(format="rgb24")``)
    with one scaler for the whole read and one thread: ``to_ndarray`` sets up a scaler per frame, with a thread
    per core (0.22 against 0.14 ms per 640x360 frame on 2 cores, more with more cores and a loader worker each)."""
    scaler = VideoReformatter()
    return lambda frame: scaler.reformat(frame, format="rgb24", threads=1).to_ndarray()


def _video_stream(container, path: Path, threads: int = 0):
    if not container.streams.video:
        raise VideoError(f"{path}: no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    return stream


def _seek_frames(path: Path, indices: set[int], threads: int = 0) -> list[tuple[int, np.ndarray]] | None:
    """The wanted frames read by seeking to the keyframe at or before the first one and stopping after the last;
    None when the stream's timing cannot prove which frame is which (no pts, variable or irregular frame rate,
    a seek that lands past the first wanted frame): the caller then decodes from the start. The frame index is
    the decode position from the start, recovered from pts as ``(pts - start) * time_base * average_rate``.

    The packets from the keyframe to the last wanted picture are read first (demuxing is cheap) and only those a
    wanted picture needs are decoded: from the last keyframe at or before it (in decode order and display
    order, so an open GOP's leading pictures keep their references) up to it. When a keyframe lies between two
    wanted pictures, the pictures between the first and that keyframe are skipped and the decoder restarts
    there, as a fresh seek would. Within those runs, unwanted pictures nothing refers to (most B-frames, about
    half) are not decoded, only wanted pictures are converted to RGB, and after the last wanted packet the
    decoder is drained instead of fed its reordering delay."""
    first = min(indices)
    with av.open(str(path)) as container:
        stream = _video_stream(container, path, threads)
        tb, rate = stream.time_base, stream.average_rate
        if not tb or not rate or stream.start_time is None:
            return None
        # a constant-rate stream spans exactly frames / rate; anything else (VFR, gaps) decodes from the start
        if stream.frames and stream.duration and abs(float(stream.duration * tb * rate) - stream.frames) > 0.5:
            return None
        start = stream.start_time
        num, den = tb.numerator * rate.numerator, tb.denominator * rate.denominator  # pts -> frames, in ints
        target, back = first, 0
        for _ in range(4):  # an open GOP's keyframe can be found by its decode time: seek further back then
            if target > 0 or first > 0:
                container.seek(start + max(target, 0) * den // num, stream=stream, backward=True, any_frame=False)
            packets, shown, unseen = [], [], set(indices)  # decode order; display index of each
            for packet in container.demux(stream):
                if packet.size == 0 and packet.pts is None:
                    break  # the demuxer's end-of-stream packet
                if packet.pts is None:
                    return None
                packets.append(packet)
                shown.append(round((packet.pts - start) * num / den))
                unseen.discard(shown[-1])
                if not unseen:
                    break
            if unseen or not packets or not packets[0].is_keyframe:
                return None  # the video ended before a wanted frame (decoding from the start names it), or a bad seek
            if shown[0] <= first:
                break
            if target <= 0:
                return None
            back = 2 * back + shown[0] - first + 1
            target = first - back
        else:
            return None
        # feed[k]: packet k is decoded; a run ends where the next fed packet is not the following one
        feed = [False] * len(packets)
        key = 0
        for k, i in enumerate(shown):
            if packets[k].is_keyframe and k:
                key = k
            if i in indices:
                start_at = key
                while start_at and shown[start_at] > i:  # a leading picture: back to the keyframe before
                    start_at = max(j for j in range(start_at) if packets[j].is_keyframe)
                feed[start_at:k + 1] = [True] * (k + 1 - start_at)
        codec = stream.codec_context
        rgb = _rgb()
        out: list[tuple[int, np.ndarray]] = []
        prev = None

        def take(frames) -> bool:
            """Keep the wanted frames; False when the timing does not prove the index."""
            nonlocal prev
            for frame in frames:
                if frame.pts is None:
                    return False
                pos = (frame.pts - start) * num / den
                i = round(pos)
                if abs(pos - i) > 0.1 or (prev is None and i > first) or (prev is not None and i <= prev):
                    return False
                prev = i
                if i in indices:
                    out.append((i, rgb(frame)))
            return True

        for k, packet in enumerate(packets):
            if not feed[k]:
                continue
            codec.skip_frame = "DEFAULT" if shown[k] in indices else "NONREF"
            if not take(codec.decode(packet)):
                return None
            if k + 1 == len(packets) or not feed[k + 1]:  # end of a run: drain, then restart at a keyframe
                if not take(codec.decode(None)):
                    return None
                codec.flush_buffers()
        return out if len(out) == len(indices) else None


@functools.lru_cache(maxsize=2)
def _chunk_clips(path: str, inode: int, mtime_ns: int, size: int) -> dict[str, dict]:
    """The clips of a chunk by key, kept for the next read: loading a chunk costs ~0.2 ms per image it holds
    (torch's weights-only unpickler is Python; 1.2 s for 6,000 images) however few frames are read, and
    consecutive clips (the annotation job's manifest order) often share a chunk. Keyed by inode, mtime and size,
    so a rewritten chunk is loaded again; the tensors are memory-mapped, so a kept chunk holds little memory."""
    return {str(c.get("key")): c for c in load_chunk(path)}


def _iter_chunk(chunk: Path, key: str, indices: set[int] | None) -> Iterator[tuple[int, np.ndarray]]:
    try:
        st = chunk.stat()
    except OSError:
        raise VideoError(f"{chunk}: no such chunk file (frames of clip {key})") from None
    clip = _chunk_clips(str(chunk), st.st_ino, st.st_mtime_ns, st.st_size).get(key)
    if clip is None:
        raise VideoError(f"{chunk}: no clip with key {key!r}")
    for i, img in enumerate(clip.get("images", [])):  # only the wanted images' bytes are read and decoded
        if indices is None or i in indices:
            yield i, _image(io.BytesIO(img.numpy().tobytes()), f"{chunk}#{key} image {i}")


def read_frames(path: str | os.PathLike, indices: list[int] | None = None, threads: int = 0) -> np.ndarray:
    """All frames (or the given indices, in that order) as uint8 ``[N, H, W, 3]``. With indices only those are
    decoded (see :func:`_seek_frames`); ``threads``: decoder threads (0: FFmpeg's choice)."""
    want = None if indices is None else set(indices)
    got = dict(iter_frames(path, want, threads))
    order = sorted(got) if indices is None else list(indices)
    missing = [i for i in order if i not in got]
    if missing:
        raise VideoError(f"{path}: has {len(got)} readable frames, frame {missing[0]} requested")
    if not order:
        raise VideoError(f"{path}: no frames")
    return np.stack([got[i] for i in order])


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 30.0, crf: int = 12,
                codec: str = "libx264", gop: int | None = None, x264_params: str = "") -> None:
    """Write uint8 ``[N, H, W, 3]`` frames as an mp4, one video frame per array frame, atomically. ``gop``: a
    keyframe every so many frames (None: x264's default of 250); ``x264_params``: more libx264 settings as
    ``key=value:key=value`` (e.g. ``b-pyramid=none``: no B-frame is a reference, so a reader of a few frames
    decodes fewer pictures)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 [N,H,W,3] frames, got {frames.dtype} {frames.shape}")
    from annotate.files import atomic_path

    h, w = frames.shape[1:3]
    with atomic_path(path, keep_suffix=True) as tmp, av.open(str(tmp), mode="w") as container:  # PyAV: format by suffix
        stream = container.add_stream(codec, rate=int(round(fps)))
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "medium"}
            if gop:  # a keyframe every `gop` frames (x264's default is 250), as in streamed video
                stream.options |= {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
            if x264_params:
                stream.options |= {"x264-params": x264_params}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
