"""The LayerBrowser: driven by setting widget values; the picture must follow."""

from __future__ import annotations

import numpy as np
import pytest


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
    from nsfwkit.viz.pixels import png_bytes

    browser.channel.value = 2
    maps = activations.activations(browser.model, browser._pixels("noise"), layers=["mixed"]).layers["mixed"][0]
    assert bytes(browser.view.value) == png_bytes(activations.channel_image(maps[..., 2], min_side=224))


# -- the research controls ----------------------------------------------------------------------
def test_method_and_class_pickers_drive_the_cam(browser):
    from nsfwkit.viz import cam

    assert browser.cam_class.value == -1 and [v for _, v in browser.cam_class.options] == [-1, 0, 1, 2]
    browser.mode.value = "cam"
    predicted = bytes(browser.view.value)
    assert "(predicted)" in browser.info.value
    chosen = [i for i in range(3) if f"class {i} " not in browser.info.value][0]
    browser.cam_class.value = chosen
    assert f"for class {chosen} " in browser.info.value and "(predicted)" not in browser.info.value
    expected = cam.compute_cam(browser.model, browser._pixels("noise"), layer="mixed", class_index=chosen,
                               max_channels=64)
    from nsfwkit.viz.pixels import overlay, png_bytes

    assert bytes(browser.view.value) == png_bytes(overlay(browser._pixels("noise"), expected.maps[0]))
    assert bytes(browser.view.value) != predicted
    browser.method.value = "score_cam"
    assert "score_cam at mixed" in browser.info.value


def test_the_method_picker_offers_every_attribution(browser):
    from nsfwkit.viz import attributions
    from nsfwkit.viz.pixels import overlay, png_bytes

    assert tuple(browser.method.options) == attributions.ALL_METHODS  # one list: new methods appear by themselves
    browser.mode.value, browser.method.value = "cam", "gradients"
    assert "gradients at the input pixels" in browser.info.value
    expected = attributions.gradients(browser.model, browser._pixels("noise"))
    assert bytes(browser.view.value) == png_bytes(overlay(browser._pixels("noise"), expected[0]))
    browser.method.value = "layer_cam"
    assert "layer_cam at mixed" in browser.info.value
    expected = attributions.layer_cam(browser.model, browser._pixels("noise"), layer="mixed")
    assert bytes(browser.view.value) == png_bytes(overlay(browser._pixels("noise"), expected[0]))


def test_side_by_side_panels(browser):
    from nsfwkit.viz import activations
    from nsfwkit.viz.pixels import normalize_channel, overlay, png_bytes

    assert set(browser.panels) == {"image", "activation", "filter", "examples"}
    for panel in browser.panels.values():
        assert bytes(panel.value).startswith(b"\x89PNG")
    maps = activations.activations(browser.model, browser._pixels("noise"), layers=["mixed"]).layers["mixed"][0]
    first = int(activations.most_active_channels(maps, count=1)[0])
    assert browser.channel.value == first  # it starts on the channel most active for the image
    assert bytes(browser.panels["activation"].value) == png_bytes(
        overlay(browser._pixels("noise"), normalize_channel(maps[..., first])))
    browser.channel.value = 0
    before = {name: bytes(p.value) for name, p in browser.panels.items()}
    browser.channel.value = 4  # alive (channels 0 and 3 start dead: their filter stays the start image)
    changed = {name for name, p in browser.panels.items() if bytes(p.value) != before[name]}
    assert changed == {"activation", "filter", "examples"}  # the input image stays
    assert "filter 4" in browser.captions["filter"].value
    assert browser.status.value == "ready"


def test_dataset_examples_come_from_viz_and_are_blurred(branching_model, tmp_path):
    from PIL import Image

    from nsfwkit.viz import activations
    from nsfwkit.widgets import LayerBrowser

    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"ex{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    images = {"noise": rng.uniform(0, 255, (16, 16, 3)).astype(np.float32)}
    blurred = LayerBrowser(branching_model, images=images, examples=tmp_path, examples_count=3, steps=2,
                           show=("examples",))
    caption = blurred.captions["examples"].value
    assert "of 5" in caption and "1 unreadable skipped" in caption and "blurred" in caption
    found = blurred._example_set()
    top = activations.top_activating_examples(branching_model, found.images, layer="mixed",
                                              channel=blurred.channel.value, count=3)
    assert "sample" not in caption
    assert caption.index(found.names[top.indices[0]]) < caption.index(found.names[top.indices[1]])
    clear = LayerBrowser(branching_model, images=images, examples=tmp_path, examples_count=3, steps=2,
                         show=("examples",), redact=False)
    assert bytes(clear.panels["examples"].value) != bytes(blurred.panels["examples"].value)
    assert "blurred" not in clear.captions["examples"].value
    # a prepared manifest (paths relative to it) works the same
    (tmp_path / "manifest.csv").write_text("path,class,split\n" + "".join(f"ex{i}.png,a,train\n" for i in range(5)))
    listed = LayerBrowser(branching_model, images=images, examples=tmp_path / "manifest.csv", examples_count=3,
                          steps=2, show=("examples",))
    assert listed.captions["examples"].value.split(":")[-1] == caption.split(":")[-1]


