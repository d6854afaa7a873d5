"""Ray Data engine: decoding in tasks, the model in a pool of actors that load it once.

``nsfwkit classify PATH... --out DIR --engine ray [--address ADDR] [--actors N] [--gpu]`` and
``nsfwkit prepare ... --engine ray`` run here. Without an address an embedded local Ray is
started (127.0.0.1, no dashboard, a small object store), so the same command runs on a laptop;
with one (``ray start --head`` on the cluster, then ``--address HEAD:6379``) the job joins that
cluster, whose nodes need nsfwkit installed (``pip install 'nsfwkit[ray,cpu]'``) and read access to
the input paths.

Pixels are those of the local engine: the decoding tasks call the kit's own loader
(:func:`nsfwkit.frames.load_frames`, i.e. :func:`nsfwkit.images.load_image` + ``resize`` for
stills), and the actors run :func:`nsfwkit.kerasutil.inference_fn`. Results come back to the
driver, which writes them through the same shard writer as the local engine
(:mod:`nsfwkit.results`), so a run is resumable the same way. An actor that dies is restarted by
Ray Data and its batches retried (Ray Data's default ``max_restarts=-1``, ``max_task_retries=-1``
for actor pools); rows are grouped per input in the driver, so an input is recorded exactly once
even if a retried batch delivers it twice.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = ["start", "classify_groups", "validate_files"]

#: Object store of the embedded Ray (bytes): enough for a few batches of decoded 224x224 frames.
OBJECT_STORE_BYTES = 256 * 2**20
#: CPUs each decoding task asks Ray for.
DECODE_CPUS = 0.5


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the submodule is used through the package
    except ImportError as exc:
        raise ImportError("--engine ray needs Ray Data: pip install 'nsfwkit[ray]'") from exc
    return ray


def start(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None):
    """Connect to Ray: the cluster at ``address``, or an embedded local one; a no-op if already connected.

    The embedded Ray listens on 127.0.0.1 only, has no dashboard, no usage reporting and an
    object store of :data:`OBJECT_STORE_BYTES`.
    """
    ray = _ray()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    common = {"log_to_driver": False, "configure_logging": False}
    if address:
        ray.init(address=address, **common)
    else:
        _start_local(ray, num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus, **common)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


def _start_local(ray, *, attempts: int = 3, **options) -> None:
    """An embedded Ray on 127.0.0.1; a start that times out is tried again (``attempts`` in all).

    Ray's raylet gives its Python agents 30 s to report their ports and aborts otherwise; on a
    loaded 2-core machine their start-up alone took 40 s (measured), while a second attempt
    finds their imports in the page cache.
    """
    for attempt in range(1, attempts + 1):
        try:
            ray.init(include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES, _node_ip_address="127.0.0.1",
                     **options)
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for a start that timed out
            ray.shutdown()
            if attempt == attempts or "timed out" not in str(exc):
                raise


def _decode(batch: dict[str, np.ndarray], *, image_size: int, sampling: dict) -> dict[str, np.ndarray]:
    """In a Ray task: each path's frames (the kit's loader), one row per frame or per failed file."""
    from ..frames import load_frames
    from ..images import ImageError

    rows: dict[str, list] = {k: [] for k in ("path", "index", "time", "count", "kind", "truncated", "error")}
    pixels: list[np.ndarray] = []
    blank = np.zeros((image_size, image_size, 3), np.float32)

    def add(path, index, time_s, count, kind, truncated, error, frame) -> None:
        for key, value in zip(rows, (path, index, time_s, count, kind, truncated, error)):
            rows[key].append(value)
        pixels.append(frame)

    for path in batch["path"]:
        path = str(path)
        try:
            clip = load_frames(path, image_size=image_size, **sampling)
            frames = list(clip)
        except ImageError as exc:
            add(path, 0, 0.0, 1, "", "", exc.reason, blank)
            continue
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop the batch
            add(path, 0, 0.0, 1, "", "", f"unexpected {type(exc).__name__}: {exc}", blank)
            continue
        for frame in frames:
            add(path, frame.index, frame.time_s, len(frames), clip.kind, clip.reason or "", "", frame.pixels)
    out = {k: np.array(v, dtype=object if k in ("path", "kind", "truncated", "error") else None)
           for k, v in rows.items()}
    out["pixels"] = np.stack(pixels) if pixels else np.zeros((0, image_size, image_size, 3), np.float32)
    return out


class _Infer:
    """A Ray actor: loads the model once, then class probabilities for batches of decoded rows."""

    def __init__(self, model: str, safe_mode: bool, input_scale: float | None):
        from .. import zoo
        from ..kerasutil import inference_fn

        self.model, spec = zoo.load(model, safe_mode=safe_mode, input_scale=input_scale)
        self.infer = inference_fn(self.model, spec.image_size)
        self.classes = len(spec.class_names)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.array([not e for e in batch["error"]], bool)
        probs = np.zeros((len(ok), self.classes), np.float32)
        if ok.any():
            probs[ok] = self.infer(np.asarray(batch["pixels"][ok], np.float32)).numpy()
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out["probs"] = probs
        return out


def _dataset(files: Sequence, *, model: str, image_size: int, sampling: dict, batch_size: int, actors: int,
             gpu: bool, safe_mode: bool, input_scale: float | None):
    ray = _ray()
    items = [{"path": str(p)} for p in files]
    blocks = max(1, min(len(items), 64, -(-len(items) // batch_size)))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    # decoding tasks ask for half a CPU, the actors for one: different resources also keep Ray Data
    # from fusing the two steps into the actors (decoding then stays in tasks, as on a cluster)
    ds = ds.map_batches(_decode, fn_kwargs={"image_size": image_size, "sampling": sampling},
                        batch_size=batch_size, batch_format="numpy", num_cpus=DECODE_CPUS)
    return ds.map_batches(_Infer, fn_constructor_kwargs={"model": str(model), "safe_mode": safe_mode,
                                                         "input_scale": input_scale},
                          batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
                          num_gpus=1 if gpu else 0, num_cpus=1)


def _results(path: str, rows: list[dict], spec, threshold: float | None, per_frame: bool) -> list:
    """One input's rows (any order) -> its results, as the local engine builds them."""
    from ..classify import _Record, nsfw_scores

    record = _Record(path)
    record.done = True
    rows = sorted(rows, key=lambda r: r["index"])
    if rows[0]["error"]:
        record.error = rows[0]["error"]
        return record.results(spec, threshold, per_frame)
    record.kind, record.truncated = rows[0]["kind"], rows[0]["truncated"] or None
    probs = np.stack([r["probs"] for r in rows])
    record.frames = [(int(r["index"]), float(r["time"])) for r in rows]
    record.probs = list(probs)
    record.scores = [float(s) for s in nsfw_scores(probs, spec)]
    return record.results(spec, threshold, per_frame)


