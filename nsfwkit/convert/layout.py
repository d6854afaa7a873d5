"""What an export is: quantisation names and their parity bars, the folder layout, the kit-folder
check, the atomic folder swap, the ``userDefinedMetadata.nsfwkit`` of a graph model, sizes.

Every exporter (``tfjs.py`` now; TFLite, ONNX...) writes its folders through :func:`_atomic_dir`
(never replacing a folder the kit did not write) and describes them with these helpers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import fileio

__all__ = ["QUANTIZATIONS", "TOLERANCES", "METADATA_KEY", "METADATA_FORMAT", "ExportResult",
           "read_metadata", "size_table", "weight_composition", "composition_label", "plot_sizes"]

#: Quantisations of the TF.js weights; ``float32`` means none.
QUANTIZATIONS: tuple[str, ...] = ("float32", "float16", "uint8")
#: Max |Δp| allowed between Keras and TF.js per quantisation (the acceptance bar).
TOLERANCES: dict[str, float] = {"float32": 1e-5, "float16": 1e-3, "uint8": 1e-2}
_QUANT_ALIASES = {"none": "float32", "float32": "float32", "float16": "float16", "uint8": "uint8"}
#: Bytes per value of each storage dtype of TF.js weights.
_BYTES = {"uint8": 1, "float16": 2, "float32": 4}
METADATA_KEY = "nsfwkit"
METADATA_FORMAT = 1


def _quant(quantization: str | None) -> str:
    key = str(quantization or "none").lower()
    if key not in _QUANT_ALIASES:
        raise ValueError(f"unknown quantization {quantization!r}; use none, float16 or uint8")
    return _QUANT_ALIASES[key]


#: The entries an export folder is made of, exactly (older kits wrote the first five); nothing else is the kit's.
_EXPORT_ENTRIES = ("export.json", "spec.json", "saved_model", "tfjs", "nsfwjs", "tflite", "onnx")
#: The entries one model's folder (SavedModel, TF.js graph model, TFLite, ONNX) is made of, exactly.
_MODEL_ENTRIES = ("export.json", "spec.json", "model.json", "saved_model.pb", "fingerprint.pb", "variables",
                  "assets", "model.tflite", "model.onnx", fileio.OWNER_MARKER, fileio.LOCK_FILE)
_SHARD = re.compile(r"group\d+-shard\d+of\d+\.bin")
#: Keys every ``export.json`` of :func:`~nsfwkit.convert.export` has.
_EXPORT_KEYS = frozenset({"saved_model", "tfjs", "sizes", "model", "class_names"})


def _foreign_entries(folder: Path) -> list[str]:
    """Entries of ``folder`` that are no part of any export or model-folder layout (the user's files)."""
    kit = set(_EXPORT_ENTRIES) | set(_MODEL_ENTRIES)
    return sorted(p.name for p in folder.iterdir() if p.name not in kit and not _SHARD.fullmatch(p.name))


def _legacy_export(folder: Path) -> list[str] | None:
    """The entries an older kit's export (before ownership markers) wrote in ``folder``, or ``None``
    when it is not one (its ``export.json`` lacks the kit's keys). Only these exact names are the
    kit's: anything else there (a ``finetuned.keras``, ``notes.txt``) is the user's and stays."""
    try:
        data = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and _EXPORT_KEYS <= set(data)):
        return None
    return [name for name in _EXPORT_ENTRIES if os.path.lexists(folder / name)]


