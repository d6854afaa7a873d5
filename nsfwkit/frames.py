"""Every frame of animations and videos, through the same loader contract as still images.

>>> from nsfwkit.frames import load_frames
>>> clip = load_frames("clip.mp4")          # one frame per second, plus the first and the last
>>> for index, time_s, pixels in clip:
...     ...
>>> clip.truncated, clip.reason             # did a cap cut it short, and which

What :func:`load_frames` yields, ``Frame(index, time_s, pixels)`` with ``pixels`` RGB ``uint8``
``(H, W, 3)`` converted exactly as :func:`nsfwkit.images.load_image` converts (ICC profile to
sRGB, EXIF orientation, alpha over a white background):

* **still images**: one frame, index 0 at time 0, pixels identical to ``load_image``.
* **animated GIF, APNG and WebP** (Pillow): every frame by default, each the picture a browser
  shows at that moment: frame rectangles drawn over what came before, disposal ("keep", "clear to
  background", "restore previous") applied, and the canvas a browser leaves transparent (around a
  first frame smaller than the canvas, areas cleared to background) transparent here too, where
  Pillow paints the GIF's background colour. A frame's time is the sum of the earlier frames'
  durations, durations of 10 ms or less counting as 100 ms, as browsers play them.
* **videos** (MP4/MOV, WebM/MKV, AVI, through PyAV's bundled FFmpeg: no system ffmpeg): one frame
  per second of presentation time by default (``fps=1``), or every ``every``-th frame, always
  with the first and the last; times are each frame's PTS x time base, counted from the stream's
  start; the container's rotation (phone videos) is applied, as EXIF orientation is for photos.

The format is taken from the file's bytes (``ftyp`` boxes, EBML, ``RIFF``/``AVI``), never from the
extension. Work is bounded: at most ``max_frames`` frames are yielded and nothing after
``max_seconds`` is decoded; when a cap cuts the input short, ``truncated`` is True and ``reason``
says which cap. Bad input raises :class:`nsfwkit.images.ImageError` naming the file and the
problem: a broken or truncated container, no video stream (audio only), a zero-length video, a
codec FFmpeg cannot decode, or frames over ``max_pixels`` (checked on the stream's header, before
any frame is decoded).
"""

from __future__ import annotations

import functools
import io
import math
import os
import struct
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np

from . import images as _images
from .images import MAX_PIXELS, ImageError

__all__ = ["Frame", "Frames", "load_frames", "check_sampling", "plot_frame_scores", "MAX_FRAMES", "MAX_SECONDS",
           "VIDEO_FPS"]

#: Most frames yielded for one input by default (an hour of video at one frame per second).
MAX_FRAMES = 3600
#: Presentation time, in seconds, after which nothing is decoded by default.
MAX_SECONDS = 3600.0
#: Frames per second sampled from videos when neither ``fps`` nor ``every`` is given.
VIDEO_FPS = 1.0
#: Browsers play frame durations of 10 ms or less (often 0) as 100 ms.
_MIN_DURATION_MS, _DEFAULT_DURATION_MS = 10, 100
_ANIMATED_FORMATS = ("GIF", "PNG", "WEBP")


class Frame(NamedTuple):
    """One frame: its index in the source, its presentation time in seconds, its pixels."""

    index: int
    time_s: float
    pixels: np.ndarray


