"""Fine-tuning: model contract, phases, checkpoints, kill -9 and resume (tiny backbone)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_helpers import tiny_backbone, tiny_dataset
from nsfwkit import data, train
from nsfwkit.spec import ModelSpec, spec_path_for

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared 3-class dataset of 32x32 textures and a tiny backbone."""
    base = tmp_path_factory.mktemp("train")
    root = tiny_dataset(base / "ds", classes=("neutral", "porn", "sexy"), per_class=10, size=32)
    data.prepare(root).write(base / "run" / "01_data")
    backbone = tiny_backbone(base / "backbone", image_size=32)
    return base / "run" / "01_data" / "manifest.csv", backbone


def _config(backbone, **kw):
    cfg = dict(backbone=str(backbone), batch_size=4, epochs_head=1, epochs_finetune=1,
               unfreeze=2, lr_head=1e-2, lr_finetune=1e-3, checkpoint_every=2, patience=0)
    cfg.update(kw)
    return cfg


def test_saved_model_keeps_the_contract(prepared, tmp_path):
    import keras

    manifest, backbone = prepared
    before = keras.saving.load_model(backbone).get_weights()
    result = train.train(manifest, tmp_path / "out", _config(backbone), verbose=False)
    n_train = len(data.read_manifest(manifest, split="train"))
    assert result.steps == 2 * int(np.ceil(n_train / 4))
    assert [h["phase"] for h in result.history] == ["head", "finetune"]
    model = keras.saving.load_model(result.model_path, safe_mode=True)
    assert model.inputs[0].name == "image" and tuple(model.inputs[0].shape) == (None, 32, 32, 3)
    assert model.layers[1].name == "rescale_0_255"  # preprocessing inside
    assert not any(type(l).__name__.startswith("Random") for l in model.layers)
    assert model.output.shape[-1] == 3
    spec = ModelSpec.load(spec_path_for(result.model_path))
    assert spec.class_names == ("neutral", "porn", "sexy")
    assert spec.nsfw_classes == ("porn", "sexy") and spec.image_size == 32
    assert spec.input_name == "image" and spec.extra["steps"] == result.steps
    probs = model.predict(np.full((2, 32, 32, 3), 128, np.float32), verbose=0)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    # the backbone file was not changed
    after = keras.saving.load_model(backbone).get_weights()
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    with open(result.run_dir / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert list((result.run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_phases_freeze_backbone_then_unfreeze_top_layers_with_bn_frozen(prepared):
    import keras

    _, backbone = prepared
    cfg = train.TrainConfig(**_config(backbone, unfreeze=1))
    model, spec, base_layers = train.build_classifier(cfg, ["a", "b"])
    assert [l.name for l in model.layers][-2:] == ["head_dropout", "predictions"]
    assert "dense_out" not in [l.name for l in model.layers]  # built on the penultimate output
    train.set_trainable(model, base_layers, "head", unfreeze=1)
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {"predictions"}
    train.set_trainable(model, base_layers, "finetune", unfreeze=2)
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable == {"predictions", "dense_1", "conv1"}
    bn = model.get_layer("bn1")
    assert not bn.trainable  # inference mode: moving statistics untouched by training
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    mean_before = bn.moving_mean.numpy().copy()
    model(x, training=True)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean_before)


def test_keras_application_backbone_offline(prepared, tmp_path):
    manifest, _ = prepared
    cfg = _config("keras:MobileNetV2", weights=None, image_size=32, epochs_finetune=1,
                  unfreeze=3, steps_per_epoch=1)
    result = train.train(manifest, tmp_path / "out", cfg, verbose=False)
    assert result.steps == 2
    spec = ModelSpec.load(spec_path_for(result.model_path))
    assert spec.image_size == 32 and "inside the model" in spec.preprocessing


def test_one_class_dataset_is_refused_clearly(tmp_path):
    root = tiny_dataset(tmp_path / "ds", classes=("neutral",), per_class=6, size=16)
    data.prepare(root).write(tmp_path / "01")
    with pytest.raises(data.DatasetError, match="at least two classes"):
        train.train(tmp_path / "01" / "manifest.csv", tmp_path / "out", {"backbone": "x"})


def test_resume_refuses_a_different_config(prepared, tmp_path):
    manifest, backbone = prepared
    first = train.train(manifest, tmp_path / "out", _config(backbone, epochs_finetune=0),
                        verbose=False)
    with pytest.raises(ValueError, match="different config"):
        train.train(manifest, tmp_path / "out", _config(backbone, epochs_finetune=0, seed=5),
                    verbose=False)
    # an evaluation chose a threshold for the finished model
    spec_path = spec_path_for(first.model_path)
    ModelSpec.load(spec_path).replace(threshold=0.37).save(spec_path)
    model_bytes = first.model_path.read_bytes()
    again = train.train(manifest, tmp_path / "out", _config(backbone, epochs_finetune=0),
                        verbose=False)  # same config, finished: nothing more to do
    assert again.resumed_from == again.steps == first.steps
    assert first.model_path.read_bytes() == model_bytes  # not re-saved
    assert ModelSpec.load(spec_path).threshold == pytest.approx(0.37)  # not reset to 0.5
    assert again.spec.threshold == pytest.approx(0.37)


def test_resume_refuses_a_different_manifest_with_the_same_count(prepared, tmp_path):
    manifest, backbone = prepared
    train.train(manifest, tmp_path / "out", _config(backbone, epochs_finetune=0), verbose=False)
    rows = data.read_manifest(manifest)
    train_rows = [r for r in rows if r["split"] == "train"]
    val_row = next(r for r in rows if r["split"] == "val")
    train_rows[0]["split"], val_row["split"] = "val", "train"  # same counts, other split
    other = tmp_path / "other" / "manifest.csv"
    other.parent.mkdir()
    (other.parent / "summary.json").write_text((manifest.parent / "summary.json").read_text())
    with open(other, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert len(data.read_manifest(other, split="train")) == len(train_rows)
    with pytest.raises(ValueError, match="different config or dataset"):
        train.train(other, tmp_path / "out", _config(backbone, epochs_finetune=0), verbose=False)


def test_only_the_chief_writes_into_the_run_folder(prepared, tmp_path, monkeypatch):
    from types import SimpleNamespace as NS

    class Cluster:
        def __init__(self, jobs):
            self.jobs = jobs

        def as_dict(self):
            return self.jobs

    def strategy(task_type, task_id, jobs):
        return NS(cluster_resolver=NS(task_type=task_type, task_id=task_id,
                                      cluster_spec=lambda: Cluster(jobs)))

    workers = {"worker": ["a:1", "b:1"]}
    with_chief = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    assert train.is_chief(NS())  # one machine, no resolver
    assert train.is_chief(strategy(None, None, {}))
    assert train.is_chief(strategy("chief", 0, with_chief))
    assert not train.is_chief(strategy("worker", 0, with_chief))
    assert train.is_chief(strategy("worker", 0, workers))
    assert not train.is_chief(strategy("worker", 1, workers))
    # a non-chief worker trains but leaves the shared run folder alone
    manifest, backbone = prepared
    monkeypatch.setattr(train, "is_chief", lambda s: False)
    run = tmp_path / "shared"
    result = train.train(manifest, run, _config(backbone, epochs_finetune=0), verbose=False)
    assert list(run.iterdir()) == []
    assert result.model_path.is_file() and run not in result.model_path.parents


def test_mixed_precision_reaches_a_nested_keras_backbone():
    """A keras: backbone is one nested model: the policy must reach its layers, and phase 2
    must unfreeze the copy's layers (not the original model's)."""
    import keras

    cfg = train.TrainConfig(backbone="keras:MobileNetV2", weights=None, image_size=32)
    model, _, base_layers = train.build_classifier(cfg, ["a", "b"])
    mixed = train.to_dtype_policy(model, "mixed_bfloat16")
    nested = next(l for l in mixed.layers if isinstance(l, keras.Model))
    convs = [l for l in nested.layers if isinstance(l, keras.layers.Conv2D)]
    assert convs and all(l.compute_dtype == "bfloat16" for l in convs)
    assert mixed.layers[-1].compute_dtype == "float32"  # float32 probabilities
    mapped = train.map_layers(model, mixed, base_layers)
    assert len(mapped) == len(base_layers) and all(m is not o for m, o in zip(mapped, base_layers))
    assert {id(l) for l in mapped} <= {id(l) for l in nested.layers}
    assert train.set_trainable(mixed, mapped, "head", unfreeze=3) == 2  # head kernel + bias
    n = train.set_trainable(mixed, mapped, "finetune", unfreeze=3)
    assert n > 2, n  # the top 3 backbone weight layers train too
    backbone_vars = {id(v) for l in nested.layers for v in l.trainable_weights}
    assert sum(id(v) in backbone_vars for v in mixed.trainable_weights) == n - 2
    x = np.full((2, 32, 32, 3), 100, np.float32)
    np.testing.assert_allclose(mixed.predict(x, verbose=0), model.predict(x, verbose=0), atol=3e-2)


def test_early_stopping_skips_the_rest_of_a_phase(prepared, tmp_path):
    manifest, backbone = prepared
    # lr 0: the validation loss never improves after the first epoch
    cfg = _config(backbone, epochs_head=5, epochs_finetune=0, lr_head=0.0, patience=1,
                  label_smoothing=0.0)
    result = train.train(manifest, tmp_path / "out", cfg, verbose=False)
    assert len(result.history) == 2


def test_mixed_precision_copy_computes_in_float16(prepared):
    import keras

    _, backbone = prepared
    model = keras.saving.load_model(backbone)
    mixed = train.to_dtype_policy(model, "mixed_float16")
    assert mixed.get_layer("conv1").compute_dtype == "float16"
    assert mixed.layers[-1].compute_dtype == "float32"
    assert model.get_layer("conv1").compute_dtype == "float32"  # the input model is unchanged
    x = np.full((1, 32, 32, 3), 100, np.float32)
    np.testing.assert_allclose(mixed.predict(x, verbose=0), model.predict(x, verbose=0), atol=2e-2)


_SCRIPT = """
import json, sys
from nsfwkit import train
result = train.train(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), verbose=True)
print("RESULT", json.dumps({"steps": result.steps, "resumed_from": result.resumed_from}))
"""


def _run(manifest, out, cfg):
    """Train in a child process (one intra-op thread both here and there: CPU results are then
    bit-for-bit reproducible)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", _SCRIPT, str(manifest), str(out), json.dumps(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_ends_with_the_same_steps_and_weights(prepared, tmp_path):
    manifest, backbone = prepared
    n_train = len(data.read_manifest(manifest, split="train"))
    steps_per_epoch = int(np.ceil(n_train / 4))
    cfg = _config(backbone, epochs_head=2, epochs_finetune=1, checkpoint_every=2, throttle_s=0.25)
    expected = 3 * steps_per_epoch
    out = tmp_path / "killed"
    proc = _run(manifest, out, cfg)
    deadline = time.monotonic() + 120
    state = None
    try:
        while time.monotonic() < deadline:  # wait for a mid-epoch checkpoint in epoch >= 1
            state = train.read_state(out)
            if state and state["epoch"] >= 1 and state["step_in_epoch"] > 0:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        else:
            pytest.fail("no mid-epoch checkpoint appeared in time")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = train.read_state(out)["global_step"]
    assert 0 < killed_at < expected
    assert not (out / "model.keras").exists()
    resumed = _run(manifest, out, cfg)
    text, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, text
    result = json.loads(text.split("RESULT", 1)[1])
    assert result["resumed_from"] == killed_at
    assert f"resuming from step {killed_at}" in text
    assert result["steps"] == expected
    final = train.read_state(out)
    assert final["global_step"] == expected and final["resumes"] == 1
    assert [h["epoch"] for h in final["history"]] == [0, 1, 2]
    assert [h["steps"] for h in final["history"]] == [steps_per_epoch * (i + 1) for i in range(3)]
    with open(out / "log.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["0", "1", "2"]
    assert (out / "model.keras").is_file() and (out / "model.spec.json").is_file()
    assert len([p for p in (out / "checkpoints").iterdir() if p.is_dir()]) == 1
    # the same run without interruption gives the same losses and the same final weights
    plain = _run(manifest, tmp_path / "plain", dict(cfg, throttle_s=0.0))
    text, _ = plain.communicate(timeout=180)
    assert plain.returncode == 0, text
    with open(out / "log.csv") as a, open(tmp_path / "plain" / "log.csv") as b:
        assert list(csv.DictReader(a)) == list(csv.DictReader(b))
    import keras

    killed_w = keras.saving.load_model(out / "model.keras").get_weights()
    plain_w = keras.saving.load_model(tmp_path / "plain" / "model.keras").get_weights()
    for a, b in zip(killed_w, plain_w):
        np.testing.assert_array_equal(a, b)
