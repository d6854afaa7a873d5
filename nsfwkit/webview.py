"""Build the static web view into ``dist/``: the page, TF.js vendored from npm, the model, galleries.

>>> from nsfwkit import webview
>>> webview.build()                 # -> dist/index.html; view it with `nsfwkit serve dist`

What lands in the output folder (nothing else there is touched)::

    index.html app.js classifier.js style.css   the page (from nsfwkit/web/)
    vendor/    tf.min.js, tf-backend-wasm.min.js and its three .wasm binaries, copied from
               node_modules at build time, so the page works offline
    model/     the default model as a float32 TF.js graph model (from an export folder, or
               exported now into the cache)
    site.json  what the page should load: the model and the gallery manifests that exist
               (``filters/``, ``activation/`` written by nsfwkit.viz, found in the site folder
               or copied from a run folder, see :func:`find_galleries`)

The page never makes a request outside its origin (a Content-Security-Policy says so too) and
never uploads the user's image: it is decoded and classified in the browser.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import paths

__all__ = ["PAGE_FILES", "VENDOR_FILES", "GALLERIES", "build", "vendor_sources", "default_export",
           "find_galleries"]

PAGE_FILES = ("index.html", "app.js", "classifier.js", "style.css")
#: node_modules-relative sources of the vendored TF.js files.
VENDOR_FILES = {
    "tf.min.js": "@tensorflow/tfjs/dist/tf.min.js",
    "tf-backend-wasm.min.js": "@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js",
    "tfjs-backend-wasm.wasm": "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
    "tfjs-backend-wasm-simd.wasm": "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm",
    "tfjs-backend-wasm-threaded-simd.wasm":
        "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm",
}
#: Gallery kind -> manifest path relative to the site root. ``cam`` shows the ``cams`` of an
#: activation-schema manifest (nsfwkit.viz writes CAMs into ``activation/`` folders).
GALLERIES = {"filters": "filters/manifest.json", "activation": "activation/manifest.json",
             "cam": "cam/manifest.json"}


def _web_dir() -> Path:
    return Path(__file__).resolve().parent / "web"


def vendor_sources(node_modules: str | os.PathLike | None = None) -> dict[str, Path]:
    """Vendored file name -> its path in ``node_modules``.

    Raises:
        FileNotFoundError: a file is missing; the message says to run ``npm ci``.
    """
    root = Path(node_modules) if node_modules else paths.repo_root() / "node_modules"
    out = {name: root / rel for name, rel in VENDOR_FILES.items()}
    missing = [str(p) for p in out.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing TF.js files (run `npm ci`): {', '.join(missing)}")
    return out


def default_export(model: str = "mobilenet_v2", *, overwrite: bool = False) -> Path:
    """The cached export of a pretrained model (``<cache>/exports/<model>``), made if missing.

    Returns:
        the export folder (see :mod:`nsfwkit.convert`).
    """
    from . import convert, zoo

    out = paths.cache_dir() / "exports" / model
    if (out / "tfjs" / "float32" / "model.json").is_file() and not overwrite:
        return out
    keras_model, spec = zoo.load(model)
    convert.export(keras_model, out, spec=spec, quantizations=["float32"], nsfwjs=False,
                   overwrite=True)
    return out


def find_galleries(*roots: str | os.PathLike) -> dict[str, Path]:
    """Gallery kind -> folder holding its ``manifest.json``, found under ``roots``.

    Each root may hold ``filters/`` and ``activation/`` directly (like ``dist/``) or be a run
    folder whose stages hold them (``<run>/04_filters/filters/``, ``<run>/05_activations/
    activation/``, ``<run>/06_cam/activation/``). Later stages win. An activation manifest with
    ``layers`` feeds the Activations gallery; one with ``cams`` the CAM gallery.
    """
    found: dict[str, Path] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        stages = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for stage in stages:
            for sub in ("filters", "activation"):
                manifest = stage / sub / "manifest.json"
                if not manifest.is_file():
                    continue
                try:
                    data = json.loads(manifest.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue  # unreadable manifests are skipped, not fatal
                if str(data.get("schema", "")).startswith("nsfwkit.filters") or sub == "filters":
                    if data.get("layers"):
                        found["filters"] = stage / sub
                    continue
                if data.get("layers"):
                    found["activation"] = stage / sub
                if data.get("cams"):
                    found["cam"] = stage / sub
    return found


def _copy_file(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _replace_dir(src: Path, dest: Path) -> None:
    """Copy folder ``src`` to ``dest``, swapping it in only when complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp", dir=dest.parent))
    try:
        shutil.rmtree(stage)
        shutil.copytree(src, stage)
        old = None
        if dest.exists():
            old = dest.parent / f".{dest.name}.old{os.getpid()}"
            os.replace(dest, old)
        os.replace(stage, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def build(
    out_dir: str | os.PathLike | None = None,
    *,
    model: str = "mobilenet_v2",
    export_dir: str | os.PathLike | None = None,
    quantization: str = "float32",
    galleries_from: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    node_modules: str | os.PathLike | None = None,
) -> Path:
    """Build the web view.

    Args:
        out_dir: the site folder (default ``dist/``). Only the files listed in the module
            docstring are written; other content (runs/, filters/, ...) is left alone.
        model: pretrained model to export into the cache when ``export_dir`` is not given.
        export_dir: an export folder (``nsfwkit export``) or a TF.js graph model folder to use.
        quantization: which of the export's ``tfjs/<q>`` models to ship (float32 by default,
            so the page's probabilities match Keras within 1e-5).
        galleries_from: a folder holding ``filters/`` and/or ``activation/`` (with
            ``manifest.json``) to copy into the site.
        run_dir: a pipeline run folder whose stages wrote visualisations (see
            :func:`find_galleries`); copied into the site. With neither, the site shows the
            galleries already in ``out_dir`` (``filters/``, ``activation/``).
        node_modules: where to vendor TF.js from (default: the repository's).

    Returns:
        the path of ``index.html``.
    """
    out = Path(out_dir) if out_dir is not None else paths.dist_dir()
    out.mkdir(parents=True, exist_ok=True)
    vendor = vendor_sources(node_modules)

    source = Path(export_dir) if export_dir is not None else default_export(model)
    model_dir = source if (source / "model.json").is_file() else source / "tfjs" / quantization
    if not (model_dir / "model.json").is_file():
        raise FileNotFoundError(f"{source}: no TF.js model (expected model.json or tfjs/{quantization}/)")

    with tempfile.TemporaryDirectory(prefix=".vendor-", dir=out) as scratch:
        staged = Path(scratch) / "vendor"
        staged.mkdir()
        for name, src in vendor.items():
            shutil.copyfile(src, staged / name)
        _replace_dir(staged, out / "vendor")
    _replace_dir(model_dir, out / "model")

    sources = [p for p in (galleries_from, run_dir) if p is not None]
    found = find_galleries(*sources) if sources else find_galleries(out)
    galleries: dict[str, str] = {}
    for kind, folder in found.items():
        if sources:
            _replace_dir(folder, out / Path(GALLERIES[kind]).parent)
            galleries[kind] = GALLERIES[kind]
        else:
            galleries[kind] = (folder / "manifest.json").relative_to(out).as_posix()

    for name in PAGE_FILES:
        _copy_file(_web_dir() / name, out / name)
    model_meta = json.loads((out / "model" / "model.json").read_text(encoding="utf-8"))
    site: dict[str, Any] = {
        "built": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": "model/model.json",
        "model_metadata": model_meta.get("userDefinedMetadata", {}).get("nsfwkit", {}),
        "galleries": galleries,
    }
    tmp = out / f".site.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(site, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / "site.json")
    return out / "index.html"
