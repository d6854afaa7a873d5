"""The README's LiteRT and onnxruntime examples, executed exactly as printed.

Each block follows a ``<!-- readme-test: NAME -->`` line in README.md. It runs in a fresh Python
process in a folder holding what its printed relative paths name: ``dist/export`` (an export of
the tiny runtime model made here) and ``photo.jpg``, 48x40, so the printed resize to the model's
32x32 input really runs. Its printed top class and NSFW score are compared with Keras on the same
PIL-resized pixels, so a README edit that breaks the snippet, or makes it feed the model wrongly,
fails here. The LiteRT block's claim that the same code runs ``tflite/int8`` (uint8 input) is run
too, with only the folder changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime_helpers import build_runtime_model, require, runtime_spec

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"<!-- readme-test: (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)\n```", re.S)
_PRINTED = re.compile(r"^(?P<top>\w+) nsfw=(?P<nsfw>[0-9.]+) (?P<verdict>SFW|NSFW)$")


def _blocks() -> dict[str, str]:
    return {m["name"]: m["code"] + "\n" for m in _BLOCK.finditer(README.read_text(encoding="utf-8"))}


def test_the_readme_has_one_example_per_runtime():
    blocks = _blocks()
    assert sorted(blocks) == ["litert", "onnxruntime"]
    assert "from ai_edge_litert.interpreter import Interpreter" in blocks["litert"]
    assert "import onnxruntime" in blocks["onnxruntime"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """``dist/export`` (tflite float32 + int8, onnx float32 of the tiny model) and a 48x40
    ``photo.jpg``; the Keras model and spec for the expected answer."""
    require("ai_edge_litert", "onnxruntime", "tf2onnx", "onnx")
    from PIL import Image

    from nsfwkit import convert, samples

    root = tmp_path_factory.mktemp("readme")
    model, spec = build_runtime_model(), runtime_spec()
    convert.export(model, root / "dist" / "export", spec=spec, formats="tflite,onnx",
                   quantizations={"tflite": ["none", "int8"], "onnx": ["none"]}, progress=False)
    Image.fromarray(samples.sample_images()["coffee"]).resize((48, 40)).save(root / "photo.jpg")
    return root, model, spec


_FLOAT32_FOLDER = '"dist/export/tflite/float32"'


@pytest.mark.parametrize("name,variant,bar", [("litert", None, 1e-5), ("onnxruntime", None, 1e-5),
                                              ("litert", '"dist/export/tflite/int8"', 2e-2)])
def test_readme_example_runs_as_printed_and_matches_keras(name, variant, bar, workdir):
    from PIL import Image

    root, model, spec = workdir
    code = _blocks()[name]
    if variant:   # "or tflite/int8: the same code feeds its uint8 input"
        assert "or tflite/int8: the same code" in code and code.count(_FLOAT32_FOLDER) == 1
        code = code.replace(_FLOAT32_FOLDER, variant)
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = _PRINTED.match(proc.stdout.strip().splitlines()[-1])
    assert printed, proc.stdout
    photo = Image.open(root / "photo.jpg").convert("RGB")
    assert photo.size == (48, 40) != (spec.image_size, spec.image_size)   # the README's resize runs
    pixels = np.asarray(photo.resize((spec.image_size,) * 2, Image.BILINEAR), np.float32)[None]
    probs = model.predict(pixels, verbose=0)[0]
    nsfw = float(probs[list(spec.nsfw_indices)].sum())
    assert abs(float(printed["nsfw"]) - nsfw) <= bar
    if variant is None or abs(nsfw - spec.threshold) > bar:
        assert printed["verdict"] == ("NSFW" if nsfw >= spec.threshold else "SFW")
    if variant is None or np.sort(probs)[-1] - np.sort(probs)[-2] > 2 * bar:
        assert printed["top"] == spec.class_names[int(probs.argmax())]
