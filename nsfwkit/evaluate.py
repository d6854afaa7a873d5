"""Evaluation: metrics, curves, calibration, an operating threshold, a report and a model card.

Multi-class view: accuracy, confusion matrix, per-class precision/recall/F1, one-vs-rest ROC and
PR curves with their AUCs, and calibration (reliability diagram, expected calibration error).

Binary SFW/NSFW view: the NSFW score is the summed probability of the NSFW classes (the spec's
``nsfw_classes``); an **operating threshold** is chosen for a stated target -- e.g.
``"nsfw_recall>=0.95"`` (catch at least 95% of NSFW images with as few false alarms as
possible) or ``"fpr<=0.01"`` (at most 1% of safe images flagged, catching as much as possible)
-- **on the validation split**, then reported with its confusion on the **test split**, so the
numbers are not tuned on the data they are reported on.

:func:`evaluate_run` does the whole job for a trained model: predictions, the same evaluation
of the pretrained default model as a baseline, plots, ``report.json`` and a markdown model card
in an output folder, and the chosen threshold written into the spec of a model nsfwkit trained
(never into a user's own spec unless asked, never when the target was not met).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import data as _data
from .fileio import atomic_path, json_safe, write_text
from .kerasutil import inference_fn
from .spec import ModelSpec, spec_path_for
from .zoo import DEFAULT_MODEL

__all__ = [
    "predict",
    "align_classes",
    "parse_target",
    "choose_threshold",
    "binary_confusion",
    "calibration",
    "evaluate_predictions",
    "evaluate_model",
    "plot_confusion_matrix",
    "plot_roc_pr",
    "plot_reliability",
    "plot_threshold",
    "plot_worst_mistakes",
    "model_card",
    "evaluate_run",
    "EvaluationRun",
]


# ------------------------------------------------------------------------------------------
# Predictions
# ------------------------------------------------------------------------------------------
def predict(model, paths: Sequence[str], *, image_size: int, batch_size: int = 32):
    """Class probabilities for image files, decoded and resized exactly as in inference.

    Returns:
        ``(probs, ok)``: ``float32 (N, C)`` (rows of files that failed to decode are NaN) and a
        ``bool (N,)`` mask of the files that decoded.
    """
    import tensorflow as tf

    n = len(paths)
    n_out = int(model.outputs[0].shape[-1])
    probs = np.full((n, n_out), np.nan, np.float32)
    ok = np.zeros(n, bool)
    if n == 0:
        return probs, ok
    ds = _data.decode_dataset(list(paths), image_size=image_size, cache=False).batch(batch_size)
    forward = inference_fn(model, image_size)
    for idx, x in ds.prefetch(tf.data.AUTOTUNE):
        i = idx.numpy()
        probs[i] = np.asarray(forward(x), np.float32)
        ok[i] = True
    return probs, ok


def align_classes(probs: np.ndarray, model_classes: Sequence[str],
                  dataset_classes: Sequence[str]) -> np.ndarray | None:
    """Reorder a model's probability columns to a dataset's classes, matching names loosely
    (:func:`nsfwkit.data.class_key`: ``Drawing`` == ``drawings``). None when some dataset class
    has no match."""
    lookup = {_data.class_key(c): i for i, c in enumerate(model_classes)}
    cols = [lookup.get(_data.class_key(c)) for c in dataset_classes]
    if any(c is None for c in cols):
        return None
    return probs[:, cols]


# ------------------------------------------------------------------------------------------
# Thresholds
# ------------------------------------------------------------------------------------------
def parse_target(target: str) -> tuple[str, float]:
    """``"nsfw_recall>=0.95"`` -> ``("recall", 0.95)``; ``"fpr<=0.01"`` -> ``("fpr", 0.01)``.

    ``"nsfw_recall:0.95"`` and ``"fpr:0.01"`` are accepted too (papermill cannot parse a
    parameter default containing ``=``).
    """
    text = target.replace(" ", "").lower()
    m = re.fullmatch(r"(?:nsfw_)?recall(?:>=|:)([0-9.]+)", text)
    if m:
        return "recall", float(m.group(1))
    m = re.fullmatch(r"fpr(?:<=|:)([0-9.]+)", text)
    if m:
        return "fpr", float(m.group(1))
    raise ValueError(f"unknown target {target!r}; use 'nsfw_recall>=0.95' or 'fpr<=0.01'")


def binary_confusion(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Confusion at ``scores >= threshold`` (flagged as NSFW) against ``y_true`` (1 = NSFW)."""
    y = np.asarray(y_true).astype(bool)
    flag = np.asarray(scores) >= threshold
    tp = int(np.sum(flag & y))
    fp = int(np.sum(flag & ~y))
    fn = int(np.sum(~flag & y))
    tn = int(np.sum(~flag & ~y))
    return {
        "threshold": float(threshold), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "fpr": fp / (fp + tn) if fp + tn else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "accuracy": (tp + tn) / max(len(y), 1),
    }


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, *,
                     target: str = "nsfw_recall>=0.95") -> dict[str, Any]:
    """Pick the operating threshold on NSFW scores for a target.

    * ``nsfw_recall>=R``: the **highest** threshold whose NSFW recall is at least ``R`` (the
      fewest false alarms that still catch the target share);
    * ``fpr<=F``: the **lowest** threshold whose false-positive rate is at most ``F`` (the most
      NSFW caught within the false-alarm budget).

    Candidate thresholds are the observed scores (and 1 + eps: flag nothing). Returns the
    :func:`binary_confusion` at the chosen threshold plus ``target`` and ``met`` (False when no
    threshold reaches it; then the closest one is returned: never save that one).

    Raises:
        ValueError: ``y_true`` lacks NSFW or safe images (no threshold can be chosen from it),
            or the target is unknown.
    """
    kind, value = parse_target(target)
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, np.float64)
    if y.size == 0 or y.all() or not y.any():
        raise ValueError(
            f"choosing a threshold needs both NSFW and safe images; got {int(y.sum())} NSFW and "
            f"{int((~y).sum())} safe")
    candidates = np.unique(np.concatenate([s, [np.nextafter(1.0, 2.0)]]))
    rows = [binary_confusion(y, s, t) for t in candidates]
    if kind == "recall":
        ok = [r for r in rows if r["recall"] >= value]
        best = max(ok, key=lambda r: r["threshold"]) if ok else max(rows, key=lambda r: r["recall"])
    else:
        ok = [r for r in rows if r["fpr"] <= value]
        best = min(ok, key=lambda r: r["threshold"]) if ok else min(rows, key=lambda r: r["fpr"])
    return {**best, "target": target, "met": bool(ok)}