def _is_kit_folder(folder: Path) -> bool:
    """Whether ``folder`` is something this module wrote, so ``overwrite`` may replace it: an
    export (``export.json``), a TF.js graph model with nsfwkit metadata (``model.json``), or
    a SavedModel with its ``spec.json`` (:func:`export_saved_model`). Only the kind of folder:
    :func:`_atomic_dir` also refuses one holding anything else (:func:`_foreign_entries`)."""
    try:
        if isinstance(json.loads((folder / "export.json").read_text(encoding="utf-8")), dict):
            return True
    except (OSError, ValueError):
        pass
    if (folder / "saved_model.pb").is_file() and (folder / "spec.json").is_file():
        return True
    try:
        data = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        return METADATA_KEY in data.get("userDefinedMetadata", {})
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def _atomic_dir(dest: Path, *, overwrite: bool):
    """Build a folder under a temporary name and move it into place only when complete.

    An existing non-empty ``dest`` is replaced only with ``overwrite`` AND only when it is a
    folder this kit wrote (:func:`_is_kit_folder`) holding nothing but the exact layout names
    (:func:`_foreign_entries`): ``--overwrite`` pointed at the wrong folder (a dataset, a home
    directory) or at a model folder holding a user's ``finetuned.keras`` is refused instead of
    deleting anything. ``dest`` is locked (:func:`nsfwkit.fileio.folder_lock`) while it is
    built, so a second writer gets :class:`~nsfwkit.fileio.FolderBusyError`. The staging folder
    gets the mode a plain ``mkdir`` would (not ``mkdtemp``'s 0700), so a copy on a web server is
    readable by it.
    """
    dest = Path(dest)
    _check_replaceable(dest, overwrite=overwrite)  # before the lock: nothing is written into a foreign folder
    with fileio.folder_lock(dest):
        _check_replaceable(dest, overwrite=overwrite)  # under the lock: what another writer left
        with fileio.replace_dir(dest) as tmp:
            os.chmod(tmp, fileio.public_mode())
            yield tmp
            if tmp.is_dir():
                os.chmod(tmp, fileio.public_mode())  # a writer may have recreated it


def _check_replaceable(dest: Path, *, overwrite: bool) -> None:
    """Raise ``FileExistsError`` unless ``dest`` is missing, empty, or (with ``overwrite``) one model
    folder the kit wrote holding nothing else."""
    if not (dest.exists() or dest.is_symlink()):
        return
    if not dest.is_dir() or dest.is_symlink():
        raise FileExistsError(f"{dest}: exists and is not a folder")
    if not any(p.name != fileio.LOCK_FILE for p in dest.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{dest}: exists and is not empty (pass overwrite=True / --overwrite)")
    if not _is_kit_folder(dest):
        raise FileExistsError(
            f"{dest}: exists and is not an nsfwkit export (no export.json); refusing to "
            "replace it even with overwrite: choose a new or empty folder")
    if foreign := _foreign_entries(dest):
        raise FileExistsError(
            f"{dest}: holds files nsfwkit did not write ({', '.join(foreign[:4])}); refusing to "
            "replace the folder even with overwrite: move them away or choose a new or empty folder")
    if fileio.folder_kind(dest) is not None:
        raise FileExistsError(f"{dest}: is a whole nsfwkit {fileio.folder_kind(dest)} folder, not one "
                              "model's: write this model into a new folder")


def read_metadata(model_dir: str | os.PathLike) -> dict[str, Any]:
    """``userDefinedMetadata.nsfwkit`` of a TF.js graph model folder (or model.json path)."""
    path = Path(model_dir)
    if path.is_dir():
        path = path / "model.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (not a TF.js model folder?)") from None
    return data.get("userDefinedMetadata", {}).get(METADATA_KEY, {})


