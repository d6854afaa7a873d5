"""Every shared fixture of the suite (pytest finds them here: no test module imports a fixture).

* ``default_model``: ``(model, spec)`` of the pretrained default, loaded once per process -- the
  one way tests get it;
* ``exported``: the default model exported once per test run, shared by all xdist workers;
* ``build_once``: the same for anything else built on disk once per run (the notebook smoke run);
* images: ``photo``, ``cat_image``, ``test_images``; ``rng``;
* tiny hand-set models for the ``viz`` tests: ``tiny_model``, ``branching_model``, ``nested_model``.

Plain helpers (model builders, the hostile HTTP server, ``require_*``) live in
``convert_helpers.py``, ``data_helpers.py`` and ``viz_helpers.py``, imported by name.

Parallel runs (``make test`` runs ``pytest -n auto --dist loadgroup``): tests that use a fixture
built once per run are grouped on one worker (``xdist_group``, added below from the fixtures they
use), and the build itself holds a file lock, so whichever worker asks first builds and the others
wait and reuse the result.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import traceback
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from convert_helpers import require_converter
from viz_helpers import build_branching_model, build_nested_model, build_tiny_model

#: fixture -> xdist group: every test using the fixture runs on the same worker, one build each.
_GROUPS = {"exported": "default_export", "smoke_run": "notebook_smoke_run"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the marks (--dist loadgroup)
def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        for fixture, group in _GROUPS.items():
            if fixture in item.fixturenames:
                item.add_marker(pytest.mark.xdist_group(group))


# ------------------------------------------------------------------------------------------
# Built once per test run, whatever the number of workers
# ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _file_lock(path: Path):
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_once(root: Path, name: str, build: Callable[[Path], object]) -> Path:
    """``root/name``, made by ``build(root/name)`` by the first caller; the others wait on the lock.

    Completion is a marker written after ``build`` returns; a failed build leaves its traceback in
    ``<name>.failed`` so that the waiting workers fail at once instead of building again.
    """
    target, done, failed = root / name, root / f"{name}.done", root / f"{name}.failed"
    with _file_lock(root / f"{name}.lock"):
        if failed.is_file():
            pytest.fail(f"building {name} failed in another worker:\n{failed.read_text()}", pytrace=False)
        if not done.is_file():
            shutil.rmtree(target, ignore_errors=True)   # a build killed half-way
            try:
                build(target)
            except BaseException:
                failed.write_text(traceback.format_exc())
                raise
            done.touch()
    return target


@pytest.fixture(scope="session")
def build_once(tmp_path_factory) -> Callable[[str, Callable[[Path], object]], Path]:
    """``build_once(name, build) -> Path``: a folder built once per test run and shared by the
    xdist workers (it lives in the run's temporary folder, one level above each worker's)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    root = root / "shared"
    root.mkdir(exist_ok=True)
    return lambda name, build: _build_once(root, name, build)


# ------------------------------------------------------------------------------------------
# The pretrained default model and its export
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def default_model():
    """``(model, spec)`` of the pretrained default, built from nsfwjs into the cache if needed."""
    from nsfwkit import zoo

    return zoo.load(zoo.DEFAULT_MODEL)


def _read_export(out_dir: Path):
    """The :class:`nsfwkit.convert.ExportResult` of an export folder, from its ``export.json``."""
    from nsfwkit import convert

    summary = json.loads((out_dir / "export.json").read_text(encoding="utf-8"))
    return convert.ExportResult(
        out_dir=out_dir, saved_model=out_dir / summary["saved_model"],
        tfjs={q: out_dir / p for q, p in summary["tfjs"].items()},
        nsfwjs={q: out_dir / p for q, p in summary["nsfwjs"].items()},
        sizes=summary["sizes"], seconds=summary["seconds"], precision=summary.get("precision", {}))


@pytest.fixture(scope="session")
def exported(default_model, build_once):
    """:class:`nsfwkit.convert.ExportResult` of the default model: SavedModel, tfjs/{float32,
    float16,uint8}, nsfwjs/float32 (made once per test run, ~25 s)."""
    require_converter()
    from nsfwkit import convert

    model, spec = default_model
    folder = build_once(f"export-{spec.name}", lambda dest: convert.export(
        model, dest, spec=spec, quantizations=("float32", "float16", "uint8"),
        nsfwjs_quantizations=("float32",)))
    return _read_export(folder)


# ------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def photo():
    """A safe RGB photo (scikit-image's cat), ``uint8`` (300, 451, 3)."""
    from nsfwkit import samples

    return samples.sample_images()["chelsea"]


@pytest.fixture(scope="session")
def _cat_224():
    from nsfwkit import images, samples

    return images.load_image(samples.default_image(), image_size=224)


@pytest.fixture
def cat_image(_cat_224):
    """The default sample image resized to 224, float32 0-255 (a copy per test)."""
    return _cat_224.copy()


@pytest.fixture(scope="session")
def test_images():
    """Raw RGB uint8 images of several sizes and kinds (photos, drawings, noise; down- and
    upscaled, non-square, exactly 224)."""
    from nsfwkit import samples

    imgs = samples.sample_images()
    rng = np.random.default_rng(5)
    out = {k: imgs[k] for k in ("astronaut", "chelsea", "coffee", "rocket", "camera", "blobs")}
    out["noise_61x37"] = rng.integers(0, 256, (61, 37, 3), dtype=np.uint8)   # upscaled
    out["gradient_224"] = imgs["gradient"][:224, :224]                        # no resize
    out["checker_500x333"] = samples.synthetic_image("checkerboard", image_size=500)[:333]
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ------------------------------------------------------------------------------------------
# Tiny models for the viz tests (hand-set weights: see viz_helpers.py)
# ------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_model():
    return build_tiny_model()


@pytest.fixture
def branching_model():
    return build_branching_model()


@pytest.fixture
def nested_model():
    return build_nested_model()
