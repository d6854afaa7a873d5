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
from . import fileio
from .fileio import atomic_path, json_safe, write_text
from .kerasutil import inference_fn
from .spec import ModelSpec, spec_path_for
from .zoo import DEFAULT_MODEL

__all__ = [
    "predict",
    "align_classes",
    "parse_target",
    "choose_threshold",
    "clopper_pearson",
    "with_intervals",
    "fit_temperature",
    "temperature_scale",
    "fit_linear_probe",
    "linear_probe",
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
    """A model's probabilities over a dataset's classes, matching names loosely
    (:func:`nsfwkit.data.class_key`: ``Drawing`` == ``drawings``).

    The matched columns are reordered and, when they are a subset of the model's classes (a
    5-class model on a 3-class dataset), renormalised to sum to 1: the model's distribution
    conditioned on the dataset's classes (a row with no mass on them becomes uniform). None
    when some dataset class has no match.
    """
    lookup = {_data.class_key(c): i for i, c in enumerate(model_classes)}
    cols = [lookup.get(_data.class_key(c)) for c in dataset_classes]
    if any(c is None for c in cols):
        return None
    sub = np.asarray(probs, np.float64)[:, cols]
    total = sub.sum(1, keepdims=True)
    uniform = np.full_like(sub, 1.0 / max(len(cols), 1))
    out = np.divide(sub, total, out=uniform, where=total > 0)
    return out.astype(np.asarray(probs).dtype, copy=False)


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


def clopper_pearson(successes: int, trials: int, *, confidence: float = 0.95,
                    side: str = "two-sided") -> tuple[float, float]:
    """Exact (Clopper-Pearson) binomial confidence bounds on a proportion.

    ``side="lower"``: ``(L, 1)`` with ``P(p >= L) >= confidence`` (``L`` the ``1 - confidence``
    quantile of ``Beta(k, n - k + 1)``; 0 when ``k == 0``); ``"upper"``: ``(0, U)`` with ``U``
    the ``confidence`` quantile of ``Beta(k + 1, n - k)`` (1 when ``k == n``); ``"two-sided"``:
    both, each at ``(1 - confidence) / 2``. No trials: ``(nan, nan)``.
    """
    k, n = int(successes), int(trials)
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"successes must be in [0, {n}], got {k}")
    if side not in ("two-sided", "lower", "upper"):
        raise ValueError(f"side must be 'two-sided', 'lower' or 'upper', got {side!r}")
    each = (1.0 + confidence) / 2.0 if side == "two-sided" else confidence  # per tail
    lo = 0.0 if side == "upper" else float(_one_sided_bounds([k], n, confidence=each, side="lower")[0])
    hi = 1.0 if side == "lower" else float(_one_sided_bounds([k], n, confidence=each, side="upper")[0])
    return lo, hi


def _one_sided_bounds(counts: np.ndarray, n: int, *, confidence: float, side: str) -> np.ndarray:
    """:func:`clopper_pearson` one-sided bounds for an array of success counts out of ``n``."""
    from scipy.stats import beta

    k = np.asarray(counts, np.float64)
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        if side == "lower":
            return np.where(k == 0, 0.0, beta.ppf(alpha, np.maximum(k, 1), n - k + 1))
        return np.where(k == n, 1.0, beta.ppf(1.0 - alpha, k + 1, np.maximum(n - k, 1)))


