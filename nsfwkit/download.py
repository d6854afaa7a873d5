"""Download URL lists (one text file per class) into a folder-per-class dataset.

The public NSFW scrapers publish ``urls_<class>.txt`` files; links rot, redirect, hang, or answer
with HTML error pages. :func:`download` fetches them concurrently and defensively:

* per-request connect/read timeouts **and** a wall-clock deadline per file (a server that
  trickles bytes cannot hang a worker);
* retries with exponential back-off (plus jitter) on connection errors, timeouts, 429 and 5xx;
  never on other 4xx;
* a size cap, checked against ``Content-Length`` and while streaming;
* bounded redirects; only ``http``/``https`` URLs;
* the body must decode with the shared loader (:func:`nsfwkit.images.decode_image`), so an
  HTML page, a truncated body or a non-image never lands in the dataset;
* resumable: each URL maps to a stable file name (a hash of the URL), files already there are
  never fetched again, partial downloads are written to a temporary name and renamed only when
  complete;
* a report of every URL (``downloaded``, ``exists`` or ``failed`` with the reason), also written
  as ``download_report.csv`` in the destination.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from . import images as _images
from .fileio import atomic_path

__all__ = ["DownloadResult", "DownloadReport", "read_url_lists", "download", "url_filename"]

_EXT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp",
        "BMP": ".bmp", "TIFF": ".tif"}
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = "nsfwkit-downloader/0.1 (+dataset preparation)"


@dataclasses.dataclass
class DownloadResult:
    """What happened to one URL."""

    url: str
    label: str
    status: str  # downloaded | exists | failed
    path: str = ""
    reason: str = ""
    attempts: int = 0
    bytes: int = 0


@dataclasses.dataclass
class DownloadReport:
    """All results of a :func:`download` call, with counts."""

    results: list[DownloadResult]
    report_path: str = ""

    def counts(self) -> dict[str, int]:
        out = {"downloaded": 0, "exists": 0, "failed": 0}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    @property
    def failed(self) -> list[DownloadResult]:
        return [r for r in self.results if r.status == "failed"]


def read_url_lists(source: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, list[str]]:
    """Read URL lists into ``{class: [urls]}``.

    ``source`` is a folder holding one ``<class>.txt`` (or ``urls_<class>.txt``) per class,
    a folder holding ``<class>/urls_*.txt`` (the scrapers' layout), or a list of such text
    files. One URL per line; blank lines and ``#`` comments are skipped; duplicates dropped.
    """
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if root.is_dir():
            files = sorted(root.glob("*.txt")) + sorted(root.glob("*/urls_*.txt"))
        elif root.is_file():
            files = [root]
        else:
            raise FileNotFoundError(f"{root}: no such URL list or folder")
    else:
        files = [Path(f) for f in source]
    out: dict[str, list[str]] = {}
    for file in files:
        label = file.stem[5:] if file.stem.startswith("urls_") else file.stem
        urls = out.setdefault(label, [])
        seen = set(urls)
        for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
            url = line.strip()
            if not url or url.startswith("#") or url in seen:
                continue
            seen.add(url)
            urls.append(url)
    if not out:
        raise FileNotFoundError(f"{source}: no URL lists (*.txt) found")
    return out


def url_filename(url: str) -> str:
    """The stable file stem for a URL (first 20 hex digits of its SHA-1)."""
    return hashlib.sha1(url.encode("utf-8")).hexdigest()[:20]


def _existing(folder: Path, stem: str) -> Path | None:
    for ext in set(_EXT.values()):
        path = folder / f"{stem}{ext}"
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


class _Failure(Exception):
    def __init__(self, reason: str, *, retry: bool, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def check_label(label: str) -> str:
    """A class label usable as one folder name under the destination, or ``ValueError``.

    Refuses empty names, ``.``/``..``, path separators and NUL, so a label from a mapping can
    never write outside ``dest`` (e.g. ``"../x"``).
    """
    text = str(label)
    if (not text or text in (".", "..") or "/" in text or "\\" in text or "\0" in text
            or (os.altsep and os.altsep in text) or Path(text).is_absolute()):
        raise ValueError(f"invalid class label {label!r}: must be one folder name (no '/', '..')")
    return text


def _fetch_once(session, url: str, *, timeout: tuple[float, float], deadline_s: float,  # noqa: C901 (a branch per failure mode)
                max_bytes: int) -> bytes:
    import requests

    aborted = threading.Event()
    try:
        with session.get(url, stream=True, timeout=timeout, allow_redirects=True) as resp:
            if resp.status_code != 200:
                raise _Failure(f"HTTP {resp.status_code} {resp.reason or ''}".strip(),
                               retry=resp.status_code in _RETRY_STATUS,
                               retry_after=_retry_after(resp.headers.get("Retry-After"))
                               if resp.status_code in (429, 503) else None)
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise _Failure(f"too large: Content-Length {int(length):,} > {max_bytes:,} bytes",
                               retry=False)

            def abort():  # a server trickling bytes defeats the read timeout: cut it off
                aborted.set()
                resp.close()

            watchdog = threading.Timer(deadline_s, abort)
            watchdog.daemon = True
            watchdog.start()
            chunks, total = [], 0
            try:
                for chunk in resp.iter_content(chunk_size=16384):
                    total += len(chunk)
                    if total > max_bytes:
                        raise _Failure(f"too large: body over {max_bytes:,} bytes", retry=False)
                    chunks.append(chunk)
            except _Failure:
                raise
            except Exception:
                if aborted.is_set():
                    raise _Failure(f"too slow: not complete after {deadline_s:g} s", retry=True) \
                        from None
                raise
            finally:
                watchdog.cancel()
            if aborted.is_set():
                raise _Failure(f"too slow: not complete after {deadline_s:g} s", retry=True)
            return b"".join(chunks)
    except requests.exceptions.TooManyRedirects:
        raise _Failure("too many redirects (a redirect loop?)", retry=False) from None
    except requests.exceptions.ConnectTimeout:
        raise _Failure(f"connect timeout ({timeout[0]:g} s)", retry=True) from None
    except (requests.exceptions.ReadTimeout, requests.exceptions.Timeout):
        raise _Failure(f"read timeout ({timeout[1]:g} s without data)", retry=True) from None
    except requests.exceptions.InvalidURL as exc:
        raise _Failure(f"invalid URL ({exc})", retry=False) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        raise _Failure(f"connection error ({type(exc).__name__})", retry=True) from None
    except requests.exceptions.RequestException as exc:
        raise _Failure(f"request failed ({type(exc).__name__}: {exc})", retry=False) from None


def _download_one(url: str, label: str, dest: Path, *, get_session, timeout, deadline_s,
                  max_bytes, retries, backoff, rng_lock, rng, max_retry_after) -> DownloadResult:
    folder = dest / label
    stem = url_filename(url)
    existing = _existing(folder, stem)
    if existing is not None:
        return DownloadResult(url, label, "exists", path=str(existing))
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        return DownloadResult(url, label, "failed", reason=f"unsupported URL scheme {scheme!r}")
    attempts = 0
    reason = ""
    while attempts <= retries:
        attempts += 1
        try:
            data = _fetch_once(get_session(), url, timeout=timeout, deadline_s=deadline_s,
                               max_bytes=max_bytes)
        except _Failure as exc:
            reason = exc.reason
            if not exc.retry or attempts > retries:
                break
            if exc.retry_after is not None and exc.retry_after > max_retry_after:
                reason += f" (Retry-After {exc.retry_after:g} s is over the {max_retry_after:g} s limit)"
                break
            with rng_lock:
                jitter = rng.uniform(0, backoff)
            wait = backoff * (2 ** (attempts - 1)) + jitter
            if exc.retry_after is not None:  # the server said when: honour it
                wait = max(wait, exc.retry_after)
            time.sleep(wait)
            continue
        try:
            _images.decode_image(data, path=url)
        except _images.ImageError as exc:
            return DownloadResult(url, label, "failed", reason=f"not an image: {exc.reason}",
                                  attempts=attempts, bytes=len(data))
        import io

        from PIL import Image

        fmt = Image.open(io.BytesIO(data)).format or "JPEG"
        path = folder / f"{stem}{_EXT.get(fmt, '.img')}"
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".part") as tmp:
            tmp.write_bytes(data)
        return DownloadResult(url, label, "downloaded", path=str(path), attempts=attempts,
                              bytes=len(data))
    return DownloadResult(url, label, "failed", reason=reason, attempts=attempts)


def download(
    url_lists: Mapping[str, Iterable[str]] | str | os.PathLike,
    dest: str | os.PathLike,
    *,
    workers: int = 8,
    timeout: tuple[float, float] = (5.0, 15.0),
    deadline_s: float = 60.0,
    retries: int = 2,
    backoff: float = 0.5,
    max_bytes: int = 20 * 1024 * 1024,
    max_redirects: int = 5,
    seed: int = 0,
    progress: bool = True,
    trust_env: bool = True,
    max_retry_after: float = 120.0,
) -> DownloadReport:
    """Download every URL into ``dest/<class>/<url hash>.<ext>``; resumable, never fatal per URL.

    Args:
        url_lists: ``{class: urls}``, or a path for :func:`read_url_lists`.
        dest: dataset folder to fill (one sub-folder per class).
        workers: concurrent downloads.
        timeout: ``(connect, read)`` seconds per request (read = longest silence).
        deadline_s: wall-clock limit per attempt.
        retries: extra attempts after a retryable failure (timeouts, connection errors, 429, 5xx).
        backoff: base of the exponential back-off in seconds (``backoff * 2**k`` + jitter); a
            ``Retry-After`` header on 429/503 makes the wait at least that long.
        max_bytes: larger bodies are refused (checked before and while streaming).
        max_redirects: redirects followed per request.
        seed: seeds the back-off jitter.
        progress: a text progress bar (:mod:`nsfwkit.progress`); False turns it off.
        trust_env: use proxies (``HTTP(S)_PROXY``, ``NO_PROXY``) and netrc from the environment,
            like ``requests`` does by default; False ignores them.
        max_retry_after: a ``Retry-After`` longer than this (seconds) fails the URL instead of
            waiting.

    Raises:
        ValueError: a class label is not a single folder name (e.g. ``"../x"``).

    Returns:
        A :class:`DownloadReport`; its CSV is ``dest/download_report.csv``.
    """
    import requests

    if not isinstance(url_lists, Mapping):
        url_lists = read_url_lists(url_lists)
    url_lists = {check_label(label): urls for label, urls in url_lists.items()}
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    local = threading.local()
    sessions: list = []

    def get_session():
        session = getattr(local, "session", None)
        if session is None:
            session = requests.Session()
            session.max_redirects = max_redirects
            session.headers["User-Agent"] = USER_AGENT
            session.trust_env = trust_env  # proxies / netrc from the environment
            local.session = session
            sessions.append(session)
        return session

    jobs = [(url, label) for label, urls in url_lists.items() for url in urls]
    rng, rng_lock = random.Random(seed), threading.Lock()
    kwargs = dict(get_session=get_session, timeout=timeout, deadline_s=deadline_s,
                  max_bytes=max_bytes, retries=retries, backoff=backoff, rng_lock=rng_lock, rng=rng,
                  max_retry_after=max_retry_after)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(_download_one, u, l, dest, **kwargs) for u, l in jobs]
            iterator = futures
            if progress:
                from .progress import progress_bar

                iterator = progress_bar(futures, desc="download", unit="url")
            results = [f.result() for f in iterator]
    finally:
        for session in sessions:
            session.close()
    report = DownloadReport(results)
    path = dest / "download_report.csv"
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in dataclasses.fields(DownloadResult)])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(r) for r in results)
    report.report_path = str(path)
    return report