@dataclasses.dataclass
class ExportResult:
    """What :func:`export` wrote.

    Attributes:
        out_dir: the export folder.
        saved_model: the SavedModel folder.
        tfjs: quantisation -> graph model folder (input 0-255).
        nsfwjs: quantisation -> graph model folder for nsfwjs (input 0-1); may be empty.
        sizes: rows of :func:`size_table`.
        seconds: step -> wall seconds.
        precision: ``"tfjs"``/``"nsfwjs"`` -> quantisation -> the measured storage plan
            (:meth:`_PrecisionPlanner.plan`): per-dtype tensor counts, weight bytes, the
            calibration error, and ``levels`` (weight name -> ``uint8``/``float16``/``float32``).
        tflite: precision -> TFLite folder (``model.tflite``, ``spec.json``); may be empty.
        onnx: precision -> ONNX folder (``model.onnx``, ``spec.json``); may be empty.
        not_made: requested format/precision pairs that do not exist (``{format, precision, reason}``).
    """

    out_dir: Path
    saved_model: Path
    tfjs: dict[str, Path]
    nsfwjs: dict[str, Path]
    sizes: list[dict[str, Any]]
    seconds: dict[str, float]
    precision: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    tflite: dict[str, Path] = dataclasses.field(default_factory=dict)
    onnx: dict[str, Path] = dataclasses.field(default_factory=dict)
    not_made: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        rel = lambda p: str(Path(p).relative_to(self.out_dir))  # noqa: E731
        return {
            "saved_model": rel(self.saved_model),
            "tfjs": {q: rel(p) for q, p in self.tfjs.items()},
            "nsfwjs": {q: rel(p) for q, p in self.nsfwjs.items()},
            "tflite": {q: rel(p) for q, p in self.tflite.items()},
            "onnx": {q: rel(p) for q, p in self.onnx.items()},
            "sizes": self.sizes,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def _folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def size_table(result: ExportResult | str | os.PathLike) -> list[dict[str, Any]]:
    """One row per exported artefact: ``format``, ``quantization``, ``files``, ``bytes``, ``mb``,
    ``path`` (relative to the export folder)."""
    if not isinstance(result, ExportResult):
        out_dir = Path(result)
        summary = json.loads((out_dir / "export.json").read_text(encoding="utf-8"))
        return summary["sizes"]
    rows = []
    entries = [("saved_model", "float32", result.saved_model)]
    entries += [("tfjs_graph", q, p) for q, p in result.tfjs.items()]
    entries += [("nsfwjs_graph", q, p) for q, p in result.nsfwjs.items()]
    for fmt, quant, folder in entries:
        nbytes, nfiles = _folder_bytes(folder)
        row = {"format": fmt, "quantization": quant, "files": nfiles, "bytes": nbytes,
               "mb": round(nbytes / 1e6, 2), "path": str(Path(folder).relative_to(result.out_dir))}
        if (Path(folder) / "model.json").is_file():
            row.update(weight_composition(folder))
            row["stored_as"] = composition_label(row)
        rows.append(row)
    return rows


def weight_composition(model_dir: str | os.PathLike) -> dict[str, dict[str, int]]:
    """How a TF.js graph model's weights are really stored, read from its ``model.json``.

    A "uint8" or "float16" export is mixed precision (see :class:`_PrecisionPlanner`): this
    says how much of it is.

    Returns:
        ``{"tensors": {dtype: count}, "weight_bytes": {dtype: bytes}}`` over the storage dtypes
        present (``uint8``, ``float16``, ``float32``, ``int32``, ...), largest first.
    """
    model_json = json.loads((Path(model_dir) / "model.json").read_text(encoding="utf-8"))
    tensors: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    for group in model_json.get("weightsManifest", []):
        for w in group["weights"]:
            dtype = w.get("quantization", {}).get("dtype") or w.get("dtype", "float32")
            count = int(np.prod(w["shape"], dtype=np.int64))
            tensors[dtype] = tensors.get(dtype, 0) + 1
            nbytes[dtype] = nbytes.get(dtype, 0) + count * _BYTES.get(dtype, 4)
    order = sorted(tensors, key=lambda d: -nbytes[d])
    return {"tensors": {d: tensors[d] for d in order}, "weight_bytes": {d: nbytes[d] for d in order}}


_SHORT = {"uint8": "u8", "float16": "f16", "float32": "f32", "int32": "i32"}


def composition_label(row: dict[str, Any]) -> str:
    """``"u8 25 (1.2 MB) / f16 23 (0.9 MB) / f32 81 (5.4 MB)"``: tensors and MB per stored dtype
    of a :func:`size_table` row (empty for rows without weights, e.g. the SavedModel)."""
    tensors, nbytes = row.get("tensors") or {}, row.get("weight_bytes") or {}
    return " / ".join(f"{_SHORT.get(d, d)} {n} ({nbytes.get(d, 0) / 1e6:.1f} MB)"
                      for d, n in tensors.items())


def plot_sizes(rows: Sequence[dict[str, Any]]):
    """Bar chart of export sizes in MB (from :func:`size_table`); returns a Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3))
    ax = fig.add_subplot()
    labels = [f"{r['format']}\n{r['quantization']}" for r in rows]
    values = [r["mb"] for r in rows]
    bars = ax.bar(range(len(rows)), values, color="#4c72b0")
    ax.bar_label(bars, fmt="%.1f")
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("MB")
    ax.set_title("Export sizes")
    fig.tight_layout()
    return fig
