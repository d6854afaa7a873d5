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

from nsfwkit import data, train
from nsfwkit.spec import ModelSpec, spec_path_for

from data_helpers import tiny_backbone, tiny_dataset

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


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (all bound at once, so they differ)."""
    import socket

    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _cli_train(manifest, out, cfg, *, tf_config=None, tmpdir=None):
    """``nsfwkit train`` in a child process, one CPU thread, as README's cluster launch runs it."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    cmd = [sys.executable, "-m", "nsfwkit", "train", str(manifest), str(out), "--config", json.dumps(cfg), "-q"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


@pytest.mark.slow
def test_two_workers_on_localhost_follow_one_workers_loss_curve(prepared, tmp_path):
    """MultiWorkerMirroredStrategy really run: two processes, TF_CONFIG on 127.0.0.1 ports.

    Each worker trains on its half of every global batch (tf.distribute shards the batches),
    gradients are summed across workers, the loss divided by the global batch: the same
    optimisation as one worker with the same global batch, up to float summation order (an
    all-reduce of two half-sums instead of one sum): measured, the epoch losses differ by at
    most 7e-8 relative and the final weights by 7e-9, so the test allows 1e-5 relative per
    epoch (150x that: other CPUs may sum in another order) and 1e-6 on the weights. Dropout
    is 0: each replica draws its own masks from the same seed, so with dropout the curves agree
    in distribution only.
    """
    manifest, backbone = prepared
    n_train = len(data.read_manifest(manifest, split="train"))
    assert n_train % 8, "a last, partial global batch must be part of the test"
    # a high learning rate, so the loss moves by percents per epoch and any difference in the
    # updates would show (and grow)
    cfg = _config(backbone, batch_size=8, epochs_head=1, epochs_finetune=2, dropout=0.0, lr_head=0.05,
                  lr_finetune=0.05, label_smoothing=0.0)
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    shared = tmp_path / "shared"
    procs = []
    try:
        for index in range(2):
            (tmp_path / f"tmp{index}").mkdir()
            procs.append(_cli_train(manifest, shared, dict(cfg, strategy="multiworker"),
                                    tf_config={"cluster": cluster, "task": {"type": "worker", "index": index}},
                                    tmpdir=tmp_path / f"tmp{index}"))
        single = _cli_train(manifest, tmp_path / "single", cfg)
        procs.append(single)
        texts = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    for p, text in zip(procs, texts, strict=True):
        assert p.returncode == 0, text
    # only the chief (worker 0, the cluster has no chief task) wrote the shared run folder
    assert f"model: {shared / 'model.keras'}" in texts[0]
    worker_dirs = list((tmp_path / "tmp1").glob("nsfwkit-worker-*"))
    assert len(worker_dirs) == 1 and f"model: {worker_dirs[0] / 'model.keras'}" in texts[1]
    assert not list((tmp_path / "tmp0").iterdir())
    assert len(list((shared / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert {p.name for p in shared.iterdir()} == {"model.keras", "model.spec.json", "log.csv", "config.json",
                                                   "checkpoints", "tensorboard", "best.weights.h5",
                                                   ".nsfwkit.json", ".nsfwkit.lock"}  # the chief owns the folder
    assert (worker_dirs[0] / "log.csv").is_file() and not (worker_dirs[0] / "config.json").exists()
    # the same curve as one worker with the same global batch
    chief, worker, alone = (train.read_state(d)["history"] for d in (shared, worker_dirs[0], tmp_path / "single"))
    steps_per_epoch = -(-n_train // 8)
    assert [h["steps"] for h in chief] == [steps_per_epoch * (i + 1) for i in range(3)]
    assert [h["steps"] for h in alone] == [h["steps"] for h in chief]
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose([h[key] for h in chief], [h[key] for h in alone], rtol=1e-5, err_msg=key)
        np.testing.assert_allclose([h[key] for h in worker], [h[key] for h in chief], rtol=1e-6, err_msg=key)
    losses = [h["loss"] for h in alone]
    assert min(abs(a - b) / b for a, b in zip(losses[:-1], losses[1:], strict=True)) > 1e-3  # the curve is not flat
    # the weights at the end of the run (the last checkpoint) and the saved (best) model
    import keras

    cfg_obj, names = train.TrainConfig(**cfg), data.manifest_class_names(manifest)
    start = train.build_classifier(cfg_obj, names)[0].get_weights()
    ends = []
    for run in (shared, tmp_path / "single"):
        model = train.build_classifier(cfg_obj, names)[0]
        latest = json.loads((run / "checkpoints" / "latest.json").read_text())["checkpoint"]
        model.load_weights(run / "checkpoints" / latest / "model.weights.h5")
        ends.append(model.get_weights())
        ends.append(keras.saving.load_model(run / "model.keras").get_weights())
    moved = 0
    for two, two_best, one, one_best, w0 in zip(*ends, start, strict=True):
        np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(two_best, one_best, rtol=1e-5, atol=1e-6)
        moved += np.abs(one - w0).max() > 1e-2
    assert moved == 6  # head kernel and bias, and both unfrozen layers, trained (the same way in both)
