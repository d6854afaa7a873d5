"""Shared fixtures: the default model (loaded once), and generated image files of every awkward kind."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


@pytest.fixture(scope="session")
def default_model():
    """``(model, spec)`` of the pretrained default, built from nsfwjs into the cache if needed."""
    from nsfwkit import zoo

    return zoo.load("mobilenet_v2")


@pytest.fixture(scope="session")
def photo():
    """A safe RGB photo (scikit-image's cat), ``uint8`` (300, 451, 3)."""
    from nsfwkit import samples

    return samples.sample_images()["chelsea"]


@pytest.fixture
def rng():
    return np.random.default_rng(0)
