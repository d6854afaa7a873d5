"""The one image loader shared by every path: CLI, notebooks, datasets, visualisations.

``load_image`` turns a file (or bytes) into an RGB ``uint8`` array the way a person would see it:

* formats: JPEG (and camera MPO), PNG (and APNG, first frame), WebP, GIF (first frame), BMP,
  TIFF, AVIF. The format is taken from the file's bytes, never from its extension, so a JPEG named
  ``.png`` loads; SVG, HTML, text, video, empty, truncated and unrecognised files raise
  :class:`ImageError` naming the file and the reason. Every frame of an animation or a video:
  :func:`nsfwkit.frames.load_frames`, through the same conversions.
* EXIF orientation is applied (a phone photo taken sideways comes out upright).
* palette, grayscale, 1-bit, CMYK (through its ICC profile when it has one), YCbCr and LAB are
  converted to RGB; 16-bit and 32-bit integer images are scaled to 0-255 (not clipped).
* **alpha is composited over a background, white by default** (what a viewer sees on a page);
  transparent pixels never reach the model with whatever colour happens to be stored under them.
* images over ``max_pixels`` pixels are refused before decoding (decompression bombs).

``resize`` then brings images to the model's square input the way nsfwjs does in the browser:
bilinear with corners aligned (``tf.image.resize`` or PIL would differ by up to 0.04 / 0.46 in
probability). Models take raw 0-255 RGB and scale inside, so the loader does nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import stat
import struct
from pathlib import Path
from typing import Callable, Collection, Iterable, Sequence

import numpy as np

__all__ = [
    "ImageError",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "MAX_PIXELS",
    "load_image",
    "load_images",
    "decode_image",
    "resize",
    "read_file",
    "check_input_file",
    "PixelBudget",
    "header_pixels",
    "DECODE_PIXELS",
]

#: Extensions picked up when scanning folders (files named explicitly are always tried).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".pjpeg", ".pjp", ".png", ".apng", ".webp", ".gif",
     ".bmp", ".dib", ".tif", ".tiff", ".mpo", ".avif", ".avifs"}
)
#: Video extensions picked up when scanning folders for :func:`nsfwkit.frames.load_frames`.
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".qt", ".webm", ".mkv", ".avi", ".3gp"}
)
#: Largest image accepted, in pixels (Pillow's own decompression-bomb limit).
MAX_PIXELS = 89_478_485
#: Default pixel budget of concurrent decoding (:class:`PixelBudget`): two images at the limit.
DECODE_PIXELS = 2 * MAX_PIXELS
#: Largest file accepted, in bytes.
MAX_BYTES = 256 * 1024 * 1024
#: Pillow format names we accept; everything else is refused even if Pillow could read it.
_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "AVIF")


def _formats() -> tuple[str, ...]:
    from PIL import Image

    Image.init()
    return tuple(f for f in _FORMATS if f in Image.OPEN)


class ImageError(ValueError):
    """A file could not be used as an image. ``str()`` names the file and the reason."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = str(path) if path is not None else "<bytes>"
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _sniff_non_image(head: bytes) -> str | None:
    """Name what a non-image file looks like, from its first bytes (None if it may be an image)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml")) or b"<svg" in text[:512]:
        return "SVG/XML is a vector or text format, not a raster image"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--", b"<")):
        return "HTML/text, not an image (an error page saved as an image?)"
    if text.startswith((b"{", b"[")):
        return "JSON/text, not an image"
    if head.startswith(b"%PDF"):
        return "a PDF document, not an image"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftyphevc", b"ftypheim", b"ftypheis"):
        return "HEIC is not supported; convert it to JPEG or PNG"
    sample = head[:512]
    if sample and all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "plain text, not an image"
    return None


#: ISO-BMFF brands of still or image-sequence formats (decoded by Pillow or refused, not PyAV).
_IMAGE_BRANDS = (b"avif", b"avis", b"mif1", b"msf1", b"heic", b"heix", b"hevc", b"heim", b"heis", b"hevx")
#: QuickTime files without an ``ftyp`` box open with one of these atoms.
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


def _sniff_video(head: bytes) -> str | None:
    """The video container these first bytes start, from its magic numbers (None if not a video)."""
    if head[4:8] == b"ftyp":
        return None if head[8:12] in _IMAGE_BRANDS else ("QuickTime" if head[8:12] == b"qt  " else "MP4")
    if head[4:8] in _QUICKTIME_ATOMS and int.from_bytes(head[:4], "big") >= 8:
        return "QuickTime"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "WebM" if b"webm" in head[:64] else "Matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "AVI"
    return None


def _check_size(path, width: int, height: int, max_pixels: int, what: str = "image") -> None:
    """Refuse empty or over-large pictures from their header, before any pixel is decoded."""
    if width <= 0 or height <= 0:
        raise ImageError(path, f"{what} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            path,
            f"{what} is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (decompression bomb?)",
        )


def _to_srgb(im):
    """Convert through an embedded ICC profile to sRGB, as browsers do when they draw an image.

    Display-P3 / Adobe RGB photos (most phone photos) would otherwise reach the model with other
    colours than in the web view. sRGB profiles are left alone; a broken profile falls back to
    the plain pixels.
    """
    from PIL import ImageCms

    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
        if im.mode != "CMYK" and "srgb" in (ImageCms.getProfileDescription(src) or "").lower():
            return im
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(im, src, _srgb_profile(), outputMode=out_mode)
    except Exception:  # noqa: BLE001 - a broken profile must not make the image unreadable
        return im


@functools.lru_cache(maxsize=1)
def _srgb_profile():
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _to_rgb(im, background: tuple[int, int, int]) -> np.ndarray:
    from PIL import Image

    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        # 16-bit samples (PNG/TIFF): scale 0-65535 to 0-255 rather than clipping.
        top = 65535.0 if arr.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        arr = np.clip(arr * (255.0 / top), 0, 255)
        gray = np.rint(arr).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        gray = np.rint(np.clip(np.nan_to_num(arr), 0, 255)).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode in ("CMYK", "RGB", "RGBA") and im.info.get("icc_profile"):
        im = _to_srgb(im)
        mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    elif mode in ("L", "1") and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        canvas = Image.new("RGBA", im.size, tuple(background) + (255,))
        canvas.alpha_composite(im)
        im = canvas
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)


def _gif_first_frame(im):
    """The first GIF frame as a browser draws it: pixels outside its rectangle are transparent.

    Pillow fills the rest of the canvas with a palette colour; browsers show the page there.
    (Later frames: :mod:`nsfwkit.frames` composites them the same way.)
    """
    from PIL import Image

    box = getattr(im, "dispose_extent", None)
    if im.format != "GIF" or not box or tuple(box) == (0, 0, *im.size):
        return im
    x0, y0, x1, y1 = box
    rgba = np.array(im.convert("RGBA"))
    inside = rgba[y0:y1, x0:x1].copy()
    rgba[..., 3] = 0
    rgba[y0:y1, x0:x1] = inside
    return Image.fromarray(rgba, "RGBA")


class _PillowErrors:
    """Turns what Pillow raises on a bad file into an :class:`ImageError` naming it."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        from PIL import Image, UnidentifiedImageError

        if exc is None or isinstance(exc, ImageError):
            return False
        path = self.path
        if isinstance(exc, UnidentifiedImageError):
            raise ImageError(
                path, "not a recognised image (supported: JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF)"
            ) from None
        if isinstance(exc, Image.DecompressionBombError):
            raise ImageError(path, f"decompression bomb refused: {exc}") from None
        if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)):
            message = str(exc) or type(exc).__name__
            if "truncated" in message.lower() or isinstance(exc, EOFError):
                message = f"truncated or incomplete file ({message})"
            else:
                message = f"corrupt image data ({message})"
            raise ImageError(path, message) from None
        if isinstance(exc, MemoryError):
            raise ImageError(path, "not enough memory to decode this image") from None
        return False


