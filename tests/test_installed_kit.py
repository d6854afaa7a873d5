"""An installed kit (not a checkout) runs its own Node checks: the scripts in ``nsfwkit/js/`` are
package data, and they import the npm packages from ``$NSFWKIT_NODE_MODULES`` (ES modules ignore
``NODE_PATH``, and a script in site-packages cannot find the repository's node_modules by walking
up)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from nsfwkit import convert, parity, paths

from convert_helpers import require_node

pytestmark = [pytest.mark.node, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent

#: Runs in the installed copy, in a folder outside the repository: the Node side of two parity
#: checks (nsfwjs's own model; our float32 TF.js export), answered as JSON.
_CHILD = """
import json, sys
import numpy as np
import nsfwkit
from nsfwkit import convert, parity, paths
request = json.loads(open(sys.argv[1]).read())
images = {name: np.load(file) for name, file in request["images"].items()}
nsfwjs = parity.run_nsfwjs(images)
tfjs = convert.tfjs_probabilities(request["model_dir"], list(images.values()))
print(json.dumps({"nsfwkit": nsfwkit.__file__, "repo_root": str(paths.repo_root()),
                  "nsfwjs": [r["probs"] for r in nsfwjs["results"]], "tfjs": tfjs["probs"].tolist()}))
"""


def _install(site: Path) -> Path:
    """Lay out what a wheel of nsfwkit holds under ``site`` (as ``pip install --target`` would):
    the package's ``.py`` files and the files matched by pyproject.toml's package-data globs.

    Returns:
        the installed package folder.
    """
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["nsfwkit"]
    source = REPO / "nsfwkit"
    files = {p for p in source.rglob("*.py") if "__pycache__" not in p.parts}
    for pattern in globs:
        files.update(p for p in source.glob(pattern) if p.is_file())
    for file in files:
        dest = site / "nsfwkit" / file.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, dest)
    return site / "nsfwkit"


def test_installed_kit_runs_its_parity_checks_outside_the_repository(
        exported, default_model, test_images, tmp_path):
    require_node()
    model, spec = default_model
    package = _install(tmp_path / "site")
    assert sorted(p.name for p in (package / "js").iterdir()) == sorted(
        p.name for p in (REPO / "nsfwkit" / "js").iterdir() if p.suffix == ".mjs")
    elsewhere = tmp_path / "elsewhere"          # no notebooks/, no node_modules/ here
    elsewhere.mkdir()
    picked = {k: test_images[k] for k in ("chelsea", "rocket", "noise_61x37")}
    files = {}
    for name, img in picked.items():
        files[name] = str(elsewhere / f"{name}.npy")
        np.save(files[name], img)
    (elsewhere / "request.json").write_text(json.dumps(
        {"images": files, "model_dir": str(exported.tfjs["float32"])}))
    env = dict(os.environ, PYTHONPATH=str(package.parent),
               NSFWKIT_NODE_MODULES=str(paths.node_modules_dir().resolve()))
    proc = subprocess.run([sys.executable, "-c", _CHILD, "request.json"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    # it really ran the installed copy, not the checkout
    assert Path(answer["nsfwkit"]).resolve() == (package / "__init__.py").resolve()
    assert Path(answer["repo_root"]).resolve() == elsewhere.resolve()
    # ... and both Node checks agree with Keras, at the bars of the in-repository tests
    keras_probs = convert.keras_probabilities(model, list(picked.values()))
    nsfwjs_probs = np.array([[r[c] for c in spec.class_names] for r in answer["nsfwjs"]])
    assert np.abs(nsfwjs_probs - keras_probs).max() <= 1e-4
    report = convert.compare(keras_probs, np.array(answer["tfjs"]), quantization="float32")
    assert report.passed, report.summary()
    assert np.ptp(keras_probs[:, spec.class_names.index("Neutral")]) > 0.05   # the check has teeth


def test_missing_node_modules_is_one_error_type_naming_the_folder(monkeypatch, tmp_path):
    """convert's and parity's Node runs fail the same way, before starting Node."""
    require_node()
    monkeypatch.setenv("NSFWKIT_NODE_MODULES", str(tmp_path / "nowhere"))
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(convert.NodeMissingError, match="nowhere.*tfjs-backend-wasm.*NSFWKIT_NODE_MODULES"):
        parity.run_nsfwjs({"black": image})
    with pytest.raises(convert.NodeMissingError, match="nowhere"):
        convert.tfjs_probabilities(tmp_path, [image])
    # a folder with TF.js but without nsfwjs: the nsfwjs runs name the missing package
    (tmp_path / "partial" / "@tensorflow" / "tfjs-backend-wasm").mkdir(parents=True)
    monkeypatch.setenv("NSFWKIT_NODE_MODULES", str(tmp_path / "partial"))
    with pytest.raises(convert.NodeMissingError, match="partial: nsfwjs missing"):
        parity.run_nsfwjs({"black": image})