def test_most_active_channel_buttons_jump(browser):
    from nsfwkit.viz import activations

    maps = activations.activations(browser.model, browser._pixels("noise"), layers=["mixed"]).layers["mixed"][0]
    top = activations.most_active_channels(maps, count=8).tolist()
    assert [b.description for b in browser.channel_buttons[:6]] == [str(c) for c in top]
    assert all(b.layout.display == "none" for b in browser.channel_buttons[6:])  # mixed has 6 channels
    browser.channel_buttons[2].click()
    assert browser.channel.value == top[2] and browser.channel_buttons[2].button_style == "info"


def _two_conv_model():
    """Input (4, 4, 3) -> "conv" (keeps x0, x1) -> identity "conv2" -> GAP -> Dense(TINY_W): the class-1 logit
    is -2 mean(x0) + mean(x1) + b, so its Grad-CAM at either conv is relu(-2 x0 + x1) up to scale."""
    import keras

    from viz_helpers import TINY_B, TINY_W

    inputs = keras.Input((4, 4, 3), name="image")
    convs = [keras.layers.Conv2D(2, 1, use_bias=False, name=n) for n in ("conv", "conv2")]
    x = convs[1](convs[0](inputs))
    dense = keras.layers.Dense(2, activation="softmax", name="dense")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(x)), name="two_conv")
    convs[0].set_weights([np.eye(3, 2, dtype=np.float32).reshape(1, 1, 3, 2)])
    convs[1].set_weights([np.eye(2, dtype=np.float32).reshape(1, 1, 2, 2)])
    dense.set_weights([TINY_W, TINY_B])
    return model


def test_near_empty_cam_says_why():
    from nsfwkit.widgets import LayerBrowser

    x = np.zeros((4, 4, 3), np.float32)
    x[..., 0] = 100.0  # -2 x0 + x1 < 0 everywhere: class 1 has no positive evidence, the map is empty
    browser = LayerBrowser(_two_conv_model(), images={"flat": x}, layers=["conv", "conv2"], steps=1, show=())
    browser.mode.value, browser.cam_class.value, browser.layer.value = "cam", 1, "conv"
    assert "near-empty map</b> (0.0% of it above half its peak): the class gradient barely reaches conv; " \
           "try the last conv layer, conv2" in browser.info.value
    browser.layer.value = "conv2"
    assert "little evidence for 1" in browser.info.value
    browser.cam_class.value = 0  # x0 + 0.5 x1 > 0 everywhere: a full map, no note
    assert "near-empty" not in browser.info.value


def test_heavy_work_in_the_background_newest_request_wins(branching_model, monkeypatch):
    import threading

    from nsfwkit.viz import filters
    from nsfwkit.viz.pixels import png_bytes
    from nsfwkit.widgets import LayerBrowser

    images = {"noise": np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype(np.float32)}
    browser = LayerBrowser(branching_model, images=images, steps=2, show=("filter",), background=True)
    browser.wait(60)
    a, b = [c for c in range(6) if c != browser.channel.value][:2]  # two channels not computed yet
    entered, release, real = threading.Event(), threading.Event(), filters.maximize_filters
    calls = []

    def slow(*args, **kwargs):
        calls.append(kwargs["filters"])
        entered.set()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(filters, "maximize_filters", slow)
    browser.channel.value = a  # the filter panel's job for channel a starts and blocks
    assert entered.wait(60)
    browser.mode.value = "filter"  # newer: the focus view wants filter a as well
    shown = []  # what the focus view displays from now on
    browser.view.observe(lambda change: shown.append(change["new"]), names="value")
    browser.channel.value = b  # newest
    assert "computing" in browser.status.value and "nsfwkit-stale" in browser.view._dom_classes
    assert browser.layer.value == "mixed"  # the controls answer meanwhile
    release.set()
    browser.wait(120)
    assert browser.status.value == "ready" and "nsfwkit-stale" not in browser.view._dom_classes
    assert f"mixed filter {b}" in browser.info.value and f"filter {b}" in browser.captions["filter"].value
    expected = real(branching_model, "mixed", filters=[b], recipe="classic", steps=2, seed=0, progress=False)
    assert bytes(browser.view.value) == png_bytes(expected.images[0])
    assert ("filter", "mixed", a) in browser._cache  # the stale result is kept, never shown
    assert [bytes(v) for v in shown] == [png_bytes(expected.images[0])]
    assert calls[0] == [a] and [b] in calls and calls.count([a]) == 1  # queued stale work was skipped
    browser.close()
