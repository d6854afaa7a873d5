"""Finding input files, and file names as data: the one discovery rule of ``classify``, ``prepare``, ``visualize``.

:func:`find_inputs` turns the files and folders a user names into the files to decode, and lists
every entry it leaves out with its reason (:class:`Skipped`), so nothing is dropped silently:

* files named explicitly are always tried (the loader refuses what is not a regular image file,
  with a message: a failure, not a skip);
* folders are walked (sub-folders after a folder's own files, each sorted by name) for regular
  files with an image or video extension, plus the extensions the loader refuses with a message
  (:data:`REFUSED_EXTENSIONS`: HEIC/HEIF, SVG), so those count as failures, not as skips;
* skipped, with a reason: ``hidden`` (names starting with ``.``, files and folders), ``not a
  regular file (FIFO|socket|device)``, ``broken link``, ``link to a folder (not followed)``,
  ``folder (not recursive)``, ``not an image or video extension``;
* a folder that cannot be listed is a failure (an :class:`~nsfwkit.images.ImageError` among the
  items): the images it may hold were not classified.

Every ``stat`` is taken on the link's target, and the loader checks the opened file again
(:func:`nsfwkit.images.read_file`: ``fstat`` after a non-blocking open), so a FIFO or a link into
``/dev`` is never read.

File names are bytes on Linux; Python holds undecodable bytes as lone surrogates
(``surrogateescape``). :func:`display_path` is the form printed for humans (control characters,
bidi overrides and undecodable bytes escaped); :func:`name_fields` / :func:`name_from_fields`
the form written into JSONL/CSV: ``path`` is always valid UTF-8, and ``path_bytes`` (the name's
exact bytes, base64) is added only when the name is not valid UTF-8.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import stat
from pathlib import Path
from typing import Callable, Collection, Iterable, NamedTuple

from .images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, ImageError, check_input_file

__all__ = ["Skipped", "Inputs", "find_inputs", "INPUT_EXTENSIONS", "REFUSED_EXTENSIONS", "display_path",
           "name_fields", "name_from_fields", "skipped_summary", "check_input_file"]

#: Picked up from folders so that the loader refuses them with a message (counted as failures).
REFUSED_EXTENSIONS = frozenset({".heic", ".heif", ".hif", ".svg", ".svgz"})
#: Everything ``classify`` picks up from folders.
INPUT_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS | REFUSED_EXTENSIONS

_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


class Skipped(NamedTuple):
    """A folder entry left out of the inputs, and why."""

    path: str
    reason: str


@dataclasses.dataclass
class Inputs:
    """What :func:`find_inputs` found: ``items`` to decode, in order (a :class:`Path`, or an
    :class:`ImageError` for a folder that could not be listed), and the ``skipped`` entries."""

    items: list = dataclasses.field(default_factory=list)
    skipped: list[Skipped] = dataclasses.field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [item for item in self.items if not isinstance(item, ImageError)]

    @property
    def errors(self) -> list[ImageError]:
        return [item for item in self.items if isinstance(item, ImageError)]


def find_inputs(
    paths: Iterable[str | os.PathLike],
    *,
    recursive: bool = True,
    extensions: Collection[str] = INPUT_EXTENSIONS,
    on_skipped: Callable[[Skipped], None] | None = None,
) -> Inputs:
    """Files to decode from files and folders, and every folder entry left out (see the module doc).

    Args:
        paths: files and/or folders.
        recursive: walk sub-folders (else each is skipped as ``folder (not recursive)``).
        extensions: lower-case extensions picked up from folders (files named explicitly are
            always tried).
        on_skipped: called with each :class:`Skipped` as it is found (they are also returned).
    """
    found = Inputs()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            _walk(path, found, recursive=recursive, extensions=frozenset(extensions))
        else:
            found.items.append(path)
    if on_skipped is not None:
        for entry in found.skipped:
            on_skipped(entry)
    return found


def _walk(folder: Path, found: Inputs, *, recursive: bool, extensions: frozenset) -> None:
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        found.items.append(ImageError(folder, f"cannot list folder ({exc.strerror or exc})"))
        return
    folders = []
    for entry in entries:
        path = Path(entry.path)
        kind = "hidden" if entry.name.startswith(".") else _kind(entry)
        if kind == "folder":
            if recursive:
                folders.append(path)
            else:
                found.skipped.append(Skipped(str(path), "folder (not recursive)"))
        elif kind == "file" and path.suffix.lower() not in extensions:
            found.skipped.append(Skipped(str(path), "not an image or video extension"))
        elif kind == "file":
            found.items.append(path)
        else:
            found.skipped.append(Skipped(str(path), kind))
    for sub in folders:
        _walk(sub, found, recursive=recursive, extensions=extensions)


def _kind(entry: os.DirEntry) -> str:
    """``"file"``, ``"folder"``, or why the entry is skipped; links are judged by their target."""
    try:
        if entry.is_symlink():
            try:
                info = os.stat(entry.path)
            except FileNotFoundError:
                return "broken link"
            if stat.S_ISDIR(info.st_mode):
                return "link to a folder (not followed)"
        else:
            info = entry.stat(follow_symlinks=False)
    except OSError as exc:
        return f"cannot read its status ({exc.strerror or exc})"
    if stat.S_ISDIR(info.st_mode):
        return "folder"
    if stat.S_ISREG(info.st_mode):
        return "file"
    return f"not a regular file ({_special(info.st_mode)})"


def _special(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def skipped_summary(skipped: Iterable[Skipped]) -> str:
    """``"3 skipped (2 hidden, 1 broken link)"``, or ``""`` when nothing was skipped."""
    counts: dict[str, int] = {}
    for entry in skipped:
        counts[entry.reason] = counts.get(entry.reason, 0) + 1
    if not counts:
        return ""
    detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{sum(counts.values())} skipped ({detail})"


def _escape_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, held by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return f"\\x{code:02x}"
    if char in _BIDI or 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return char


def display_path(path: str | os.PathLike | bytes | None) -> str:
    """A file name (or any text naming one) safe to print on a terminal, always valid UTF-8.

    Control characters (C0 such as ESC, newline, CR and tab; DEL; C1), bidi controls (U+202E...)
    and line separators become ``\\xNN`` / ``\\uNNNN``; bytes that are not UTF-8 (``surrogateescape``)
    become ``\\xNN``. Other text is unchanged. It names the file for a person; the exact name is
    :func:`name_fields`'s.
    """
    if path is None:
        return ""
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    if text.isprintable() and text.isascii():
        return text
    return "".join(map(_escape_char, text))


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def name_fields(path: str | os.PathLike, key: str = "path") -> dict[str, str]:
    """``{key: name}`` for a JSONL/CSV row; ``key`` is valid UTF-8 text whatever the name.

    A name that is not valid UTF-8 becomes its :func:`display_path` form, and
    ``key + "_bytes"`` holds its exact bytes in base64 (decode with :func:`name_from_fields`).
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if _is_utf8(text):
        return {key: text}
    return {key: display_path(text), f"{key}_bytes": base64.b64encode(os.fsencode(text)).decode("ascii")}


def name_from_fields(row: dict, key: str = "path") -> str:
    """The exact file name of a row written with :func:`name_fields` (``surrogateescape`` text)."""
    exact = row.get(f"{key}_bytes")
    return os.fsdecode(base64.b64decode(exact)) if exact else row[key]