def _threshold_table(y: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
    """Counts at every candidate threshold (the distinct scores, and 1 + eps: flag nothing),
    ascending: ``threshold, tp, fp`` arrays (flagged means ``score >= threshold``)."""
    candidates = np.unique(np.concatenate([s, [np.nextafter(1.0, 2.0)]]))
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    tp = len(pos) - np.searchsorted(pos, candidates, side="left")
    fp = len(neg) - np.searchsorted(neg, candidates, side="left")
    return {"threshold": candidates, "tp": tp, "fp": fp}


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, *,
                     target: str = "nsfw_recall>=0.95",
                     confidence: float | None = 0.95) -> dict[str, Any]:
    """Pick the operating threshold on NSFW scores so that a target holds with a confidence.

    * ``nsfw_recall>=R``: the **highest** threshold whose one-sided Clopper-Pearson **lower**
      bound on NSFW recall (at ``confidence``) is at least ``R``: the fewest false alarms for
      which "recall >= R" is still supported by the data, not just met by the point estimate;
    * ``fpr<=F``: the **lowest** threshold whose one-sided **upper** bound on the
      false-positive rate is at most ``F``.

    ``confidence=None`` uses the point estimates (recall >= R, FPR <= F on these data), which
    land on the boundary and miss the target on new data about half the time.

    Candidate thresholds are the observed scores (and 1 + eps: flag nothing). Returns the
    :func:`binary_confusion` at the chosen threshold plus ``target``, ``confidence``, ``bound``
    (the bound at the threshold) and ``met``. When no threshold reaches the target, ``met`` is
    False, the threshold with the best bound is returned (never save that one), and
    ``reason`` says why -- e.g. that val has too few NSFW images to support the target at that
    confidence however good the model, and how many it would need.

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
    table = _threshold_table(y, s)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if kind == "recall":
        count, n, side = table["tp"], n_pos, "lower"
    else:
        count, n, side = table["fp"], n_neg, "upper"
    if confidence is None:
        bound = count / n
    else:
        bound = _one_sided_bounds(count, n, confidence=confidence, side=side)
    ok = bound >= value if kind == "recall" else bound <= value
    if ok.any():
        pick = np.flatnonzero(ok)[-1 if kind == "recall" else 0]
    else:  # closest: the best bound (ties: the strictest threshold)
        best = bound.max() if kind == "recall" else bound.min()
        pick = np.flatnonzero(bound == best)[-1 if kind == "recall" else 0]
    out = {**binary_confusion(y, s, float(table["threshold"][pick])), "target": target,
           "confidence": confidence, "bound": float(bound[pick]), "met": bool(ok.any())}
    if not ok.any():
        out["reason"] = _unmet_reason(kind, value, n, confidence)
    return out


def _unmet_reason(kind: str, value: float, n: int, confidence: float | None) -> str:
    """Why no threshold met the target; says plainly when the split is too small for it."""
    what = "NSFW" if kind == "recall" else "safe"
    if confidence is None:
        return f"no threshold reaches the target on the {n} {what} images"
    if kind == "recall":
        name = "lower bound on recall"
        best = clopper_pearson(n, n, confidence=confidence, side="lower")[0]
        supported = best >= value
        need = np.log(1 - confidence) / np.log(value) if 0 < value < 1 else np.inf
    else:
        name = "upper bound on the false-positive rate"
        best = clopper_pearson(0, n, confidence=confidence, side="upper")[1]
        supported = best <= value
        need = np.log(1 - confidence) / np.log1p(-value) if 0 < value < 1 else np.inf
    if not supported:
        needed = f"at least {int(np.ceil(need))} are needed" if np.isfinite(need) else \
            "no number of images can support it"
        return (f"too few {what} images to support the target: with {n}, even a perfect result "
                f"gives a {confidence:.0%} {name} of {best:.3f}; {needed}")
    return f"no threshold makes the {confidence:.0%} {name} reach {value:g} on the {n} {what} images"


def with_intervals(op: dict[str, Any], *, confidence: float = 0.95) -> dict[str, Any]:
    """An operating point (a :func:`binary_confusion`) with two-sided Clopper-Pearson intervals
    on its recall and false-positive rate (``recall_ci``, ``fpr_ci``: ``[lo, hi]``)."""
    tp, fn, fp, tn = op["tp"], op["fn"], op["fp"], op["tn"]
    return {**op, "ci_confidence": confidence,
            "recall_ci": list(clopper_pearson(tp, tp + fn, confidence=confidence)),
            "fpr_ci": list(clopper_pearson(fp, fp + tn, confidence=confidence))}


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


def temperature_scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)``: probabilities with their logits divided by ``T``
    (``T > 1`` softens, ``T < 1`` sharpens; ``1 / T`` undoes a scaling by ``T``). ``(N, C)``."""
    z = np.log(np.maximum(np.asarray(probs, np.float64), np.finfo(np.float64).tiny))
    return _softmax(z / float(temperature))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def fit_temperature(logits: np.ndarray, y_true: np.ndarray, *,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> dict[str, float]:
    """Temperature scaling: the ``T`` minimising the NLL of ``softmax(logits / T)``.

    A bounded 1-D search on ``log T`` (the NLL is convex in ``1 / T``, so the minimum found is
    the global one within ``bounds``).

    Args:
        logits: ``(N, C)`` pre-softmax scores (log-probabilities work too).
        y_true: ``int (N,)`` class indices.
        bounds: the range searched for ``T``.

    Returns:
        ``{"temperature", "nll_before", "nll_after", "ece_before", "ece_after"}`` on these data
        (``T = 1`` and NaN numbers when there are none).
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, np.float64)
    y = np.asarray(y_true, np.int64)

    def nll(log_t: float) -> float:
        a = z / np.exp(log_t)
        a = a - a.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(a).sum(1)) - a[np.arange(len(y)), y]))

    if len(y) == 0:
        return {"temperature": 1.0, "nll_before": float("nan"), "nll_after": float("nan"),
                "ece_before": float("nan"), "ece_after": float("nan")}
    res = minimize_scalar(nll, bounds=tuple(np.log(bounds)), method="bounded",
                          options={"xatol": 1e-5})
    t = float(np.exp(res.x))
    if nll(0.0) <= nll(res.x):  # no better than leaving it alone
        t = 1.0
    return {"temperature": t, "nll_before": nll(0.0), "nll_after": nll(np.log(t)),
            "ece_before": calibration(y, _softmax(z))["ece"],
            "ece_after": calibration(y, _softmax(z / t))["ece"]}


def evaluate_predictions(
    y_true: np.ndarray,
    probs: np.ndarray | None,
    *,
    class_names: Sequence[str],
    nsfw_classes: Sequence[str],
    nsfw_scores: np.ndarray | None = None,
    threshold: float | None = None,
    target: str = "nsfw_recall>=0.95",
    confidence: float | None = 0.95,
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
        target, confidence: see :func:`choose_threshold`; ``confidence`` is also the level of
            the two-sided intervals on the operating point's recall and FPR.
        bins: calibration bins.

    Returns:
        A JSON-ready dict: ``multiclass`` (accuracy, confusion_matrix, per_class, macro,
        calibration) when ``probs`` is given, and ``binary`` (auc, average_precision,
        operating point with ``recall_ci`` / ``fpr_ci``, confusion at 0.5).
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
        level = 0.95 if confidence is None else confidence
        if threshold is not None:
            chosen = with_intervals({**binary_confusion(y_bin, s, threshold), "target": target,
                                     "met": None}, confidence=level)
        elif both:
            chosen = with_intervals(choose_threshold(y_bin, s, target=target, confidence=confidence),
                                    confidence=level)
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


@dataclasses.dataclass(frozen=True)
class _Predictions:
    """One model's outputs on one split's files that decoded (``ok``: which did)."""

    labels: np.ndarray
    probs: np.ndarray | None  # over the dataset's classes (None: no match by name)
    scores: np.ndarray | None  # NSFW scores
    ok: np.ndarray
    name: str


def _predictions(model, spec: ModelSpec, paths: Sequence[str], labels: np.ndarray, *,
                 class_names: Sequence[str], batch_size: int) -> _Predictions:
    raw, ok = predict(model, paths, image_size=spec.image_size, batch_size=batch_size)
    raw = raw[ok]
    scores = raw[:, list(spec.nsfw_indices)].sum(1) if spec.nsfw_indices else None
    return _Predictions(labels=np.asarray(labels)[ok], probs=align_classes(raw, spec.class_names, class_names),
                        scores=scores, ok=ok, name=spec.name)


def _report(pred: _Predictions, **kwargs) -> dict[str, Any]:
    report = evaluate_predictions(pred.labels, pred.probs, nsfw_scores=pred.scores, **kwargs)
    report["model"] = pred.name
    report["skipped_files"] = int((~pred.ok).sum())
    return report


def evaluate_model(model, spec: ModelSpec, paths: Sequence[str], labels: np.ndarray, *,
                   class_names: Sequence[str], nsfw_classes: Sequence[str],
                   threshold: float | None = None, target: str = "nsfw_recall>=0.95",
                   confidence: float | None = 0.95, batch_size: int = 32
                   ) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Predict files with a model and evaluate against dataset labels.

    The model's classes may differ from the dataset's: when every dataset class matches a
    model class by name (``Drawing`` == ``drawings``) the multi-class view is reported on the
    matched probabilities (renormalised, see :func:`align_classes`); otherwise only the binary
    view (model NSFW score, from its spec, against the dataset's NSFW classes).

    Returns:
        ``(report, probs_aligned_or_None, nsfw_scores_or_None, ok)``: probabilities and scores
        over the files that decoded; ``ok`` is the ``bool (N,)`` mask of those files.
    """
    from .zoo import check_classifier

    check_classifier(model, spec)
    pred = _predictions(model, spec, paths, labels, class_names=class_names, batch_size=batch_size)
    report = _report(pred, class_names=class_names, nsfw_classes=nsfw_classes, threshold=threshold,
                     target=target, confidence=confidence)
    return report, pred.probs, pred.scores, pred.ok


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, *, num_classes: int,
                     sample_weight: np.ndarray | None = None,
                     c: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A linear probe: multinomial logistic regression on standardised frozen features.

    ``sklearn`` ``LogisticRegression`` (L2, ``C=c``, lbfgs, up to 5000 iterations) on features
    standardised to zero mean and unit variance, returned as one softmax layer on the **raw**
    features (the standardisation folded in), so it can initialise a ``Dense`` head.

    Args:
        features: ``(N, D)`` features; ``labels``: ``int (N,)`` class indices (two or more
            distinct classes).
        num_classes: columns of the layer; a class absent from ``labels`` gets a zero kernel
            column and a bias 10 below the others' (a probability near 0).
        sample_weight: ``(N,)`` per-example loss weights (e.g. balanced class weights).
        c: inverse L2 regularisation strength.

    Returns:
        ``(kernel float32 (D, num_classes), bias float32 (num_classes,))``: the probe's
        probabilities are ``softmax(features @ kernel + bias)``.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(features, np.float64)
    y = np.asarray(labels, np.int64)
    mu = x.mean(0)
    sd = x.std(0)
    sd[sd == 0] = 1.0
    clf = LogisticRegression(C=c, max_iter=5000)
    clf.fit((x - mu) / sd, y, sample_weight=sample_weight)
    coef, icpt = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:  # one logit z: softmax([-z/2, z/2]) == sigmoid(z)
        coef, icpt = np.concatenate([-coef, coef]) / 2, np.concatenate([-icpt, icpt]) / 2
    coef = coef / sd
    kernel = np.zeros((x.shape[1], num_classes))
    bias = np.full(num_classes, float(np.min(icpt - coef @ mu)) - 10.0)
    kernel[:, clf.classes_] = coef.T
    bias[clf.classes_] = icpt - coef @ mu
    return kernel.astype(np.float32), bias.astype(np.float32)


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray,
                 features: Sequence[np.ndarray], *, num_classes: int) -> list[np.ndarray]:
    """Probabilities of a :func:`fit_linear_probe` fitted on ``train_features``.

    The obvious baseline a fine-tune must beat on the same backbone's frozen features.

    Returns:
        ``float32 (M_i, num_classes)`` probabilities for each ``(M_i, D)`` array of ``features``.
    """
    kernel, bias = fit_linear_probe(train_features, train_labels, num_classes=num_classes)
    return [_softmax(np.asarray(f, np.float64) @ kernel + bias).astype(np.float32)
            if len(f) else np.zeros((0, num_classes), np.float32) for f in features]


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


