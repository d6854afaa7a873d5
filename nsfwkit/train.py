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
   learns, at ``lr_head``. The frozen backbone's features of the training (and val) images are
   computed once and the head is fitted on them (``augment_head=True``: recomputed on the
   augmented images of every epoch); it starts from a class-weighted logistic regression on
   those features (``probe_init``), so the head phase begins where a linear probe ends;
2. **finetune** phase: the top ``unfreeze`` weight layers of the backbone are unfrozen and
   train at the lower ``lr_finetune``, on augmented images.

In both phases the backbone -- frozen or unfrozen -- **computes in inference mode**
(``training=False``: its own dropout, stochastic depth and batch norm as at inference; batch-norm
statistics are never disturbed by small batches); only the new head's dropout is active. Layers
the backbone was built frozen with (e.g. the fixed colour transform of VGG/ResNet
preprocessing) are never unfrozen.

Balanced class weights, label smoothing and a seed (same seed, same data order, augmentation
and initial head) are configurable; augmentation happens in ``tf.data`` only, never inside the
model. Early stopping watches the validation loss per phase and the best weights are kept. At
the end a **temperature** is fitted on the val split (``calibrate``) and folded into the last
layer, so every runtime sees calibrated probabilities (``extra.calibration`` in the spec).

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
(``tf.distribute.MultiWorkerMirroredStrategy``, also on CPUs; the README shows the launch).
The run folder must then be on a shared file system; only the chief (task ``chief``, or
worker 0) writes it, the other workers write into a temporary folder. ``batch_size`` stays the
global batch: tf.data splits every batch across the workers, gradients are summed across them
and the loss is divided by the global batch (the last, partial batch of an epoch included), so
the run follows one worker's loss curve with the same batch up to float summation order
(tested with two processes on localhost); dropout draws separate masks per replica. Every
worker decodes the whole training split. The saved model is always float32.

The saved model keeps the kit's contract: input named ``image`` taking raw RGB 0-255, the
backbone's preprocessing inside, a :class:`~nsfwkit.spec.ModelSpec` JSON beside it, no
augmentation layers.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import data as _data
from . import fileio
from .fileio import atomic_path, replace_dir, write_json
from .kerasutil import to_dtype_policy
from .spec import ModelSpec, spec_path_for
from .zoo import DEFAULT_MODEL

