"""`load_frames`: still images unchanged, animations as browsers show them, videos sampled by time."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageSequence

from nsfwkit.frames import MAX_FRAMES, load_frames
from nsfwkit.images import VIDEO_EXTENSIONS, ImageError, iter_image_files, load_image

from frames_helpers import browser_composite, gif_bytes, grey_ramp, require_av, write_video


@pytest.fixture
def rgb():
    y, x = np.mgrid[0:40, 0:60]
    return np.stack([x * 4, y * 6, (x + y) * 2], -1).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# still images


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("GIF", "gif"),
                                     ("WEBP", "webp"), ("TIFF", "tif")])
def test_still_image_is_one_frame_identical_to_load_image(tmp_path, rgb, fmt, ext):
    path = tmp_path / f"still.{ext}"
    Image.fromarray(rgb).save(path, format=fmt)
    clip = load_frames(path)
    (frame,) = list(clip)
    assert clip.kind == "image" and clip.format == fmt and (clip.width, clip.height) == (60, 40)
    assert frame.index == 0 and frame.time_s == 0.0
    assert frame.pixels.dtype == np.uint8 and np.array_equal(frame.pixels, load_image(path))
    (resized,) = list(load_frames(path, image_size=24))
    assert resized.pixels.dtype == np.float32
    assert np.array_equal(resized.pixels, load_image(path, image_size=24))
    assert not clip.truncated and clip.reason is None


def test_multipage_tiff_and_bad_files_keep_the_image_rules(tmp_path, rgb):
    path = tmp_path / "pages.tif"
    Image.fromarray(rgb).save(path, save_all=True, append_images=[Image.fromarray(255 - rgb)])
    clip = load_frames(path)
    assert clip.kind == "image" and np.array_equal(next(iter(clip)).pixels, rgb)  # a document, not a clip
    (tmp_path / "page.gif").write_text("<html>404</html>")
    with pytest.raises(ImageError, match="HTML") as info:
        load_frames(tmp_path / "page.gif")
    assert "page.gif" in str(info.value)
    with pytest.raises(ImageError, match="no such file"):
        load_frames(tmp_path / "nope.mp4")
    with pytest.raises(ValueError, match="not both"):
        load_frames(path, fps=1, every=2)
    with pytest.raises(ValueError, match="every"):
        load_frames(path, every=0)
    with pytest.raises(ValueError, match="fps"):
        load_frames(path, fps=0)


# ---------------------------------------------------------------------------------------------
# animations

PALETTE = [(0, 0, 255), (255, 0, 0), (0, 255, 0), (20, 20, 20)]  # index 0 (the background) is blue
DISPOSAL_FRAMES = [
    # a partial first frame: the canvas around it is transparent in a browser, blue in Pillow
    dict(pixels=np.full((4, 4), 1), left=2, top=2, delay_cs=10, disposal=1),
    # drawn, then its rectangle cleared (disposal 2)
    dict(pixels=np.array([[2, 3], [3, 2]]), left=0, top=0, delay_cs=20, disposal=2),
    # drawn, then what was under it put back (disposal 3)
    dict(pixels=np.array([[3, 3, 3]]), left=5, top=5, delay_cs=5, disposal=3),
    # transparent pixels (index 0) over a never-drawn corner; a 0 delay plays as 100 ms
    dict(pixels=np.array([[2, 0], [0, 2]]), left=6, top=6, delay_cs=0, disposal=1, transparent=0),
    dict(pixels=np.array([[1]]), left=0, top=7, delay_cs=3, disposal=0),
]


def test_gif_frames_equal_a_browser_composite(tmp_path):
    path = tmp_path / "disposal.gif"
    path.write_bytes(gif_bytes((8, 8), PALETTE, DISPOSAL_FRAMES))
    expected, times = browser_composite((8, 8), PALETTE, DISPOSAL_FRAMES)
    assert times == [0.0, 0.1, 0.3, 0.35, 0.45]  # delays 10, 20, 5, 0 (-> 10), 3 cs
    clip = load_frames(path)
    frames = list(clip)
    assert clip.kind == "animation" and clip.frame_count == 5
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert [f.time_s for f in frames] == pytest.approx(times, abs=1e-9)
    for frame, want in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(frame.pixels, want, err_msg=f"frame {frame.index}")
    np.testing.assert_array_equal(load_image(path), expected[0])  # the still loader agrees on frame 0
    # what Pillow's own compositing gives differs: the blue background colour shows where a
    # browser shows the page (around the first frame, where frame 1 was cleared, under frame 3)
    pillow = [np.asarray(f.convert("RGBA"))[..., :3] for f in ImageSequence.Iterator(Image.open(path))]
    assert tuple(pillow[0][0, 0]) == (0, 0, 255) and tuple(frames[0].pixels[0, 0]) == (255, 255, 255)
    assert tuple(pillow[3][6, 7]) == (0, 0, 255) and tuple(frames[3].pixels[6, 7]) == (255, 255, 255)
    black = list(load_frames(path, background=(0, 0, 0)))
    assert tuple(black[1].pixels[7, 7]) == (0, 0, 0) and tuple(black[1].pixels[0, 0]) == (0, 255, 0)


def test_gif_sampling_by_time_and_every(tmp_path):
    path = tmp_path / "disposal.gif"
    path.write_bytes(gif_bytes((8, 8), PALETTE, DISPOSAL_FRAMES))
    # times 0, .1, .3, .35, .45: at 4 fps the slots are [0, .25) [.25, .5): frames 0 and 2, + the last
    assert [f.index for f in load_frames(path, fps=4)] == [0, 2, 4]
    assert [f.index for f in load_frames(path, every=3)] == [0, 3, 4]
    assert [f.index for f in load_frames(path, every=2)] == [0, 2, 4]


def _rgba_frames():
    """Three RGBA frames with fully opaque and fully transparent pixels only (exact over white)."""
    a = np.zeros((8, 8, 4), np.uint8)
    a[...] = (200, 10, 10, 255)
    b = a.copy()
    b[2:5, 2:5] = (0, 0, 255, 255)
    c = np.zeros((8, 8, 4), np.uint8)
    c[:4, :4] = (0, 255, 0, 255)  # the rest transparent: the page shows
    return [a, b, c]


def _over_white(rgba):
    alpha = rgba[..., 3:] / 255
    return np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)


@pytest.mark.parametrize("fmt,kw", [("WEBP", {"lossless": True}), ("PNG", {})])
def test_animated_webp_and_apng(tmp_path, fmt, kw):
    frames = _rgba_frames()
    path = tmp_path / f"anim.{fmt.lower()}"
    Image.fromarray(frames[0]).save(path, format=fmt, save_all=True, duration=[100, 0, 250], loop=0,
                                    append_images=[Image.fromarray(f) for f in frames[1:]], **kw)
    clip = load_frames(path)
    got = list(clip)
    assert clip.kind == "animation" and clip.format == fmt
    assert [f.time_s for f in got] == pytest.approx([0.0, 0.1, 0.2])  # a 0 ms frame plays as 100 ms
    for frame, want in zip(got, frames, strict=True):
        np.testing.assert_array_equal(frame.pixels, _over_white(want), err_msg=f"{fmt} frame {frame.index}")
    np.testing.assert_array_equal(load_image(path), got[0].pixels)


def test_ten_thousand_frame_gif_is_capped_and_says_so(tmp_path):
    frames = [dict(pixels=np.array([[k % 4, 1], [2, 3]]), left=0, top=0, delay_cs=10, disposal=1)
              for k in range(10_000)]
    path = tmp_path / "endless.gif"
    path.write_bytes(gif_bytes((2, 2), PALETTE, frames))
    clip = load_frames(path)
    got = [f.index for f in clip]
    assert clip.frame_count == 10_000
    assert got == list(range(MAX_FRAMES))
    assert clip.truncated and "3600 frames (max_frames)" in clip.reason
    short = load_frames(path, max_seconds=5)
    assert [f.time_s for f in short][-1] == pytest.approx(5.0) and len(list(short)) == 51  # 0.1 s each
    assert short.truncated and "5 s (max_seconds)" in short.reason


def test_truncated_gif_is_an_error(tmp_path):
    data = gif_bytes((8, 8), PALETTE, DISPOSAL_FRAMES)
    path = tmp_path / "cut.gif"
    path.write_bytes(data[: len(data) - 12])
    with pytest.raises(ImageError, match="truncated") as info:
        list(load_frames(path))
    assert "cut.gif" in str(info.value)


# ---------------------------------------------------------------------------------------------
# videos

VIDEOS = [("mp4", "libx264", "MP4"), ("webm", "libvpx-vp9", "WebM"), ("webm", "libvpx", "WebM"),
          ("mkv", "libx264", "Matroska"), ("mov", "libx264", "QuickTime"), ("avi", "mpeg4", "AVI")]


@pytest.mark.parametrize("ext,codec,fmt", VIDEOS, ids=[f"{e}-{c}" for e, c, _ in VIDEOS])
def test_video_times_and_sampling(tmp_path, ext, codec, fmt):
    path = write_video(tmp_path / f"clip.{ext}", grey_ramp(25), fps=10, codec=codec)  # 2.5 s
    clip = load_frames(path, every=1)
    frames = list(clip)
    assert clip.kind == "video" and clip.format == fmt and (clip.width, clip.height) == (32, 24)
    assert clip.duration_s == pytest.approx(2.5, abs=0.1)
    assert [f.index for f in frames] == list(range(25))
    for f in frames:  # the right frame at the right time: grey level 10 * i, shown at i / 10 s
        assert abs(f.time_s - f.index / 10) < 0.1 / 2, (f.index, f.time_s)
        assert abs(float(f.pixels.mean()) - 10 * f.index) < 4, (f.index, f.pixels.mean())
        assert f.pixels.shape == (24, 32, 3) and f.pixels.dtype == np.uint8
    # default: 1 fps, by presentation time: 0, 1, 2 s, plus the last frame (2.4 s)
    assert [f.index for f in load_frames(path)] == [0, 10, 20, 24]
    # 3 fps: the first frame of each third of a second, then the last
    assert [f.index for f in load_frames(path, fps=3)] == [0, 4, 7, 10, 14, 17, 20, 24]
    assert [f.index for f in load_frames(path, every=7)] == [0, 7, 14, 21, 24]
    capped = load_frames(path, every=1, max_frames=5)
    assert len(list(capped)) == 5 and capped.truncated and "max_frames" in capped.reason
    early = load_frames(path, every=1, max_seconds=1.0)
    assert [f.index for f in early][-1] == 10 and early.truncated and "max_seconds" in early.reason


def test_video_is_detected_from_its_bytes(tmp_path, rgb):
    path = write_video(tmp_path / "clip.mp4", grey_ramp(5), fps=5)
    disguised = tmp_path / "clip.jpg"
    disguised.write_bytes(path.read_bytes())
    assert load_frames(disguised).kind == "video"
    assert len(list(load_frames(path.read_bytes(), every=1))) == 5  # bytes work too
    png = tmp_path / "still.mp4"
    Image.fromarray(rgb).save(png, format="PNG")
    assert load_frames(png).kind == "image"
    with pytest.raises(ImageError, match=r"a video \(MP4\), not a still image"):
        load_image(path)


def test_video_rotation_is_applied(tmp_path):
    frame = np.zeros((16, 32, 3), np.uint8)
    frame[:, :16] = 255  # left half white
    path = write_video(tmp_path / "phone.mp4", [frame] * 3, rotation=90, pix_fmt="yuv444p")
    pixels = next(iter(load_frames(path))).pixels
    assert pixels.shape == (32, 16, 3)  # turned a quarter counter-clockwise: the left half at the bottom
    assert pixels[:12].mean() < 10 and pixels[-12:].mean() > 245


def test_truncated_mp4(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8) for i in range(30)]
    cut_index = tmp_path / "cut_index.mp4"  # the index (moov) is written last: the cut loses it
    data = write_video(tmp_path / "a.mp4", frames).read_bytes()
    cut_index.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt container") as info:
        load_frames(cut_index)
    assert "cut_index.mp4" in str(info.value)
    cut_data = tmp_path / "cut_data.mp4"  # index first ("faststart"): the frames run out
    data = write_video(tmp_path / "b.mp4", frames, container_options={"movflags": "faststart"}).read_bytes()
    cut_data.write_bytes(data[: len(data) // 2])
    clip = load_frames(cut_data, every=1)  # the header is intact
    with pytest.raises(ImageError, match="truncated or corrupt video data") as info:
        list(clip)
    assert "cut_data.mp4" in str(info.value)


def test_audio_only_and_zero_length_videos(tmp_path):
    av = require_av()
    audio = tmp_path / "voice.mp4"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        for k in range(4):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 8000, k * 1024
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(ImageError, match="no video stream.*only audio") as info:
        load_frames(audio)
    assert "voice.mp4" in str(info.value)
    for ext, codec, reason in (("mp4", "libx264", "no video stream"), ("webm", "libvpx", "zero-length")):
        empty = tmp_path / f"empty.{ext}"
        with av.open(str(empty), "w") as container:
            stream = container.add_stream(codec, rate=10)
            stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
            container.start_encoding()
        with pytest.raises(ImageError, match=reason):
            list(load_frames(empty))
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_frames(tmp_path / "zero.mp4")


def test_unsupported_codec(tmp_path):
    data = write_video(tmp_path / "a.mkv", grey_ramp(3)).read_bytes()
    assert b"V_MPEG4/ISO/AVC" in data
    path = tmp_path / "strange.mkv"
    path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/QQQ"))  # a codec id nobody knows
    with pytest.raises(ImageError, match="unsupported video codec") as info:
        load_frames(path)
    assert "strange.mkv" in str(info.value)


def test_video_frame_size_checked_before_decoding(tmp_path):
    path = write_video(tmp_path / "big.mp4", grey_ramp(3, size=(64, 48)))
    with pytest.raises(ImageError, match=r"64x48 = 3,072 pixels, over the limit of 3,000.*decompression bomb"):
        load_frames(path, max_pixels=3000)  # raised on opening: no frame was decoded
    assert len(list(load_frames(path, max_pixels=3072, every=1))) == 3


def test_video_extensions_found_in_folders(tmp_path, rgb):
    write_video(tmp_path / "b.mp4", grey_ramp(2))
    Image.fromarray(rgb).save(tmp_path / "a.png")
    (tmp_path / "c.mkv").write_bytes(b"x")
    assert [p.name for p in iter_image_files([tmp_path])] == ["a.png"]  # the image default is unchanged
    found = iter_image_files([tmp_path], extensions=VIDEO_EXTENSIONS | {".png"})
    assert [p.name for p in found] == ["a.png", "b.mp4", "c.mkv"]
    assert {".mp4", ".webm", ".mov", ".mkv", ".avi"} <= VIDEO_EXTENSIONS


def test_frames_is_reiterable_and_pixels_independent(tmp_path):
    path = tmp_path / "disposal.gif"
    path.write_bytes(gif_bytes((8, 8), PALETTE, DISPOSAL_FRAMES))
    clip = load_frames(path)
    first, second = list(clip), list(clip)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0].pixels, first[1].pixels)
