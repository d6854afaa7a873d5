"""Resumable classification results: Parquet shards plus a progress record, in a kit-owned folder.

``nsfwkit classify PATH... --out DIR`` (and :func:`classify_to`) write every result as a row of a
Parquet shard ``DIR/part-NNNNNN.parquet`` (pyarrow), one shard per ``rows_per_shard`` inputs, then
record the shard -- its name, rows, size and SHA-256 -- in ``DIR/progress.json``. Both are written
atomically (:mod:`nsfwkit.fileio`), so a crash or ``kill -9`` loses at most the shard being
filled. Running the same command again:

* skips every input already recorded with the same **key**: path + size + ``mtime_ns``, or its
  content SHA-256 with ``verify=True`` (``--verify``); new and changed files are classified, and
  files recorded before but no longer among the inputs are counted as removed (and left out
  when reading back);
* checks every recorded shard against its size and checksum and that Parquet can read it: a
  truncated or altered shard is deleted and its inputs are classified again, never read as good;
  a shard written but never recorded (the crash came in between) is deleted the same way.

Reading back (:func:`read_results`, ``nsfwkit results DIR``) deduplicates per path, the last
write winning, so every input appears exactly once (``frames="all"``: all the rows of its last
classification). Columns: ``path, size, mtime_ns, sha256, top, nsfw, flagged, error`` and the
frame fields ``frames, frame, time, nsfw_mean, truncated`` (null for still images), then one
``prob_<class>`` column per class.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from . import fileio

__all__ = ["PROGRESS_FILE", "KIND", "ResultsFolderError", "ShardWriter", "classify_to", "file_key", "read_table",
           "read_results", "results_open"]

PROGRESS_FILE = "progress.json"
#: The ownership kind of a results folder (:func:`nsfwkit.fileio.claim_folder`).
KIND = "classify"
_SHARD = re.compile(r"part-(\d{6})\.parquet")
#: The temporary name of a shard being written (:func:`nsfwkit.fileio.atomic_path`): a crash's debris.
_SHARD_TMP = re.compile(r"\.part-\d{6}\.tmp\d+-\d+\.parquet")
#: The Parquet schema metadata every shard the kit writes carries (how an unrecorded shard is known as the kit's).
_SHARD_META = {b"nsfwkit": b"classify-shard/1"}
_FRAME_COLUMNS = (("frames", "int64"), ("frame", "int64"), ("time", "float64"), ("nsfw_mean", "float64"),
                  ("truncated", "string"))


class ResultsFolderError(ValueError):
    """A results folder that cannot be resumed with these settings (another model, classes...)."""


def _pa():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401 - the submodule is used through the package
    except ImportError as exc:  # pragma: no cover - pyarrow is a core dependency
        raise ImportError("--out needs pyarrow: pip install 'pyarrow>=17'") from exc
    return pyarrow


def file_key(path: str | os.PathLike, *, verify: bool = False) -> dict[str, Any]:
    """``{"size", "mtime_ns", "sha256"}`` of a file (``sha256`` only with ``verify``; None if unreadable)."""
    try:
        st = os.stat(path)
    except OSError:
        return {"size": None, "mtime_ns": None, "sha256": None}
    digest = None
    if verify:
        digest = _sha256(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}


def _sha256(path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _same_key(old: dict, new: dict, verify: bool) -> bool:
    if verify:
        return new["sha256"] is not None and old.get("sha256") == new["sha256"]
    return new["size"] is not None and (old.get("size"), old.get("mtime_ns")) == (new["size"], new["mtime_ns"])


def _schema(class_names: Sequence[str]):
    pa = _pa()
    fields = [("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()), ("sha256", pa.string()),
              ("top", pa.string()), ("nsfw", pa.float64()), ("flagged", pa.bool_()), ("error", pa.string())]
    fields += [(name, getattr(pa, "float64" if kind == "float64" else kind)()) for name, kind in _FRAME_COLUMNS]
    fields += [(f"prob_{c}", pa.float64()) for c in class_names]
    return pa.schema(fields, metadata=_SHARD_META)


def _row(result, key: dict, class_names: Sequence[str]) -> dict[str, Any]:
    row = {"path": result.path, **key, "top": result.top, "nsfw": result.nsfw, "flagged": result.flagged,
           "error": result.error}
    for name, _ in _FRAME_COLUMNS:
        row[name] = getattr(result, name)
    for c in class_names:
        row[f"prob_{c}"] = result.probs[c] if result.probs else None
    return row


class ShardWriter:
    """Appends results to a results folder, one atomically written shard at a time.

    Use through :func:`results_open`, which claims and locks the folder, checks the recorded shards
    and tells which inputs are already done.
    """

    def __init__(self, folder: Path, record: dict, *, rows_per_shard: int):
        self.folder, self.record, self.rows_per_shard = folder, record, rows_per_shard
        self.class_names = record["settings"]["class_names"]
        self._rows: list[dict] = []
        self._pending_inputs = 0
        self._seq = record.get("next", 1)

    def add(self, results: Sequence, key: dict) -> None:
        """The results of one input (one row, or one per frame) with the input's key."""
        self._rows.extend(_row(r, key, self.class_names) for r in results)
        self._pending_inputs += 1
        if self._pending_inputs >= self.rows_per_shard:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as a shard, then record it (both atomically)."""
        if not self._rows:
            return
        pa = _pa()
        name = f"part-{self._seq:06d}.parquet"
        table = pa.Table.from_pylist(self._rows, schema=_schema(self.class_names))
        with fileio.atomic_path(self.folder / name) as tmp:
            pa.parquet.write_table(table, tmp)
            digest, size = _sha256(tmp), tmp.stat().st_size
        self.record["shards"].append({"name": name, "rows": len(self._rows), "bytes": size, "sha256": digest})
        self._seq += 1
        self.record["next"] = self._seq
        self._rows, self._pending_inputs = [], 0
        _save(self.folder, self.record)

    def finish(self, *, inputs: int, removed: Sequence[str]) -> None:
        self.flush()
        self.record.update(inputs=inputs, removed=sorted(removed), complete=True)
        _save(self.folder, self.record)


def _save(folder: Path, record: dict) -> None:
    fileio.write_json(folder / PROGRESS_FILE, record)


def _load_record(folder: Path) -> dict | None:
    import json

    path = folder / PROGRESS_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("format") != 1 or not isinstance(record.get("shards"), list):
            raise ValueError("not a format-1 progress record")
    except (OSError, ValueError) as exc:
        raise ResultsFolderError(f"{path}: unreadable progress record ({exc}); choose another folder") from None
    return record


def _shard_problem(folder: Path, entry: dict) -> str | None:
    """Why a recorded shard cannot be trusted (missing, truncated, altered, unreadable), or None."""
    path = folder / entry["name"]
    try:
        size = path.stat().st_size
    except OSError:
        return "missing"
    if size != entry["bytes"]:
        return f"{size} bytes, {entry['bytes']} recorded (truncated?)"
    if _sha256(path) != entry["sha256"]:
        return "checksum differs from the progress record"
    try:
        rows = _pa().parquet.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # noqa: BLE001 - any reader failure means the shard is bad
        return f"unreadable Parquet ({type(exc).__name__}: {exc})"
    return None if rows == entry["rows"] else f"{rows} rows, {entry['rows']} recorded"


def _check_shards(folder: Path, record: dict) -> list[str]:
    """Drop bad recorded shards and delete them and unrecorded ones; return one line per problem."""
    problems, good = [], []
    for entry in record["shards"]:
        problem = _shard_problem(folder, entry)
        if problem is None:
            good.append(entry)
        else:
            problems.append(f"{folder / entry['name']}: {problem}; its inputs are classified again")
    recorded = {e["name"] for e in good}
    unrecorded = [p for p in folder.iterdir() if _SHARD.fullmatch(p.name) and p.name not in recorded]
    kept = [p.name for p in unrecorded if not _kit_shard(p)]
    problems += [f"{folder / name}: not a shard nsfwkit recorded or wrote (no nsfwkit shard metadata); "
                 "left as it is" for name in kept]
    stale = [p.name for p in unrecorded if p.name not in kept]
    stale += [p.name for p in folder.iterdir() if _SHARD_TMP.fullmatch(p.name)]
    fileio.remove_owned(folder, KIND, stale)
    numbers = [int(_SHARD.fullmatch(p.name).group(1)) for p in unrecorded]  # the kept ones' names stay taken
    record["next"] = max([record.get("next", 1), *(n + 1 for n in numbers)])
    record["shards"] = good
    return problems


def _kit_shard(path: Path) -> bool:
    """Whether ``path`` is a Parquet shard the kit wrote (its schema metadata), e.g. one a crash left
    unrecorded; a user's file that merely has a shard's name is not."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        metadata = _pa().parquet.read_schema(path).metadata or {}
    except Exception:  # noqa: BLE001 - any reader failure: not a shard of ours
        return False
    return all(metadata.get(k) == v for k, v in _SHARD_META.items())


