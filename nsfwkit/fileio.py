"""Atomic writes: a reader (or a crash) never sees a half-written file or folder.

Every writer in the kit goes through these: the content is written under a temporary name in the
destination's folder, then renamed into place with ``os.replace`` (atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["atomic_path", "write_text", "write_bytes", "write_json", "json_safe", "replace_dir", "public_mode"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    The temporary name keeps the destination's suffix (or ``suffix``), so writers that choose a
    format by extension (``fig.savefig``, ``model.save``) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tail = suffix if suffix is not None else path.suffix
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}-{threading.get_ident()}{tail}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, *, indent: int = 2) -> Path:
    """Write ``data`` as JSON (non-JSON values via ``str``) atomically; return the path.

    Pass ``json_safe(data)`` for data holding NumPy values or NaN (written as ``null``).
    """
    return write_text(path, json.dumps(data, indent=indent, default=str, ensure_ascii=False) + "\n")


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as None and NumPy scalars/arrays and paths as plain JSON values.

    Dicts and lists/tuples are converted recursively (tuples become lists); dict keys that JSON
    cannot take (NumPy scalars, paths, ...) become plain ints/strings; anything else is returned as is.
    """
    if isinstance(value, dict):
        return {_json_key(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _json_key(key: Any) -> Any:
    if isinstance(key, np.generic):
        key = key.item()
    return key if isinstance(key, (str, int, float, bool)) or key is None else str(key)


@contextlib.contextmanager
def replace_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a staging directory and swap it in for ``dest`` only when complete.

    On error the staging folder is removed and ``dest`` is left as it was. The folder gets the
    mode a plain ``mkdir`` gives (the umask's), not ``tempfile.mkdtemp``'s 0700.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = _new_folder(dest.parent, f".{dest.name}.tmp-")
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if dest.exists():
        old = _new_folder(dest.parent, f".{dest.name}.old-")
        os.replace(dest, old / dest.name)
    os.replace(stage, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _new_folder(parent: Path, prefix: str) -> Path:
    """A new, empty folder ``parent/<prefix><random>`` (mode from the umask, like ``mkdir``)."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{parent}: no free name for a temporary folder {prefix}*")


def public_mode() -> int:
    """The mode a plain ``mkdir`` would give a folder (0o777 minus the umask).

    Folders the kit creates get this mode, so a copy on a web server is readable by it.
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o777 & ~mask