def _fmt_ci(op: dict, key: str) -> str:
    """``0.950 [0.901, 0.981]``: a rate at the operating point with its interval."""
    ci = op.get(f"{key}_ci") or [None, None]
    text = _fmt(op.get(key))
    return text + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci[0] is not None else "")


def _threshold_lines(op_val: dict, op_test: dict) -> list[str]:
    """How the threshold was chosen (the bound on val) and what it achieved on test."""
    if not op_val or op_val.get("threshold") is None:
        return []
    kind, value = parse_target(op_val.get("target", "nsfw_recall>=0.95"))
    conf = op_val.get("confidence")
    if kind == "recall":
        which, what, cmp = "highest", "val NSFW recall", ">="
        caught, total = op_val.get("tp", 0), op_val.get("tp", 0) + op_val.get("fn", 0)
        val_counts = f"val: {caught}/{total} NSFW caught"
    else:
        which, what, cmp = "lowest", "the val false-positive rate", "<="
        flagged, total = op_val.get("fp", 0), op_val.get("fp", 0) + op_val.get("tn", 0)
        val_counts = f"val: {flagged}/{total} safe images flagged"
    bound = ("lower" if kind == "recall" else "upper") + " bound"
    rule = (f"the {which} threshold whose one-sided {conf:.0%} Clopper-Pearson **{bound}** on {what} "
            f"is {cmp} {value:g}") if conf else f"the {which} threshold with {what} {cmp} {value:g}"
    lines = ["", "### Operating threshold", f"- Rule: {rule}.",
             f"- {val_counts}; bound {_fmt(op_val.get('bound'))} (target `{op_val.get('target')}`)."]
    if not op_val.get("met"):
        lines.append(f"- **Not supported by the validation split: {op_val.get('reason', '')}. No threshold "
                     "was written; the test numbers below are for the closest threshold only.**")
    level = op_test.get("ci_confidence", 0.95)
    lines.append(f"- On test at {_fmt(op_test.get('threshold'), 4)}: NSFW recall {_fmt_ci(op_test, 'recall')}, "
                 f"false-positive rate {_fmt_ci(op_test, 'fpr')} (two-sided {level:.0%} Clopper-Pearson intervals).")
    return lines