def classify_groups(files: Sequence[str | os.PathLike], *, model: Any, spec, threshold: float | None = None,
                    frames: str = "worst", batch_size: int = 32, address: str | None = None, actors: int = 1,
                    gpu: bool = False, num_cpus: int | None = None, input_scale: float | None = None,
                    safe_mode: bool = True, progress: bool = False, fps: float | None = None,
                    every: int | None = None, max_frames: int | None = None,
                    max_seconds: float | None = None, workers: int | None = None) -> Iterator[list]:
    """Classify ``files`` on Ray; yield each input's results (one, or one per frame) as one list.

    Inputs come back in completion order, not input order. ``model`` must be a pretrained name or
    a model file (each actor loads it); ``spec`` is the driver's (class names, NSFW classes).
    ``progress`` and ``workers`` (decoding threads) are the local engine's and ignored here: Ray
    schedules the decoding tasks.
    """
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError("--engine ray loads the model in each actor: give a pretrained name or a model file")
    if not files:
        return
    if actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")
    ray = start(address, num_cpus=num_cpus or max(os.cpu_count() or 1, actors + 1), num_gpus=1 if gpu else None)
    cpus = ray.cluster_resources().get("CPU", 0)
    if actors + DECODE_CPUS > cpus:  # the actors would take every CPU and no decoding task could run: a hang
        raise ValueError(f"--actors {actors} needs {actors + DECODE_CPUS:g} CPUs in Ray (one per actor, plus "
                         f"{DECODE_CPUS:g} for decoding); the Ray cluster has {cpus:g}")
    sampling = {k: v for k, v in (("fps", fps), ("every", every), ("max_frames", max_frames),
                                  ("max_seconds", max_seconds)) if v is not None}
    ds = _dataset(files, model=model, image_size=spec.image_size, sampling=sampling, batch_size=batch_size,
                  actors=actors, gpu=gpu, safe_mode=safe_mode, input_scale=input_scale)
    pending: dict[str, dict[int, dict]] = {}
    finished: set[str] = set()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for k in range(len(batch["path"])):
            row = {key: batch[key][k] for key in batch}
            path = str(row["path"])
            if path in finished:
                continue  # a retried batch delivered it again
            rows = pending.setdefault(path, {})
            rows[int(row["index"])] = row
            if len(rows) == int(row["count"]):
                finished.add(path)
                yield _results(path, list(pending.pop(path).values()), spec, threshold, frames == "all")


def _validate_batch(batch: dict[str, np.ndarray], *, max_bytes: int, max_pixels: int,
                    hash_size: int) -> dict[str, np.ndarray]:
    """In a Ray task: :func:`nsfwkit.data.scan._validate_one` for each (path, label)."""
    import dataclasses

    from .. import images
    from ..data.scan import _validate_one

    budget = images.PixelBudget()  # one task decodes one file at a time: the default bound holds
    records = [dataclasses.asdict(_validate_one(str(p), str(c), max_bytes, max_pixels, hash_size, budget))
               for p, c in zip(batch["path"], batch["label"])]
    return {"record": np.array(records, dtype=object), "order": np.asarray(batch["order"])}


def validate_files(files, *, address: str | None = None, max_bytes: int | None = None,
                   max_pixels: int | None = None, hash_size: int = 8, batch_size: int = 64) -> list:
    """:func:`nsfwkit.data.validate_files` (read, decode, hash) in Ray tasks; records in input order."""
    from .. import images as _images
    from ..data.scan import Record

    files = [(str(p), str(c)) for p, c in files]
    if not files:
        return []
    ray = start(address)
    items = [{"path": p, "label": c, "order": i} for i, (p, c) in enumerate(files)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(64, -(-len(items) // batch_size))))
    ds = ds.map_batches(_validate_batch, batch_size=batch_size, batch_format="numpy",
                        fn_kwargs={"max_bytes": max_bytes or _images.MAX_BYTES,
                                   "max_pixels": max_pixels or _images.MAX_PIXELS, "hash_size": hash_size})
    out: list = [None] * len(files)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for order, record in zip(batch["order"], batch["record"]):
            out[int(order)] = Record(**record)
    return out