def _open_image(data: bytes, *, path=None, max_pixels: int = MAX_PIXELS):
    """Open image bytes with Pillow, header only, after the checks every path shares.

    Raises:
        ImageError: empty, not an image (HTML, SVG, text, PDF, HEIC, a video...), or over
            ``max_pixels``.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(path, "empty file (0 bytes)")
    reason = _sniff_non_image(data[:1024])
    if reason:
        raise ImageError(path, reason)
    video = _sniff_video(data[:64])
    if video:
        raise ImageError(path, f"a video ({video}), not a still image: read its frames with "
                               "nsfwkit.frames.load_frames")
    with _PillowErrors(path):
        # Image.open reads only the header; the size check below runs before any pixel is decoded.
        # (Pillow's own DecompressionBombWarning is not turned into an error here: changing warning
        # filters is not thread-safe, and this function runs in decoding threads.)
        try:
            im = Image.open(io.BytesIO(data), formats=_formats())
        except UnidentifiedImageError:
            if data[4:8] == b"ftyp" and data[8:12] in (b"mif1", b"msf1", b"heic", b"heix"):
                raise ImageError(path, "HEIF/HEIC is not supported; convert it to JPEG or PNG") from None
            if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis"):
                raise ImageError(path, "AVIF needs a Pillow built with libavif (PIL.features.check('avif') "
                                       "is False here); convert it to JPEG or PNG") from None
            raise
    _check_size(path, *im.size, max_pixels)
    return im


def header_pixels(data: bytes, *, path=None, max_pixels: int = MAX_PIXELS) -> int:
    """``width * height`` from the image header, nothing decoded (what :class:`PixelBudget` holds).

    Raises:
        ImageError: as :func:`decode_image` would, before decoding.
    """
    im = _open_image(data, path=path, max_pixels=max_pixels)
    return im.width * im.height


def decode_image(
    data: bytes,
    *,
    path: str | os.PathLike | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Decode image bytes to an RGB ``uint8`` array of shape ``(H, W, 3)``.

    Args:
        data: the encoded file's bytes.
        path: the file name used in error messages.
        background: RGB colour that transparent pixels are composited over.
        max_pixels: refuse images with more pixels than this before decoding them.

    Raises:
        ImageError: the bytes are empty, not an image of a supported format, too large,
            truncated or corrupt.
    """
    from PIL import ImageOps

    im = _open_image(data, path=path, max_pixels=max_pixels)
    with _PillowErrors(path):
        im.load()  # animations (GIF, APNG, WebP) and multi-page TIFFs: the first frame, as opened
        im = _gif_first_frame(im)
        ImageOps.exif_transpose(im, in_place=True)  # in place: no copy of a large picture (finding 11)
        return _to_rgb(im, background)


