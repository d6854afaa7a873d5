"""Build the static web view into ``dist/web/``: the page, TF.js vendored from npm, the model, galleries.

>>> from nsfwkit import webview
>>> webview.build()                 # -> dist/web/index.html; view it with `nsfwkit serve`

The site is a folder of its own that only the kit writes (``dist/web/`` by default), so building
it never touches anything else in ``dist/`` — e.g. a model trained into ``dist/model/``. Each
entry is built in a staging folder and moved into place when complete; only a folder holding the
kit's ownership marker :data:`MARKER` (kind ``site``; a build of an older kit, marked
:data:`LEGACY_MARKER`, is recognised) is written into, so ``--out`` pointed at the wrong folder is
refused, and a rebuild replaces only the entries a build wrote (a file the user added stays). The
folder is locked while it is built. Its content::

    .nsfwkit.json  the marker: this folder is a site built by nsfwkit, with the entries it wrote
    index.html app.js classifier.js motion.js style.css   the page (from nsfwkit/web/)
    vendor/    tf.min.js, tf-backend-wasm.min.js and its three .wasm binaries, copied from
               node_modules at build time, so the page works offline
    model/     the model as a float32 TF.js graph model (from an export folder, or exported
               now into the cache)
    filters/ activation/ cam/   gallery folders copied from a run folder, a galleries folder,
               or ``dist/`` (where ``nsfwkit visualize`` writes by default): see :func:`build`
    site.json  what the page should load: the model and the gallery manifests that exist, and
               the explanation methods (``nsfwkit.viz.attributions.ALL_METHODS``: the page
               computes Grad-CAM, gradients and SmoothGrad and lists the others as Python's)

The site is self-contained (copy the folder to any static host). Folders get the mode a plain
``mkdir`` gives, so another user (a web server) can read a copy.

The page never makes a request outside its origin (a Content-Security-Policy says so too) and
never uploads the user's image: it is decoded and classified in the browser.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from . import paths
from .fileio import LOCK_FILE, OWNER_MARKER, UnwritableFolderError, folder_kind
from .viz.attributions import ALL_METHODS
from .zoo import DEFAULT_MODEL

__all__ = ["PAGE_FILES", "VENDOR_FILES", "GALLERIES", "MARKER", "LEGACY_MARKER", "SiteFolderError", "build",
           "site_dir", "vendor_sources", "default_export", "export_cache_dir", "find_galleries"]

#: The ownership marker every build writes (:data:`nsfwkit.fileio.OWNER_MARKER`, kind ``site``).
MARKER = OWNER_MARKER
#: The marker of builds by older kits (recognised, then replaced by :data:`MARKER`).
LEGACY_MARKER = ".nsfwkit-site"


class SiteFolderError(FileExistsError):
    """The output folder exists, is not empty and is not a site built by nsfwkit."""


def site_dir() -> Path:
    """The default site folder, ``dist/web/``."""
    return paths.dist_dir() / "web"

PAGE_FILES = ("index.html", "app.js", "classifier.js", "motion.js", "style.css")
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
    root = Path(node_modules) if node_modules else paths.node_modules_dir()
    out = {name: root / rel for name, rel in VENDOR_FILES.items()}
    missing = [str(p) for p in out.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing TF.js files (run `npm ci`): {', '.join(missing)}")
    return out


def export_cache_dir(model: str | os.PathLike = DEFAULT_MODEL) -> Path:
    """Where :func:`default_export` caches the export of ``model``.

    A pretrained name maps to ``<cache>/exports/<name>``. A model file maps to
    ``<cache>/exports/<stem>-<hash>``, the hash covering its resolved path, size and
    modification time: an absolute or relative path never becomes a path inside the cache,
    two files with the same name never share an export, and a retrained file gets a new one.
    """
    from . import zoo

    root = paths.cache_dir() / "exports"
    text = os.fspath(model)
    if text in zoo.PRETRAINED:
        return root / text
    path = Path(text).expanduser().resolve()
    try:
        st = path.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    digest = hashlib.sha256(f"{path}\0{stamp}".encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("._")[:40] or "model"
    return root / f"{stem}-{digest}"


def default_export(model: str | os.PathLike = DEFAULT_MODEL, *, overwrite: bool = False) -> Path:
    """The cached float32 export of a model (:func:`export_cache_dir`), made if missing.

    Args:
        model: a pretrained name or a ``.keras`` file (with its spec beside it).

    Returns:
        the export folder (see :mod:`nsfwkit.convert`).
    """
    from . import convert, zoo

    out = export_cache_dir(model)
    if (out / "tfjs" / "float32" / "model.json").is_file() and not overwrite:
        return out
    keras_model, spec = zoo.load(os.fspath(model))
    convert.export(keras_model, out, spec=spec, quantizations=["float32"], nsfwjs=False,
                   overwrite=True)
    return out


def _galleries_in(stage: Path) -> dict[str, Path]:
    """Gallery kind -> folder, for the ``filters/`` and ``activation/`` directly in ``stage``
    (and ``cam/``, where a built site keeps its CAM gallery)."""
    found: dict[str, Path] = {}
    for sub in ("filters", "activation", "cam"):
        manifest = stage / sub / "manifest.json"
        if not manifest.is_file():
            continue
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # unreadable manifests are skipped, not fatal
        if not isinstance(data, dict):
            continue
        if sub == "cam":
            if data.get("cams"):
                found["cam"] = stage / sub
            continue
        if str(data.get("schema", "")).startswith("nsfwkit.filters") or sub == "filters":
            if data.get("layers"):
                found["filters"] = stage / sub
            continue
        if data.get("layers"):
            found["activation"] = stage / sub
        if data.get("cams"):
            found["cam"] = stage / sub
    return found


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
            found.update(_galleries_in(stage))
    return found


def _copy_tree(src: Path, dest: Path) -> None:
    """Copy a folder's files (content only: modes come from the umask, not the source; not the
    source's ownership marker and lock: the site's gallery is the site's)."""
    shutil.copytree(src, dest, copy_function=shutil.copyfile, ignore=shutil.ignore_patterns(OWNER_MARKER, LOCK_FILE))