__all__ = ["TrainConfig", "TrainResult", "TrainState", "build_classifier", "classifier_parts",
           "feature_extractor", "set_trainable", "train", "read_state", "to_dtype_policy", "map_layers",
           "plot_history", "TrainingError"]


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
        augment: random flip / crop-zoom / brightness / contrast in ``tf.data`` (fine-tuning
            phase; the head phase too with ``augment_head``).
        augment_head: augment in the head phase too. Off (default), the frozen backbone's
            features of the training images are computed once and the head is fitted on them
            (an epoch costs a few milliseconds); on, they are recomputed every epoch.
        probe_init: start the head from a logistic-regression fit on the frozen backbone's
            features of the training images (:func:`nsfwkit.evaluate.fit_linear_probe`, with the
            class weights): the head phase then starts where a linear probe ends.
        calibrate: fit a temperature on the val split at the end (NLL; folded into the saved
            model's last layer, so every runtime sees the calibrated probabilities).
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
        clip_frames: videos and animations in the manifest (``prepare``'s clips): 0 (default)
            trains and validates on still images only, the clips left out and counted
            (``TrainResult.clips_left_out``); N > 0: each clip gives up to N of its sampled frames
            (evenly spaced over the frames :func:`nsfwkit.frames.load_frames` samples by default,
            the pixels ``classify`` sees) as examples with the clip's label, in train and val.
        throttle_s: sleep after each step (tests and demos of interruption only).
    """

    backbone: str = DEFAULT_MODEL
    weights: str | None = "imagenet"
    image_size: int | None = None
    batch_size: int = 32
    epochs_head: int = 5
    epochs_finetune: int = 2
    lr_head: float = 1e-3
    lr_finetune: float = 1e-5
    unfreeze: int = 20
    dropout: float = 0.0
    label_smoothing: float = 0.1
    class_weighting: bool = True
    augment: bool = True
    augment_head: bool = False
    probe_init: bool = True
    calibrate: bool = True
    seed: int = 0
    patience: int = 3
    min_delta: float = 1e-4
    checkpoint_every: int = 50
    steps_per_epoch: int | None = None
    mixed_precision: Any = "auto"
    jit_compile: Any = "auto"
    strategy: str = "auto"
    cache: Any = True
    clip_frames: int = 0
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
    skipped_missing: list[str] = dataclasses.field(default_factory=list)
    clips_left_out: int = 0  # videos/animations of train + val not trained on (``clip_frames`` 0)


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


#: The layers of the new head (everything else is the backbone).
HEAD_LAYERS = ("head_dropout", "predictions")


def feature_extractor(config: TrainConfig):
    """The configured backbone up to its penultimate features, as loaded (not trained).

    Returns:
        ``(model, spec)``: a ``keras.Model`` mapping raw RGB 0-255 ``(N, S, S, 3)`` to
        ``float32 (N, D)`` features (call it with ``training=False``: inference mode), and the
        backbone's spec. The features a linear probe or the new head is fitted on.
    """
    import keras

    base, features, spec, _ = _load_backbone(config)
    inputs = base.inputs[0] if len(base.inputs) == 1 else base.inputs
    return keras.Model(inputs, features, name=f"{spec.name}_features".replace(":", "_")), spec


def build_classifier(config: TrainConfig, class_names: Sequence[str]):
    """A new classifier: the backbone up to its penultimate features + a new softmax head.

    Returns:
        ``(model, base_spec, base_layers)``: a flat functional ``keras.Model`` (input
        ``image``, raw RGB 0-255, ``(N, S, S, 3)`` -> ``(N, len(class_names))`` probabilities),
        the backbone's spec, and the backbone's layers that may be unfrozen, in graph order
        (layers the backbone was built with as non-trainable, e.g. ``preprocess_caffe``, are
        left out: they stay frozen).
    """
    import keras

    keras.utils.set_random_seed(int(config.seed))
    base, features, base_spec, nested = _load_backbone(config)
    built_frozen = {id(l) for l in _all_layers(base) if not l.trainable}
    x = keras.layers.Dropout(config.dropout, seed=int(config.seed), name="head_dropout")(features)
    outputs = keras.layers.Dense(len(class_names), activation="softmax", dtype="float32",
                                 name="predictions")(x)
    inputs = base.inputs[0] if len(base.inputs) == 1 else base.inputs
    model = keras.Model(inputs, outputs, name=f"{base_spec.name}_finetuned".replace(":", "_"))
    candidates = nested.layers if nested is not None else [l for l in model.layers if l.name not in HEAD_LAYERS]
    base_layers = [l for l in candidates if id(l) not in built_frozen]
    return model, base_spec, base_layers


def classifier_parts(model):
    """``(features, head)`` of a :func:`build_classifier` model (or a copy of one).

    ``features`` is a ``keras.Model`` from the image to the head's input, sharing the model's
    layers; ``head(features, training)`` applies the head's dropout and dense softmax. Training
    calls ``head(features(x, training=False), training=True)``: the backbone -- frozen or
    unfrozen -- always computes in inference mode (its dropout, stochastic depth and batch
    norm as at inference), only the new head's dropout is active.
    """
    import keras

    dropout, dense = model.get_layer(HEAD_LAYERS[0]), model.get_layer(HEAD_LAYERS[1])
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    features = keras.Model(inputs, dropout.input, name=f"{model.name}_features")

    def head(f, training: bool = False):
        return dense(dropout(f, training=training))

    return features, head


def _all_layers(model) -> list:
    """Every layer of ``model``, nested models' layers included (the nested models too)."""
    import keras

    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(_all_layers(layer))
    return out


def set_trainable(model, base_layers, phase: str, *, unfreeze: int) -> int:
    """Freeze the backbone (``head``) or unfreeze its top ``unfreeze`` weight layers (``finetune``).

    Only the head's layers and, in ``finetune``, the top ``unfreeze`` layers with weights of
    ``base_layers`` train; every other layer is frozen (batch-norm layers always, and layers
    the backbone was built frozen with, which :func:`build_classifier` leaves out of
    ``base_layers``). Returns the number of trainable weight tensors.
    """
    import keras

    allowed = {id(model.get_layer(name)) for name in HEAD_LAYERS}
    if phase == "finetune" and unfreeze > 0:
        weighted = [l for l in base_layers
                    if l.weights and not isinstance(l, (keras.layers.BatchNormalization, keras.Model))]
        allowed.update(id(l) for l in weighted[-unfreeze:])
    _apply_trainable(model, allowed)
    return len(model.trainable_weights)


def _apply_trainable(model, allowed: set[int]) -> bool:
    """Make exactly the ``allowed`` layers trainable (nested models: those holding one).

    A nested model's flag is set first (Keras propagates it to its layers), then its layers'.
    Returns whether ``model`` holds an allowed layer.
    """
    import keras

    holds = False
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            inner = any(id(l) in allowed for l in _all_layers(layer))
            layer.trainable = inner
            if inner:
                _apply_trainable(layer, allowed)
            holds |= inner
        else:
            layer.trainable = id(layer) in allowed
            holds |= layer.trainable
    return holds


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
@dataclasses.dataclass
class TrainState:
    """Where a run stands: counters, running sums, early stopping and history.

    Saved as ``state.json`` in every checkpoint (the layout :func:`read_state` returns, with the
    running sums as ``sums: [loss_sum, correct_sum, seen]``).

    Attributes:
        epoch: the epoch being trained (the number of epochs done).
        step_in_epoch: steps of ``epoch`` done.
        global_step: steps done in the whole run.
        phase: the phase of ``epoch`` (``head`` or ``finetune``).
        best_val_loss: per phase, the best validation loss so far (None: it was not finite).
        wait: per phase, epochs since the validation loss last improved.
        loss_sum: sum of the per-batch losses times batch size, over ``epoch``'s steps so far.
        correct_sum: correctly classified training images over ``epoch``'s steps so far.
        seen: training images over ``epoch``'s steps so far.
        history: one row per finished epoch (the rows of ``log.csv``).
        stopped_early: phases that early stopping ended.
        resumes: how often the run was resumed.
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    phase: str = ""
    best_val_loss: dict[str, float | None] = dataclasses.field(default_factory=dict)
    wait: dict[str, int] = dataclasses.field(default_factory=dict)
    loss_sum: float = 0.0
    correct_sum: float = 0.0
    seen: float = 0.0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    stopped_early: dict[str, bool] = dataclasses.field(default_factory=dict)
    resumes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The ``state.json`` layout."""
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step, "phase": self.phase,
                "best_val_loss": self.best_val_loss, "wait": self.wait,
                "sums": [self.loss_sum, self.correct_sum, self.seen], "history": self.history,
                "stopped_early": self.stopped_early, "resumes": self.resumes}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainState":
        loss_sum, correct_sum, seen = values["sums"]
        return cls(epoch=int(values["epoch"]), step_in_epoch=int(values["step_in_epoch"]),
                   global_step=int(values["global_step"]), phase=values.get("phase", ""),
                   best_val_loss=values["best_val_loss"], wait=values["wait"],
                   loss_sum=loss_sum, correct_sum=correct_sum, seen=seen,
                   history=values["history"], stopped_early=values["stopped_early"],
                   resumes=int(values.get("resumes", 0)))

    def add_step(self, loss: float, correct: float, n: int) -> None:
        """Count one training step of ``n`` images with mean ``loss`` and ``correct`` hits."""
        self.loss_sum += loss * n
        self.correct_sum += correct
        self.seen += n
        self.step_in_epoch += 1
        self.global_step += 1

    def update_early_stopping(self, val_loss: float, *, min_delta: float, patience: int) -> bool:
        """Track the phase's best validation loss; True when the phase just ran out of patience."""
        phase = self.phase
        best = self.best_val_loss.get(phase)
        improved = best is None or not np.isfinite(val_loss) or val_loss < best - min_delta
        if improved:
            self.best_val_loss[phase] = val_loss if np.isfinite(val_loss) else None
            self.wait[phase] = 0
            return False
        self.wait[phase] = self.wait.get(phase, 0) + 1
        if patience and self.wait[phase] >= patience:
            self.stopped_early[phase] = True
            return True
        return False

    def next_epoch(self) -> None:
        """Move to the start of the next epoch (running sums back to zero)."""
        self.epoch += 1
        self.step_in_epoch = 0
        self.loss_sum = self.correct_sum = self.seen = 0.0


def _atomic_json(path: Path, obj: Any) -> None:
    write_json(path, obj, indent=1)


def _save_checkpoint(ckpt_dir: Path, model, optimizer, state: TrainState) -> Path:
    """Write a checkpoint folder (whole or not at all), point ``latest.json`` at it, and remove
    the older ones (and debris of interrupted saves)."""
    name = f"ckpt-{state.global_step:08d}-e{state.epoch:03d}"
    with replace_dir(ckpt_dir / name) as tmp:
        model.save_weights(tmp / "model.weights.h5")
        _save_variables(tmp / "optimizer.npz", optimizer.variables)
        _save_variables(tmp / "rng.npz", _rng_variables(model))
        (tmp / "state.json").write_text(json.dumps(state.to_dict(), indent=1))
    _atomic_json(ckpt_dir / "latest.json", {"checkpoint": name, "global_step": state.global_step})
    for old in ckpt_dir.iterdir():  # keep the newest only
        if old.is_dir() and old.name != name and _CHECKPOINT_NAME.fullmatch(old.name):
            shutil.rmtree(old, ignore_errors=True)
    return ckpt_dir / name


def _save_variables(path: Path, variables) -> None:
    values = {f"v{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    with open(path, "wb") as fh:
        np.savez(fh, **values)


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


def _restore_checkpoint(ckpt_dir: Path, model, optimizer=None) -> None:
    """Load the latest checkpoint's weights and random state into ``model`` (and its optimizer
    state into ``optimizer``, when given)."""
    latest = ckpt_dir / json.loads((ckpt_dir / "latest.json").read_text())["checkpoint"]
    model.load_weights(latest / "model.weights.h5")
    _restore_rng(model, latest / "rng.npz")
    if optimizer is not None:
        _restore_optimizer(optimizer, latest / "optimizer.npz")


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
        row = "\t".join((r["path"], r["class"], r["split"], r.get("sha256", "")))
        digest.update(row.encode("utf-8", "surrogateescape"))  # a non-UTF-8 file name: its own bytes
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
    skip_missing: bool = False,
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
        skip_missing: leave out the manifest's files that are missing (counted, in
            ``TrainResult.skipped_missing``) instead of refusing to start.

    ``run_dir`` is the kit's own (``.nsfwkit.json`` marker, kind ``train``; a folder an older kit
    wrote is recognised by its ``config.json``) or new/empty; any other folder is refused
    (:class:`~nsfwkit.fileio.ForeignFolderError`). It is locked while the run writes into it
    (a second run gets :class:`~nsfwkit.fileio.FolderBusyError` naming the holder's PID).

    Multi-worker runs: only the chief (task type ``chief``, or worker 0 when there is no
    chief) writes into ``run_dir``; other workers read its checkpoints to resume but write
    their own into a temporary folder.

    Returns:
        A :class:`TrainResult`.

    Raises:
        DatasetError: fewer than two classes have training images, or the split is empty.
        ValueError: ``resume`` is set and ``run_dir`` holds a run with a different config.
        MissingFilesError: files of the manifest are missing (and not ``skip_missing``).
        TrainingError: the run trained 0 steps (nothing is saved as ``model.keras``).
    """
    config = _as_config(config)
    run_dir = Path(run_dir)
    splits, missing = _read_splits(manifest, config, skip_missing=skip_missing)
    if splits.clips_left_out and verbose:
        print(f"{splits.clips_left_out} clips left out of training (still images only); opt in with clip_frames")
    devices = _Devices.detect(config)
    with _run_folder(run_dir, chief=is_chief(devices.strategy)):
        out_dir, saved_state = _open_run_folder(run_dir, manifest, config, splits, devices, resume=resume)
        loop = _Loop(config, splits, devices, run_dir=run_dir, out_dir=out_dir, verbose=verbose,
                     progress=verbose if progress is None else progress)
        state, resumed_from = loop.resume(saved_state)
        loop.run_epochs(state, resumed=resumed_from is not None)
        if state.global_step == 0:
            raise TrainingError(f"{manifest}: trained 0 steps (no training image could be used); "
                                "nothing saved")
        result = loop.finalise(state, manifest=manifest, resumed_from=resumed_from,
                               nsfw_classes=nsfw_classes)
    result.skipped_missing, result.clips_left_out = missing, splits.clips_left_out
    return result


class TrainingError(RuntimeError):
    """A run that could not train (0 steps): an error, never an untrained model saved."""


#: What a run folder of this kit holds (an older kit's, before ownership markers, is recognised by these;
#: notebook 02 adds its evaluation and history plot).
_RUN_ENTRIES = frozenset({"model.keras", "model.spec.json", "config.json", "log.csv", "tensorboard",
                          "checkpoints", "best.weights.h5", "evaluation", "history.png", fileio.LOCK_FILE})
_RUN_CONFIG_KEYS = frozenset({"config", "class_names", "train_files", "manifest_sha256"})
#: The kit's names in ``checkpoints/`` (a checkpoint, its staging/old copies, the pointer).
_CHECKPOINT_NAME = re.compile(r"\.?ckpt-\d{8}-e\d{3}(\.(tmp|old)-[0-9a-f]{12})?"
                              r"|latest\.json|\.latest\.tmp[0-9-]+\.json")


def _legacy_run(folder: Path) -> bool:
    """A run folder an older kit wrote: its ``config.json`` and nothing but the run layout."""
    try:
        saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(saved, dict) and set(saved) == _RUN_CONFIG_KEYS
            and all(p.name in _RUN_ENTRIES for p in folder.iterdir()))


@contextlib.contextmanager
def _run_folder(run_dir: Path, *, chief: bool):
    """The chief claims and locks the run folder; other workers only read it."""
    if not chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        yield run_dir
        return
    with fileio.owned_folder(run_dir, "train", legacy=_legacy_run) as folder:
        yield folder


def _discard_checkpoints(ckpt_dir: Path) -> None:
    """Delete the kit's checkpoints (``--restart``); any other file in ``ckpt_dir`` stays."""
    if not ckpt_dir.is_dir():
        return
    for entry in ckpt_dir.iterdir():
        if not _CHECKPOINT_NAME.fullmatch(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _as_config(config: TrainConfig | dict | None) -> TrainConfig:
    if config is None:
        return TrainConfig()
    if isinstance(config, dict):
        return TrainConfig.from_dict(config)
    return config


@dataclasses.dataclass(frozen=True)
class _Splits:
    """A manifest's train and val splits as arrays, with a loss weight per training image."""

    class_names: tuple[str, ...]
    train_paths: list[str]
    train_labels: np.ndarray
    val_paths: list[str]
    val_labels: np.ndarray
    sample_weights: np.ndarray
    train_frames: np.ndarray | None = None  # per example: the clip frame to decode (-1: a still)
    val_frames: np.ndarray | None = None
    clips_left_out: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _read_splits(manifest: str | os.PathLike, config: TrainConfig, *,
                 skip_missing: bool = False) -> tuple[_Splits, list[str]]:
    """``(splits, missing)``: the train and val splits (missing files refused, or left out and
    returned when ``skip_missing``)."""
    class_names = _data.manifest_class_names(manifest)
    train_paths, train_rows, _ = _split_rows(manifest, "train", class_names)
    val_paths, val_rows, _ = _split_rows(manifest, "val", class_names)
    everything = _data.existing_files(manifest, train_paths + val_paths,
                                      np.concatenate([train_rows, val_rows]), skip_missing=skip_missing)
    missing = set(everything[2])
    train_paths, train_rows, _ = _data.existing_files(manifest, train_paths, train_rows, skip_missing=True)
    val_paths, val_rows, _ = _data.existing_files(manifest, val_paths, val_rows, skip_missing=True)
    train_paths, train_labels, train_frames, train_clips = _clip_examples(train_paths, train_rows, config.clip_frames)
    val_paths, val_labels, val_frames, val_clips = _clip_examples(val_paths, val_rows, config.clip_frames)
    present = sorted(set(train_labels.tolist()))
    if len(present) < 2:
        raise _data.DatasetError(
            f"{manifest}: training needs images of at least two classes in the train split; "
            f"found {[class_names[i] for i in present]}"
        )
    num_classes = len(class_names)
    weights = (_data.class_weights(train_labels, num_classes) if config.class_weighting
               else np.ones(num_classes, np.float32))
    return _Splits(class_names=class_names, train_paths=train_paths, train_labels=train_labels,
                   val_paths=val_paths, val_labels=val_labels, sample_weights=weights[train_labels],
                   train_frames=train_frames, val_frames=val_frames,
                   clips_left_out=train_clips + val_clips), sorted(missing)


def _split_rows(manifest, split: str, class_names) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """``(paths, rows, names)``: a split's paths and ``(label, clip frames)`` rows (0 frames: a still)."""
    paths, labels, names = _data.manifest_arrays(manifest, split, class_names=class_names)
    rows = np.stack([labels, _data.clip_frame_counts(manifest, split)], axis=1) if paths else np.zeros((0, 2), np.int64)
    return paths, rows, names


def _clip_examples(paths: list[str], rows: np.ndarray, clip_frames: int):
    """``(paths, labels, frames, clips_left_out)``: one example per still (frame -1); per clip, none
    (``clip_frames`` 0: counted) or up to ``clip_frames`` of its sampled frames, evenly spaced."""
    out_paths, out_labels, out_frames, left_out = [], [], [], 0
    for path, (label, count) in zip(paths, rows.tolist()):
        if count == 0:
            picks = [-1]
        elif clip_frames <= 0:
            left_out += 1
            continue
        else:
            picks = sorted(set(np.round(np.linspace(0, count - 1, min(clip_frames, count))).astype(int).tolist()))
        out_paths += [path] * len(picks)
        out_labels += [label] * len(picks)
        out_frames += picks
    return out_paths, np.array(out_labels, np.int64), np.array(out_frames, np.int64), left_out


@dataclasses.dataclass(frozen=True)
class _Devices:
    """How a run computes: a mixed dtype policy (None: float32), XLA, a distribution strategy."""

    policy: str | None
    jit: bool
    strategy: Any

    @classmethod
    def detect(cls, config: TrainConfig) -> "_Devices":
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
        return cls(policy=_mixed_policy(config.mixed_precision, gpus),
                   jit=_resolve_auto(config.jit_compile, gpus),
                   strategy=_strategy(config.strategy, gpus))


def _open_run_folder(run_dir: Path, manifest, config: TrainConfig, splits: _Splits,
                     devices: _Devices, *, resume: bool) -> tuple[Path, TrainState | None]:
    """``(out_dir, state)``: where this process writes, and the checkpoint state to resume
    (None: start from scratch).

    A run folder is resumed only when it holds this very config and dataset (else
    ``ValueError``). The chief writes ``config.json`` (and, without ``resume``, discards the old
    checkpoints); non-chief workers of a multi-worker run never write into the shared run
    folder, only into a temporary one.
    """
    config_path = run_dir / "config.json"
    saved = {"config": config.to_dict(), "class_names": list(splits.class_names),
             "train_files": len(splits.train_paths), "manifest_sha256": manifest_digest(manifest)}
    chief = is_chief(devices.strategy)
    out_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="nsfwkit-worker-"))
    state = read_state(run_dir) if resume else None
    if state is not None:
        previous = json.loads(config_path.read_text()) if config_path.is_file() else None
        if isinstance(previous, dict) and isinstance(previous.get("config"), dict):
            previous["config"].setdefault("clip_frames", 0)  # a run from before clips: still images only
        if previous != saved:
            raise ValueError(
                f"{run_dir}: holds a run with a different config or dataset; use another "
                "run folder or resume=False to start over"
            )
    if chief:
        ckpt_dir = out_dir / "checkpoints"
        if not resume:
            _discard_checkpoints(ckpt_dir)
        _atomic_json(config_path, saved)
    return out_dir, None if state is None else TrainState.from_dict(state)


