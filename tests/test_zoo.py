"""The offline pretrained models: faithful import, the raw-RGB contract, safe loading."""

from __future__ import annotations

import numpy as np
import pytest

from nsfwkit import zoo
from nsfwkit.spec import NSFWJS_CLASSES, ModelSpec, spec_path_for


def test_default_model_contract(default_model):
    import keras

    model, spec = default_model
    assert spec.class_names == NSFWJS_CLASSES and spec.image_size == 224
    assert spec.nsfw_classes == ("Hentai", "Porn", "Sexy") and spec.nsfw_indices == (1, 3, 4)
    assert model.inputs[0].name == "image" and tuple(model.inputs[0].shape) == (None, 224, 224, 3)
    # the scaling lives in the model, right after the input, and the graph is flat
    rescale = model.get_layer("rescale_0_255")
    assert isinstance(rescale, keras.layers.Rescaling) and rescale.scale == pytest.approx(1 / 255)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert model.get_layer(spec.last_conv_layer).output.shape[1:3] == (7, 7)


def test_predictions_are_probabilities(default_model, photo):
    from nsfwkit.images import resize

    model, spec = default_model
    x = np.stack([resize(photo, 224), np.full((224, 224, 3), 255.0, np.float32)])
    p = model.predict(x, verbose=0)
    assert p.shape == (2, 5)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert spec.class_names[int(p[0].argmax())] == "Neutral"  # a cat photo
    assert spec.class_names[int(p[1].argmax())] == "Drawing"  # a blank page drifts to Drawing


def test_dequantize_like_tfjs():
    specs = [
        {"name": "a/kernel", "shape": [2, 2], "dtype": "float32",
         "quantization": {"dtype": "uint8", "min": -1.0, "scale": 0.5}},
        {"name": "b/bias", "shape": [2], "dtype": "float32"},
    ]
    data = bytes([0, 1, 2, 255]) + np.array([1.5, -2.0], "<f4").tobytes()
    out = zoo._dequantize(specs, data)
    np.testing.assert_array_equal(out["a/kernel"], np.array([[-1.0, -0.5], [0.0, 126.5]], np.float32))
    np.testing.assert_array_equal(out["b/bias"], [1.5, -2.0])
    with pytest.raises(ValueError, match="unused"):
        zoo._dequantize(specs, data + b"\0")


def test_cache_is_current_and_build_is_idempotent(capsys):
    paths = zoo.build(["mobilenet_v2"])
    assert "up to date" in capsys.readouterr().out
    spec = ModelSpec.load(spec_path_for(paths["mobilenet_v2"]))
    assert spec.source == f"npm:nsfwjs@{zoo.NSFWJS_VERSION}/dist/models/mobilenet_v2"
    assert len(spec.extra["weights_sha256"]) == 64


def test_load_file_with_spec_and_safe_mode(tmp_path, default_model):
    import keras

    model, spec = default_model
    path = tmp_path / "mine.keras"
    model.save(path)
    spec.replace(name="mine", threshold=0.3).save(spec_path_for(path))
    loaded, loaded_spec = zoo.load(path)
    assert loaded_spec.name == "mine" and loaded_spec.threshold == 0.3

    # a model with a Lambda layer (arbitrary code) is refused unless the caller opts out
    inp = keras.Input((8, 8, 3), name="image")
    doubled = keras.layers.Lambda(lambda t: t * 2)(inp)
    risky = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(doubled)))
    risky_path = tmp_path / "risky.keras"
    risky.save(risky_path)
    with pytest.raises(ValueError, match="safe mode"):
        zoo.load(risky_path)
    assert zoo.load(risky_path, safe_mode=False)[1].image_size > 0


def test_unknown_names_are_clear(tmp_path):
    with pytest.raises(zoo.ModelNotFoundError, match="mobilenet_v2"):
        zoo.load("resnet_nsfw")
    (tmp_path / "m.onnx").write_text("x")
    with pytest.raises(zoo.ModelNotFoundError, match=".keras or .h5"):
        zoo.load(tmp_path / "m.onnx")
    with pytest.raises(zoo.ModelNotFoundError, match="unknown application"):
        zoo.keras_application("NotANet")


@pytest.mark.parametrize("mode,module", [("caffe", "vgg16"), ("tf", "mobilenet_v2"), ("torch", "densenet")])
def test_application_preprocessing_matches_keras(mode, module, rng):
    import keras

    x = rng.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    inp = keras.Input((8, 8, 3))
    y = inp
    for layer in zoo.preprocessing_layers(mode):
        y = layer(y)
    ours = keras.Model(inp, y).predict(x, verbose=0)
    expected = getattr(keras.applications, module).preprocess_input(x.copy())
    np.testing.assert_allclose(ours, expected, atol=1e-3)


def test_keras_application_takes_raw_rgb_offline():
    model, spec = zoo.keras_application("MobileNetV2", weights=None, include_top=False, image_size=96)
    assert model.inputs[0].name == "image" and spec.image_size == 96
    assert model.outputs[0].shape[-1] == 1280
    assert model.get_layer("preprocess_tf") is not None


