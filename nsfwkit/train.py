"""Fine-tuning a classifier on a prepared dataset, in two phases, resumable after ``kill -9``.

Backbones (``TrainConfig.backbone``):

* ``"mobilenet_v2"`` / ``"inception_v3"`` -- nsfwjs's offline classifiers, already trained on
  NSFW data (the default start). The new head is built on the input of their last Dense layer
  (the penultimate features), so the graph stays flat: CAMs and feature sub-models reach every
  layer of the fine-tuned model.
* ``"keras:MobileNetV2"``, ``"keras:EfficientNetV2B0"``, ``"keras:InceptionV3"``,
  ``"keras:VGG16"``, ``"keras:ResNet50"``, ... -- ``keras.applications`` backbones, with
  ``TrainConfig.weights="imagenet"`` (needs internet the first time), a local weights file, or
  ``None`` (random; for tests and offline machines).
* a path to any ``.keras`` classifier with a spec beside it.

Training (:func:`train`):

1. **head** phase: the backbone is frozen and only the new head (dropout + dense softmax)
   learns, at ``lr_head``;
2. **finetune** phase: the top ``unfreeze`` weight layers of the backbone are unfrozen and
   train at the lower ``lr_finetune``; **batch-norm layers stay frozen, i.e. in inference
   mode** (their statistics are not disturbed by small batches).

Balanced class weights, label smoothing and a seed (same seed, same data order, augmentation
and initial head) are configurable; augmentation happens in ``tf.data`` only, never inside the
model. Early stopping watches the validation loss per phase and the best weights are kept.

Fault tolerance: a checkpoint (weights, optimizer state, counters, history) is written every
``checkpoint_every`` steps and at each epoch end, each one into a temporary folder that is
renamed into place, then a ``latest.json`` pointer is replaced atomically -- so a run killed at
any instant (even ``kill -9``) resumes from its last checkpoint, replays exactly the batches it
had not done (the data order is a function of ``(seed, epoch)``), and ends with the same
number of steps as an uninterrupted run. Logs: ``log.csv`` (one row per epoch) and TensorBoard
event files under ``tensorboard/``.

Accelerators: on a GPU, mixed precision (``mixed_float16``, loss scaling) and XLA
(``jit_compile``) are on by default (``"auto"``); with several GPUs the loop runs under
``tf.distribute.MirroredStrategy``. For several machines, run the same command on each with
``TF_CONFIG`` set and ``TrainConfig.strategy="multiworker"``
(``tf.distribute.MultiWorkerMirroredStrategy``; checkpoints must then be on a shared file
system, and only the chief writes the final model). The saved model is always float32.

The saved model keeps the kit's contract: input named ``image`` taking raw RGB 0-255, the
backbone's preprocessing inside, a :class:`~nsfwkit.spec.ModelSpec` JSON beside it, no
augmentation layers.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import data as _data
from .fileio import atomic_path, write_json
from .spec import ModelSpec, spec_path_for

__all__ = ["TrainConfig", "TrainResult", "build_classifier", "set_trainable", "train",
           "read_state", "to_dtype_policy", "map_layers", "plot_history"]


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json`` in the run folder).

    Attributes:
        backbone: pretrained name, ``.keras`` path, or ``keras:<Application>``.
        weights: for ``keras:`` backbones: ``"imagenet"``, a local weights file, or None.
        image_size: input side for ``keras:`` backbones (others have a fixed input).
        batch_size: images per step (global, across replicas).
        epochs_head: epochs of the head phase.
        epochs_finetune: epochs of the fine-tuning phase (0 skips it).
        lr_head: Adam learning rate of the head phase.
        lr_finetune: Adam learning rate of the fine-tuning phase (lower).
        unfreeze: top backbone layers with weights made trainable in phase 2 (BN excluded).
        dropout: dropout before the new dense layer.
        label_smoothing: applied to the training targets.
        class_weighting: weight the loss by balanced class weights.
        augment: random flip / crop-zoom / brightness / contrast in ``tf.data``.
        seed: seeds the head initialisation, data order and augmentation.
        patience: early stopping on validation loss (epochs without improvement; 0 = off).
        min_delta: smallest validation-loss decrease that counts as an improvement.
        checkpoint_every: steps between mid-epoch checkpoints (also one at each epoch end).
        steps_per_epoch: cap the steps per epoch (None: one pass over the training split).
        mixed_precision: ``"auto"`` (GPU only), True (``mixed_float16``), False, or a policy
            name: ``"mixed_float16"`` or ``"mixed_bfloat16"`` (no loss scaling needed).
        jit_compile: ``"auto"`` (GPU only), True or False.
        strategy: ``"auto"`` (Mirrored with several GPUs), ``"default"``, ``"mirrored"`` or
            ``"multiworker"``.
        cache: cache decoded images in memory (True), a file prefix, or False.
        throttle_s: sleep after each step (tests and demos of interruption only).
    """

    backbone: str = "mobilenet_v2"
    weights: str | None = "imagenet"
    image_size: int | None = None
    batch_size: int = 32
    epochs_head: int = 3
    epochs_finetune: int = 2
    lr_head: float = 1e-3
    lr_finetune: float = 1e-5
    unfreeze: int = 20
    dropout: float = 0.2
    label_smoothing: float = 0.1
    class_weighting: bool = True
    augment: bool = True
    seed: int = 0
    patience: int = 3
    min_delta: float = 1e-4
    checkpoint_every: int = 50
    steps_per_epoch: int | None = None
    mixed_precision: Any = "auto"
    jit_compile: Any = "auto"
    strategy: str = "auto"
    cache: Any = True
    throttle_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; known: {sorted(fields)}")
        return cls(**values)


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` produced."""

    model_path: Path
    spec: ModelSpec
    history: list[dict[str, Any]]
    steps: int
    resumed_from: int | None
    run_dir: Path


# ------------------------------------------------------------------------------------------
# Model building
# ------------------------------------------------------------------------------------------
def _load_backbone(config: TrainConfig):
    """``(base_model, features_tensor, base_spec, nested_base_or_None)``."""
    import keras

    from . import zoo

    name = str(config.backbone)
    if name.startswith("keras:"):
        app = name.split(":", 1)[1]
        weights = config.weights
        local = weights not in (None, "imagenet")
        model, spec = zoo.keras_application(app, weights=None if local else weights,
                                            include_top=False, image_size=config.image_size)
        nested = next((l for l in model.layers if isinstance(l, keras.Model)), None)
        if local:
            (nested or model).load_weights(weights)
        return model, model.output, spec, nested
    model, spec = zoo.load(name)
    last = model.layers[-1]
    features = last.input if isinstance(last, keras.layers.Dense) else model.output
    return model, features, spec, None


def build_classifier(config: TrainConfig, class_names: Sequence[str]):
    """A new classifier: the backbone up to its penultimate features + a new softmax head.

    Returns:
        ``(model, base_spec, base_layers)``: a flat functional ``keras.Model`` (input
        ``image``, raw RGB 0-255, ``(N, S, S, 3)`` -> ``(N, len(class_names))`` probabilities),
        the backbone's spec, and the backbone's layers in graph order (for unfreezing).
    """
    import keras

    keras.utils.set_random_seed(int(config.seed))
    base, features, base_spec, nested = _load_backbone(config)
    x = keras.layers.Dropout(config.dropout, seed=int(config.seed), name="head_dropout")(features)
    outputs = keras.layers.Dense(len(class_names), activation="softmax", dtype="float32",
                                 name="predictions")(x)
    inputs = base.inputs[0] if len(base.inputs) == 1 else base.inputs
    model = keras.Model(inputs, outputs, name=f"{base_spec.name}_finetuned".replace(":", "_"))
    head = {"head_dropout", "predictions"}
    if nested is not None:
        base_layers = list(nested.layers)
    else:
        base_layers = [l for l in model.layers if l.name not in head]
    return model, base_spec, base_layers


def set_trainable(model, base_layers, phase: str, *, unfreeze: int) -> int:
    """Freeze the backbone (``head``) or unfreeze its top ``unfreeze`` weight layers (``finetune``).

    Batch-norm layers always stay frozen, so they run in inference mode. Returns the number of
    trainable weight tensors.
    """
    import keras

    for layer in model.layers:
        layer.trainable = True
    for layer in base_layers:
        layer.trainable = False
    nested = [l for l in model.layers if isinstance(l, keras.Model)]
    for sub in nested:  # a keras.applications backbone is one nested layer
        sub.trainable = phase == "finetune"
        for layer in sub.layers:
            layer.trainable = False
    if phase == "finetune" and unfreeze > 0:
        count = 0
        for layer in reversed(base_layers):
            if count >= unfreeze:
                break
            if not layer.weights or isinstance(layer, keras.layers.BatchNormalization):
                continue
            layer.trainable = True
            count += 1
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    for sub in nested:
        if not any(l.trainable for l in sub.layers):
            sub.trainable = False
    return len(model.trainable_weights)


def to_dtype_policy(model, policy: str):
    """A copy of ``model`` whose layers compute in ``policy`` (e.g. ``mixed_float16``).

    Nested models (a ``keras.applications`` backbone is one nested layer) are cloned
    recursively, so their layers compute in ``policy`` too. The final layer keeps float32
    outputs. Weights are copied; the input model is unchanged. Use :func:`map_layers` to find a
    list of the old model's layers in the copy.
    """
    import keras

    last = model.layers[-1]

    def clone(layer):
        cfg = layer.get_config()
        cfg["dtype"] = "float32" if layer is last else policy
        return layer.__class__.from_config(cfg)

    new = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for src, dst in zip(model.layers, new.layers):
        if src.weights:
            dst.set_weights(src.get_weights())
    return new


def map_layers(model, copy, layers) -> list:
    """The layers of ``copy`` (a clone of ``model``) that correspond to ``layers`` of ``model``.

    Layers are matched by their path of names (``backbone/block_16_project``), nested models
    included. Raises ``ValueError`` when one has no counterpart (never falls back to the old
    model's layers, which would silently train nothing).
    """
    import keras

    index: dict[int, Any] = {}

    def walk(old, new):
        by_name = {l.name: l for l in new.layers}
        same_order = len(old.layers) == len(new.layers)
        for k, layer in enumerate(old.layers):
            twin = by_name.get(layer.name)
            if twin is None and same_order and isinstance(layer, keras.layers.InputLayer) \
                    and isinstance(new.layers[k], keras.layers.InputLayer):
                twin = new.layers[k]  # clones rename nested input layers
            if twin is None:
                continue
            index[id(layer)] = twin
            if isinstance(layer, keras.Model) and isinstance(twin, keras.Model):
                walk(layer, twin)

    walk(model, copy)
    missing = [l.name for l in layers if id(l) not in index]
    if missing:
        raise ValueError(f"layers {missing[:5]} (of {len(missing)}) have no counterpart in the copy")
    return [index[id(l)] for l in layers]


# ------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------
def _atomic_json(path: Path, obj: Any) -> None:
    write_json(path, obj, indent=1)


def _save_checkpoint(ckpt_dir: Path, model, optimizer, state: dict) -> Path:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{state['global_step']:08d}-e{state['epoch']:03d}"
    tmp = ckpt_dir / f".{name}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_weights(tmp / "model.weights.h5")
    opt_vars = {f"v{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
    with open(tmp / "optimizer.npz", "wb") as fh:
        np.savez(fh, **opt_vars)
    rng_vars = {f"v{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(_rng_variables(model))}
    with open(tmp / "rng.npz", "wb") as fh:
        np.savez(fh, **rng_vars)
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    final = ckpt_dir / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_json(ckpt_dir / "latest.json", {"checkpoint": name, "global_step": state["global_step"]})
    for old in ckpt_dir.iterdir():  # keep the newest only
        if old.is_dir() and old.name != name and (old.name.startswith("ckpt-") or ".tmp" in old.name):
            shutil.rmtree(old, ignore_errors=True)
    return final


def _rng_variables(model) -> list:
    """Variables that are not weights: the seed-generator states of dropout and other random
    layers. ``save_weights`` leaves them out, so a resumed run would draw other dropout masks
    than an uninterrupted one; checkpoints store them beside the weights."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _restore_rng(model, path: Path) -> None:
    if not path.is_file():
        return
    with np.load(path) as npz:
        values = [npz[k] for k in sorted(npz.files)]
    variables = _rng_variables(model)
    if len(values) != len(variables):
        raise ValueError(f"{path}: {len(values)} random-state variables, expected {len(variables)}")
    for var, value in zip(variables, values):
        var.assign(value)


def read_state(run_dir: str | os.PathLike) -> dict | None:
    """The state of the latest checkpoint in a run folder (None if there is none)."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    try:
        latest = json.loads((ckpt_dir / "latest.json").read_text())
        return json.loads((ckpt_dir / latest["checkpoint"] / "state.json").read_text())
    except (OSError, ValueError, KeyError):
        return None


def _restore_optimizer(optimizer, path: Path) -> None:
    with np.load(path) as npz:
        values = [npz[k] for k in sorted(npz.files)]
    if len(values) != len(optimizer.variables):
        raise ValueError(f"{path}: optimizer state has {len(values)} variables, expected "
                         f"{len(optimizer.variables)} (was the config changed?)")
    for var, value in zip(optimizer.variables, values):
        var.assign(value)


# ------------------------------------------------------------------------------------------
# The training loop
# ------------------------------------------------------------------------------------------
def manifest_digest(manifest: str | os.PathLike) -> str:
    """SHA-256 over the manifest's ``(path, class, split, sha256)`` rows of train/val/test.

    Stored in a run's ``config.json``: a run resumes only on the very same dataset and split.
    """
    rows = _data.read_manifest(manifest, split=_data.SPLITS)
    digest = hashlib.sha256()
    for r in sorted(rows, key=lambda r: (r["split"], r["path"], r["class"])):
        digest.update("\t".join((r["path"], r["class"], r["split"], r.get("sha256", ""))).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def is_chief(strategy) -> bool:
    """Whether this process writes a run's shared files: task type ``chief`` (or none: a
    single machine), or worker 0 when the cluster has no chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type in (None, "chief"):
        return True
    if task_type == "worker" and int(getattr(resolver, "task_id", 0) or 0) == 0:
        try:
            cluster = resolver.cluster_spec().as_dict()
        except Exception:  # no cluster spec: treat worker 0 as the chief
            cluster = {}
        return "chief" not in cluster
    return False


def _resolve_auto(value, gpus: int) -> bool:
    return gpus > 0 if value == "auto" else bool(value)


def _mixed_policy(value, gpus: int) -> str | None:
    """``TrainConfig.mixed_precision`` -> a Keras dtype policy name, or None (float32)."""
    if isinstance(value, str) and value not in ("auto",):
        if value not in ("mixed_float16", "mixed_bfloat16"):
            raise ValueError(f"mixed_precision must be 'auto', True, False, 'mixed_float16' or "
                             f"'mixed_bfloat16', got {value!r}")
        return value
    return "mixed_float16" if _resolve_auto(value, gpus) else None


def _strategy(name: str, gpus: int):
    import tensorflow as tf

    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored" or (name == "auto" and gpus > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def train(
    manifest: str | os.PathLike,
    run_dir: str | os.PathLike,
    config: TrainConfig | dict | None = None,
    *,
    nsfw_classes: Sequence[str] | None = None,
    resume: bool = True,
    verbose: bool = True,
    progress: bool | None = None,
) -> TrainResult:
    """Fine-tune a backbone on the train split of a manifest; validate on its val split.

    Args:
        manifest: ``manifest.csv`` from :func:`nsfwkit.data.prepare` (or its folder).
        run_dir: output folder: ``model.keras`` + ``model.spec.json``, ``config.json``,
            ``log.csv``, ``tensorboard/``, ``checkpoints/``, ``best.weights.h5``.
        config: a :class:`TrainConfig` (or a dict of its fields).
        nsfw_classes: dataset classes counted as NSFW in the spec (default: by name).
        resume: continue from the last checkpoint in ``run_dir`` when its config and dataset
            (a hash of the manifest's ``path, class, split, sha256`` rows) match (False: start
            over, discarding this run folder's checkpoints). Resuming a finished run trains
            nothing and keeps its ``model.keras`` and spec (threshold included) as they are.
        verbose: print one line per epoch.
        progress: a text progress bar over each epoch's steps (:mod:`nsfwkit.progress`);
            default: on when ``verbose``.

    Multi-worker runs: only the chief (task type ``chief``, or worker 0 when there is no
    chief) writes into ``run_dir``; other workers read its checkpoints to resume but write
    their own into a temporary folder.

    Returns:
        A :class:`TrainResult`.

    Raises:
        DatasetError: fewer than two classes have training images, or the split is empty.
        ValueError: ``resume`` is set and ``run_dir`` holds a run with a different config.
    """
    import keras
    import tensorflow as tf

    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = verbose

    # ---- data ------------------------------------------------------------------------------
    class_names = _data.manifest_class_names(manifest)
    train_paths, train_labels, _ = _data.manifest_arrays(manifest, "train", class_names=class_names)
    val_paths, val_labels, _ = _data.manifest_arrays(manifest, "val", class_names=class_names)
    present = sorted(set(train_labels.tolist()))
    if len(present) < 2:
        raise _data.DatasetError(
            f"{manifest}: training needs images of at least two classes in the train split; "
            f"found {[class_names[i] for i in present]}"
        )
    num_classes = len(class_names)
    weights = (_data.class_weights(train_labels, num_classes) if config.class_weighting
               else np.ones(num_classes, np.float32))
    sample_weights = weights[train_labels]

    # ---- resume? ---------------------------------------------------------------------------
    config_path = run_dir / "config.json"
    saved = {"config": config.to_dict(), "class_names": list(class_names),
             "train_files": len(train_paths), "manifest_sha256": manifest_digest(manifest)}
    gpus = len(tf.config.list_physical_devices("GPU"))
    policy = _mixed_policy(config.mixed_precision, gpus)
    mixed = policy is not None
    jit = _resolve_auto(config.jit_compile, gpus)
    strategy = _strategy(config.strategy, gpus)
    chief = is_chief(strategy)
    # non-chief workers of a multi-worker run never write into the shared run folder
    out_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="nsfwkit-worker-"))
    read_ckpt_dir = run_dir / "checkpoints"
    ckpt_dir = out_dir / "checkpoints"
    state = read_state(run_dir) if resume else None
    if state is not None:
        previous = json.loads(config_path.read_text()) if config_path.is_file() else None
        if previous != saved:
            raise ValueError(
                f"{run_dir}: holds a run with a different config or dataset; use another "
                "run folder or resume=False to start over"
            )
    if chief:
        if not resume and ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
        _atomic_json(config_path, saved)

    # ---- model -----------------------------------------------------------------------------
    with strategy.scope():
        model, base_spec, base_layers = build_classifier(config, class_names)
        if policy:
            mixed_model = to_dtype_policy(model, policy)
            base_layers = map_layers(model, mixed_model, base_layers)
            model = mixed_model
    image_size = int(model.inputs[0].shape[1])

    steps_per_epoch = math.ceil(len(train_paths) / config.batch_size)
    if config.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, int(config.steps_per_epoch))
    phases = ["head"] * config.epochs_head + ["finetune"] * config.epochs_finetune
    # decoded in epoch 0's order, so the first epoch trains while it decodes; later epochs
    # shuffle the cached images
    decoded_train = _data.decode_dataset(train_paths, image_size=image_size, cache=config.cache,
                                         order=_data.epoch_order(len(train_paths), config.seed, 0))
    decoded_val = _data.decode_dataset(val_paths, image_size=image_size, cache=config.cache)

    if state is None:
        state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "phase": phases[0] if phases else "",
                 "best_val_loss": {}, "wait": {}, "sums": [0.0, 0.0, 0.0], "history": [],
                 "stopped_early": {}, "resumes": 0}
        resumed_from = None
    else:
        resumed_from = int(state["global_step"])
        state["resumes"] = int(state.get("resumes", 0)) + 1
        if verbose:
            print(f"resuming from step {resumed_from} (epoch {state['epoch']}, "
                  f"step {state['step_in_epoch']} of {steps_per_epoch})", flush=True)

    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing,
                                                   reduction="none")
    val_loss_fn = keras.losses.CategoricalCrossentropy(reduction="none")
    writer = tf.summary.create_file_writer(str(out_dir / "tensorboard"))
    best_path = out_dir / "best.weights.h5"

    def make_optimizer(phase: str):
        lr = config.lr_head if phase == "head" else config.lr_finetune
        opt = keras.optimizers.Adam(learning_rate=lr)
        if policy == "mixed_float16":  # bfloat16 has float32's range: no loss scaling
            opt = keras.optimizers.LossScaleOptimizer(opt)
        opt.build(model.trainable_variables)
        return opt

    def make_steps(optimizer):
        @tf.function(jit_compile=jit)
        def step_fn(x, y, w):
            with tf.GradientTape() as tape:
                probs = model(x, training=True)
                per_example = loss_fn(y, probs) * w
                loss = tf.nn.compute_average_loss(per_example)
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            correct = tf.reduce_sum(tf.cast(tf.argmax(probs, -1) == tf.argmax(y, -1), tf.float32))
            return loss, correct

        @tf.function
        def train_step(x, y, w):
            loss, correct = strategy.run(step_fn, args=(x, y, w))
            return (strategy.reduce("SUM", loss, axis=None),
                    strategy.reduce("SUM", correct, axis=None))

        return train_step

    @tf.function
    def predict_step(x):
        return model(x, training=False)

    def validate():
        if not val_paths:
            return float("nan"), float("nan")
        ds = _data.make_dataset(val_paths, val_labels, image_size=image_size,
                                batch_size=config.batch_size, num_classes=num_classes,
                                decoded=decoded_val)
        total, correct, n = 0.0, 0.0, 0
        for x, y in ds:
            probs = predict_step(x)
            total += float(tf.reduce_sum(val_loss_fn(y, probs)))
            correct += float(tf.reduce_sum(tf.cast(tf.argmax(probs, -1) == tf.argmax(y, -1), tf.float32)))
            n += int(x.shape[0])
        return total / max(n, 1), correct / max(n, 1)

    current_phase = None
    optimizer = train_step = None
    start_time = time.time()
    while state["epoch"] < len(phases):
        epoch = state["epoch"]
        phase = phases[epoch]
        if state["stopped_early"].get(phase):
            state["epoch"] += 1
            continue
        if phase != current_phase:
            with strategy.scope():
                n_trainable = set_trainable(model, base_layers, phase, unfreeze=config.unfreeze)
                optimizer = make_optimizer(phase)
            if resumed_from is not None and current_phase is None:
                latest = json.loads((read_ckpt_dir / "latest.json").read_text())["checkpoint"]
                model.load_weights(read_ckpt_dir / latest / "model.weights.h5")
                _restore_rng(model, read_ckpt_dir / latest / "rng.npz")
                if state.get("phase") == phase:  # the checkpoint's optimizer is this phase's
                    _restore_optimizer(optimizer, read_ckpt_dir / latest / "optimizer.npz")
            train_step = make_steps(optimizer)
            current_phase = phase
            if verbose:
                print(f"phase {phase}: {n_trainable} trainable weight tensors, "
                      f"lr {config.lr_head if phase == 'head' else config.lr_finetune:g}", flush=True)
        state["phase"] = phase
        ds = _data.make_dataset(
            train_paths, train_labels, image_size=image_size, batch_size=config.batch_size,
            num_classes=num_classes, training=True, augment=config.augment, seed=config.seed,
            epoch=epoch, decoded=decoded_train, decoded_order_seed=config.seed,
            sample_weights=sample_weights,
        ).take(steps_per_epoch).skip(state["step_in_epoch"])
        dist_ds = strategy.experimental_distribute_dataset(ds) if strategy.num_replicas_in_sync > 1 \
            else ds
        bar = None
        if progress:
            from .progress import progress_bar

            bar = progress_bar(total=steps_per_epoch, initial=state["step_in_epoch"], unit="step",
                       desc=f"epoch {epoch} [{phase}]", leave=False)
        for x, y, w in dist_ds:
            loss, correct = train_step(x, y, w)
            n = int(tf.shape(y)[0]) if strategy.num_replicas_in_sync == 1 else config.batch_size
            state["sums"][0] += float(loss) * n
            state["sums"][1] += float(correct)
            state["sums"][2] += n
            state["step_in_epoch"] += 1
            state["global_step"] += 1
            _scalars(writer, {"batch/loss": float(loss)}, state["global_step"])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
            if config.throttle_s:
                time.sleep(config.throttle_s)
            if state["step_in_epoch"] < steps_per_epoch and \
                    state["global_step"] % max(1, config.checkpoint_every) == 0:
                _save_checkpoint(ckpt_dir, model, optimizer, state)
        if bar is not None:
            bar.close()
        # ---- epoch end -------------------------------------------------------------------
        val_loss, val_acc = validate()
        seen = max(state["sums"][2], 1)
        row = {"epoch": epoch, "phase": phase, "steps": state["global_step"],
               "loss": state["sums"][0] / seen, "accuracy": state["sums"][1] / seen,
               "val_loss": val_loss, "val_accuracy": val_acc,
               "lr": config.lr_head if phase == "head" else config.lr_finetune}
        state["history"].append(row)
        _scalars(writer, {f"epoch/{k}": row[k] for k in ("loss", "accuracy", "val_loss",
                                                           "val_accuracy")}, epoch)
        writer.flush()
        best = state["best_val_loss"].get(phase)
        improved = best is None or not np.isfinite(val_loss) or val_loss < best - config.min_delta
        overall = min([h["val_loss"] for h in state["history"][:-1]] + [np.inf])
        if not np.isfinite(val_loss) or val_loss <= overall:
            with atomic_path(best_path, suffix=".weights.h5") as tmp:
                model.save_weights(tmp)
        if improved:
            state["best_val_loss"][phase] = val_loss if np.isfinite(val_loss) else None
            state["wait"][phase] = 0
        else:
            state["wait"][phase] = state["wait"].get(phase, 0) + 1
            if config.patience and state["wait"][phase] >= config.patience:
                state["stopped_early"][phase] = True
                if verbose:
                    print(f"early stopping in phase {phase} after epoch {epoch}", flush=True)
        state["epoch"] += 1
        state["step_in_epoch"] = 0
        state["sums"] = [0.0, 0.0, 0.0]
        _save_checkpoint(ckpt_dir, model, optimizer, state)
        _write_log(out_dir / "log.csv", state["history"])
        if verbose:
            print(f"epoch {epoch} [{phase}] loss {row['loss']:.4f} acc {row['accuracy']:.3f} "
                  f"val_loss {val_loss:.4f} val_acc {val_acc:.3f} "
                  f"({state['global_step']} steps, {time.time() - start_time:.0f} s)", flush=True)

    # ---- the inference model -----------------------------------------------------------------
    model_path = out_dir / "model.keras"
    spec_path = spec_path_for(model_path)
    if resumed_from is not None and resumed_from == state["global_step"] \
            and model_path.is_file() and spec_path.is_file():
        # a finished run resumed: nothing was trained, keep its model and spec (the threshold
        # chosen by an evaluation included)
        try:
            existing = ModelSpec.load(spec_path)
        except (OSError, ValueError, KeyError, TypeError):
            existing = None
        if existing is not None and existing.extra.get("steps") == state["global_step"]:
            return TrainResult(model_path=model_path, spec=existing, history=state["history"],
                               steps=int(state["global_step"]), resumed_from=resumed_from,
                               run_dir=run_dir)
    if best_path.is_file():
        model.load_weights(best_path)
    final = to_dtype_policy(model, "float32") if mixed else model
    with atomic_path(model_path) as tmp:
        final.save(tmp)
    nsfw = tuple(nsfw_classes) if nsfw_classes is not None else _data.default_nsfw_classes(class_names)
    spec = ModelSpec(
        name=f"{base_spec.name}-finetuned",
        class_names=class_names,
        image_size=image_size,
        nsfw_classes=nsfw,
        threshold=0.5,
        last_conv_layer=base_spec.last_conv_layer,
        preprocessing=base_spec.preprocessing,
        source=f"nsfwkit.train from {config.backbone} on {Path(manifest)}",
        extra={"train_config": config.to_dict(), "steps": state["global_step"],
               "epochs": len(state["history"]), "keras_version": keras.__version__,
               "base_source": base_spec.source},
    )
    spec.save(spec_path)
    _write_log(out_dir / "log.csv", state["history"])
    return TrainResult(model_path=model_path, spec=spec, history=state["history"],
                       steps=int(state["global_step"]), resumed_from=resumed_from, run_dir=run_dir)


def _scalars(writer, values: dict[str, float], step: int) -> None:
    """Write TensorBoard scalars as plain ``Summary`` protos (no ``tensorboard`` package needed
    to write them; ``pip install tensorboard`` to view them)."""
    import tensorflow as tf

    summary = tf.compat.v1.Summary(value=[
        tf.compat.v1.Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=int(step))


def _write_log(path: Path, history: list[dict]) -> None:
    fields = ["epoch", "phase", "steps", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})


def plot_history(history: Sequence[dict[str, Any]]):
    """Loss and accuracy per epoch (train and validation), phases shaded. Returns a ``Figure``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2))
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, [h[key] for h in history], "o-", label=f"train {label}")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "s--", label=f"val {label}")
        finetune = [h["epoch"] for h in history if h["phase"] == "finetune"]
        if finetune:
            ax.axvspan(min(finetune) - 0.5, max(finetune) + 0.5, color="orange", alpha=0.12,
                       label="fine-tune phase")
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
