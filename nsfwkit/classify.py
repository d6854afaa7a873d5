"""Classify image files, streaming: decoding overlaps inference and a bad file never stops a batch.

>>> from nsfwkit.classify import classify
>>> for result in classify(["photos/"], model="mobilenet_v2"):
...     print(result.path, result.top, result.nsfw)

Each :class:`Result` holds either probabilities or an error message naming the problem. The
binary ``nsfw`` score is the summed probability of the spec's NSFW classes (by default Hentai +
Porn + Sexy, the usual aggregation for nsfwjs's five classes).

Animations and videos (:func:`nsfwkit.frames.load_frames`) are judged by their **worst frame**: one
result whose ``top``, ``probs`` and ``nsfw`` are those of the frame with the highest NSFW score,
with ``frames`` (how many were classified), ``frame`` and ``time`` of the worst one, and
``nsfw_mean``; ``frames="all"`` gives one result per frame instead. A clip that opens on a neutral
frame and turns explicit later is reported by the explicit frame, with its time. Still images give
exactly the results they always did (no frame keys).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import queue
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .frames import MAX_FRAMES, MAX_SECONDS, check_sampling, load_frames
from .images import DECODE_PIXELS, ImageError, PixelBudget
from .inputs import Skipped, display_path, find_inputs, name_fields, skipped_summary
from .kerasutil import inference_fn
from .spec import DEFAULT_NSFW_CLASSES, ModelSpec
from .zoo import DEFAULT_MODEL

__all__ = ["Result", "NoNSFWClassesWarning", "SkippedInputsWarning", "NothingClassifiedError", "classify",
           "summarize", "predict", "nsfw_scores", "plot_predictions", "write_results", "FORMATS",
           "FRAME_MODES", "Writer"]

FORMATS = ("table", "csv", "jsonl")
#: ``classify(frames=...)``: one result per multi-frame input (its worst frame), or one per frame.
FRAME_MODES = ("worst", "all")


class NoNSFWClassesWarning(UserWarning):
    """The model has no NSFW classes (none given, none of the defaults among its classes): ``nsfw`` is 0."""


class SkippedInputsWarning(UserWarning):
    """Folder entries were left out of a :func:`classify` run (pass ``on_skipped`` to list them)."""


class NothingClassifiedError(ValueError):
    """A run of :func:`classify` that classified no image at all (see :func:`summarize`)."""


@dataclasses.dataclass(frozen=True)
class Result:
    """The outcome for one input: probabilities, or an error.

    Attributes:
        path: the input path as given or found.
        probs: class name -> probability (``None`` on error).
        top: the most probable class (``None`` on error).
        nsfw: summed probability of the NSFW classes (``None`` on error).
        flagged: ``nsfw >= threshold`` when a threshold was given, else ``None``.
        error: why the file could not be classified (``None`` on success).
        frames: animations and videos, worst-frame results: how many frames were classified.
        frame: animations and videos: the index of the frame reported (the worst one, or this
            row's with ``frames="all"``) in the source.
        time: its presentation time in seconds.
        nsfw_mean: worst-frame results: the mean NSFW score over the classified frames.
        truncated: why a frame or duration cap stopped the input early (``None`` if it did not).
        All five are ``None`` for still images.
    """

    path: str
    probs: dict[str, float] | None = None
    top: str | None = None
    nsfw: float | None = None
    flagged: bool | None = None
    error: str | None = None
    frames: int | None = None
    frame: int | None = None
    time: float | None = None
    nsfw_mean: float | None = None
    truncated: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The JSONL row: ``path`` is valid UTF-8; ``path_bytes`` (base64) when the name is not."""
        if self.error is not None:
            return {**name_fields(self.path), "error": self.error}
        out: dict[str, Any] = {**name_fields(self.path), "top": self.top, "probs": self.probs, "nsfw": self.nsfw}
        for key in _FRAME_KEYS:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.flagged is not None:
            out["flagged"] = self.flagged
        return out


_FRAME_KEYS = ("frames", "frame", "time", "nsfw_mean", "truncated")


def nsfw_scores(probs: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Summed probability of ``spec.nsfw_classes`` per row: ``(N, C) -> (N,)``."""
    probs = np.asarray(probs)
    return probs[:, list(spec.nsfw_indices)].sum(axis=1) if spec.nsfw_indices else np.zeros(len(probs))


def summarize(results: Sequence[Result]) -> str:
    """The one-line summary ``"N classified, M failed"``, or an error when nothing was classified.

    A notebook or script calls it before going on, so a run over a missing folder, or over files
    that all fail, stops there with the reason instead of reporting success with 0 images (this is
    how ``nsfwkit run`` fails such a stage).

    Raises:
        NothingClassifiedError: no result at all, or every result an error; the message quotes
            the first failures.
    """
    failed = [r for r in results if not r.ok]
    if not results:
        raise NothingClassifiedError("no image was classified: the given paths hold no image files")
    if len(failed) == len(results):
        first = "; ".join(f"{r.path}: {r.error}" for r in failed[:3])
        more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
        raise NothingClassifiedError(f"no image was classified: every input failed ({first}{more})")
    return f"{len(results) - len(failed)} classified, {len(failed)} failed"


def predict(model, images: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
    """Class probabilities for in-memory images.

    Args:
        model: a classifier taking raw RGB 0-255.
        images: ``(N, S, S, 3)`` float or uint8, 0-255, already at the model's input size.
        batch_size: images per forward pass.

    Returns:
        ``float32`` ``(N, C)`` probabilities.
    """
    images = np.asarray(images, dtype=np.float32)
    size = int(model.inputs[0].shape[1] or images.shape[1])
    infer = inference_fn(model, size)
    if len(images) == 0:
        return np.zeros((0, int(model.outputs[0].shape[-1])), np.float32)
    return np.concatenate(
        [infer(images[i : i + batch_size]).numpy() for i in range(0, len(images), batch_size)]
    )


def _resolve_model(model, spec: ModelSpec | None, safe_mode: bool):
    from . import zoo

    if isinstance(model, (str, os.PathLike)):
        loaded, loaded_spec = zoo.load(model, safe_mode=safe_mode)
        model, spec = loaded, spec or loaded_spec
    else:
        zoo.check_classifier(model)  # before a spec is inferred from its shapes
        spec = spec or zoo._infer_spec(model, getattr(model, "name", "model"))
    zoo.check_classifier(model, spec)
    return model, spec


def _with_nsfw_classes(spec: ModelSpec, nsfw_classes: Sequence[str] | None, threshold: float | None) -> ModelSpec:
    """``spec`` summing ``nsfw_classes``; an error or a warning when no NSFW class is known.

    A model none of whose classes is an NSFW class (e.g. an ImageNet classifier) can still be
    classified, with ``nsfw`` 0 for every image and a :class:`NoNSFWClassesWarning`; asking for a
    ``threshold`` then is an error, since nothing could ever be flagged.
    """
    if nsfw_classes is not None:
        unknown = [c for c in nsfw_classes if c not in spec.class_names]
        if unknown:
            raise ValueError(f"unknown NSFW classes {unknown}; the model's classes are {list(spec.class_names)}")
        spec = spec.replace(nsfw_classes=tuple(nsfw_classes))
    if spec.nsfw_classes:
        return spec
    problem = (f"{spec.name}: none of the model's classes {list(spec.class_names)} is an NSFW class "
               f"(the defaults are {', '.join(DEFAULT_NSFW_CLASSES)})")
    if threshold is not None:
        raise ValueError(f"{problem}, so nothing can be flagged at threshold {threshold:g}; name the classes "
                         "to sum into the NSFW score (nsfw_classes=..., CLI --nsfw-classes)")
    warnings.warn(f"{problem}: its nsfw score is 0 for every image unless you name the NSFW classes "
                  "(nsfw_classes=..., CLI --nsfw-classes, or nsfw_classes in the model's spec file)",
                  NoNSFWClassesWarning, stacklevel=3)
    return spec


def classify(
    paths: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    model: Any = DEFAULT_MODEL,
    spec: ModelSpec | None = None,
    batch_size: int = 32,
    threshold: float | None = None,
    nsfw_classes: Sequence[str] | None = None,
    workers: int | None = None,
    recursive: bool = True,
    progress: bool = False,
    safe_mode: bool = True,
    frames: str = "worst",
    fps: float | None = None,
    every: int | None = None,
    max_frames: int = MAX_FRAMES,
    max_seconds: float = MAX_SECONDS,
    max_decode_pixels: int = DECODE_PIXELS,
    on_skipped: Callable[[Skipped], None] | None = None,
) -> Iterator[Result]:
    """Classify files and folders, yielding one :class:`Result` per input in input order.

    Files are decoded by a thread pool while the model runs on the previous batch; at most a few
    batches of decoded frames are held in memory, so folders of any size, and long videos, stream.
    The frames of an animation or a video go through the model in batches like still images.

    Inputs are found by :func:`nsfwkit.inputs.find_inputs`: files named explicitly are always
    tried; folders give their regular files with an image or video extension, and HEIC/HEIF/SVG
    files, which become error results (refused with a message). A folder that cannot be listed is
    an error result. Every other entry left out (hidden, not a regular file, broken link, another
    extension...) is passed to ``on_skipped``, or, without one, counted in one
    :class:`SkippedInputsWarning`.

    Args:
        paths: files and/or folders (folders are walked recursively for image and video files).
        model: a pretrained name, a model file, or a ``keras.Model`` (then pass ``spec`` too,
            or one is inferred from its input/output shapes).
        spec: overrides the model's spec.
        batch_size: images (frames) per forward pass.
        threshold: if given, each result's ``flagged`` is ``nsfw >= threshold``.
        nsfw_classes: classes summed into ``nsfw`` (default: the spec's, Hentai+Porn+Sexy).
        workers: decoding threads (default: twice the CPU count, at most 8).
        recursive: walk folders recursively.
        progress: show a text progress bar (stderr; stdout inside a notebook).
        safe_mode: load model files in Keras safe mode.
        frames: ``"worst"``: one result per animation or video, its worst frame's; ``"all"``: one
            result per classified frame.
        fps, every, max_frames, max_seconds: frame sampling and caps, as in
            :func:`nsfwkit.frames.load_frames` (default: every frame of animations, one frame per
            second of videos, plus the first and the last).
        max_decode_pixels: pixels decoded at once across the decoding threads (default two
            images at the 89.5 Mpx limit); one larger image is decoded alone.
        on_skipped: called with each :class:`nsfwkit.inputs.Skipped` folder entry left out.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if frames not in FRAME_MODES:
        raise ValueError(f"frames must be one of {FRAME_MODES}, got {frames!r}")
    check_sampling(fps=fps, every=every, max_frames=max_frames, max_seconds=max_seconds)
    model, spec = _resolve_model(model, spec, safe_mode)
    spec = _with_nsfw_classes(spec, nsfw_classes, threshold)
    found = find_inputs(paths, recursive=recursive, on_skipped=on_skipped)
    if on_skipped is None and found.skipped:
        warnings.warn(f"{skipped_summary(found.skipped)}; pass on_skipped= to list them (CLI --report-skipped)",
                      SkippedInputsWarning, stacklevel=2)
    files = found.items
    # decoding threads mostly wait on Pillow/FFmpeg/TF kernels that release the GIL: 2 per core
    # keeps the model fed (measured on 2 cores: 0.93 of in-memory throughput vs 0.89 with 1 per core)
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    sampling = {"fps": fps, "every": every, "max_frames": max_frames, "max_seconds": max_seconds,
                "image_size": spec.image_size}
    engine = _Engine(inference_fn(model, spec.image_size), spec, batch_size=batch_size, threshold=threshold,
                     per_frame=frames == "all", pixels=PixelBudget(max_decode_pixels))
    yield from engine.run(files, workers=workers, sampling=sampling, progress=progress)


class _Stopped(Exception):
    """The consumer went away: decoding threads stop."""


class _Budget:
    """Bounds the decoded frames held at once across files.

    At most ``limit`` in all, except that the file being consumed (the head) may always hold up to
    ``limit`` of its own: files decoded ahead can then never starve it (no deadlock), and memory
    stays below ``2 * limit`` frames plus one batch.
    """

    def __init__(self, limit: int):
        self._limit, self._total, self._head = limit, 0, 0
        self._held: collections.Counter = collections.Counter()
        self._cond = threading.Condition()
        self._stopped = False

    def take(self, key: int) -> None:
        with self._cond:
            while not self._stopped and not (
                self._total < self._limit or (key == self._head and self._held[key] < self._limit)
            ):
                self._cond.wait()
            if self._stopped:
                raise _Stopped
            self._held[key] += 1
            self._total += 1

    def give(self, key: int) -> None:
        with self._cond:
            self._held[key] -= 1
            self._total -= 1
            self._cond.notify_all()

    def advance(self, key: int) -> None:
        with self._cond:
            self._head = key
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


class _Record:
    """The frames of one input gathered until all are classified."""

    def __init__(self, path):
        self.path = path.path if isinstance(path, ImageError) else str(path)
        self.kind = None
        self.error: str | None = None
        self.truncated: str | None = None
        self.done = False
        self.pending = 0  # frames sent to a batch not yet run
        self.frames: list[tuple[int, float]] = []
        self.probs: list[np.ndarray] = []
        self.scores: list[float] = []

    def finish(self, kind: str, item) -> None:
        if kind == "error":
            self.error = item.reason
        else:
            self.kind, self.truncated = item.kind, item.reason
        self.done = True

    def results(self, spec: ModelSpec, threshold: float | None, per_frame: bool) -> list[Result]:
        if self.error is not None:
            return [Result(path=self.path, error=self.error)]

        def result(k: int, **extra) -> Result:
            p, nsfw = self.probs[k], self.scores[k]
            return Result(path=self.path, probs={c: float(v) for c, v in zip(spec.class_names, p, strict=True)},
                          top=spec.class_names[int(np.argmax(p))], nsfw=nsfw,
                          flagged=None if threshold is None else bool(nsfw >= threshold), **extra)

        if self.kind == "image":
            return [result(0)]
        if per_frame:
            return [result(k, frame=i, time=t, truncated=self.truncated) for k, (i, t) in enumerate(self.frames)]
        worst = int(np.argmax(self.scores))  # the first of equally bad frames
        index, time_s = self.frames[worst]
        return [result(worst, frames=len(self.frames), frame=index, time=time_s,
                       nsfw_mean=float(np.mean(self.scores)), truncated=self.truncated)]


class _Engine:
    """Decoding threads feed frames, file by file in input order, into batches for the model."""

    def __init__(self, infer, spec: ModelSpec, *, batch_size: int, threshold: float | None, per_frame: bool,
                 pixels: PixelBudget):
        self.infer, self.spec, self.batch_size = infer, spec, batch_size
        self.threshold, self.per_frame, self.pixels = threshold, per_frame, pixels

    def run(self, files: Sequence[Path | ImageError], *, workers: int, sampling: dict,
            progress: bool) -> Iterator[Result]:
        window = max(2 * self.batch_size, workers * 2)
        self._budget, self._sampling = _Budget(window), sampling
        self._records: collections.deque = collections.deque()
        self._batch: list = []
        self._bar = None
        if progress:
            from .progress import progress_bar

            self._bar = progress_bar(total=len(files), unit="file", dynamic_ncols=True)
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="nsfwkit-decode") as pool:
            inflight: collections.deque = collections.deque()
            todo = iter(enumerate(files))

            def submit() -> None:
                for key, path in todo:
                    channel: queue.SimpleQueue = queue.SimpleQueue()
                    inflight.append((key, path, channel, pool.submit(self._produce, key, path, channel)))
                    return

            for _ in range(window):
                submit()
            try:
                while inflight:
                    key, path, channel, _ = inflight.popleft()
                    submit()
                    yield from self._consume(key, path, channel)
                if self._batch:
                    self._classify(self._batch)
                yield from self._ready()
            finally:
                self._budget.stop()
                for *_, future in inflight:
                    future.cancel()
                if self._bar:
                    self._bar.close()

    def _produce(self, key: int, path: Path, channel: queue.SimpleQueue) -> None:
        """In a decoding thread: one file's frames into its channel, then its end or its error.

        Each frame is decoded (and resized) while holding its pixel count from the pixel budget,
        read from the header before decoding; the frame budget is taken after, holding no pixels.
        """
        try:
            if isinstance(path, ImageError):  # a folder that could not be listed
                raise path
            clip = load_frames(path, **self._sampling)
            size = clip.width * clip.height
            frames = iter(clip)
            while True:
                with self.pixels.hold(size):
                    frame = next(frames, None)
                if frame is None:
                    break
                self._budget.take(key)
                channel.put(("frame", frame))
            channel.put(("end", clip))
        except _Stopped:
            return
        except ImageError as exc:
            channel.put(("error", exc))
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop the batch
            channel.put(("error", ImageError(path, f"unexpected {type(exc).__name__}: {exc}")))

    def _consume(self, key: int, path: Path, channel: queue.SimpleQueue) -> Iterator[Result]:
        """One file's frames into batches, yielding every result that becomes complete."""
        self._budget.advance(key)
        record = _Record(path)
        self._records.append(record)
        while not record.done:
            kind, item = channel.get()
            if kind != "frame":
                record.finish(kind, item)
                continue
            self._budget.give(key)
            record.pending += 1
            self._batch.append((record, item))
            if len(self._batch) >= self.batch_size:
                self._classify(self._batch)
                self._batch = []
                yield from self._ready()
        yield from self._ready()

    def _classify(self, batch: list) -> None:
        probs = self.infer(np.stack([frame.pixels for _, frame in batch])).numpy()
        scores = nsfw_scores(probs, self.spec)
        for (record, frame), p, score in zip(batch, probs, scores, strict=True):
            record.frames.append((frame.index, frame.time_s))
            record.probs.append(p)
            record.scores.append(float(score))
            record.pending -= 1

    def _ready(self) -> Iterator[Result]:
        """Results of the finished inputs at the front, in input order."""
        records = self._records
        while records and records[0].done and records[0].pending == 0:
            yield from records.popleft().results(self.spec, self.threshold, self.per_frame)
            if self._bar:
                self._bar.update(1)


class Writer:
    """Streams results as ``table``, ``csv`` or ``jsonl`` to a text stream.

    File names are data in ``jsonl`` and ``csv``: ``path`` is the name when it is valid UTF-8, else
    its escaped display form plus ``path_bytes``, the exact bytes in base64 (the last CSV column,
    empty for UTF-8 names); ``table`` prints :func:`nsfwkit.inputs.display_path` (control
    characters escaped). :meth:`write_skipped` writes a row for a folder entry left out.

    ``jsonl`` rows carry the frame keys of animations and videos when they have them; ``table``
    rows name the frame's time after the path; ``csv`` has the frame columns (``frames, frame,
    time, nsfw_mean, truncated``, empty for still images) when ``frames`` is True.
    """

    def __init__(self, fmt: str, class_names: Sequence[str], stream=None, *, threshold: float | None = None,
                 frames: bool = False):
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
        self.fmt, self.class_names, self.threshold = fmt, list(class_names), threshold
        self.frames = frames
        self.stream = stream or sys.stdout
        self._csv = None
        if fmt == "csv":
            import csv

            self._csv = csv.writer(self.stream, lineterminator="\n")
            header = ["path", "top", "nsfw", *self.class_names]
            if threshold is not None:
                header.append("flagged")
            if frames:
                header.extend(_FRAME_KEYS)
            self._csv.writerow(header + ["error", "path_bytes"])
        elif fmt == "table":
            cols = "".join(f"{c[:8]:>9}" for c in self.class_names)
            flag = "  flag" if threshold is not None else ""
            self.stream.write(f"{cols}{'nsfw':>8}{flag}  {'top':<8}  path\n")

    def write(self, result: Result) -> None:
        if self.fmt == "jsonl":
            self.stream.write(_json_line(result.to_dict()))
        elif self.fmt == "csv":
            names = name_fields(result.path)
            if result.ok:
                row = [names["path"], result.top, f"{result.nsfw:.6f}",
                       *(f"{result.probs[c]:.6f}" for c in self.class_names)]
            else:
                row = [names["path"], "", "", *([""] * len(self.class_names))]
            if self.threshold is not None:
                row.append("" if not result.ok else str(result.flagged).lower())
            if self.frames:
                row.extend(_csv_value(getattr(result, key)) for key in _FRAME_KEYS)
            self._csv.writerow(row + [result.error or "", names.get("path_bytes", "")])
        else:
            path = display_path(result.path)
            if result.ok:
                cols = "".join(f"{result.probs[c]:9.3f}" for c in self.class_names)
                flag = "" if self.threshold is None else ("  NSFW" if result.flagged else "  -   ")
                self.stream.write(f"{cols}{result.nsfw:8.3f}{flag}  {result.top:<8}  {path}{_where(result)}\n")
            else:
                self.stream.write(f"{'ERROR':>9}  {display_path(result.error)}  {path}\n")
        self.stream.flush()

    def write_skipped(self, entry: Skipped) -> None:
        """A row for a folder entry left out: ``{"path", "skipped": reason}`` in JSONL, ``skipped:
        <reason>`` in the CSV error column, a ``SKIPPED`` line in the table."""
        names = name_fields(entry.path)
        if self.fmt == "jsonl":
            self.stream.write(_json_line({**names, "skipped": entry.reason}))
        elif self.fmt == "csv":
            empty = [""] * (2 + len(self.class_names) + (self.threshold is not None) + self.frames * len(_FRAME_KEYS))
            self._csv.writerow([names["path"], *empty, f"skipped: {entry.reason}", names.get("path_bytes", "")])
        else:
            self.stream.write(f"{'SKIPPED':>9}  {entry.reason}  {display_path(entry.path)}\n")
        self.stream.flush()


#: Characters JSON leaves raw that a terminal may obey (DEL, C1 controls, bidi controls): written as
#: ``\uXXXX`` escapes, which decode to the same text.
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in (*range(0x7F, 0xA0), 0x61C, 0x200E, 0x200F, 0x2028, 0x2029,
                                            *range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def _json_line(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False).translate(_JSON_ESCAPES) + "\n"


def _csv_value(value) -> str:
    if value is None:
        return ""
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def _where(result: Result) -> str:
    """`` @ 3.20 s (frame 96, worst of 12; truncated: ...)`` for frame results, else nothing."""
    if result.frame is None:
        return ""
    notes = [f"frame {result.frame}"]
    if result.frames is not None:
        notes[0] += f", worst of {result.frames}"
    if result.truncated:
        notes.append(f"truncated: {result.truncated}")
    return f" @ {result.time:.2f} s ({'; '.join(notes)})"


def plot_predictions(images: Sequence[np.ndarray], results: Sequence[Result], *, columns: int = 4,
                     titles: Sequence[str] | None = None,
                     nsfw_classes: Sequence[str] = DEFAULT_NSFW_CLASSES):
    """A grid of images, each with a horizontal bar chart of its class probabilities.

    Returns:
        a ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    n = len(results)
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    fig = Figure(figsize=(3.2 * columns, 4.4 * rows), layout="constrained")
    grid = fig.add_gridspec(rows * 2, columns, height_ratios=[3, 1.4] * rows)
    for k, (image, result) in enumerate(zip(images, results)):
        r, c = divmod(k, columns)
        ax = fig.add_subplot(grid[2 * r, c])
        ax.imshow(np.asarray(image).astype(np.uint8) if np.asarray(image).dtype != np.uint8 else image)
        ax.set_axis_off()
        name = titles[k] if titles else Path(result.path).name
        ax.set_title(name if result.ok else f"{name}\n(error)", fontsize=9)
        bars = fig.add_subplot(grid[2 * r + 1, c])
        if result.ok:
            names = list(result.probs)
            values = [result.probs[x] for x in names]
            colors = ["#c0392b" if x in nsfw_classes else "#2e86c1" for x in names]
            bars.barh(names, values, color=colors)
            bars.set_xlim(0, 1)
            bars.tick_params(labelsize=7)
            bars.set_title(f"top: {result.top}   nsfw: {result.nsfw:.2f}", fontsize=8)
        else:
            bars.text(0, 0.5, result.error[:60], fontsize=7, wrap=True)
            bars.set_axis_off()
    return fig


def write_results(results: Iterable[Result], path: str | os.PathLike) -> Path:
    """Write results as JSON lines (the ``--format jsonl`` schema), atomically; return the path."""
    from .fileio import write_text

    return write_text(path, "".join(_json_line(r.to_dict()) for r in results))