def _calibration_lines(cal: dict | None) -> list[str]:
    if not cal:
        return []
    return ["", "### Calibration",
            f"- Temperature T = {_fmt(cal.get('temperature'))} ({cal.get('applied', '')}).",
            f"- ECE on test: {_fmt(cal.get('test_ece_before'))} before temperature scaling, "
            f"{_fmt(cal.get('test_ece_after'))} after"
            + (f"; on val (where T was fitted): {_fmt(cal.get('val_ece_before'))} -> "
               f"{_fmt(cal.get('val_ece_after'))}." if cal.get("val_ece_before") is not None else ".")]


def model_card(report: dict[str, Any], spec: ModelSpec, *, baseline: dict | None = None,
               probe: dict | None = None, dataset: dict | None = None, notes: str = "",
               threshold_status: str = "", calibration: dict | None = None) -> str:
    """A markdown model card from a test report, beside a baseline (the pretrained model) and a
    linear probe on the same split.

    ``threshold_status`` (e.g. "written into model.spec.json" or a warning) is printed under the
    operating threshold; ``calibration`` is the report's temperature-scaling block.
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
    columns = [("this model", report)] + ([("pretrained baseline", baseline)] if baseline else []) \
        + ([("linear probe", probe)] if probe else [])
    lines += [f"## Results on the test split ({report.get('n', '?')} images)", "",
              "| metric | " + " | ".join(name for name, _ in columns) + " |",
              "| --- |" + " --- |" * len(columns)]

    def row(name, get, fmt=_fmt):
        lines.append(f"| {name} | " + " | ".join(fmt(get(r)) for _, r in columns) + " |")

    def at_threshold(r):
        return r.get("binary", {}).get("operating_point", {})

    row("accuracy", lambda r: r.get("multiclass", {}).get("accuracy"))
    row("macro F1", lambda r: r.get("multiclass", {}).get("macro", {}).get("f1"))
    row("macro ROC AUC", lambda r: r.get("multiclass", {}).get("macro", {}).get("roc_auc"))
    row("ECE", lambda r: r.get("multiclass", {}).get("calibration", {}).get("ece"))
    row("NSFW ROC AUC", lambda r: r.get("binary", {}).get("roc_auc"))
    row("NSFW average precision", lambda r: r.get("binary", {}).get("average_precision"))
    row("threshold (chosen on val)", lambda r: at_threshold(r).get("threshold"))
    row("NSFW recall at threshold [95% CI]", at_threshold, lambda op_: _fmt_ci(op_, "recall"))
    row("false-positive rate at threshold [95% CI]", at_threshold, lambda op_: _fmt_ci(op_, "fpr"))
    if probe:
        lines += ["", f"The linear probe is {probe.get('model', 'a logistic regression')}: fitted on "
                      "the train split's frozen backbone features, its threshold chosen on val like "
                      "this model's."]
    if op:
        lines += ["", f"On test at the threshold: {op.get('tp')} NSFW caught, {op.get('fn')} missed, "
                      f"{op.get('fp')} safe images flagged, {op.get('tn')} passed."]
    lines += _threshold_lines(bn.get("val_operating_point") or {}, op)
    lines += _calibration_lines(calibration)
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
    skipped_missing: list[str] = dataclasses.field(default_factory=list)
    clips_left_out: int = 0  # videos/animations of val + test not evaluated (still images only)


@dataclasses.dataclass(frozen=True)
class _Splits:
    """The val and test files of a manifest, with the dataset's classes and NSFW classes."""

    manifest: Path
    class_names: tuple[str, ...]
    nsfw: tuple[str, ...]
    val_paths: list[str]
    val_labels: np.ndarray
    test_paths: list[str]
    test_labels: np.ndarray
    missing: tuple[str, ...] = ()
    skip_missing: bool = False
    clips_left_out: int = 0

    @classmethod
    def read(cls, manifest, spec: ModelSpec, nsfw_classes: Sequence[str] | None, *,
             skip_missing: bool = False) -> "_Splits":
        """Raises ``DatasetError`` when val or test is empty, or val lacks NSFW or safe images;
        ``MissingFilesError`` when files are missing (unless ``skip_missing``: left out, counted)."""
        class_names = _data.manifest_class_names(manifest)
        nsfw = tuple(nsfw_classes) if nsfw_classes is not None else (
            tuple(c for c in spec.nsfw_classes if c in class_names) or
            _data.default_nsfw_classes(class_names))
        val_paths, val_y, val_clips = _still_arrays(manifest, "val", class_names)
        test_paths, test_y, test_clips = _still_arrays(manifest, "test", class_names)
        train_paths, train_y, _ = _still_arrays(manifest, "train", class_names)  # the probe's
        _, _, missing = _data.existing_files(manifest, val_paths + test_paths + train_paths,
                                             np.concatenate([val_y, test_y, train_y]), skip_missing=skip_missing)
        val_paths, val_y, _ = _data.existing_files(manifest, val_paths, val_y, skip_missing=True)
        test_paths, test_y, _ = _data.existing_files(manifest, test_paths, test_y, skip_missing=True)
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
        return cls(Path(manifest), class_names, nsfw, val_paths, val_y, test_paths, test_y,
                   tuple(missing), skip_missing, val_clips + test_clips)

    @property
    def nsfw_indices(self) -> list[int]:
        return [self.class_names.index(c) for c in self.nsfw if c in self.class_names]


