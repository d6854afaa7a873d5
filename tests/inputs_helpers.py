"""Helpers for tests/test_inputs.py: a tiny model file and folders of awkward entries (no fixtures here)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from frames_helpers import flatness_model

SIZE = 32
#: A file name that is not UTF-8 and holds a terminal escape and a newline.
NON_UTF8 = b"bad\xff\x1b[2J\nname.png"


def model_file(folder: Path, *, with_spec: bool = True) -> Path:
    """The flatness model saved as ``folder/flat.keras`` (with its spec file unless told not to)."""
    from nsfwkit.spec import NSFWJS_CLASSES, ModelSpec, spec_path_for

    path = folder / "flat.keras"
    flatness_model(SIZE).save(path)
    if with_spec:
        ModelSpec(name="flat", class_names=NSFWJS_CLASSES, image_size=SIZE).save(spec_path_for(path))
    return path


def save_png(path: str | bytes | os.PathLike, seed: int = 0, size: int = 24) -> Path:
    """A noise PNG at ``path`` (bytes paths: any file name Linux allows)."""
    path = Path(os.fsdecode(path))
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path, format="PNG")
    return path


def awkward_folder(root: Path) -> Path:
    """One good PNG plus every kind of entry a folder scan must not drop silently."""
    root.mkdir(parents=True, exist_ok=True)
    save_png(root / "a.png")
    save_png(root / ".hidden.png")
    (root / "notes.txt").write_text("x")
    os.mkfifo(root / "pipe.jpg")
    os.symlink("/dev/zero", root / "zero.png")
    os.symlink(root / "gone.jpg", root / "broken.jpg")
    (root / "sub").mkdir()
    save_png(root / "sub" / "b.png", seed=1)
    os.symlink(root / "sub", root / "linked")
    (root / "c.heic").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic")
    (root / "d.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    return root