# ------------------------------------------------------------------------------------------
# Calibration and the metric report
# ------------------------------------------------------------------------------------------
def calibration(y_true: np.ndarray, probs: np.ndarray, *, bins: int = 10) -> dict[str, Any]:
    """Top-1 calibration: equal-width confidence bins, accuracy per bin, and the ECE.

    ``ECE = sum_b (n_b / N) * |accuracy_b - confidence_b|``.

    Returns:
        ``{"ece", "bins": [{"lo", "hi", "count", "confidence", "accuracy"}]}``.
    """
    probs = np.asarray(probs, np.float64)
    conf = probs.max(1)
    correct = probs.argmax(1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        row = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n,
               "confidence": float(conf[mask].mean()) if n else float("nan"),
               "accuracy": float(correct[mask].mean()) if n else float("nan")}
        if n:
            ece += n / len(conf) * abs(row["accuracy"] - row["confidence"])
        table.append(row)
    return {"ece": float(ece), "bins": table}


def evaluate_predictions(
    y_true: np.ndarray,
    probs: np.ndarray | None,
    *,
    class_names: Sequence[str],
    nsfw_classes: Sequence[str],
    nsfw_scores: np.ndarray | None = None,
    threshold: float | None = None,
    target: str = "nsfw_recall>=0.95",
    bins: int = 10,
) -> dict[str, Any]:
    """All metrics for one set of predictions.

    Args:
        y_true: ``int (N,)`` dataset class indices.
        probs: ``(N, C)`` probabilities over ``class_names`` (None: binary view only).
        class_names: dataset classes.
        nsfw_classes: dataset classes that count as NSFW (the binary truth).
        nsfw_scores: ``(N,)`` NSFW scores; default: ``probs`` summed over ``nsfw_classes``.
        threshold: operating threshold; None chooses one for ``target`` on these data.
        target: see :func:`choose_threshold`.
        bins: calibration bins.

    Returns:
        A JSON-ready dict: ``multiclass`` (accuracy, confusion_matrix, per_class, macro,
        calibration) when ``probs`` is given, and ``binary`` (auc, average_precision,
        operating point, confusion at 0.5).
    """
    from sklearn.metrics import (
        average_precision_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y = np.asarray(y_true, np.int64)
    names = list(class_names)
    nsfw_idx = [names.index(c) for c in nsfw_classes if c in names]
    report: dict[str, Any] = {"n": int(len(y)), "class_names": names,
                              "nsfw_classes": [names[i] for i in nsfw_idx]}
    if probs is not None:
        p = np.asarray(probs, np.float64)
        pred = p.argmax(1)
        prec, rec, f1, support = precision_recall_fscore_support(
            y, pred, labels=list(range(len(names))), zero_division=0)
        per_class = {}
        for i, c in enumerate(names):
            pos = y == i
            both = 0 < pos.sum() < len(y)
            per_class[c] = {
                "precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                "support": int(support[i]),
                "roc_auc": float(roc_auc_score(pos, p[:, i])) if both else float("nan"),
                "average_precision": float(average_precision_score(pos, p[:, i])) if both
                else float("nan"),
            }
        present = [c for c in names if per_class[c]["support"] > 0]
        report["multiclass"] = {
            "accuracy": float(np.mean(pred == y)) if len(y) else float("nan"),
            "confusion_matrix": confusion_matrix(y, pred, labels=list(range(len(names)))).tolist(),
            "per_class": per_class,
            "macro": {k: float(np.nanmean([per_class[c][k] for c in present]))
                      if present else float("nan")
                      for k in ("precision", "recall", "f1", "roc_auc", "average_precision")},
            "calibration": calibration(y, p, bins=bins),
        }
        if nsfw_scores is None and nsfw_idx:
            nsfw_scores = p[:, nsfw_idx].sum(1)
    if nsfw_scores is not None and nsfw_idx and len(nsfw_idx) < len(names):
        y_bin = np.isin(y, nsfw_idx)
        s = np.asarray(nsfw_scores, np.float64)
        both = 0 < y_bin.sum() < len(y_bin)
        if threshold is not None:
            chosen = {**binary_confusion(y_bin, s, threshold), "target": target, "met": None}
        elif both:
            chosen = choose_threshold(y_bin, s, target=target)
        else:  # one-sided data: nothing to choose a threshold from
            chosen = {"threshold": None, "target": target, "met": False,
                      "reason": "needs both NSFW and safe images"}
        report["binary"] = {
            "positives": int(y_bin.sum()), "negatives": int((~y_bin).sum()),
            "roc_auc": float(roc_auc_score(y_bin, s)) if both else float("nan"),
            "average_precision": float(average_precision_score(y_bin, s)) if both else float("nan"),
            "operating_point": chosen,
            "threshold_chosen_here": threshold is None,
            "at_0.5": binary_confusion(y_bin, s, 0.5),
        }
    return json_safe(report)


def evaluate_model(model, spec: ModelSpec, paths: Sequence[str], labels: np.ndarray, *,
                   class_names: Sequence[str], nsfw_classes: Sequence[str],
                   threshold: float | None = None, target: str = "nsfw_recall>=0.95",
                   batch_size: int = 32
                   ) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Predict files with a model and evaluate against dataset labels.

    The model's classes may differ from the dataset's: when every dataset class matches a
    model class by name (``Drawing`` == ``drawings``) the multi-class view is reported on the
    reordered probabilities; otherwise only the binary view (model NSFW score, from its spec,
    against the dataset's NSFW classes).

    Returns:
        ``(report, probs_aligned_or_None, nsfw_scores_or_None, ok)``: probabilities and scores
        over the files that decoded; ``ok`` is the ``bool (N,)`` mask of those files.
    """
    from .zoo import check_classifier

    check_classifier(model, spec)
    raw, ok = predict(model, paths, image_size=spec.image_size, batch_size=batch_size)
    raw, labels = raw[ok], np.asarray(labels)[ok]
    aligned = align_classes(raw, spec.class_names, class_names)
    scores = raw[:, list(spec.nsfw_indices)].sum(1) if spec.nsfw_indices else None
    report = evaluate_predictions(labels, aligned, class_names=class_names,
                                  nsfw_classes=nsfw_classes, nsfw_scores=scores,
                                  threshold=threshold, target=target)
    report["model"] = spec.name
    report["skipped_files"] = int((~ok).sum())
    return report, aligned, scores, ok


# ------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------
def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], *, normalize: bool = True,
                          title: str | None = None):
    """Confusion matrix heat map (rows: true class, columns: predicted); row-normalised by
    default, with the counts printed in each cell. Returns a ``Figure``."""
    from matplotlib.figure import Figure

    cm = np.asarray(cm, np.float64)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    k = len(class_names)
    fig = Figure(figsize=(1.0 + 0.8 * k, 0.8 + 0.7 * k))
    ax = fig.subplots()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > 0.6 * (shown.max() or 1) else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix (row-normalised)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_roc_pr(y_true: np.ndarray, probs: np.ndarray | None, *, class_names: Sequence[str],
                nsfw_scores: np.ndarray | None = None, nsfw_classes: Sequence[str] = (),
                threshold: float | None = None, title: str | None = None):
    """ROC (left) and precision-recall (right) curves: one-vs-rest per class (thin) and the
    binary NSFW score (thick), with the operating point marked. Returns a ``Figure``."""
    from matplotlib.figure import Figure
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    y = np.asarray(y_true)
    fig = Figure(figsize=(9, 3.8))
    ax_roc, ax_pr = fig.subplots(1, 2)
    if probs is not None:
        for i, c in enumerate(class_names):
            pos = y == i
            if 0 < pos.sum() < len(y):
                fpr, tpr, _ = roc_curve(pos, probs[:, i])
                ax_roc.plot(fpr, tpr, lw=1, label=f"{c} ({auc(fpr, tpr):.3f})")
                prec, rec, _ = precision_recall_curve(pos, probs[:, i])
                ax_pr.plot(rec, prec, lw=1, label=c)
    nsfw_idx = [list(class_names).index(c) for c in nsfw_classes if c in class_names]
    if nsfw_scores is not None and nsfw_idx:
        y_bin = np.isin(y, nsfw_idx)
        if 0 < y_bin.sum() < len(y_bin):
            fpr, tpr, _ = roc_curve(y_bin, nsfw_scores)
            ax_roc.plot(fpr, tpr, lw=2.5, color="black", label=f"NSFW vs SFW ({auc(fpr, tpr):.3f})")
            prec, rec, _ = precision_recall_curve(y_bin, nsfw_scores)
            ax_pr.plot(rec, prec, lw=2.5, color="black", label="NSFW vs SFW")
            if threshold is not None:
                op = binary_confusion(y_bin, nsfw_scores, threshold)
                ax_roc.plot([op["fpr"]], [op["recall"]], "o", color="red",
                            label=f"threshold {threshold:.3f}")
                if np.isfinite(op["precision"]):
                    ax_pr.plot([op["recall"]], [op["precision"]], "o", color="red")
    ax_roc.plot([0, 1], [0, 1], ":", color="grey")
    ax_roc.set(xlabel="false-positive rate", ylabel="true-positive rate (recall)", title="ROC (AUC)")
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    ax_roc.legend(fontsize=7, loc="lower right")
    ax_pr.legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_reliability(y_true: np.ndarray, probs: np.ndarray, *, bins: int = 10,
                     title: str | None = None):
    """Reliability diagram: accuracy vs confidence per bin, with counts and the ECE."""
    from matplotlib.figure import Figure

    cal = calibration(y_true, probs, bins=bins)
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    centers = [(b["lo"] + b["hi"]) / 2 for b in cal["bins"]]
    accs = [b["accuracy"] if b["count"] else 0 for b in cal["bins"]]
    ax.bar(centers, accs, width=1 / bins, edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    for c, b in zip(centers, cal["bins"]):
        if b["count"]:
            ax.text(c, 0.02, str(b["count"]), ha="center", fontsize=6)
    ax.set(xlabel="confidence (top-1 probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title=title or f"Reliability (ECE {cal['ece']:.3f})")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def plot_threshold(y_true_bin: np.ndarray, scores: np.ndarray, *, threshold: float | None = None,
                   target: str | None = None):
    """NSFW recall and false-positive rate as functions of the threshold, the chosen one marked."""
    from matplotlib.figure import Figure

    ts = np.linspace(0, 1, 201)
    rows = [binary_confusion(y_true_bin, scores, t) for t in ts]
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.plot(ts, [r["recall"] for r in rows], label="NSFW recall")
    ax.plot(ts, [r["fpr"] for r in rows], label="false-positive rate")
    if threshold is not None:
        ax.axvline(threshold, color="red", ls="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="threshold on the NSFW score", ylim=(-0.02, 1.02),
           title=f"Operating threshold ({target})" if target else "Operating threshold")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_worst_mistakes(paths: Sequence[str], y_true: np.ndarray, probs: np.ndarray, *,
                        class_names: Sequence[str], n: int = 8, redact_images: bool = True):
    """The most confident wrong predictions, **blurred by default** (user data may be explicit).

    Captions read ``true -> predicted (probability)``. Returns a ``Figure``.
    """
    from matplotlib.figure import Figure

    from . import images as _images

    y = np.asarray(y_true)
    pred = probs.argmax(1)
    wrong = np.nonzero(pred != y)[0]
    order = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:n]
    cols = max(1, min(4, len(order)))
    rows = max(1, int(np.ceil(len(order) / cols)))
    fig = Figure(figsize=(2.2 * cols, 2.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, order):
        try:
            img = _images.load_image(paths[i], image_size=128).astype(np.uint8)
            ax.imshow(_data.redact(img) if redact_images else img)
        except _images.ImageError:
            ax.text(0.5, 0.5, "unreadable", ha="center")
        ax.set_title(f"{class_names[y[i]]} -> {class_names[pred[i]]} ({probs[i, pred[i]]:.2f})",
                     fontsize=7)
    if not len(order):
        axes[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("Most confident mistakes" + (" (redacted: blurred)" if redact_images else ""),
                 fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------
# Model card and the whole evaluation
# ------------------------------------------------------------------------------------------
def _fmt(v, digits=3):
    return "n/a" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def model_card(report: dict[str, Any], spec: ModelSpec, *, baseline: dict | None = None,
               dataset: dict | None = None, notes: str = "",
               threshold_status: str = "") -> str:
    """A markdown model card from a test report (and a baseline report on the same split).

    ``threshold_status`` (e.g. "written into model.spec.json" or a warning) is printed under the
    operating threshold.
    """
    mc, bn = report.get("multiclass", {}), report.get("binary", {})
    op = bn.get("operating_point", {})
    cfg = spec.extra.get("train_config", {})
    lines = [
        f"# Model card: {spec.name}", "",
        "## Model",
        f"- Classes: {', '.join(spec.class_names)}; NSFW score = sum of "
        f"{', '.join(spec.nsfw_classes) or '(none)'}",
        f"- Input: `{spec.input_name}`, raw RGB 0-255, {spec.image_size}x{spec.image_size}, resized "
        f"with `{spec.resize}`; preprocessing {spec.preprocessing}",
        f"- Operating threshold: **{_fmt(spec.threshold)}** on the NSFW score "
        f"(target `{op.get('target', '?')}`, chosen on the validation split)"
        + (f"; {threshold_status}" if threshold_status else ""),
        f"- Base: {spec.extra.get('base_source', cfg.get('backbone', '?'))}",
        f"- Training: {spec.extra.get('epochs', '?')} epochs / {spec.extra.get('steps', '?')} steps; "
        + ", ".join(f"{k}={cfg[k]}" for k in ("batch_size", "epochs_head", "epochs_finetune",
                                               "lr_head", "lr_finetune", "unfreeze",
                                               "label_smoothing", "seed") if k in cfg),
        "",
    ]
    if dataset:
        lines += ["## Data", f"- Source: `{dataset.get('root', '?')}`",
                  f"- Files: {dataset.get('valid', '?')} valid, {dataset.get('quarantined', '?')} "
                  f"quarantined, {dataset.get('duplicate_groups', '?')} duplicate groups, "
                  f"{dataset.get('label_conflicts', '?')} label conflicts",
                  f"- Splits: {dataset.get('splits', {})}", ""]
    lines += [f"## Results on the test split ({report.get('n', '?')} images)", "",
              "| metric | this model |" + (" baseline |" if baseline else ""),
              "| --- | --- |" + (" --- |" if baseline else "")]

    def row(name, get):
        vals = [get(report)] + ([get(baseline)] if baseline else [])
        lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in vals) + " |")

    row("accuracy", lambda r: r.get("multiclass", {}).get("accuracy"))
    row("macro F1", lambda r: r.get("multiclass", {}).get("macro", {}).get("f1"))
    row("macro ROC AUC", lambda r: r.get("multiclass", {}).get("macro", {}).get("roc_auc"))
    row("ECE", lambda r: r.get("multiclass", {}).get("calibration", {}).get("ece"))
    row("NSFW ROC AUC", lambda r: r.get("binary", {}).get("roc_auc"))
    row("NSFW average precision", lambda r: r.get("binary", {}).get("average_precision"))
    row("threshold", lambda r: r.get("binary", {}).get("operating_point", {}).get("threshold"))
    row("NSFW recall at threshold", lambda r: r.get("binary", {}).get("operating_point", {}).get("recall"))
    row("false-positive rate at threshold",
        lambda r: r.get("binary", {}).get("operating_point", {}).get("fpr"))
    if op:
        lines += ["", f"At the threshold: {op.get('tp')} NSFW caught, {op.get('fn')} missed, "
                      f"{op.get('fp')} safe images flagged, {op.get('tn')} passed."]
    if mc.get("per_class"):
        lines += ["", "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
        for c, m in mc["per_class"].items():
            lines.append(f"| {c} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | "
                         f"{_fmt(m['f1'])} | {m['support']} |")
    lines += ["", "## Limitations",
              "- Metrics hold for data like the test split only; on other sources, re-check the "
              "threshold on a labelled sample (`nsfwkit evaluate`).",
              "- The false-positive rate depends on the share of NSFW images in your traffic: at "
              "a low base rate most flags can be false alarms even with a small FPR.",
              "- Probabilities are calibrated only as far as the ECE above says."]
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class EvaluationRun:
    """What :func:`evaluate_run` produced (figures are kept for display)."""

    report: dict[str, Any]
    files: dict[str, Path]
    figures: dict[str, Any]
    spec: ModelSpec
    spec_updated: bool = False


def evaluate_run(  # noqa: C901 (a sequence of optional report sections)
    model_path: str | os.PathLike,
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    target: str = "nsfw_recall>=0.95",
    baseline: str | None = DEFAULT_MODEL,
    nsfw_classes: Sequence[str] | None = None,
    redact_images: bool = True,
    batch_size: int = 32,
    notes: str = "",
    write_card: bool = True,
    update_spec: bool | None = None,
) -> EvaluationRun:
    """Evaluate a model (and a baseline) on a prepared dataset; write report, plots and card.

    The threshold is chosen for ``target`` on the **val** split and reported on **test**.
    Everything (``report.json``, ``model_card.md``, plots as PNG) is written into ``out_dir``;
    nothing beside the model is replaced, except its spec's ``threshold`` when
    ``update_spec`` allows it.

    Args:
        update_spec: write the chosen threshold into the model's ``.spec.json``. None (default):
            only for a model trained by :func:`nsfwkit.train.train` (its spec carries
            ``extra.train_config``), never for a spec the user wrote or a pretrained one.
            Never when the target was not met on val.

    Returns:
        An :class:`EvaluationRun`.

    Raises:
        DatasetError: the val or test split is empty, or val lacks NSFW or safe images (no
            threshold can be chosen).
    """
    from . import zoo

    model_path = Path(model_path)
    out_dir = Path(out_dir)
    model, spec = zoo.load(model_path)
    class_names = _data.manifest_class_names(manifest)
    nsfw = tuple(nsfw_classes) if nsfw_classes is not None else (
        tuple(c for c in spec.nsfw_classes if c in class_names) or
        _data.default_nsfw_classes(class_names))
    val_paths, val_y, _ = _data.manifest_arrays(manifest, "val", class_names=class_names)
    test_paths, test_y, _ = _data.manifest_arrays(manifest, "test", class_names=class_names)
    for split, paths in (("val", val_paths), ("test", test_paths)):
        if not paths:
            raise _data.DatasetError(
                f"{manifest}: the {split} split is empty; the threshold is chosen on val and "
                "reported on test: prepare the dataset with more images or larger val/test "
                "fractions")
    nsfw_idx = [class_names.index(c) for c in nsfw if c in class_names]
    if nsfw_idx and len(nsfw_idx) < len(class_names):
        n_nsfw = int(np.isin(val_y, nsfw_idx).sum())
        if n_nsfw in (0, len(val_y)):
            raise _data.DatasetError(
                f"{manifest}: the val split has {n_nsfw} NSFW ({', '.join(nsfw)}) and "
                f"{len(val_y) - n_nsfw} safe images; choosing a threshold needs both")
    out_dir.mkdir(parents=True, exist_ok=True)

    def run(m, s):
        val_report, _, _, _ = evaluate_model(m, s, val_paths, val_y, class_names=class_names,
                                          nsfw_classes=nsfw, target=target, batch_size=batch_size)
        thr = val_report.get("binary", {}).get("operating_point", {}).get("threshold")
        test_report, probs, scores, ok = evaluate_model(
            m, s, test_paths, test_y, class_names=class_names, nsfw_classes=nsfw,
            threshold=thr, target=target, batch_size=batch_size)
        if "binary" in test_report:
            test_report["binary"]["threshold_chosen_on"] = "val"
            test_report["binary"]["val_operating_point"] = val_report["binary"]["operating_point"]
        return test_report, probs, scores, thr, ok

    report, probs, scores, threshold, ok = run(model, spec)
    val_op = report.get("binary", {}).get("val_operating_point") or {}
    met = bool(val_op.get("met")) and threshold is not None
    ours = bool(spec.extra.get("train_config"))
    write_spec = met and (ours if update_spec is None else bool(update_spec))
    spec_path = spec_path_for(model_path)
    if threshold is None:
        status = "no NSFW threshold chosen (no binary view)"
    elif not met:
        status = (f"**warning: the target was not met on val; the threshold "
                  f"{threshold:.4f} was NOT saved** (the spec keeps {spec.threshold:g})")
    elif write_spec:
        status = f"written into `{spec_path.name}`"
    else:
        status = f"not written into `{spec_path.name}` (not a model trained by nsfwkit; " \
                 "pass update_spec=True / --update-spec yes to write it)"
    if met:
        spec = spec.replace(threshold=float(threshold))
        if write_spec:
            spec.save(spec_path)
    base_report = None
    if baseline:
        base_model, base_spec = zoo.load(baseline)
        base_report, base_probs, base_scores, _, base_ok = run(base_model, base_spec)
    summary_path = Path(manifest).parent / "summary.json"
    dataset = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    full = {"model": str(model_path), "target": target, "split": "test", "test": report,
            "baseline": base_report, "threshold": threshold, "threshold_met": met,
            "spec_updated": write_spec}
    files: dict[str, Path] = {}
    figures: dict[str, Any] = {}
    y = test_y[ok]
    test_paths = [p for p, keep in zip(test_paths, ok) if keep]
    if probs is not None:
        figures["confusion"] = plot_confusion_matrix(
            np.array(report["multiclass"]["confusion_matrix"]), class_names)
        figures["reliability"] = plot_reliability(y, probs)
        figures["mistakes"] = plot_worst_mistakes(test_paths, y, probs, class_names=class_names,
                                                  redact_images=redact_images)
    figures["roc_pr"] = plot_roc_pr(y, probs, class_names=class_names, nsfw_scores=scores,
                                    nsfw_classes=nsfw, threshold=threshold,
                                    title=f"{spec.name} on the test split")
    if scores is not None:
        y_bin = np.isin(y, [class_names.index(c) for c in nsfw])
        figures["threshold"] = plot_threshold(y_bin, scores, threshold=threshold, target=target)
    if base_report is not None:
        figures["baseline_roc_pr"] = plot_roc_pr(
            test_y[base_ok], base_probs, class_names=class_names, nsfw_scores=base_scores, nsfw_classes=nsfw,
            threshold=base_report.get("binary", {}).get("operating_point", {}).get("threshold"),
            title=f"baseline {baseline} on the test split")
    for name, fig in figures.items():
        path = out_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
        files[name] = path
    files["report"] = write_text(out_dir / "report.json", json.dumps(json_safe(full), indent=2) + "\n")
    if write_card:
        card = model_card(report, spec, baseline=base_report, dataset=dataset, notes=notes,
                          threshold_status=status)
        files["model_card"] = write_text(out_dir / "model_card.md", card)
    return EvaluationRun(report=full, files=files, figures=figures, spec=spec,
                         spec_updated=write_spec)