def _still_arrays(manifest, split: str, class_names) -> tuple[list[str], np.ndarray, int]:
    """``(paths, labels, clips)``: a split's still images; its videos and animations (``clips`` of
    them) are left out: evaluation scores still images only (``classify`` scores a clip by its worst
    frame; per-image metrics do not mix the two)."""
    paths, labels, _ = _data.manifest_arrays(manifest, split, class_names=class_names)
    still = _data.clip_frame_counts(manifest, split) == 0
    return [p for p, ok in zip(paths, still) if ok], labels[still], int((~still).sum())


def _val_then_test(val: _Predictions, test: _Predictions, splits: _Splits, *, target: str,
                   confidence: float | None) -> dict[str, Any]:
    """The test report at the threshold chosen on val (the val operating point inside it)."""
    common = dict(class_names=splits.class_names, nsfw_classes=splits.nsfw, target=target,
                  confidence=confidence)
    val_report = _report(val, **common)
    thr = val_report.get("binary", {}).get("operating_point", {}).get("threshold")
    test_report = _report(test, threshold=thr, **common)
    if "binary" in test_report:
        test_report["binary"]["threshold_chosen_on"] = "val"
        test_report["binary"]["val_operating_point"] = val_report["binary"]["operating_point"]
    return test_report


def _calibration_block(spec: ModelSpec, val: _Predictions, test: _Predictions) -> dict | None:
    """Temperature scaling, ECE on test before/after: the model's own temperature (fitted on val
    by ``nsfwkit train`` and folded into it), else one fitted on val here (not applied)."""
    if test.probs is None or val.probs is None:
        return None
    own = (spec.extra.get("calibration") or {})
    if own.get("fitted_on"):
        t = float(own["temperature"])
        return {"temperature": t, "applied": "inside the model: fitted on val by nsfwkit train",
                "test_ece_before": calibration(test.labels, temperature_scale(test.probs, 1 / t))["ece"],
                "test_ece_after": calibration(test.labels, test.probs)["ece"],
                "val_ece_before": own.get("ece_before"), "val_ece_after": own.get("ece_after")}
    fit = fit_temperature(np.log(np.maximum(val.probs, 1e-38)), val.labels)
    t = fit["temperature"]
    return {"temperature": t, "applied": "fitted on val here for reference; not applied to the model",
            "test_ece_before": calibration(test.labels, test.probs)["ece"],
            "test_ece_after": calibration(test.labels, temperature_scale(test.probs, t))["ece"],
            "val_ece_before": fit["ece_before"], "val_ece_after": fit["ece_after"]}