def _settings_problem(old: dict, new: dict) -> str | None:
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            return f"it holds results with {name}={old.get(name)!r}, this run has {new.get(name)!r}"
    return None


def read_table(folder: str | os.PathLike, *, include_removed: bool = False):
    """The results of a folder as a ``pyarrow.Table``: good shards only, one entry per path.

    Rows of the last shard holding a path win (a re-classified file replaces its older rows);
    paths the last run reported removed are left out unless ``include_removed``.
    """
    pa = _pa()
    folder = Path(folder)
    record = _load_record(folder)
    if record is None:
        raise ResultsFolderError(f"{folder}: no {PROGRESS_FILE}: not an nsfwkit classify --out folder")
    good = [e for e in record["shards"] if _shard_problem(folder, e) is None]
    schema = _schema(record["settings"]["class_names"])
    tables = [pa.parquet.read_table(folder / e["name"], schema=schema) for e in good]
    if not tables:
        return schema.empty_table()
    paths = [t.column("path").to_pylist() for t in tables]
    last = {p: k for k, ps in enumerate(paths) for p in ps}
    removed = set() if include_removed else set(record.get("removed", ()))
    keep = [t.filter(pa.array([last[p] == k and p not in removed for p in ps], pa.bool_()))
            for k, (t, ps) in enumerate(zip(tables, paths))]
    return pa.concat_tables(keep)


