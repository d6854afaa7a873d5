"""The imported models match nsfwjs itself, run for real in Node (wasm backend)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from nsfwkit import parity, samples, zoo

pytestmark = [pytest.mark.node, pytest.mark.slow]


@pytest.fixture(scope="module")
def images():
    if not shutil.which("node"):
        pytest.fail("Node.js is required for the nsfwjs parity test (apt-get install nodejs)")
    imgs = samples.sample_images()
    rng = np.random.default_rng(7)
    picked = {k: imgs[k] for k in ("astronaut", "chelsea", "coffee", "rocket", "camera", "blobs")}
    picked["noise_97x413"] = rng.integers(0, 256, (97, 413, 3), dtype=np.uint8)  # odd sizes, upscaled
    picked["exact_224"] = imgs["hubble_deep_field"][:224, :224]  # no resize at all
    return picked


@pytest.mark.parametrize("name", ["mobilenet_v2", "inception_v3"])
def test_keras_import_matches_nsfwjs(name, images, default_model):
    model, spec = default_model if name == "mobilenet_v2" else zoo.load(name)
    result = parity.compare_with_nsfwjs(model, spec, images)
    assert result["max_abs_diff"] <= 1e-4, result["per_image"]
    assert result["top1_agree"]
    # sanity: the comparison has teeth (the probabilities are not all trivially equal)
    assert np.ptp(result["keras"][:, 2]) > 0.05