def _probe_predictions(spec: ModelSpec, splits: _Splits, *, batch_size: int):
    """``(val, test)`` predictions of a linear probe on the frozen features of the backbone
    the model was trained from (None for a model nsfwkit did not train)."""
    from . import train as _train

    cfg = spec.extra.get("train_config")
    if not cfg:
        return None
    config = _train.TrainConfig.from_dict({k: v for k, v in cfg.items()
                                           if k in _train.TrainConfig.__dataclass_fields__})
    extractor, base_spec = _train.feature_extractor(config)
    size = int(extractor.inputs[0].shape[1])
    train_paths, train_y, _ = _still_arrays(splits.manifest, "train", splits.class_names)
    train_paths, train_y, _ = _data.existing_files(splits.manifest, train_paths, train_y, skip_missing=True)
    feats = {}
    for split, paths in (("train", train_paths), ("val", splits.val_paths), ("test", splits.test_paths)):
        feats[split] = predict(extractor, paths, image_size=size, batch_size=batch_size)
    (f_train, ok_train) = feats["train"]
    probs = linear_probe(f_train[ok_train], train_y[ok_train],
                         [feats["val"][0][feats["val"][1]], feats["test"][0][feats["test"][1]]],
                         num_classes=len(splits.class_names))
    name = f"logistic regression on {base_spec.name} features"
    out = []
    oks = (feats["val"][1], feats["test"][1])
    for ok, labels, p in zip(oks, (splits.val_labels, splits.test_labels), probs):
        scores = p[:, splits.nsfw_indices].sum(1) if splits.nsfw_indices else None
        out.append(_Predictions(labels=labels[ok], probs=p, scores=scores, ok=ok, name=name))
    return tuple(out)