class Frames:
    """The frames of one input, as returned by :func:`load_frames`; iterate it for :class:`Frame`.

    Attributes:
        path: the file name used in messages (``"<bytes>"`` for bytes).
        kind: ``"image"`` (a still: one frame), ``"animation"`` or ``"video"``.
        format: the container or image format (``"MP4"``, ``"WebM"``, ``"GIF"``...).
        width, height: the frame size in pixels, as stored (before any rotation).
        frame_count: frames in the source when its header says (``None`` if unknown).
        duration_s: the source's duration in seconds when known.
        truncated: after iterating, whether ``max_frames`` or ``max_seconds`` stopped it early.
        reason: which cap did, in words (``None`` when not truncated).
    """

    def __init__(self, path, kind: str, fmt: str, items: Callable[[], Iterator], *, width: int, height: int,
                 frame_count: int | None, duration_s: float | None, sampling: dict):
        self.path = str(path) if path is not None else "<bytes>"
        self.kind, self.format, self.width, self.height = kind, fmt, width, height
        self.frame_count, self.duration_s = frame_count, duration_s
        self.truncated, self.reason = False, None
        self._items, self._sampling = items, sampling

    def __repr__(self) -> str:
        return (f"Frames({self.path!r}, kind={self.kind!r}, format={self.format!r}, "
                f"{self.width}x{self.height}, frame_count={self.frame_count}, duration_s={self.duration_s})")

    def __iter__(self) -> Iterator[Frame]:
        """Decode and yield the sampled frames (each iteration reads the source again)."""
        self.truncated, self.reason = False, None
        items = self._items()
        try:
            yield from self._sample(items)
        finally:
            items.close()  # the container is closed now, not when garbage-collected

    def _sample(self, items) -> Iterator[Frame]:
        fps, every = self._sampling["fps"], self._sampling["every"]
        max_frames, max_seconds = self._sampling["max_frames"], self._sampling["max_seconds"]
        count, last_slot, held = 0, -1, None
        for index, time_s, pixels in items:
            if time_s > max_seconds:
                self._truncate(f"stopped at {max_seconds:g} s (max_seconds): later frames were not read")
                return
            slot = math.floor(time_s * fps + 1e-6) if fps else index
            wanted = slot > last_slot if fps else (every is None or index % every == 0)
            if not wanted:
                held = (index, time_s, pixels)
                continue
            if count >= max_frames:
                self._truncate(f"stopped after {max_frames} frames (max_frames): later frames were not read")
                return
            yield Frame(index, time_s, pixels())
            count, last_slot, held = count + 1, slot, None
        if held is not None:  # the last frame, when the sampling skipped it
            if count >= max_frames:
                self._truncate(f"stopped after {max_frames} frames (max_frames): the last frame was not read")
                return
            yield Frame(held[0], held[1], held[2]())

    def _truncate(self, reason: str) -> None:
        self.truncated, self.reason = True, reason


def load_frames(
    source: str | os.PathLike | bytes,
    *,
    fps: float | None = None,
    every: int | None = None,
    max_frames: int = MAX_FRAMES,
    max_seconds: float = MAX_SECONDS,
    image_size: int | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    max_pixels: int = MAX_PIXELS,
) -> Frames:
    """The frames of a still image, an animation or a video, sampled and bounded.

    The file is opened and checked now (so a bad file raises here); frames are decoded while
    iterating the result.

    Args:
        source: a file path, or the encoded bytes.
        fps: sample this many frames per second of presentation time (first frame of each
            ``1/fps`` slot). Default: every frame of animations, :data:`VIDEO_FPS` for videos.
        every: instead of ``fps``, every ``every``-th frame (``every=1``: all frames).
        max_frames: yield at most this many frames.
        max_seconds: decode nothing presented after this many seconds.
        image_size: if given, resize each frame to ``(image_size, image_size)`` the nsfwjs way
            (``float32``, as :func:`nsfwkit.images.load_image` does).
        background: RGB colour that transparent pixels are composited over.
        max_pixels: refuse frames larger than this (decompression bombs), before decoding.

    Returns:
        a :class:`Frames`: iterate it for ``Frame(index, time_s, pixels)``; the first and the last
        frame are always among them unless a cap stopped the iteration (then ``truncated``).

    Raises:
        ImageError: missing or unreadable file, not an image or video, broken container, no
            video stream, zero-length video, unsupported codec, or frames over ``max_pixels``.
        ValueError: bad sampling arguments.
    """
    check_sampling(fps=fps, every=every, max_frames=max_frames, max_seconds=max_seconds)
    finish = functools.partial(_finish, image_size=image_size)
    sampling = {"fps": fps, "every": every, "max_frames": int(max_frames), "max_seconds": float(max_seconds)}
    path, head = _head(source)
    video = _images._sniff_video(head)
    if video:
        if fps is None and every is None:
            sampling["fps"] = VIDEO_FPS
        return _video(source, path, video, sampling, finish, max_pixels)
    return _picture(source, sampling, finish, background, max_pixels)


