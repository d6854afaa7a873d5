"""The LayerBrowser: driven by setting widget values; the picture must follow."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ipywidgets")


@pytest.fixture
def browser(branching_model):
    from nsfwkit.widgets import LayerBrowser

    rng = np.random.default_rng(0)
    images = {"noise": rng.uniform(0, 255, (16, 16, 3)).astype(np.float32),
              "ramp": np.linspace(0, 255, 16 * 32 * 3).reshape(16, 32, 3).astype(np.float32)}
    return LayerBrowser(branching_model, images=images, steps=3)


def test_controls_drive_the_picture(browser):
    assert set(browser.layer.options) == {"stem", "branch_1x1", "branch_3x3a", "branch_3x3b", "mixed"}
    assert browser.layer.value == "mixed" and browser.mode.value == "activation"
    assert browser.channel.max == 5  # mixed has 6 channels
    seen = [bytes(browser.view.value)]
    assert seen[0].startswith(b"\x89PNG")

    browser.channel.value = 4
    seen.append(bytes(browser.view.value))
    assert "channel 4" in browser.info.value

    browser.image.value = "ramp"
    seen.append(bytes(browser.view.value))
    assert "on ramp" in browser.info.value

    browser.mode.value = "cam"
    seen.append(bytes(browser.view.value))
    assert "grad_cam at mixed" in browser.info.value

    browser.mode.value = "filter"
    seen.append(bytes(browser.view.value))
    assert "mixed filter 4" in browser.info.value

    browser.layer.value = "branch_3x3a"  # 2 channels: the slider follows and clamps
    assert browser.channel.max == 1 and browser.channel.value == 1
    seen.append(bytes(browser.view.value))
    assert "branch_3x3a filter 1" in browser.info.value

    for before, after in zip(seen, seen[1:]):
        assert before != after


def test_picture_comes_from_viz(browser):
    from nsfwkit.viz import activations
    from nsfwkit.viz.plot import png_bytes

    browser.channel.value = 2
    maps = activations.activations(browser.model, browser._pixels("noise"), layers=["mixed"]).layers["mixed"][0]
    assert bytes(browser.view.value) == png_bytes(activations.channel_image(maps[..., 2], min_side=224))