def _build_model(config: TrainConfig, class_names: Sequence[str], devices: _Devices):
    """:func:`build_classifier` under the strategy's scope, copied into the mixed dtype policy
    when there is one: ``(model, base_spec, base_layers)``."""
    with devices.strategy.scope():
        model, base_spec, base_layers = build_classifier(config, class_names)
        if devices.policy:
            mixed_model = to_dtype_policy(model, devices.policy)
            base_layers = map_layers(model, mixed_model, base_layers)
            model = mixed_model
    return model, base_spec, base_layers


def _make_optimizer(model, learning_rate: float, policy: str | None):
    """A built Adam for the model's trainable variables (with loss scaling for float16)."""
    import keras

    opt = keras.optimizers.Adam(learning_rate=learning_rate)
    if policy == "mixed_float16":  # bfloat16 has float32's range: no loss scaling
        opt = keras.optimizers.LossScaleOptimizer(opt)
    opt.build(model.trainable_variables)
    return opt


class _Steps:
    """The compiled training step of one phase (each phase has its own optimizer).

    ``train_step(x, y, w) -> (loss, correct, n)``: one optimizer step on a (distributed) batch:
    its mean loss, correct predictions and images, summed over replicas (and workers). ``forward(x)`` gives
    the training-mode probabilities of a batch (of images, or of backbone features).
    """

    def __init__(self, model, forward, optimizer, loss_fn, *, strategy, jit: bool):
        import tensorflow as tf

        self.model, self.forward, self.optimizer = model, forward, optimizer
        self.loss_fn, self.strategy = loss_fn, strategy
        self._replica_step = tf.function(self._replica_step_fn, jit_compile=jit)
        self.train_step = tf.function(self._train_step_fn)

    def _replica_step_fn(self, x, y, w):
        import tensorflow as tf

        local = tf.shape(y)[0]
        global_batch = local
        if self.strategy.num_replicas_in_sync > 1:
            # the global batch summed over replicas: a last, partial batch splits unevenly, and
            # compute_average_loss's default (local size x replicas) would weight it wrongly
            total = tf.distribute.get_replica_context().all_reduce("SUM", tf.cast(local, tf.float32))
            global_batch = tf.cast(tf.round(total), tf.int32)
        with tf.GradientTape() as tape:
            probs = self.forward(x)
            per_example = self.loss_fn(y, probs) * w
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.model.trainable_variables)
        self.optimizer.apply(grads, self.model.trainable_variables)
        correct = tf.reduce_sum(tf.cast(tf.argmax(probs, -1) == tf.argmax(y, -1), tf.float32))
        return loss, correct, tf.cast(local, tf.float32)

    def _train_step_fn(self, x, y, w):
        loss, correct, n = self.strategy.run(self._replica_step, args=(x, y, w))
        return tuple(self.strategy.reduce("SUM", v, axis=None) for v in (loss, correct, n))