def _threshold_decision(report: dict, spec: ModelSpec, spec_path: Path,
                        update_spec: bool | None) -> tuple[float | None, bool, bool, str]:
    """``(threshold, met, write_spec, status)`` for the card: the threshold is written only
    when the target held on val with the stated confidence (and for a model nsfwkit trained,
    unless ``update_spec`` says otherwise)."""
    binary = report.get("binary", {})
    threshold = binary.get("operating_point", {}).get("threshold")
    val_op = binary.get("val_operating_point") or {}
    met = bool(val_op.get("met")) and threshold is not None
    ours = bool(spec.extra.get("train_config"))
    write_spec = met and (ours if update_spec is None else bool(update_spec))
    if threshold is None:
        status = "no NSFW threshold chosen (no binary view)"
    elif not met:
        status = (f"**no threshold written: not supported by the validation split** "
                  f"({val_op.get('reason', 'not met')}); the spec keeps {spec.threshold:g}")
    elif write_spec:
        status = f"written into `{spec_path.name}`"
    else:
        status = f"not written into `{spec_path.name}` (not a model trained by nsfwkit; " \
                 "pass update_spec=True / --update-spec yes to write it)"
    return threshold, met, write_spec, status


#: Keys every ``report.json`` of :func:`evaluate_run` has (how an older kit's evaluation folder is known).
_REPORT_KEYS = frozenset({"model", "target", "test", "threshold"})


def _legacy_evaluation(folder: Path) -> bool:
    """Whether ``folder`` is an evaluation an older kit wrote (before ownership markers): its
    ``report.json`` has the kit's keys (e.g. a train run's ``evaluation/`` from notebook 02)."""
    try:
        data = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and _REPORT_KEYS <= set(data)