def _is_site(out: Path) -> bool:
    return folder_kind(out) == "site" or (out / LEGACY_MARKER).is_file()


def _legacy_site(out: Path) -> list[str] | None:
    """The entries an older kit's build (its :data:`LEGACY_MARKER`, no ownership marker) wrote in
    ``out``, exactly: the page, ``site.json``, ``vendor/``, ``model/``, the gallery folders and the
    old marker. Anything else there is the user's and stays; ``None``: not such a build."""
    if not (out / LEGACY_MARKER).is_file():
        return None
    return [*PAGE_FILES, "site.json", "vendor", "model", *(Path(g).parent.name for g in GALLERIES.values()),
            LEGACY_MARKER]


def _check_site_folder(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise SiteFolderError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()) and not _is_site(out):
        raise SiteFolderError(
            f"{out}: exists, is not empty and is not a web view built by nsfwkit (no {MARKER}); "
            "refusing to replace it: choose a new or empty folder (default: dist/web/)")
    if not out.exists():  # fail before exporting a model when the folder cannot even be created
        try:
            out.mkdir(parents=True)
            out.rmdir()
        except OSError as exc:
            raise UnwritableFolderError(exc.errno, f"cannot write the output folder here ({exc.strerror or exc})",
                                        str(out)) from None


def build(
    out_dir: str | os.PathLike | None = None,
    *,
    model: str | os.PathLike = DEFAULT_MODEL,
    export_dir: str | os.PathLike | None = None,
    quantization: str = "float32",
    galleries_from: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    node_modules: str | os.PathLike | None = None,
) -> Path:
    """Build the web view into its own folder (replacing a previous build there, atomically).

    Args:
        out_dir: the site folder (default ``dist/web/``). It must be new, empty, or a previous
            build (holding :data:`MARKER` of kind ``site``, or :data:`LEGACY_MARKER`); anything
            else raises :class:`SiteFolderError`. Only the entries of the previous build are
            replaced; it is locked while built (:class:`~nsfwkit.fileio.FolderBusyError`).
        model: pretrained name or ``.keras`` file to export into the cache when ``export_dir``
            is not given.
        export_dir: an export folder (``nsfwkit export``) or a TF.js graph model folder to use.
        quantization: which of the export's ``tfjs/<q>`` models to ship (float32 by default,
            so the page's probabilities match Keras within 1e-5).
        galleries_from: a folder holding ``filters/`` and/or ``activation/`` (with
            ``manifest.json``) to copy into the site.
        run_dir: a pipeline run folder whose stages wrote visualisations (see
            :func:`find_galleries`); copied into the site. With neither, the site gets the
            galleries of ``dist/`` itself (``dist/filters/``, ``dist/activation/``: where
            ``nsfwkit visualize`` writes by default), else keeps those of the previous build.
        node_modules: where to vendor TF.js from (default: :func:`nsfwkit.paths.node_modules_dir`,
            the repository's or ``$NSFWKIT_NODE_MODULES``).

    Returns:
        the path of ``index.html``.

    Raises:
        SiteFolderError: ``out_dir`` is not a folder this function may replace.
        FileNotFoundError: no TF.js model in ``export_dir``, or node_modules lacks TF.js.
    """
    from . import fileio

    out = Path(out_dir) if out_dir is not None else site_dir()
    _check_site_folder(out)
    vendor = vendor_sources(node_modules)

    source = Path(export_dir) if export_dir is not None else default_export(model)
    model_dir = source if (source / "model.json").is_file() else source / "tfjs" / quantization
    if not (model_dir / "model.json").is_file():
        raise FileNotFoundError(f"{source}: no TF.js model (expected model.json or tfjs/{quantization}/)")

    sources = [p for p in (galleries_from, run_dir) if p is not None]
    if sources:
        found = find_galleries(*sources)
    else:
        found = _galleries_in(out) if _is_site(out) else {}
        found.update(_galleries_in(paths.dist_dir()))

    mode = fileio.public_mode()
    with fileio.replace_owned(out, "site", overwrite=True, legacy=_legacy_site) as stage:
        (stage / "vendor").mkdir()
        for name, src in vendor.items():
            shutil.copyfile(src, stage / "vendor" / name)
        _copy_tree(model_dir, stage / "model")
        galleries: dict[str, str] = {}
        for kind, folder in found.items():
            dest = stage / Path(GALLERIES[kind]).parent
            _copy_tree(folder, dest)
            galleries[kind] = GALLERIES[kind]
        for name in PAGE_FILES:
            shutil.copyfile(_web_dir() / name, stage / name)
        model_meta = json.loads((stage / "model" / "model.json").read_text(encoding="utf-8"))
        site: dict[str, Any] = {
            "built": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model": "model/model.json",
            "model_metadata": model_meta.get("userDefinedMetadata", {}).get("nsfwkit", {}),
            "galleries": galleries,
            "explanation_methods": list(ALL_METHODS),  # the page computes some, lists the rest as Python's
        }
        (stage / "site.json").write_text(json.dumps(site, indent=2) + "\n", encoding="utf-8")
        for folder, dirs, _ in os.walk(stage):
            for d in dirs:
                os.chmod(Path(folder) / d, mode)
    return out / "index.html"
