"""The shared loader on awkward real-world files: every format, mode and failure named in the docs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from nsfwkit.images import ImageError, iter_image_files, load_image, load_images, resize


def save(img: Image.Image, path, fmt=None, **kw):
    img.save(path, format=fmt, **kw)
    return path


@pytest.fixture
def rgb():
    y, x = np.mgrid[0:40, 0:60]
    return np.stack([x * 4, y * 6, (x + y) * 2], -1).astype(np.uint8)


@pytest.mark.parametrize("fmt,ext,exact", [
    ("PNG", "png", True), ("BMP", "bmp", True), ("TIFF", "tif", True), ("WEBP", "webp", False),
    ("JPEG", "jpg", False),
])
def test_formats_decode_to_rgb(tmp_path, rgb, fmt, ext, exact):
    kw = {"lossless": True} if fmt == "WEBP" else {}
    path = save(Image.fromarray(rgb), tmp_path / f"a.{ext}", fmt, **kw)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
    tolerance = 0 if exact or fmt == "WEBP" else 12
    assert np.abs(out.astype(int) - rgb).mean() <= tolerance


def test_gif_takes_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = load_image(path)
    assert tuple(out[8, 8]) == (255, 0, 0)


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "phone.jpg"
    im.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (40, 20, 3)  # upright: taller than wide
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # the white half is now on top


def test_alpha_composited_over_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red under the alpha...
    rgba[:, :4, 3] = 0  # ...fully transparent on the left
    rgba[:, 4:, 3] = 255
    path = save(Image.fromarray(rgba), tmp_path / "a.png")
    out = load_image(path)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 7]) == (255, 0, 0)
    black = load_image(path, background=(0, 0, 0))
    assert tuple(black[0, 0]) == (0, 0, 0)


@pytest.mark.parametrize("mode", ["L", "1", "P", "LA", "CMYK", "I;16", "I", "F", "YCbCr"])
def test_modes_convert_sanely(tmp_path, mode):
    gray = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (16, 1))
    base = Image.fromarray(gray)
    if mode == "I;16":
        im = Image.fromarray(gray.astype("<u2") * 257)
        fmt, ext = "PNG", "png"
    elif mode in ("I", "F"):
        im = base.convert(mode)
        fmt, ext = "TIFF", "tif"
    elif mode == "CMYK":
        im = base.convert("RGB").convert("CMYK")
        fmt, ext = "JPEG", "jpg"
    elif mode == "YCbCr":
        im = base.convert("RGB").convert("YCbCr")
        fmt, ext = "JPEG", "jpg"
    else:
        im = base.convert(mode)
        fmt, ext = "PNG", "png"
    out = load_image(save(im, tmp_path / f"m.{ext}", fmt))
    assert out.shape == (16, 32, 3) and out.dtype == np.uint8
    # left dark, right bright: scaled into 0-255, not clipped to white or black
    assert out[:, :4].mean() < 60 and out[:, -4:].mean() > 190, (mode, out[:, :4].mean(), out[:, -4:].mean())


def test_16bit_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32896, 65535]], np.uint16)
    out = load_image(save(Image.fromarray(arr.astype("<u2")), tmp_path / "a.png"))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.putpixel((0, 0), 1)
    im.info["transparency"] = 0
    path = tmp_path / "p.png"
    im.save(path, transparency=0)
    out = load_image(path)
    assert tuple(out[0, 0]) == (0, 255, 0) and tuple(out[3, 3]) == (255, 255, 255)


def test_lying_extension_is_fine(tmp_path, rgb):
    path = save(Image.fromarray(rgb), tmp_path / "really_a_jpeg.png", "JPEG")
    assert load_image(path).shape == (40, 60, 3)


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
    (b'<svg width="10" height="10"></svg>', "SVG"),
    (b"just some notes about a photo\n", "text"),
    (b"%PDF-1.4 binary", "PDF"),
    (bytes(range(256)) * 4, "not a recognised image"),
])
def test_non_images_rejected_with_reason(tmp_path, content, reason):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg_rejected(tmp_path, rgb):
    buf = io.BytesIO()
    Image.fromarray(np.repeat(np.repeat(rgb, 8, 0), 8, 1)).save(buf, "JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="truncated|corrupt") as info:
        load_image(path)
    assert "cut.jpg" in str(info.value)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)  # 400 Mpx in a few kB
    assert path.stat().st_size < 200_000
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path)


def test_missing_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_load_images_never_dies(tmp_path, rgb):
    good = save(Image.fromarray(rgb), tmp_path / "good.png")
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    batch, paths, errors = load_images([good, bad, good], image_size=24)
    assert batch.shape == (2, 24, 24, 3) and batch.dtype == np.float32
    assert paths == [str(good), str(good)]
    assert len(errors) == 1 and errors[0].path == str(bad)


def test_resize_is_bilinear_with_corners_aligned():
    img = np.array([[0.0, 30.0], [60.0, 90.0]], np.float32)[..., None]
    out = resize(img, 3)[..., 0]
    # align_corners: output corners sample input corners exactly; the centre is the mean.
    expected = np.array([[0, 15, 30], [30, 45, 60], [60, 75, 90]], np.float32)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert resize(np.zeros((5, 5, 3), np.uint8), 5).dtype == np.float32
    assert resize(np.zeros((2, 7, 9, 3)), (4, 6)).shape == (2, 4, 6, 3)


def test_resize_matches_raw_op_not_tf_image_resize(rgb):
    import tensorflow as tf

    ours = resize(rgb, 17)
    half_pixel = tf.image.resize(rgb, (17, 17), method="bilinear").numpy()
    assert np.abs(ours - half_pixel).max() > 1.0  # the two conventions really differ here
    aligned = tf.compat.v1.image.resize_bilinear(rgb[None].astype(np.float32), (17, 17), align_corners=True)
    np.testing.assert_allclose(ours, aligned.numpy()[0], atol=1e-4)


def test_iter_image_files(tmp_path, rgb):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for p in ("a/1.jpg", "a/b/2.PNG", "a/notes.txt", ".hidden/3.jpg", "a/.4.jpg"):
        save(Image.fromarray(rgb), tmp_path / p, "PNG") if not p.endswith(".txt") else (tmp_path / p).write_text("x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files([tmp_path])]
    assert found == ["a/1.jpg", "a/b/2.PNG"]
    explicit = list(iter_image_files([tmp_path / "a" / "notes.txt"]))
    assert explicit == [tmp_path / "a" / "notes.txt"]  # named files are always tried


def _png_16bit(array: np.ndarray) -> bytes:
    """Encode a uint16 (H, W, C) array as a 16-bit PNG by hand (Pillow cannot write 16-bit RGB)."""
    import struct
    import zlib

    h, w, c = array.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_16bit_color_and_alpha_pngs(tmp_path, channels):
    arr = np.zeros((4, 4, channels), np.uint16)
    arr[..., 0] = 65535  # red (or white for LA)
    arr[..., -1] = 65535 if channels in (2, 4) else 0  # opaque alpha
    if channels == 3:
        arr[..., 1] = 32896
    path = tmp_path / "deep.png"
    path.write_bytes(_png_16bit(arr))
    out = load_image(path)
    assert out.shape == (4, 4, 3)
    expected = {3: (255, 128, 0), 4: (255, 0, 0), 2: (255, 255, 255)}[channels]
    assert tuple(out[0, 0]) == expected


def test_first_frame_of_apng_animated_webp_and_multipage_tiff(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    for fmt, ext, kw in (("PNG", "png", {}), ("WEBP", "webp", {"lossless": True}), ("TIFF", "tif", {})):
        path = tmp_path / f"anim.{ext}"
        frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], **kw)
        assert tuple(load_image(path)[8, 8]) == (255, 0, 0), fmt


def test_icc_profiles(tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb = Image.new("RGB", (8, 8), (10, 120, 230))
    path = tmp_path / "tagged.jpg"
    rgb.save(path, icc_profile=srgb, quality=100)
    assert np.abs(load_image(path)[0, 0].astype(int) - (10, 120, 230)).max() <= 3  # sRGB: unchanged
    broken = tmp_path / "broken_profile.png"
    rgb.save(broken, icc_profile=b"not a profile")
    assert tuple(load_image(broken)[0, 0]) == (10, 120, 230)  # a broken profile never blocks the image


def test_special_files_and_unlistable_folders(tmp_path, monkeypatch, rgb):
    import os

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        load_image(fifo)
    save(Image.fromarray(rgb), tmp_path / "ok.png")
    assert [p.name for p in iter_image_files([tmp_path])] == ["ok.png"]  # the FIFO is skipped

    def refuse(_):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr("nsfwkit.inputs.os.scandir", refuse)
    errors = []
    assert list(iter_image_files([tmp_path], recursive=False, on_error=errors.append)) == []
    assert "cannot list folder" in str(errors[0]) and str(tmp_path) in str(errors[0])
    with pytest.raises(ImageError, match="cannot list folder"):
        list(iter_image_files([tmp_path], recursive=False))


def test_heif_named_clearly():
    heif = b"\0\0\0\x18ftypmif1\0\0\0\0mif1heic" + bytes(64)
    with pytest.raises(ImageError, match="HEIF/HEIC"):
        load_image(heif)
