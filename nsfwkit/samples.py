"""Safe sample images for demos and tests: scikit-image's bundled photos plus generated ones.

Nothing here is explicit: the photos are the public-domain / CC samples that scikit-image ships
(astronaut, cat, coffee, rocket, ...), the rest is drawn by code. Use them to exercise the
mechanics (loading, classifying, visualising); they say nothing about accuracy on NSFW data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import paths
from .fileio import atomic_path

__all__ = ["PHOTOS", "sample_images", "write_samples", "default_image", "synthetic_image", "moving_frames",
           "write_animation", "write_video", "write_moving_samples"]

#: scikit-image sample photos used by the kit (all RGB or gray photos, safe).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field")


def synthetic_image(kind: str, *, image_size: int = 256, seed: int = 0) -> np.ndarray:
    """A generated RGB ``uint8`` image: ``gradient``, ``checkerboard``, ``blobs``, ``noise`` or ``cartoon``
    (two flat discs on a flat pastel background: no texture at all)."""
    rng = np.random.default_rng(seed)
    s = image_size
    yy, xx = np.mgrid[0:s, 0:s] / max(s - 1, 1)
    if kind == "gradient":
        img = np.stack([xx, yy, 1 - xx * yy], -1)
    elif kind == "checkerboard":
        cells = ((np.floor(xx * 8) + np.floor(yy * 8)) % 2)[..., None]
        img = cells * np.array([0.9, 0.2, 0.2]) + (1 - cells) * np.array([0.1, 0.3, 0.9])
    elif kind == "blobs":
        img = np.zeros((s, s, 3))
        for _ in range(6):
            cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.25)
            mask = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))[..., None]
            img = img * (1 - mask) + mask * rng.uniform(0, 1, 3)
    elif kind == "noise":
        img = rng.uniform(0, 1, (s, s, 3))
    elif kind == "cartoon":
        base = rng.uniform(0.35, 0.8, 3)
        img = np.broadcast_to(base, (s, s, 3)).copy()
        for _ in range(2):
            cy, cx = rng.uniform(0.25, 0.75, 2)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < 0.04] = np.clip(base + rng.uniform(-0.16, 0.16, 3), 0, 1)
    else:
        raise ValueError(f"unknown synthetic image kind {kind!r}")
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def sample_images() -> dict[str, np.ndarray]:
    """Name -> RGB ``uint8`` array for every sample (photos first, then generated)."""
    import skimage.data

    out: dict[str, np.ndarray] = {}
    for name in PHOTOS:
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        out[name] = img[..., :3].astype(np.uint8)
    for kind in ("gradient", "checkerboard", "blobs"):
        out[kind] = synthetic_image(kind)
    return out


def write_samples(folder: str | os.PathLike | None = None, *, overwrite: bool = False) -> list[Path]:
    """Write the samples as JPEG (photos) / PNG (generated) files; return their paths.

    Defaults to ``data/samples`` in the repository. Existing files are kept unless
    ``overwrite`` is set.
    """
    from PIL import Image

    folder = Path(folder) if folder is not None else paths.repo_root() / "data" / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, img in sample_images().items():
        path = folder / (f"{name}.jpg" if name in PHOTOS else f"{name}.png")
        if overwrite or not path.exists():
            with atomic_path(path) as tmp:
                Image.fromarray(img).save(tmp, format="JPEG" if path.suffix == ".jpg" else "PNG", quality=92)
        written.append(path)
    return written


def default_image(folder: str | os.PathLike | None = None) -> Path:
    """The kit's default image for visualisations (scikit-image's cat photo, ``chelsea``)."""
    return next(p for p in write_samples(folder) if p.stem == "chelsea")


# ---------------------------------------------------------------------------------------------
# Moving pictures: a safe animation and a short video whose later frames differ from the first


def moving_frames(*, cartoon_frames: int = 4, photo: str = "chelsea", photo_frames: int = 4, image_size: int = 96,
                  seed: int = 0) -> list[np.ndarray]:
    """Frames of a safe clip that changes after its opening: ``cartoon_frames`` flat generated
    cartoons, then ``photo_frames`` crops of a sample photo (a slow pan), each RGB ``uint8``
    ``(image_size, image_size, 3)``. Nothing is explicit; the point is that the later frames
    classify differently from frame 0, so a first-frame check and a worst-frame check disagree."""
    from PIL import Image

    src = sample_images()[photo]
    side = min(src.shape[:2])
    step = max(1, (max(src.shape[:2]) - side) // max(photo_frames, 1))
    out = [synthetic_image("cartoon", image_size=image_size, seed=seed + k) for k in range(cartoon_frames)]
    for k in range(photo_frames):
        y, x = (k * step, 0) if src.shape[0] > src.shape[1] else (0, k * step)
        crop = src[y:y + side, x:x + side]
        out.append(np.asarray(Image.fromarray(crop).resize((image_size, image_size), Image.BILINEAR)))
    return out


def write_animation(path: str | os.PathLike, frames: list[np.ndarray], *, duration_ms: int = 200) -> Path:
    """Write ``frames`` (RGB ``uint8``, one size) as an endlessly looping animated GIF or WebP
    (lossless), by the file's suffix, each shown ``duration_ms``; atomically; return the path."""
    from PIL import Image

    path = Path(path)
    kinds = {".gif": ("GIF", {}), ".webp": ("WEBP", {"lossless": True})}
    if path.suffix.lower() not in kinds:
        raise ValueError(f"{path}: write_animation writes .gif or .webp, not {path.suffix!r}")
    fmt, options = kinds[path.suffix.lower()]
    ims = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
    with atomic_path(path) as tmp:
        ims[0].save(tmp, format=fmt, save_all=True, append_images=ims[1:], duration=duration_ms, loop=0,
                    disposal=1 if fmt == "GIF" else 0, optimize=False, **options)
    return path