def load_image(
    source: str | os.PathLike | bytes,
    *,
    image_size: int | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:
    """Load one image as RGB.

    Args:
        source: a file path, or the encoded bytes.
        image_size: if given, resize to ``(image_size, image_size)`` the nsfwjs way.
        background: RGB colour that transparent pixels are composited over.
        max_pixels: refuse larger images (decompression bombs).

    Returns:
        ``uint8`` array ``(H, W, 3)`` in 0-255 when ``image_size`` is None, else ``float32``
        ``(image_size, image_size, 3)`` in 0-255.

    Raises:
        ImageError: the file is missing, unreadable, or not a usable image; the message names it.
    """
    path, data = _read_source(source)
    image = decode_image(data, path=path, background=background, max_pixels=max_pixels)
    if image_size is not None:
        image = resize(image, image_size)
    return image


def _read_source(source: str | os.PathLike | bytes, *, max_bytes: int = MAX_BYTES) -> tuple[Path | None, bytes]:
    """``(path, data)`` of a file path (read whole, at most ``max_bytes``) or of bytes (path None).

    Raises:
        ImageError: missing, a folder, not a regular file, too large, or unreadable.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None, bytes(source)
    path = Path(source)
    return path, read_file(path, max_bytes=max_bytes)


def read_file(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file, at most ``max_bytes``, never blocking on a FIFO or reading a device.

    The file is opened non-blocking and checked with ``fstat`` on what was opened (a link into
    ``/dev`` or a FIFO is refused before any read); the read stops after ``max_bytes`` whatever
    ``st_size`` says.

    Raises:
        ImageError: missing, a folder, not a regular file, over ``max_bytes``, or unreadable.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise ImageError(path, "is a folder, not a file") from None
    except OSError as exc:
        raise _os_error(path, exc) from None
    try:
        _check_regular(path, os.fstat(fd), max_bytes)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as file:
        try:
            data = file.read(max_bytes + 1)
        except OSError as exc:
            raise _os_error(path, exc) from None
    if len(data) > max_bytes:
        raise ImageError(path, f"file is over the {max_bytes:,}-byte limit")
    return data


def _check_regular(path, info: os.stat_result, max_bytes: int) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(path, "is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(path, "not a regular file (a device, pipe or socket?)")
    if info.st_size > max_bytes:
        raise ImageError(path, f"file is {info.st_size:,} bytes, over the {max_bytes:,}-byte limit")


def _check_file(path: Path) -> os.stat_result:
    """``stat`` of a regular file, or an :class:`ImageError` saying what ``path`` is instead."""
    try:
        info = path.stat()
    except OSError as exc:
        raise _os_error(path, exc) from None
    _check_regular(path, info, max_bytes=info.st_size)
    return info


def check_input_file(path: str | os.PathLike) -> Path:
    """``path`` if it is a regular file (links followed to a regular file), else an :class:`ImageError`."""
    _check_file(Path(path))
    return Path(path)


def _os_error(path, exc: OSError) -> ImageError:
    if isinstance(exc, FileNotFoundError):
        return ImageError(path, "no such file")
    if isinstance(exc, PermissionError):
        return ImageError(path, "permission denied")
    return ImageError(path, f"cannot read file ({exc.strerror or exc})")


def resize(images: np.ndarray, image_size: int | tuple[int, int]) -> np.ndarray:
    """Resize like nsfwjs: bilinear, corners aligned, no antialiasing.

    This is ``tf.image.resizeBilinear(x, size, alignCorners=true)`` in TensorFlow.js, i.e.
    ``ResizeBilinear(align_corners=True, half_pixel_centers=False)``; images already at the
    target size are returned unchanged (as float32).

    Args:
        images: ``(H, W, C)`` or ``(N, H, W, C)``, any real dtype, values 0-255.
        image_size: target side, or ``(height, width)``.

    Returns:
        ``float32`` array ``(S, S, C)`` or ``(N, S, S, C)``.
    """
    import tensorflow as tf

    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    arr = np.asarray(images)
    single = arr.ndim == 3
    if arr.ndim not in (3, 4):
        raise ValueError(f"expected (H, W, C) or (N, H, W, C), got shape {arr.shape}")
    batch = arr[None] if single else arr
    if batch.shape[1:3] == (height, width):
        out = batch.astype(np.float32)
    else:
        if batch.dtype not in (np.uint8, np.float32, np.float64, np.int32, np.uint16, np.float16):
            batch = batch.astype(np.float32)
        out = tf.raw_ops.ResizeBilinear(
            images=batch, size=[int(height), int(width)], align_corners=True,
            half_pixel_centers=False,
        ).numpy()
    return out[0] if single else out


def load_images(
    sources: Iterable[str | os.PathLike],
    *,
    image_size: int,
    background: tuple[int, int, int] = (255, 255, 255),
    max_pixels: int = MAX_PIXELS,
) -> tuple[np.ndarray, list[str], list[ImageError]]:
    """Load many images at one size; a bad file is reported, never fatal.

    Returns:
        ``(images, paths, errors)``: ``float32`` ``(N, S, S, 3)`` in 0-255 for the files that
        loaded, their paths in the same order, and one :class:`ImageError` per file that did not.
    """
    images, paths, errors = [], [], []
    for source in sources:
        try:
            images.append(
                load_image(source, image_size=image_size, background=background,
                           max_pixels=max_pixels)
            )
            paths.append(str(source))
        except ImageError as exc:
            errors.append(exc)
    stacked = np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.float32)
    return stacked, paths, errors


def iter_image_files(
    paths: Sequence[str | os.PathLike],
    *,
    recursive: bool = True,
    on_error: Callable[[ImageError], None] | None = None,
    extensions: Collection[str] = IMAGE_EXTENSIONS,
):
    """Yield files to decode from files and folders, in a stable order (:func:`nsfwkit.inputs.find_inputs`).

    A folder that cannot be listed is reported to ``on_error`` as an :class:`ImageError` (by
    default it raises) and the walk goes on; the entries it skips are those of ``find_inputs``
    (use it directly to list them).
    """
    from .inputs import find_inputs

    for item in find_inputs(paths, recursive=recursive, extensions=extensions).items:
        if not isinstance(item, ImageError):
            yield item
        elif on_error is None:
            raise item
        else:
            on_error(item)


class PixelBudget:
    """Bounds the pixels being decoded at once across threads (memory follows pixels, not file sizes).

    ``hold(n)`` waits until ``n`` more pixels fit under ``limit``; an image larger than the whole
    budget waits until nothing else is held, then runs alone. ``peak`` records the most pixels
    ever held at once.
    """

    def __init__(self, limit: int = DECODE_PIXELS):
        import threading

        if limit < 1:
            raise ValueError(f"the pixel budget must be >= 1, got {limit}")
        self.limit, self.held, self.peak = int(limit), 0, 0
        self._cond = threading.Condition()

    def acquire(self, pixels: int) -> None:
        with self._cond:
            while self.held and self.held + pixels > self.limit:
                self._cond.wait()
            self.held += pixels
            self.peak = max(self.peak, self.held)

    def release(self, pixels: int) -> None:
        with self._cond:
            self.held -= pixels
            self._cond.notify_all()

    @contextlib.contextmanager
    def hold(self, pixels: int):
        self.acquire(pixels)
        try:
            yield
        finally:
            self.release(pixels)