def read_results(folder: str | os.PathLike, *, flagged: bool = False) -> list:
    """The results of a folder as :class:`nsfwkit.classify.Result` objects (``flagged``: those only)."""
    from .classify import Result

    table = read_table(folder)
    prob_columns = [c for c in table.column_names if c.startswith("prob_")]
    out = []
    for row in table.to_pylist():
        if flagged and not row["flagged"]:
            continue
        probs = None if row["error"] is not None else {c[5:]: row[c] for c in prob_columns}
        out.append(Result(path=row["path"], probs=probs, top=row["top"], nsfw=row["nsfw"], flagged=row["flagged"],
                          error=row["error"], **{name: row[name] for name, _ in _FRAME_COLUMNS}))
    return out


def _done_keys(folder: Path, record: dict) -> dict[str, dict]:
    """path -> key of its last recorded classification."""
    pa = _pa()
    done: dict[str, dict] = {}
    for entry in record["shards"]:
        table = pa.parquet.read_table(folder / entry["name"], columns=["path", "size", "mtime_ns", "sha256", "error"])
        for row in table.to_pylist():
            done[row["path"]] = row
    return done


@contextlib.contextmanager
def results_open(folder: str | os.PathLike, settings: dict, files: Iterable[str | os.PathLike], *,
                 verify: bool = False, rows_per_shard: int = 1000) -> Iterator[tuple[ShardWriter, dict]]:
    """Claim and lock ``folder`` and plan a (resumed) run over ``files``.

    Yields ``(writer, plan)``: ``plan["todo"]`` is ``[(path, key)]`` of the inputs to classify (new,
    changed, or in a bad shard), ``plan["done"]`` how many are skipped (``plan["done_failed"]`` of
    them recorded with an error), ``plan["removed"]`` the
    recorded paths not among ``files``, ``plan["problems"]`` one line per bad shard deleted.
    ``settings`` (model, classes, threshold, frame mode...) must equal the folder's, else
    :class:`ResultsFolderError`. Call ``writer.finish(...)`` at the end; a run that stops early
    keeps every shard it flushed.

    Raises:
        nsfwkit.fileio.ForeignFolderError: the folder holds files the kit did not write.
        nsfwkit.fileio.FolderBusyError: another process is writing into it.
        nsfwkit.fileio.UnwritableFolderError: the folder cannot be created or written.
    """
    with fileio.owned_folder(folder, KIND) as folder:  # unwritable: UnwritableFolderError, before any work
        record = _load_record(folder) or {"format": 1, "settings": settings, "shards": [], "next": 1}
        problem = _settings_problem(record["settings"], settings)
        if problem:
            raise ResultsFolderError(f"{folder}: {problem}; use the same options or another folder")
        problems = _check_shards(folder, record)
        done = _done_keys(folder, record)
        todo, skipped, failed_before, seen = [], 0, 0, set()
        for path in files:
            name = str(path)
            if name in seen:
                continue
            seen.add(name)
            key = file_key(path, verify=verify)
            if name in done and _same_key(done[name], key, verify):
                skipped += 1
                failed_before += done[name]["error"] is not None
            else:
                todo.append((path, key))
        removed = sorted(set(done) - seen)
        _save(folder, record)
        yield ShardWriter(folder, record, rows_per_shard=rows_per_shard), {
            "todo": todo, "done": skipped, "done_failed": failed_before, "removed": removed, "problems": problems}


