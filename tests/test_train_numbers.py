"""A fine-tune that can be trusted: the backbone in inference mode, built-frozen layers frozen,
the head started at the linear probe, the temperature folded into the saved model."""

from __future__ import annotations

import numpy as np
import pytest

from nsfwkit import data, evaluate, images, train, zoo
from nsfwkit.spec import ModelSpec, spec_path_for

from data_helpers import tiny_backbone, tiny_dataset


@pytest.fixture(scope="module")
def two_class(tmp_path_factory):
    """A prepared two-class set of 32x32 textures (line art vs dots: a linear probe on the tiny
    backbone separates them, the old head-phase defaults did not) and a tiny backbone with a Dropout(0.5) before
    its penultimate features (as nsfwjs's models have)."""
    base = tmp_path_factory.mktemp("numbers")
    root = tiny_dataset(base / "ds", classes=("drawings", "sexy"), per_class=40, size=32)
    data.prepare(root, progress=False).write(base / "01")
    return base / "01" / "manifest.csv", tiny_backbone(base / "bb", image_size=32, dropout=0.5)


def _config(backbone, **kw):
    cfg = dict(backbone=str(backbone), batch_size=8, checkpoint_every=1000)
    cfg.update(kw)
    return cfg


def _images(manifest, split):
    paths, labels, _ = data.manifest_arrays(manifest, split)
    return np.stack([images.load_image(p, image_size=32) for p in paths]), labels


def _probe_probs(features, labels, f, *, class_weighting: bool):
    weights = data.class_weights(labels, 2)[labels] if class_weighting else None
    kernel, bias = evaluate.fit_linear_probe(features, labels, num_classes=2, sample_weight=weights)
    logits = np.asarray(f, np.float64) @ kernel + bias
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _nll(p, y):
    return float(np.mean(-np.log(np.asarray(p, np.float64)[np.arange(len(y)), y])))


def test_backbone_dropout_never_fires_in_either_phase(two_class, tmp_path):
    import keras

    manifest, backbone = two_class
    # lr 0 and no regularisers: each epoch's mean training loss must be the plain (inference)
    # loss of the starting model (the head at the linear probe) on the training images -- if
    # the backbone's Dropout(0.5) fired in the head phase (features) or in fine-tuning
    # (images), it would not be
    cfg = _config(backbone, epochs_head=1, epochs_finetune=1, lr_head=0.0, lr_finetune=0.0, unfreeze=10,
                  label_smoothing=0.0, class_weighting=False, augment=False, calibrate=False, patience=0)
    model, _, _ = train.build_classifier(train.TrainConfig(**cfg), ("drawings", "sexy"))
    x, y = _images(manifest, "train")
    features, head = train.classifier_parts(model)
    f = features(x, training=False)
    model.get_layer("predictions").set_weights(evaluate.fit_linear_probe(f, y, num_classes=2))
    expected = _nll(model(x, training=False), y)
    np.testing.assert_allclose(head(f), model(x, training=False), rtol=1e-6)
    fired = _nll(model(x, training=True), y)  # what the old training step computed
    assert abs(fired - expected) > 0.05 * expected, (fired, expected)
    result = train.train(manifest, tmp_path / "out", cfg, verbose=False)
    assert [h["phase"] for h in result.history] == ["head", "finetune"]
    for h in result.history:
        assert h["loss"] == pytest.approx(expected, rel=1e-4), h
    saved = keras.saving.load_model(result.model_path)
    np.testing.assert_allclose(saved.predict(x, verbose=0), _probe_probs(f, y, f, class_weighting=False),
                               rtol=1e-4, atol=1e-5)