#: Video codec by file suffix: H.264 for MP4 (what phones write), VP9 for WebM (what every browser
#: decodes; Debian's chromium has no H.264).
_VIDEO_CODECS = {".mp4": ("libx264", {"preset": "veryfast", "crf": "18"}), ".webm": ("libvpx-vp9", {"crf": "20"})}


def write_video(path: str | os.PathLike, frames: list[np.ndarray], *, fps: int = 10, repeat: int = 1) -> Path:
    """Encode ``frames`` (RGB ``uint8``, one even size), each held ``repeat`` frames, at ``fps``
    with PyAV (``pip install 'nsfwkit[video]'``): MP4/H.264 or WebM/VP9 by suffix; atomically."""
    try:
        import av
    except ImportError:
        raise ImportError("writing videos needs PyAV: pip install 'nsfwkit[video]'") from None
    path = Path(path)
    if path.suffix.lower() not in _VIDEO_CODECS:
        raise ValueError(f"{path}: write_video writes .mp4 or .webm, not {path.suffix!r}")
    codec, options = _VIDEO_CODECS[path.suffix.lower()]
    height, width = frames[0].shape[:2]
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format=path.suffix.lower()[1:]) as container:
            stream = container.add_stream(codec, rate=fps, options=options)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for pixels in frames:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels, np.uint8), format="rgb24")
                for _ in range(repeat):
                    container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    return path


def write_moving_samples(folder: str | os.PathLike, *, overwrite: bool = False, video: str = ".mp4") -> list[Path]:
    """Write ``cartoon_then_photo.gif`` (8 frames, 200 ms each) and ``cartoon_then_photo<video>``
    (the same pictures, 0.5 s each, at 10 fps: 4 s) into ``folder``; return their paths.
    Existing files are kept unless ``overwrite`` is set."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = moving_frames()
    gif, clip = folder / "cartoon_then_photo.gif", folder / f"cartoon_then_photo{video}"
    if overwrite or not gif.exists():
        write_animation(gif, frames)
    if overwrite or not clip.exists():
        write_video(clip, frames, fps=10, repeat=5)
    return [gif, clip]