def check_sampling(*, fps: float | None, every: int | None, max_frames: int, max_seconds: float) -> None:
    """Raise ``ValueError`` for sampling arguments :func:`load_frames` refuses."""
    if fps is not None and every is not None:
        raise ValueError("give fps or every, not both")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if every is not None and (int(every) != every or every < 1):
        raise ValueError(f"every must be a whole number >= 1, got {every}")
    if max_frames < 1 or not max_seconds > 0:
        raise ValueError(f"max_frames must be >= 1 and max_seconds > 0, got {max_frames}, {max_seconds}")


def plot_frame_scores(results_or_scores, *, times=None, frames=None, redact: bool = True,
                      threshold: float | None = None, title: str | None = None):
    """The NSFW score of one clip over time, one point per classified frame, its worst frame marked
    (and shown, **redacted by default**, when ``frames`` is given).

    Args:
        results_or_scores: the per-frame results of ONE input (``classify(..., frames="all")``
            rows, each with its ``frame`` and ``time``), or its NSFW scores, one per frame.
        times: with scores: each frame's time in seconds (default: the frame number, on an x axis
            labelled "frame").
        frames: the classified frames' pixels, in the same order (``Frame`` objects, e.g. a
            :func:`load_frames` result, or arrays): the worst one is shown beside the strip.
        redact: blur the frame shown beyond recognition (:func:`nsfwkit.data.plots.redact`),
            as the dataset grids do: clips may be explicit and notebooks get shared.
        threshold: draw this NSFW threshold as a dashed line.
        title: the figure title (default: the input's file name, for results).

    Returns:
        a ``matplotlib.figure.Figure``: ``axes[0]`` the strip (line ``"NSFW score"``, marker
        ``"worst frame"``), ``axes[1]`` the worst frame when ``frames`` is given.

    Raises:
        ValueError: no scores, results of several inputs or with errors, or ``times`` / ``frames``
            not one per score.
    """
    from matplotlib.figure import Figure

    scores, times, indices, name = _frame_series(results_or_scores, times)
    pictures = None if frames is None else [getattr(f, "pixels", f) for f in frames]
    if pictures is not None and len(pictures) != len(scores):
        raise ValueError(f"frames: {len(pictures)} pictures for {len(scores)} scores")
    worst = int(np.argmax(scores))  # the first of equally bad frames, as classify reports
    fig = Figure(figsize=(9.5 if pictures is not None else 7, 3.2), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[3, 1]) if pictures is not None else fig.add_gridspec(1, 1)
    ax = fig.add_subplot(grid[0, 0])
    ax.plot(times, scores, "o-", color="#2e86c1", markersize=4, label="NSFW score")
    timed = times.dtype.kind == "f"
    where = f"frame {indices[worst]} @ {times[worst]:.2f} s" if timed else f"frame {indices[worst]}"
    ax.plot([times[worst]], [scores[worst]], "*", color="#c0392b", markersize=14, label="worst frame")
    ax.annotate(f"worst: {where}  ({scores[worst]:.3f})", (times[worst], scores[worst]), xytext=(6, 6),
                textcoords="offset points", fontsize=8, color="#c0392b")
    if threshold is not None:
        ax.axhline(threshold, color="#7f8c8d", linestyle="--", linewidth=1, label="threshold")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("time (s)" if timed else "frame")
    ax.set_ylabel("NSFW score")
    ax.legend(loc="upper left", fontsize=8)
    if pictures is not None:
        from .data.plots import redact as _redact

        shown = np.asarray(pictures[worst]).astype(np.uint8)
        side = fig.add_subplot(grid[0, 1])
        side.imshow(_redact(shown) if redact else shown)
        side.set_axis_off()
        side.set_title(f"worst: {where}" + (" (redacted)" if redact else ""), fontsize=9)
    fig.suptitle(title if title is not None else (name or ""), fontsize=10)
    return fig


