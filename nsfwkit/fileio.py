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
from typing import Any, Callable, Iterable, Iterator

import numpy as np

__all__ = ["atomic_path", "write_text", "write_bytes", "write_json", "json_safe", "replace_dir",
           "public_mode", "OWNER_MARKER", "LOCK_FILE", "ForeignFolderError", "FolderBusyError", "UnwritableFolderError",
           "folder_kind", "claim_folder", "remove_owned", "folder_lock", "owned_folder", "owned_entries",
           "replace_owned"]


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


# --------------------------------------------------------------------------------------------
# Folders the kit owns, and who is writing into them
# --------------------------------------------------------------------------------------------
#: The marker file in every folder the kit writes into: ``{"nsfwkit": <kind>, "format": 1}``.
OWNER_MARKER = ".nsfwkit.json"
#: The lock file of a folder being written (an OS lock: released when its process dies).
LOCK_FILE = ".nsfwkit.lock"


class ForeignFolderError(FileExistsError):
    """A folder the kit was asked to write into holds files it did not write (no marker)."""


class UnwritableFolderError(OSError):
    """An output folder cannot be created or written (read-only file system, a parent that is a file)."""


class FolderBusyError(RuntimeError):
    """Another process holds a folder's lock."""


def folder_kind(folder: str | os.PathLike) -> str | None:
    """The kind recorded in ``folder``'s :data:`OWNER_MARKER`, or ``None`` (no or invalid marker)."""
    try:
        data = json.loads((Path(folder) / OWNER_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kind = data.get("nsfwkit") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) and data.get("format") == 1 else None


def claim_folder(folder: str | os.PathLike, kind: str, *, legacy: Callable[[Path], bool] | None = None) -> Path:
    """Make ``folder`` the kit's ``kind`` folder, or refuse: the rule for every output folder.

    A missing or empty folder is created and marked; a folder already marked as ``kind`` is
    returned as it is. Anything else (a file, a folder with the user's files, a folder of another
    kind) raises :class:`ForeignFolderError` and nothing is written. ``legacy(folder)`` may
    recognise a folder an older kit wrote before markers existed; it is then marked.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ForeignFolderError(f"{folder}: exists and is not a folder")
    found = folder_kind(folder) if folder.is_dir() else None
    if found == kind:
        return folder
    if found is not None:
        raise ForeignFolderError(f"{folder}: is an nsfwkit {found} folder, not a {kind} folder: "
                                 "choose another folder")
    if folder.is_dir() and any(p.name != LOCK_FILE for p in folder.iterdir()) and not (legacy and legacy(folder)):
        raise ForeignFolderError(
            f"{folder}: exists, is not empty and was not written by nsfwkit (no {OWNER_MARKER}); "
            "refusing to write into it: choose a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    _mark(folder, kind)
    return folder


def _mark(folder: Path, kind: str, entries: Iterable[str] | None = None) -> None:
    data: dict[str, Any] = {"nsfwkit": kind, "format": 1,
                            "note": f"written by nsfwkit ({kind}); the kit only ever replaces or "
                                    "deletes the files it wrote here"}
    if entries is not None:
        data["entries"] = sorted(set(entries))
    write_json(folder / OWNER_MARKER, data)


def owned_entries(folder: str | os.PathLike) -> list[str]:
    """The entries of ``folder`` the kit recorded as its own (:func:`replace_owned`); [] if none."""
    try:
        entries = json.loads((Path(folder) / OWNER_MARKER).read_text(encoding="utf-8")).get("entries", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [e for e in entries if isinstance(e, str) and _plain_name(e)] if isinstance(entries, list) else []


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..", OWNER_MARKER, LOCK_FILE) and "/" not in name and os.sep not in name


def remove_owned(folder: str | os.PathLike, kind: str, names: Iterable[str]) -> list[Path]:
    """Delete the entries ``names`` (the kit's own layout) of a ``kind`` folder; return what went.

    Refuses (:class:`ForeignFolderError`) unless the folder carries the ``kind`` marker, and
    never touches an entry that is not named, so ``--overwrite``/``--restart`` cannot reach a
    user's file. Names must be plain entries of the folder (no ``/``, no ``..``).
    """
    folder = Path(folder)
    if folder_kind(folder) != kind:
        raise ForeignFolderError(f"{folder}: not an nsfwkit {kind} folder; refusing to delete anything")
    removed = []
    for name in names:
        if not _plain_name(name):
            raise ValueError(f"not a plain entry name: {name!r}")
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(path)
    return removed


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive OS lock on ``folder`` (created if missing) while writing into it.

    A second writer gets :class:`FolderBusyError` naming the holder's PID at once (no waiting).
    The lock is an ``flock`` on :data:`LOCK_FILE`, so the OS releases it when the holder dies,
    even by ``kill -9``; the file itself stays (deleting it would race with a new holder).
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            raise FolderBusyError(f"{folder}: in use by another nsfwkit process (PID {holder}); "
                                  "wait for it to finish or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield folder
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def owned_folder(folder: str | os.PathLike, kind: str, *,
                 legacy: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """:func:`claim_folder` then :func:`folder_lock`: the rule for every run folder the kit writes.

    A foreign folder is refused before anything is written into it (not even the lock file); a
    place that cannot be written (read-only file system, a parent that is a file) fails here,
    before any work, with :class:`UnwritableFolderError` naming ``folder``.
    """
    created = not os.path.lexists(folder)
    try:
        folder = claim_folder(folder, kind, legacy=legacy)
    except ForeignFolderError:
        raise
    except OSError as exc:
        raise UnwritableFolderError(exc.errno, f"cannot write the output folder here ({exc.strerror or exc})",
                                    os.fspath(folder)) from None
    try:
        with folder_lock(folder):
            yield folder
    except BaseException:
        if created:  # a run that failed leaves no empty kit folder behind (only if nothing else is in it)
            _remove_if_bare(folder)
        raise


def _remove_if_bare(folder: Path) -> None:
    """Remove a folder that holds nothing but the kit's marker and lock file."""
    try:
        names = set(os.listdir(folder))
        if names <= {OWNER_MARKER, LOCK_FILE}:
            for name in names:
                (folder / name).unlink()
            folder.rmdir()
    except OSError:
        pass  # something appeared meanwhile, or it is gone already: leave it


_STAGE = ".nsfwkit-stage-"


@contextlib.contextmanager
def replace_owned(folder: str | os.PathLike, kind: str, *, overwrite: bool,
                  legacy: Callable[[Path], Iterable[str] | None] | None = None) -> Iterator[Path]:
    """Write the kit's entries of a ``kind`` folder, replacing only what the kit wrote there before.

    ``folder`` is claimed and locked (:func:`owned_folder`); the caller writes into the yielded
    empty staging folder (inside ``folder``). On success each staged entry is moved into place
    (atomic per entry), the previous run's entries that were not written again are removed, and
    the marker records the new entries; the user's own files in ``folder`` are never touched.
    Without ``overwrite`` a folder holding an earlier result is refused (``FileExistsError``); a
    staged entry whose name is taken by a user's file is refused (:class:`ForeignFolderError`).
    ``legacy(folder)`` recognises a folder an older kit wrote (before markers) and returns the
    exact names the older kit wrote there (or ``None``/empty: not such a folder): only those
    count as the kit's; every other entry of that folder is the user's and stays.
    """
    found: list[str] = []

    def _legacy(path: Path) -> bool:
        names = legacy(path) if legacy is not None else None
        if isinstance(names, (bool, str)):
            raise TypeError("legacy must return the older kit's entry names, not a bool or a str")
        names = list(names or ())
        found.extend(n for n in dict.fromkeys(names) if _plain_name(n) and os.path.lexists(path / n))
        return bool(names)

    with owned_folder(folder, kind, legacy=_legacy) as folder:
        if found:  # recorded at once: an interrupted first run still knows which entries are the kit's
            _mark(folder, kind, found)
        old = [n for n in (found or owned_entries(folder)) if os.path.lexists(folder / n)]
        if old and not overwrite:
            raise FileExistsError(f"{folder}: exists and holds an earlier nsfwkit {kind} ({', '.join(old[:4])}); "
                                  "pass overwrite=True / --overwrite to replace it")
        for debris in folder.glob(_STAGE + "*"):  # of an interrupted run (under the lock: not a live one)
            if debris.is_dir() and not debris.is_symlink() and len(debris.name) == len(_STAGE) + 12:
                shutil.rmtree(debris, ignore_errors=True)
        stage = _new_folder(folder, _STAGE)
        try:
            yield stage
            _swap_entries(stage, folder, kind, old)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _swap_entries(stage: Path, folder: Path, kind: str, old: list[str]) -> None:
    new = sorted(p.name for p in stage.iterdir())
    taken = [n for n in new if n not in old and os.path.lexists(folder / n)]
    if taken:
        raise ForeignFolderError(f"{folder}: {', '.join(taken)} was not written by nsfwkit; refusing to "
                                 "replace it: move it away or choose another folder")
    _mark(folder, kind, old + new)  # before the moves: an interruption leaves nothing unrecorded
    for name in new:
        dest, src = folder / name, stage / name
        if os.path.lexists(dest) and (src.is_dir() or dest.is_dir()) and not dest.is_symlink():
            os.replace(dest, stage / f".old-{name}")
        os.replace(src, dest)
    remove_owned(folder, kind, [n for n in old if n not in new])
    _mark(folder, kind, new)