def test_keras_backbone_keeps_its_preprocessing_bit_identical(two_class, tmp_path):
    import keras

    manifest, _ = two_class
    cfg = _config("keras:VGG16", weights=None, image_size=32, epochs_head=1, epochs_finetune=1,
                  unfreeze=1000, lr_finetune=1e-3, steps_per_epoch=1, batch_size=4)
    model, _, base_layers = train.build_classifier(train.TrainConfig(**cfg), ("drawings", "sexy"))
    pre = model.get_layer("preprocess_caffe")
    reference = [w.copy() for w in zoo.preprocessing_layers("caffe")[0].get_weights()]
    assert id(pre) not in {id(l) for l in base_layers}  # built non-trainable: never unfrozen
    train.set_trainable(model, base_layers, "finetune", unfreeze=1000)
    trainable = {id(v) for v in model.trainable_weights}
    assert not pre.trainable and not any(id(w) in trainable for w in pre.weights)
    assert any(id(w) in trainable for w in model.get_layer("vgg16").get_layer("block1_conv1").weights)
    result = train.train(manifest, tmp_path / "out", cfg, verbose=False)
    # the weights at the end of fine-tuning (the last checkpoint) and the saved (best) model
    last = train.build_classifier(train.TrainConfig(**cfg), ("drawings", "sexy"))[0]
    latest = sorted(p for p in (result.run_dir / "checkpoints").iterdir() if p.is_dir())[-1]
    last.load_weights(latest / "model.weights.h5")
    for trained in (last, keras.saving.load_model(result.model_path)):
        for got, want in zip(trained.get_layer("preprocess_caffe").get_weights(), reference):
            np.testing.assert_array_equal(got, want)
    before = model.get_layer("vgg16").get_layer("block5_conv3").get_weights()[0]
    after = last.get_layer("vgg16").get_layer("block5_conv3").get_weights()[0]
    assert not np.array_equal(before, after)  # the unfrozen backbone did train


def _accuracy(probs, labels):
    return float(np.mean(np.asarray(probs).argmax(1) == labels))


def test_defaults_reach_the_linear_probe_and_the_head_starts_at_it(two_class, tmp_path):
    manifest, backbone = two_class
    extractor, _ = train.feature_extractor(train.TrainConfig(backbone=str(backbone)))
    (x_train, y_train), (x_test, y_test) = _images(manifest, "train"), _images(manifest, "test")
    f_train, f_test = (extractor.predict(x, verbose=0) for x in (x_train, x_test))
    (probe,) = evaluate.linear_probe(f_train, y_train, [f_test], num_classes=2)
    result = train.train(manifest, tmp_path / "defaults", {"backbone": str(backbone)}, verbose=False)
    model, _ = zoo.load(result.model_path)
    assert _accuracy(model.predict(x_test, verbose=0), y_test) >= _accuracy(probe, y_test)
    # no training at all (lr 0, no calibration): the model is the class-weighted probe
    frozen = train.train(manifest, tmp_path / "lr0", _config(backbone, epochs_finetune=0, lr_head=0.0,
                                                              calibrate=False), verbose=False)
    model, _ = zoo.load(frozen.model_path)
    np.testing.assert_allclose(model.predict(x_test, verbose=0),
                               _probe_probs(f_train, y_train, f_test, class_weighting=True), rtol=1e-4, atol=1e-5)


def test_temperature_is_fitted_on_val_and_folded_into_the_last_layer(two_class, tmp_path):
    import keras

    manifest, backbone = two_class
    result = train.train(manifest, tmp_path / "out", _config(backbone, epochs_finetune=0),
                         verbose=False)
    cal = ModelSpec.load(spec_path_for(result.model_path)).extra["calibration"]
    assert cal["fitted_on"] == "val" and cal["folded_into"] == "predictions"
    assert cal["nll_after"] <= cal["nll_before"]
    assert cal["temperature"] != pytest.approx(1.0, abs=0.05)  # the fit did move it
    # the saved last layer is the best weights' divided by T, fitted on their val logits
    best, _, _ = train.build_classifier(train.TrainConfig(**_config(backbone)), ("drawings", "sexy"))
    best.load_weights(result.run_dir / "best.weights.h5")
    kernel, bias = best.get_layer("predictions").get_weights()
    x_val, y_val = _images(manifest, "val")
    features, _ = train.classifier_parts(best)
    logits = features.predict(x_val, verbose=0).astype(np.float64) @ kernel + bias
    t = evaluate.fit_temperature(logits, y_val)["temperature"]
    assert t == pytest.approx(cal["temperature"], rel=1e-4)
    saved = keras.saving.load_model(result.model_path).get_layer("predictions").get_weights()
    np.testing.assert_allclose(saved[0], kernel / cal["temperature"], rtol=1e-6)
    np.testing.assert_allclose(saved[1], bias / cal["temperature"], rtol=1e-6)