def _frame_series(results_or_scores, times):
    """``(scores, times, frame indices, file name or None)`` for :func:`plot_frame_scores`."""
    items = list(results_or_scores)
    if not items:
        raise ValueError("plot_frame_scores: no frames to plot")
    if hasattr(items[0], "nsfw"):
        bad = [r.path for r in items if not r.ok or r.frame is None]
        if bad:
            raise ValueError(f"plot_frame_scores: {bad[0]}: not a classified frame (an error, or no frames='all' row)")
        paths = {r.path for r in items}
        if len(paths) > 1:
            raise ValueError(f"plot_frame_scores: results of {len(paths)} inputs, give one's rows: {sorted(paths)}")
        scores = np.array([r.nsfw for r in items], np.float64)
        return scores, np.array([r.time for r in items], np.float64), [r.frame for r in items], \
            Path(items[0].path).name
    scores = np.asarray(items, np.float64)
    if times is None:
        return scores, np.arange(len(scores)), list(range(len(scores))), None
    times = np.asarray(times, np.float64)
    if times.shape != scores.shape:
        raise ValueError(f"times: {len(times)} times for {len(scores)} scores")
    return scores, times, list(range(len(scores))), None


def _head(source) -> tuple[Path | None, bytes]:
    """The path and the first 64 bytes of a file or of bytes, with the loader's file checks."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None, bytes(source[:64])
    path = Path(source)
    _images._check_file(path)
    try:
        with open(path, "rb") as file:
            return path, file.read(64)
    except OSError as exc:
        raise _images._os_error(path, exc) from None


def _finish(pixels: np.ndarray, *, image_size: int | None) -> np.ndarray:
    return pixels if image_size is None else _images.resize(pixels, image_size)


# ---------------------------------------------------------------------------------------------
# Still images and animations (Pillow)


def _picture(source, sampling: dict, finish, background, max_pixels: int) -> Frames:
    path, data = _images._read_source(source)
    im = _images._open_image(data, path=path, max_pixels=max_pixels)
    fmt = im.format
    size = {"width": im.width, "height": im.height}
    if fmt not in _ANIMATED_FORMATS or not getattr(im, "is_animated", False):
        def still():
            decode = functools.partial(_images.decode_image, data, path=path, background=background,
                                       max_pixels=max_pixels)
            yield 0, 0.0, lambda: finish(decode())

        return Frames(path, "image", fmt, still, frame_count=1, duration_s=None, sampling=sampling, **size)
    with _images._PillowErrors(path):
        count = im.n_frames  # GIF: a scan of the frame headers, no pixel decoded
    items = functools.partial(_animation_items, data, path, background, finish, max_pixels)
    return Frames(path, "animation", fmt, items, frame_count=count, duration_s=None, sampling=sampling, **size)


def _animation_items(data: bytes, path, background, finish, max_pixels: int):
    """``(index, time_s, pixels())`` for every frame of an animation, composited as browsers do."""
    from PIL import ImageOps

    im = _images._open_image(data, path=path, max_pixels=max_pixels)
    frames = _gif_frames(data, path, max_pixels) if im.format == "GIF" else _pillow_frames(im)
    time_ms = 0.0
    with _images._PillowErrors(path):
        for index, (frame, duration) in enumerate(frames):

            def pixels(frame=frame):
                with _images._PillowErrors(path):
                    upright = ImageOps.exif_transpose(frame) or frame
                    return finish(_images._to_rgb(upright, background))

            yield index, time_ms / 1000.0, pixels
            time_ms += _DEFAULT_DURATION_MS if duration <= _MIN_DURATION_MS else duration


def _pillow_frames(im):
    """APNG and WebP frames as Pillow composites them (libwebp's and Pillow's APNG compositing
    follow the formats' rules: a transparent canvas, disposal and blending)."""
    for index in range(im.n_frames):
        im.seek(index)
        im.load()
        yield im.copy(), float(im.info.get("duration") or 0)  # Pillow reuses its canvas


def _gif_frames(data: bytes, path, max_pixels: int):
    """GIF frames composited the way browsers do, as RGBA images, with their durations in ms.

    Pillow composites GIFs by the letter of the 1989 spec: it starts the canvas, and clears
    areas disposed "to background", with the background colour, and shows transparent pixels of a
    later frame over that colour. Browsers leave all of these transparent (so a page shows
    through), and that is what a viewer sees. So each frame is decoded alone by Pillow (as the one
    frame of a GIF holding only it) and drawn here: its opaque pixels over the canvas, then the
    canvas disposed as the frame says (1: keep, 2: clear its rectangle, 3: restore what was under
    it).
    """
    from PIL import Image

    screen, blocks = _gif_blocks(data, path)
    width, height = struct.unpack_from("<HH", data, 6)
    canvas = np.zeros((height, width, 4), np.uint8)
    for control, descriptor in blocks:
        left, top, fw, fh = struct.unpack_from("<HHHH", descriptor, 1)
        _images._check_size(path, fw, fh, max_pixels, what="a GIF frame")
        flags = control[3] if control else 0
        disposal, transparent = (flags >> 2) & 7, (control[6] if flags & 1 else None)
        # the frame alone: its own screen, at the origin, with the file's global colour table
        alone = screen[:6] + struct.pack("<HH", fw, fh) + screen[10:] + (control or b"") + \
            descriptor[:1] + struct.pack("<HH", 0, 0) + descriptor[5:] + b"\x3b"
        with Image.open(io.BytesIO(alone), formats=["GIF"]) as im:
            im.load()
            indices = np.asarray(im)
            palette = np.zeros((256, 3), np.uint8)
            colours = np.asarray(im.getpalette() or np.repeat(np.arange(256), 3), np.uint8).reshape(-1, 3)[:256]
            palette[: len(colours)] = colours
        region = canvas[top: top + fh, left: left + fw]  # clipped to the canvas
        indices = indices[: region.shape[0], : region.shape[1]]
        before = region.copy() if disposal == 3 else None
        opaque = indices != transparent if transparent is not None else np.ones(indices.shape, bool)
        region[opaque, :3] = palette[indices[opaque]]
        region[opaque, 3] = 255
        delay_ms = 10.0 * struct.unpack_from("<H", control, 4)[0] if control else 0.0
        yield Image.fromarray(canvas.copy(), "RGBA"), delay_ms
        if disposal == 2:
            region[...] = 0
        elif disposal == 3:
            region[...] = before


def _gif_blocks(data: bytes, path) -> tuple[bytes, list[tuple[bytes | None, bytes]]]:
    """The header + global colour table, and each frame's (graphic control block, image block).

    Parsing stops at the trailer, or (as browsers do) at the first byte that starts no block; a
    frame cut off by the end of the file is an error.
    """
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    screen, blocks, control = data[:pos], [], None
    while pos < len(data) and data[pos] in (0x21, 0x2C):
        start = pos
        if data[pos] == 0x21:
            pos = _skip_sub_blocks(data, pos + 2, path)
            if data[start + 1] == 0xF9 and pos - start >= 8:
                control = data[start:pos]
            continue
        local = data[pos + 9] if pos + 9 < len(data) else 0
        pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1  # + the LZW code size byte
        pos = _skip_sub_blocks(data, pos, path)
        blocks.append((control, data[start:pos]))
        control = None
    return screen, blocks


def _skip_sub_blocks(data: bytes, pos: int, path) -> int:
    """The position after a chain of GIF sub-blocks (each a length byte and data; 0 ends it)."""
    while True:
        if pos >= len(data):
            raise ImageError(path, "truncated or incomplete file (a GIF frame is cut off)")
        if data[pos] == 0:
            return pos + 1
        pos += data[pos] + 1


# ---------------------------------------------------------------------------------------------
# Videos (PyAV)


def _av():
    try:
        import av
    except ImportError:
        return None
    return av


def _video(source, path, fmt: str, sampling: dict, finish, max_pixels: int) -> Frames:
    with _open_container(source, path, fmt, max_pixels) as (container, stream):
        rate = stream.average_rate or stream.guessed_rate
        duration = None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        info = {"width": stream.codec_context.width, "height": stream.codec_context.height,
                "frame_count": stream.frames or None, "duration_s": duration}
    items = functools.partial(_video_items, source, path, fmt, finish, max_pixels, rate)
    return Frames(path, "video", fmt, items, sampling=sampling, **info)


class _open_container:
    """``with _open_container(...) as (container, stream)``: an opened, checked video stream."""

    def __init__(self, source, path, fmt: str, max_pixels: int):
        self.source, self.path, self.fmt, self.max_pixels = source, path, fmt, max_pixels
        self.container = None

    def __enter__(self):
        av = _av()
        if av is None:
            raise ImageError(self.path, f"a video ({self.fmt}): reading videos needs PyAV "
                                        "(pip install 'nsfwkit[video]')")
        source = io.BytesIO(bytes(self.source)) if self.path is None else str(self.source)
        try:
            self.container = av.open(source, mode="r")
        except av.FFmpegError as exc:
            raise ImageError(self.path, _open_error(self.fmt, exc)) from None
        try:
            return self.container, self._stream()
        except BaseException:
            self.container.close()
            raise

    def _stream(self):
        streams = self.container.streams.video
        if not streams:
            kinds = sorted({s.type for s in self.container.streams})
            has = f"only {' and '.join(kinds)}: an audio-only file?" if kinds else "no streams: a zero-length video?"
            raise ImageError(self.path, f"no video stream in this {self.fmt} file ({has})")
        stream = streams[0]
        if stream.codec_context is None:
            raise ImageError(self.path, f"unsupported video codec: this build of FFmpeg has no decoder for "
                                        f"the {self.fmt} file's video stream")
        context = stream.codec_context
        _images._check_size(self.path, context.width, context.height, self.max_pixels, what="a video frame")
        context.options = {"max_pixels": str(self.max_pixels)}  # a later, larger frame is refused too
        context.thread_type = "AUTO"
        return stream

    def __exit__(self, *exc):
        self.container.close()
        return False


def _open_error(fmt: str, exc) -> str:
    if isinstance(exc, EOFError):
        return f"{fmt} file ends before its first frame (empty, zero-length or truncated video)"
    return f"not a readable {fmt} file: truncated or corrupt container ({exc.strerror or exc})"


def _video_items(source, path, fmt: str, finish, max_pixels: int, rate):
    """``(index, time_s, pixels())`` for every decoded frame of the first video stream."""
    with _open_container(source, path, fmt, max_pixels) as (container, stream):
        start = stream.start_time
        index = -1
        for index, frame in enumerate(_decode(container, stream, path)):
            if start is None:
                start = frame.pts
            yield index, _frame_time(frame, index, start, stream.time_base, rate), \
                functools.partial(_video_pixels, frame, path, finish)
        if index < 0:
            raise ImageError(path, f"the {fmt} file's video stream has no frames (zero-length video)")


def _decode(container, stream, path):
    """Decoded frames; a packet the demuxer marks corrupt (a cut file) is an error, not a silent end."""
    av = _av()
    frames = 0
    try:
        for packet in container.demux(stream):
            if packet.is_corrupt:
                raise ImageError(path, f"truncated or corrupt video data after {frames} frames "
                                       "(the file is cut short, or damaged)")
            for frame in stream.decode(packet):
                frames += 1
                yield frame
    except av.FFmpegError as exc:
        raise ImageError(path, f"corrupt or truncated video data after {frames} frames "
                               f"({exc.strerror or exc})") from None


def _frame_time(frame, index: int, start, time_base, rate) -> float:
    """Presentation time in seconds from the stream start: PTS x time base (index / rate without PTS)."""
    if frame.pts is None or start is None:
        return float(index / rate) if rate else 0.0
    return max(0.0, float((frame.pts - start) * (frame.time_base or time_base)))


def _video_pixels(frame, path, finish) -> np.ndarray:
    av = _av()
    try:
        rgb = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range)
    except av.FFmpegError as exc:
        raise ImageError(path, f"cannot convert a video frame to RGB ({exc.strerror or exc})") from None
    turns = round((frame.rotation or 0) / 90) % 4  # counter-clockwise, as the display matrix says
    if turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, turns))
    return finish(rgb)