def test_foreign_model_expecting_unit_pixels(tmp_path, default_model, photo):
    """A model file that wants pixels/255 (like GantMan's .h5) is wrapped, not mutated."""
    import keras

    from nsfwkit.images import resize

    model, _ = default_model
    inner = keras.Model(model.get_layer("rescale_0_255").output, model.output)  # expects 0-1
    path = tmp_path / "unit.keras"
    inner.save(path)
    with pytest.warns(UserWarning, match="input_scale"):
        zoo.load(path)
    wrapped, spec = zoo.load(path, input_scale=1 / 255)
    x = resize(photo, 224)[None]
    np.testing.assert_allclose(wrapped.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert spec.input_name == "image" and wrapped.inputs[0].name == "image"


def test_bundle_with_code_carrying_layers_is_refused():
    config = {"layers": [{"class_name": "InputLayer"}, {"class_name": "Lambda"}, {"class_name": "Dense"}]}
    with pytest.raises(ValueError, match="Lambda"):
        zoo._check_layer_classes(config, origin="bundle")


def test_broken_model_files_are_named(tmp_path):
    for name, content in (("fake.keras", b"not a zip"), ("fake.h5", b"\x89HDF\r\n\x1a\n broken")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=name):
            zoo.load(path)


def test_any_keras_application_gets_its_preprocessing():
    assert zoo._application_mode(__import__("keras").applications.ResNet101) == "caffe"
    assert zoo._application_mode(__import__("keras").applications.EfficientNetB3) == "none"
    assert zoo._default_size("EfficientNetB3") == 300
    model, spec = zoo.keras_application("NASNetMobile", weights=None, include_top=False, image_size=64)
    assert model.get_layer("preprocess_tf") is not None and spec.image_size == 64


# --------------------------------------------------------------------------------------------
# Finding 8 (issue 9): a model of the wrong shape or a corrupt file says what is wrong, at load
# --------------------------------------------------------------------------------------------
def _classifier(shape=(8, 8, 3), classes=5, *, name="image"):
    import keras

    inp = keras.Input(shape, name=name)
    out = keras.layers.Dense(classes, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    return keras.Model(inp, out)


def _two_inputs():
    import keras

    a, b = keras.Input((8, 8, 3), name="image"), keras.Input((4,), name="extra")
    x = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(a), b])
    return keras.Model([a, b], keras.layers.Dense(5, activation="softmax")(x))


def _two_outputs():
    import keras

    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(inp)
    return keras.Model(inp, [keras.layers.Dense(5)(x), keras.layers.Dense(2)(x)])


def _map_output():
    import keras

    inp = keras.Input((8, 8, 3), name="image")
    return keras.Model(inp, keras.layers.Conv2D(5, 1, activation="softmax")(inp))  # (None, 8, 8, 5)


WRONG_MODELS = {
    "one_channel": (lambda: _classifier((8, 8, 1)), r"shape \(None, 8, 8, 1\); expected \(None, H, W, 3\)"),
    "two_inputs": (_two_inputs, r"has 2 inputs .*exactly one image input"),
    "two_outputs": (_two_outputs, r"has 2 outputs .*exactly one"),
    "map_output": (_map_output, r"output has shape \(None, 8, 8, 5\); expected \(None, classes\)"),
    "not_square": (lambda: _classifier((8, 6, 3)), r"8x6; the kit feeds square images"),
}


@pytest.mark.parametrize("kind", list(WRONG_MODELS))
def test_wrong_shaped_model_file_says_what_is_wrong(tmp_path, kind):
    build, message = WRONG_MODELS[kind]
    path = tmp_path / f"{kind}.keras"
    build().save(path)
    with pytest.raises(zoo.InvalidModelError, match=message) as info:
        zoo.load(path)
    assert str(info.value).startswith(f"{path}: ")
    # the same check guards a caller's model handed straight to the kit
    with pytest.raises(zoo.InvalidModelError, match=message):
        zoo.check_classifier(build())


def test_spec_whose_classes_differ_from_the_output_is_refused(tmp_path):
    path = tmp_path / "three.keras"
    _classifier(classes=3).save(path)
    ModelSpec(name="three", class_names=NSFWJS_CLASSES, image_size=8).save(spec_path_for(path))
    with pytest.raises(zoo.InvalidModelError, match="outputs 3 classes but its spec lists 5"):
        zoo.load(path)
    ModelSpec(name="three", class_names=("a", "b", "c"), image_size=16).save(spec_path_for(path))
    with pytest.raises(zoo.InvalidModelError, match="input is 8x8 but its spec says image_size 16"):
        zoo.load(path)
    spec_path_for(path).write_text("{not json")
    with pytest.raises(zoo.InvalidModelError, match=r"three.spec.json: not a valid model spec"):
        zoo.load(path)
    ModelSpec(name="three", class_names=("a", "b", "c"), image_size=8).save(spec_path_for(path))
    model, spec = zoo.load(path)
    assert spec.class_names == ("a", "b", "c") and model.outputs[0].shape[-1] == 3


def test_corrupt_or_empty_model_files_are_reported_as_corrupt(tmp_path):
    import zipfile

    good = tmp_path / "good.keras"
    _classifier().save(good)
    data = good.read_bytes()
    files = {"empty.keras": b"", "truncated.keras": data[: len(data) // 2], "junk.keras": b"not a zip",
             "empty.h5": b"", "junk.h5": b"GIF89a not hdf5"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    with zipfile.ZipFile(tmp_path / "noconfig.keras", "w") as archive:
        archive.writestr("notes.txt", "hello")
    reasons = {"empty.keras": "empty", "truncated.keras": "not a zip archive", "junk.keras": "not a zip archive",
               "empty.h5": "empty", "junk.h5": "no HDF5 signature", "noconfig.keras": "no config.json"}
    for name, reason in reasons.items():
        with pytest.raises(zoo.InvalidModelError) as info:
            zoo.load(tmp_path / name)
        message = str(info.value)
        assert message.startswith(f"{tmp_path / name}: not a valid Keras model file: ") and reason in message
        assert "not found" not in message.lower()
    assert zoo.load(good)[0].outputs[0].shape[-1] == 5