@dataclasses.dataclass(frozen=True)
class _Features:
    """Backbone features of a split's images (``float32 (N, D)``; rows of files that failed to
    decode are zero and ``ok`` False)."""

    values: np.ndarray
    ok: np.ndarray


class _Loop:
    """One run's model, data and outputs, and the loop over its epochs.

    :meth:`resume` gives the state to start from, :meth:`run_epochs` trains what is left of the
    phases (checkpointing as it goes), :meth:`finalise` saves the inference model and its spec.
    """

    def __init__(self, config: TrainConfig, splits: _Splits, devices: _Devices, *, run_dir: Path,
                 out_dir: Path, verbose: bool, progress: bool):
        import keras
        import tensorflow as tf

        self.config, self.splits, self.devices = config, splits, devices
        self.run_dir, self.out_dir = run_dir, out_dir
        self.ckpt_dir = out_dir / "checkpoints"
        self.best_path = out_dir / "best.weights.h5"
        self.verbose, self.progress = verbose, progress
        self.model, self.base_spec, self.base_layers = _build_model(config, splits.class_names, devices)
        self.image_size = int(self.model.inputs[0].shape[1])
        self.steps_per_epoch = math.ceil(len(splits.train_paths) / config.batch_size)
        if config.steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, int(config.steps_per_epoch))
        self.phases = ["head"] * config.epochs_head + ["finetune"] * config.epochs_finetune
        # decoded in epoch 0's order, so the first epoch trains while it decodes; later epochs
        # shuffle the cached images
        self.decoded_train = _data.decode_in_epoch_order(
            splits.train_paths, image_size=self.image_size, seed=config.seed, cache=config.cache,
            frames=splits.train_frames)
        self.decoded_val = _data.DecodedImages(
            _data.decode_dataset(splits.val_paths, image_size=self.image_size, cache=config.cache,
                                 frames=splits.val_frames))
        self.loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing,
                                                            reduction="none")
        self.val_loss_fn = keras.losses.CategoricalCrossentropy(reduction="none")
        self.writer = tf.summary.create_file_writer(str(out_dir / "tensorboard"))
        self.features, self.head = classifier_parts(self.model)
        self.predict_step = tf.function(self._predict)
        self.features_step = tf.function(self._features)
        self.head_step = tf.function(self._head)
        self.cached: dict[str, _Features] = {}  # frozen backbone features, per split
        self.optimizer = None
        self.steps: _Steps | None = None

    def _predict(self, x):
        return self.model(x, training=False)

    def _features(self, x):
        return self.features(x, training=False)

    def _head(self, f):
        return self.head(f, training=False)

    def _train_on_images(self, x):
        return self.head(self.features(x, training=False), training=True)

    def _train_on_features(self, f):
        return self.head(f, training=True)

    def _uses_features(self, phase: str) -> bool:
        """Whether ``phase`` fits the head on cached features of the frozen backbone."""
        return phase == "head" and not self.config.augment_head

    def _lr(self, phase: str) -> float:
        return self.config.lr_head if phase == "head" else self.config.lr_finetune

    def resume(self, state: TrainState | None) -> tuple[TrainState, int | None]:
        """``(state, resumed_from)``: a fresh state, or a checkpoint's and the step it was at.

        The checkpoint's weights and optimizer are loaded when its phase starts
        (:meth:`run_epochs`), once the phase's optimizer exists.
        """
        if state is None:
            return TrainState(phase=self.phases[0] if self.phases else ""), None
        state.resumes += 1
        if self.verbose:
            print(f"resuming from step {state.global_step} (epoch {state.epoch}, "
                  f"step {state.step_in_epoch} of {self.steps_per_epoch})", flush=True)
        return state, state.global_step

    def run_epochs(self, state: TrainState, *, resumed: bool) -> None:
        """Train every epoch ``state`` has not done, skipping phases stopped early."""
        current = None
        start_time = time.time()
        while state.epoch < len(self.phases):
            phase = self.phases[state.epoch]
            if state.stopped_early.get(phase):
                state.epoch += 1
                continue
            if phase != current:
                # a resumed run loads its checkpoint into the first phase it trains; the saved
                # optimizer state belongs to that phase only if the checkpoint was taken in it
                restore = resumed and current is None
                self._start_phase(phase, restore=restore, restore_optimizer=state.phase == phase,
                                  fresh=not resumed and current is None)
                current = phase
            state.phase = phase
            self._train_epoch(state)
            self._end_epoch(state, start_time)

    def _start_phase(self, phase: str, *, restore: bool, restore_optimizer: bool, fresh: bool) -> None:
        """Set the phase's trainable layers and a fresh optimizer (after a resume: load the
        checkpoint into them; at the start of a new run: the head from the linear probe), and
        compile the phase's training step."""
        with self.devices.strategy.scope():
            n_trainable = set_trainable(self.model, self.base_layers, phase, unfreeze=self.config.unfreeze)
            self.optimizer = _make_optimizer(self.model, self._lr(phase), self.devices.policy)
        if restore:
            _restore_checkpoint(self.run_dir / "checkpoints", self.model,
                                self.optimizer if restore_optimizer else None)
        elif fresh and self.config.probe_init:
            self._init_head_from_probe()
        if not self._uses_features(phase):
            self.cached.clear()  # the backbone may change from here on
        forward = self._train_on_features if self._uses_features(phase) else self._train_on_images
        self.steps = _Steps(self.model, forward, self.optimizer, self.loss_fn,
                            strategy=self.devices.strategy, jit=self.devices.jit)
        if self.verbose:
            print(f"phase {phase}: {n_trainable} trainable weight tensors, "
                  f"lr {self._lr(phase):g}", flush=True)

    def _train_epoch(self, state: TrainState) -> None:
        """The steps of ``state.epoch`` not done yet, with a checkpoint every
        ``checkpoint_every`` global steps (except on an epoch's last step: its end saves one)."""
        config, strategy = self.config, self.devices.strategy
        ds = self._epoch_batches(state).take(self.steps_per_epoch).skip(state.step_in_epoch)
        replicas = strategy.num_replicas_in_sync
        if replicas > 1:
            ds = strategy.experimental_distribute_dataset(ds)
        bar = self._progress_bar(state)
        for x, y, w in ds:
            loss, correct, n = self.steps.train_step(x, y, w)
            state.add_step(float(loss), float(correct), int(n))
            _scalars(self.writer, {"batch/loss": float(loss)}, state.global_step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
            if config.throttle_s:
                time.sleep(config.throttle_s)
            if state.step_in_epoch < self.steps_per_epoch and \
                    state.global_step % max(1, config.checkpoint_every) == 0:
                _save_checkpoint(self.ckpt_dir, self.model, self.optimizer, state)
        if bar is not None:
            bar.close()

    def _epoch_batches(self, state: TrainState):
        """The epoch's ``(x, y, w)`` batches: images (augmented in the fine-tuning phase, or in
        the head phase with ``augment_head``), or the cached backbone features of the training
        images in the epoch's order (:func:`nsfwkit.data.epoch_order`)."""
        import tensorflow as tf

        config, splits = self.config, self.splits
        if self._uses_features(state.phase):
            feats = self._cached_features("train")
            order = _data.epoch_order(len(splits.train_paths), config.seed, state.epoch)
            order = order[feats.ok[order]]
            targets = np.eye(splits.num_classes, dtype=np.float32)[splits.train_labels[order]]
            return tf.data.Dataset.from_tensor_slices(
                (feats.values[order], targets, splits.sample_weights[order].astype(np.float32))
            ).batch(config.batch_size)
        options = _data.PipelineOptions(batch_size=config.batch_size, num_classes=splits.num_classes,
                                        training=True, augment=config.augment, seed=config.seed,
                                        epoch=state.epoch)
        return _data.make_dataset(splits.train_paths, splits.train_labels, image_size=self.image_size,
                                  sample_weights=splits.sample_weights, options=options,
                                  decoded=self.decoded_train)

    def _init_head_from_probe(self) -> None:
        """Set the head's dense layer to a class-weighted logistic regression on the frozen
        features of the training images (computed once, then reused by the head phase)."""
        from . import evaluate

        feats = self._cached_features("train")
        ok = feats.ok
        if not ok.any():
            raise TrainingError(f"none of the {len(ok)} training images could be decoded: 0 steps to train; "
                                "nothing saved")
        kernel, bias = evaluate.fit_linear_probe(
            feats.values[ok], self.splits.train_labels[ok], num_classes=self.splits.num_classes,
            sample_weight=self.splits.sample_weights[ok])
        self.model.get_layer(HEAD_LAYERS[1]).set_weights([kernel, bias])

    def _cached_features(self, split: str) -> _Features:
        """The frozen backbone's features of a split, computed on first use (head phase only)."""
        if split not in self.cached:
            decoded = self.decoded_train if split == "train" else self.decoded_val
            n = len(self.splits.train_paths if split == "train" else self.splits.val_paths)
            self.cached[split] = self._compute_features(decoded.dataset, n)
        return self.cached[split]

    def _compute_features(self, decoded, n: int) -> _Features:
        """Backbone features (inference mode) of a :func:`nsfwkit.data.decode_dataset`."""
        import tensorflow as tf

        values, ok = None, np.zeros(n, bool)
        for idx, x in decoded.batch(self.config.batch_size).prefetch(tf.data.AUTOTUNE):
            f = np.asarray(self.features_step(x), np.float32)
            if values is None:
                values = np.zeros((n, f.shape[-1]), np.float32)
            values[idx.numpy()] = f
            ok[idx.numpy()] = True
        if values is None:
            values = np.zeros((n, int(self.features.outputs[0].shape[-1])), np.float32)
        return _Features(values=values, ok=ok)

    def _progress_bar(self, state: TrainState):
        if not self.progress:
            return None
        from .progress import progress_bar

        return progress_bar(total=self.steps_per_epoch, initial=state.step_in_epoch, unit="step",
                            desc=f"epoch {state.epoch} [{state.phase}]", leave=False)

    def _end_epoch(self, state: TrainState, start_time: float) -> None:
        """Validate, log the epoch, keep the best weights, stop early, checkpoint the epoch end."""
        val_loss, val_acc = self._validate(state.phase)
        epoch, phase = state.epoch, state.phase
        seen = max(state.seen, 1)
        row = {"epoch": epoch, "phase": phase, "steps": state.global_step,
               "loss": state.loss_sum / seen, "accuracy": state.correct_sum / seen,
               "val_loss": val_loss, "val_accuracy": val_acc, "lr": self._lr(phase)}
        state.history.append(row)
        _scalars(self.writer, {f"epoch/{k}": row[k] for k in ("loss", "accuracy", "val_loss",
                                                               "val_accuracy")}, epoch)
        self.writer.flush()
        overall = min([h["val_loss"] for h in state.history[:-1]] + [np.inf])
        if not np.isfinite(val_loss) or val_loss <= overall:  # the best of the whole run so far
            with atomic_path(self.best_path, suffix=".weights.h5") as tmp:
                self.model.save_weights(tmp)
        stopped = state.update_early_stopping(val_loss, min_delta=self.config.min_delta,
                                              patience=self.config.patience)
        if stopped and self.verbose:
            print(f"early stopping in phase {phase} after epoch {epoch}", flush=True)
        state.next_epoch()
        _save_checkpoint(self.ckpt_dir, self.model, self.optimizer, state)
        _write_log(self.out_dir / "log.csv", state.history)
        if self.verbose:
            print(f"epoch {epoch} [{phase}] loss {row['loss']:.4f} acc {row['accuracy']:.3f} "
                  f"val_loss {val_loss:.4f} val_acc {val_acc:.3f} "
                  f"({state.global_step} steps, {time.time() - start_time:.0f} s)", flush=True)

    def _validate(self, phase: str) -> tuple[float, float]:
        """Mean loss and accuracy on the val split (NaN when there is none); in the head phase
        on the cached features of the frozen backbone (the same numbers, without the backbone)."""
        import tensorflow as tf

        if not self.splits.val_paths:
            return float("nan"), float("nan")
        if self._uses_features(phase):
            feats = self._cached_features("val")
            rows = np.flatnonzero(feats.ok)
            targets = np.eye(self.splits.num_classes, dtype=np.float32)[self.splits.val_labels[rows]]
            ds = tf.data.Dataset.from_tensor_slices((feats.values[rows], targets)).batch(
                self.config.batch_size)
            predict = self.head_step
        else:
            options = _data.PipelineOptions(batch_size=self.config.batch_size,
                                            num_classes=self.splits.num_classes)
            ds = _data.make_dataset(self.splits.val_paths, self.splits.val_labels,
                                    image_size=self.image_size, options=options, decoded=self.decoded_val)
            predict = self.predict_step
        total, correct, n = 0.0, 0.0, 0
        for x, y in ds:
            probs = predict(x)
            total += float(tf.reduce_sum(self.val_loss_fn(y, probs)))
            correct += float(tf.reduce_sum(tf.cast(tf.argmax(probs, -1) == tf.argmax(y, -1), tf.float32)))
            n += int(x.shape[0])
        return total / max(n, 1), correct / max(n, 1)

    def finalise(self, state: TrainState, *, manifest, resumed_from: int | None,
                 nsfw_classes: Sequence[str] | None) -> TrainResult:
        """Save the inference model (the best weights, float32) and its spec beside it.

        A finished run that was resumed trained nothing: its model and spec (with any threshold
        an evaluation chose) are kept as they are.
        """
        import keras

        model_path = self.out_dir / "model.keras"
        if resumed_from is not None and resumed_from == state.global_step:
            existing = _finished_run_spec(model_path, state.global_step)
            if existing is not None:
                return self._result(model_path, existing, state, resumed_from)
        if self.best_path.is_file():
            self.model.load_weights(self.best_path)
        final = to_dtype_policy(self.model, "float32") if self.devices.policy else self.model
        calibration = self._calibrate(final) if self.config.calibrate else None
        with atomic_path(model_path) as tmp:
            final.save(tmp)
        class_names, config, base_spec = self.splits.class_names, self.config, self.base_spec
        nsfw = tuple(nsfw_classes) if nsfw_classes is not None else _data.default_nsfw_classes(class_names)
        spec = ModelSpec(
            name=f"{base_spec.name}-finetuned",
            class_names=class_names,
            image_size=self.image_size,
            nsfw_classes=nsfw,
            threshold=0.5,
            last_conv_layer=base_spec.last_conv_layer,
            preprocessing=base_spec.preprocessing,
            source=f"nsfwkit.train from {config.backbone} on {Path(manifest)}",
            extra={"train_config": config.to_dict(), "steps": state.global_step,
                   "epochs": len(state.history), "keras_version": keras.__version__,
                   "base_source": base_spec.source, "calibration": calibration},
        )
        spec.save(spec_path_for(model_path))
        _write_log(self.out_dir / "log.csv", state.history)
        return self._result(model_path, spec, state, resumed_from)

    def _calibrate(self, final) -> dict[str, Any]:
        """Fit a temperature on the val split and fold it into ``final``'s last layer.

        ``softmax((W x + b) / T) == softmax((W / T) x + b / T)``: the saved model keeps its
        layers (and its pre-softmax scores for CAMs), and the CLI, TensorFlow.js and every other
        runtime see the calibrated probabilities. Returns what goes into the spec's
        ``extra.calibration`` (temperature, val NLL and ECE before/after).
        """
        from . import evaluate

        if not self.splits.val_paths:
            return {"temperature": 1.0, "fitted_on": None, "note": "no val split: not calibrated"}
        feats = self._compute_features(self.decoded_val.dataset, len(self.splits.val_paths))
        dense = final.get_layer(HEAD_LAYERS[1])
        kernel, bias = dense.get_weights()
        logits = feats.values[feats.ok].astype(np.float64) @ kernel + bias
        fit = evaluate.fit_temperature(logits, self.splits.val_labels[feats.ok])
        t = fit["temperature"]
        dense.set_weights([(kernel / t).astype(kernel.dtype), (bias / t).astype(bias.dtype)])
        return {**fit, "fitted_on": "val", "folded_into": HEAD_LAYERS[1]}

    def _result(self, model_path: Path, spec: ModelSpec, state: TrainState,
                resumed_from: int | None) -> TrainResult:
        return TrainResult(model_path=model_path, spec=spec, history=state.history,
                           steps=int(state.global_step), resumed_from=resumed_from,
                           run_dir=self.run_dir)


def _finished_run_spec(model_path: Path, steps: int) -> ModelSpec | None:
    """The spec beside ``model_path`` when it is the model of a run finished at ``steps``."""
    spec_path = spec_path_for(model_path)
    if not (model_path.is_file() and spec_path.is_file()):
        return None
    try:
        existing = ModelSpec.load(spec_path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return existing if existing.extra.get("steps") == steps else None


def _scalars(writer, values: dict[str, float], step: int) -> None:
    """Write TensorBoard scalars as plain ``Summary`` protos (no ``tensorboard`` package needed
    to write them; the set-up installs ``tensorboard`` to view them)."""
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