def evaluate_run(  # noqa: C901 (a sequence of optional report sections)
    model_path: str | os.PathLike,
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    target: str = "nsfw_recall>=0.95",
    confidence: float | None = 0.95,
    baseline: str | None = DEFAULT_MODEL,
    probe: bool = True,
    nsfw_classes: Sequence[str] | None = None,
    redact_images: bool = True,
    batch_size: int = 32,
    notes: str = "",
    write_card: bool = True,
    update_spec: bool | None = None,
    skip_missing: bool = False,
) -> EvaluationRun:
    """Evaluate a model (beside a baseline and a linear probe); write report, plots and card.

    The threshold is chosen for ``target`` on the **val** split so that the target holds with
    ``confidence`` (a one-sided Clopper-Pearson bound, see :func:`choose_threshold`) and is
    reported on **test** with two-sided intervals. Calibration: the model's temperature
    (``nsfwkit train`` fits one on val and folds it into the model) with the test ECE before
    and after. Everything (``report.json``, ``model_card.md``, plots as PNG) is written into
    ``out_dir``; nothing beside the model is replaced, except its spec's ``threshold`` when
    ``update_spec`` allows it.

    Args:
        confidence: of the threshold's bound (None: the point estimate on val).
        baseline: a model evaluated the same way (default: the pretrained default), or None.
        probe: for a model nsfwkit trained, also evaluate a logistic-regression linear probe
            on the frozen features of the backbone it started from (:func:`linear_probe`).
        update_spec: write the chosen threshold into the model's ``.spec.json``. None (default):
            only for a model trained by :func:`nsfwkit.train.train` (its spec carries
            ``extra.train_config``), never for a spec the user wrote or a pretrained one.
            Never when the target is not supported by val at ``confidence``.
        skip_missing: leave out the manifest's missing files (listed in ``report.json``'s
            ``skipped_missing`` and :attr:`EvaluationRun.skipped_missing`) instead of refusing.

    Returns:
        An :class:`EvaluationRun`.

    Raises:
        DatasetError: the val or test split is empty, or val lacks NSFW or safe images (no
            threshold can be chosen).
        MissingFilesError: files of the manifest are missing (and not ``skip_missing``).
        nsfwkit.fileio.ForeignFolderError: ``out_dir`` holds files the kit did not write (it must
            be new, empty, or an evaluation folder of the kit's: its marker, or an older kit's
            ``report.json``); nothing is written.
        nsfwkit.fileio.FolderBusyError: another evaluation is writing into ``out_dir``.
    """
    from . import zoo

    model_path = Path(model_path)
    out_dir = Path(out_dir)
    model, spec = zoo.load(model_path)
    splits = _Splits.read(manifest, spec, nsfw_classes, skip_missing=skip_missing)
    with fileio.owned_folder(out_dir, "evaluate", legacy=_legacy_evaluation):  # refused/busy before any work
        options = dict(target=target, confidence=confidence)

        def evaluate_pair(m, s):
            val = _predictions(m, s, splits.val_paths, splits.val_labels, class_names=splits.class_names,
                               batch_size=batch_size)
            test = _predictions(m, s, splits.test_paths, splits.test_labels,
                                class_names=splits.class_names, batch_size=batch_size)
            return val, test, _val_then_test(val, test, splits, **options)

        val, test, report = evaluate_pair(model, spec)
        cal = _calibration_block(spec, val, test)
        spec_path = spec_path_for(model_path)
        threshold, met, write_spec, status = _threshold_decision(report, spec, spec_path, update_spec)
        if met:
            spec = spec.replace(threshold=float(threshold))
            if write_spec:
                spec.save(spec_path)
        base = evaluate_pair(*zoo.load(baseline)) if baseline else None
        probe_preds, probe_note = None, ""
        if probe:
            try:
                probe_preds = _probe_predictions(spec, splits, batch_size=batch_size)
            except (zoo.ModelNotFoundError, OSError, ValueError) as exc:  # e.g. imagenet weights offline
                probe_note = f"The linear probe was skipped: its backbone could not be loaded ({exc})."
        probe_report = _val_then_test(*probe_preds, splits, **options) if probe_preds else None
        summary_path = Path(manifest).parent / "summary.json"
        dataset = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        full = {"model": str(model_path), "target": target, "confidence": confidence, "split": "test",
                "test": report, "baseline": base[2] if base else None, "linear_probe": probe_report,
                "calibration": cal, "threshold": threshold, "threshold_met": met,
                "spec_updated": write_spec, **({"linear_probe_skipped": probe_note} if probe_note else {}),
                **({"skipped_missing": list(splits.missing)} if splits.missing else {}),
                **({"clips_left_out": splits.clips_left_out} if splits.clips_left_out else {})}
        figures = _figures(test, splits, spec, threshold=threshold, target=target, report=report,
                           redact_images=redact_images)
        if base is not None:
            figures["baseline_roc_pr"] = plot_roc_pr(
                base[1].labels, base[1].probs, class_names=splits.class_names, nsfw_scores=base[1].scores,
                nsfw_classes=splits.nsfw,
                threshold=base[2].get("binary", {}).get("operating_point", {}).get("threshold"),
                title=f"baseline {baseline} on the test split")
        files: dict[str, Path] = {}
        for name, fig in figures.items():
            path = out_dir / f"{name}.png"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=110)
            files[name] = path
        files["report"] = write_text(out_dir / "report.json", json.dumps(json_safe(full), indent=2) + "\n")
        if write_card:
            card = model_card(report, spec, baseline=base[2] if base else None, probe=probe_report,
                              dataset=dataset, notes="\n\n".join(n for n in (probe_note, notes) if n),
                              threshold_status=status,
                              calibration=json_safe(cal))
            files["model_card"] = write_text(out_dir / "model_card.md", card)
        return EvaluationRun(report=full, files=files, figures=figures, spec=spec,
                             spec_updated=write_spec, skipped_missing=list(splits.missing),
                             clips_left_out=splits.clips_left_out)


def _figures(test: _Predictions, splits: _Splits, spec: ModelSpec, *, threshold, target: str,
             report: dict, redact_images: bool) -> dict[str, Any]:
    """The test-split figures of the model under evaluation."""
    figures: dict[str, Any] = {}
    test_paths = [p for p, keep in zip(splits.test_paths, test.ok) if keep]
    y = test.labels
    if test.probs is not None:
        figures["confusion"] = plot_confusion_matrix(
            np.array(report["multiclass"]["confusion_matrix"]), splits.class_names)
        figures["reliability"] = plot_reliability(y, test.probs)
        figures["mistakes"] = plot_worst_mistakes(test_paths, y, test.probs, class_names=splits.class_names,
                                                  redact_images=redact_images)
    figures["roc_pr"] = plot_roc_pr(y, test.probs, class_names=splits.class_names, nsfw_scores=test.scores,
                                    nsfw_classes=splits.nsfw, threshold=threshold,
                                    title=f"{spec.name} on the test split")
    if test.scores is not None:
        y_bin = np.isin(y, splits.nsfw_indices)
        figures["threshold"] = plot_threshold(y_bin, test.scores, threshold=threshold, target=target)
    return figures