def _per_input(results: Iterable) -> Iterator[list]:
    """Consecutive results of one path (one, or one per frame) as one list."""
    group: list = []
    for result in results:
        if group and result.path != group[0].path:
            yield group
            group = []
        group.append(result)
    if group:
        yield group


def classify_to(
    folder: str | os.PathLike,
    paths: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    model: Any = None,
    spec=None,
    threshold: float | None = None,
    nsfw_classes: Sequence[str] | None = None,
    recursive: bool = True,
    frames: str = "worst",
    verify: bool = False,
    rows_per_shard: int = 1000,
    engine: str = "local",
    ray_options: dict | None = None,
    on_result=None,
    **options,
) -> dict[str, Any]:
    """Classify into a results folder, resuming what a previous run left; return the run's counts.

    ``model``/``spec``/``threshold``/``nsfw_classes``/``frames`` and ``options`` (``batch_size``,
    ``workers``, ``progress``, ``safe_mode``, ``fps``, ``every``, ``max_frames``, ``max_seconds``)
    are those of :func:`nsfwkit.classify.classify`. ``engine="ray"`` runs decoding and inference on
    Ray Data (:mod:`nsfwkit.engines.ray_engine`; ``ray_options``: ``address``, ``actors``, ``gpu``,
    ``num_cpus``, ``input_scale``; ``model`` must then be a name or a file). ``on_result(result)``
    sees each new result as it is recorded.

    Returns:
        ``{"classified", "failed", "flagged", "skipped", "skipped_failed", "removed", "problems",
        "folder_errors", "skipped_inputs"}``: the inputs classified now (``failed`` of them errors),
        skipped as already done (``skipped_failed`` of them recorded with an error), the
        recorded paths no longer among the inputs, the bad shards that were redone, folders that could
        not be listed, and the folder entries left out (:class:`nsfwkit.inputs.Skipped`: hidden,
        not a regular file, broken link, other extension).
    """
    from .classify import _resolve_model, _with_nsfw_classes
    from .inputs import find_inputs
    from .zoo import DEFAULT_MODEL

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    model = DEFAULT_MODEL if model is None else model
    source = model
    if engine == "local" or spec is None:  # the Ray actors load the model; the driver needs only a spec
        model, spec = _resolve_model(model, spec, options.get("safe_mode", True))
    spec = _with_nsfw_classes(spec, nsfw_classes, threshold)
    from .frames import MAX_FRAMES, MAX_SECONDS

    sampling = {"fps": options.get("fps"), "every": options.get("every"),
                "max_frames": options.get("max_frames", MAX_FRAMES),
                "max_seconds": options.get("max_seconds", MAX_SECONDS)}
    settings = {"model": spec.name, "class_names": list(spec.class_names), "nsfw_classes": list(spec.nsfw_classes),
                "threshold": threshold, "frames": frames, "image_size": spec.image_size, **sampling}
    found = find_inputs(paths, recursive=recursive)  # the one discovery rule: regular files, skips counted
    folder_errors, files = found.errors, found.files
    counts = {"classified": 0, "failed": 0, "flagged": 0}
    with results_open(folder, settings, files, verify=verify, rows_per_shard=rows_per_shard) as (writer, plan):
        keys = {str(p): k for p, k in plan["todo"]}
        todo = [p for p, _ in plan["todo"]]
        if engine == "ray":
            from .engines import ray_engine

            groups = ray_engine.classify_groups(todo, model=source, spec=spec, threshold=threshold,
                                                frames=frames, **(ray_options or {}), **options)
        else:
            from .classify import classify

            groups = _per_input(classify(todo, model=model, spec=spec, threshold=threshold, recursive=False,
                                         frames=frames, **options)) if todo else iter(())
        for group in groups:
            writer.add(group, keys[group[0].path])
            counts["classified"] += 1
            counts["failed"] += not group[0].ok
            counts["flagged"] += any(bool(r.flagged) for r in group)
            for result in group:
                if on_result is not None:
                    on_result(result)
        writer.finish(inputs=len(keys) + plan["done"], removed=plan["removed"])
    return {**counts, "skipped": plan["done"], "skipped_failed": plan["done_failed"], "removed": plan["removed"],
            "problems": plan["problems"],
            "folder_errors": folder_errors, "skipped_inputs": found.skipped}
