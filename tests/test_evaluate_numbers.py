"""Honest numbers: Clopper-Pearson bounds and the threshold they choose, temperature scaling,
the linear probe (hand-computed values; no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from nsfwkit import evaluate


def _bisect(f, lo=0.0, hi=1.0, iters=100):
    """The root of an increasing ``f`` on [lo, hi]."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def test_clopper_pearson_on_hand_examples():
    from scipy.stats import beta

    # 19 of 20: the one-sided 95% lower bound L solves P(X >= 19 | p = L) = 0.05, i.e. with the
    # Beta(19, 2) CDF in closed form, L^19 * (20 - 19 L) = 0.05
    lower, upper = evaluate.clopper_pearson(19, 20, side="lower")
    assert upper == 1.0
    assert lower == pytest.approx(_bisect(lambda x: x**19 * (20 - 19 * x) - 0.05), abs=1e-9)
    assert lower == pytest.approx(beta.ppf(0.05, 19, 2), abs=1e-12)
    assert lower == pytest.approx(0.78389, abs=1e-5)  # hand-checked: 0.78389**19 * 5.1061 = 0.0500
    # 20 of 20: L^20 = 0.05; 0 of 20 false alarms: the upper bound is 1 - 0.05^(1/20)
    assert evaluate.clopper_pearson(20, 20, side="lower")[0] == pytest.approx(0.05 ** (1 / 20))
    assert evaluate.clopper_pearson(0, 20, side="upper") == pytest.approx((0.0, 1 - 0.05 ** (1 / 20)))
    # two-sided 95%: each tail 2.5%; for 19 of 20 the upper end solves U^20 = 0.975
    lo, hi = evaluate.clopper_pearson(19, 20)
    assert lo == pytest.approx(beta.ppf(0.025, 19, 2)) and hi == pytest.approx(0.975 ** (1 / 20))
    assert lo < 19 / 20 < hi
    assert np.isnan(evaluate.clopper_pearson(0, 0)[0])
    with pytest.raises(ValueError):
        evaluate.clopper_pearson(5, 4)


def test_threshold_is_chosen_so_the_target_holds_with_confidence():
    pos = np.linspace(0.30, 0.99, 100)  # 100 NSFW scores, ascending
    neg = np.linspace(0.00, 0.50, 100)
    y = np.r_[np.ones(100), np.zeros(100)]
    s = np.r_[pos, neg]
    point = evaluate.choose_threshold(y, s, target="nsfw_recall>=0.95", confidence=None)
    assert point["threshold"] == pytest.approx(pos[5]) and point["tp"] == 95  # on the boundary
    op = evaluate.choose_threshold(y, s, target="nsfw_recall>=0.95")
    # 95% lower bounds: 98/100 -> 0.938 < 0.95, 99/100 -> 0.953 >= 0.95: catch 99
    assert evaluate.clopper_pearson(98, 100, side="lower")[0] < 0.95 <= \
        evaluate.clopper_pearson(99, 100, side="lower")[0]
    assert op["threshold"] == pytest.approx(pos[1]) and op["tp"] == 99 and op["met"] is True
    assert op["bound"] == pytest.approx(evaluate.clopper_pearson(99, 100, side="lower")[0])
    assert op["confidence"] == 0.95
    # FPR: at most 1 of 100 safe images flagged has a 95% upper bound 0.0466 <= 0.05; 2 -> 0.0616
    fpr = evaluate.choose_threshold(y, s, target="fpr<=0.05")
    assert fpr["fp"] == 1 and fpr["threshold"] == pytest.approx(s[s > neg[-2]].min())  # just above it
    assert fpr["bound"] == pytest.approx(evaluate.clopper_pearson(1, 100, side="upper")[1])


def test_a_val_split_too_small_for_the_target_says_so():
    y = np.r_[np.ones(20), np.zeros(20)]
    s = np.r_[np.linspace(0.6, 1.0, 20), np.linspace(0.0, 0.4, 20)]  # perfectly separated
    op = evaluate.choose_threshold(y, s, target="nsfw_recall>=0.95")
    assert op["met"] is False and op["recall"] == 1.0
    # 0.05 ** (1 / n) >= 0.95 needs n >= log(0.05) / log(0.95) = 58.4
    assert op["reason"] == ("too few NSFW images to support the target: with 20, even a perfect result "
                            "gives a 95% lower bound on recall of 0.861; at least 59 are needed")
    fpr = evaluate.choose_threshold(y, s, target="fpr<=0.01")
    assert fpr["met"] is False and "at least 299 are needed" in fpr["reason"]
    assert evaluate.choose_threshold(y, s, target="nsfw_recall>=0.8")["met"] is True
    report = evaluate.evaluate_predictions(y.astype(int), None, class_names=["sfw", "nsfw"],
                                           nsfw_classes=["nsfw"], nsfw_scores=s)
    assert report["binary"]["operating_point"]["met"] is False
    assert report["binary"]["operating_point"]["recall_ci"] == pytest.approx(
        list(evaluate.clopper_pearson(20, 20)))


def _overconfident(n, seed):
    """Labels drawn from softmax(z), and a model reporting 4 * z (far too confident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 3))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    return 4.0 * z, y


def test_temperature_scaling_repairs_an_overconfident_model():
    val_logits, val_y = _overconfident(2000, 0)
    test_logits, test_y = _overconfident(2000, 1)
    fit = evaluate.fit_temperature(val_logits, val_y)
    assert 3.3 < fit["temperature"] < 4.8  # the truth is 4
    assert fit["nll_after"] < fit["nll_before"] and fit["ece_after"] < fit["ece_before"]
    probs = np.exp(test_logits) / np.exp(test_logits).sum(1, keepdims=True)
    before = evaluate.calibration(test_y, probs)["ece"]
    after = evaluate.calibration(test_y, evaluate.temperature_scale(probs, fit["temperature"]))["ece"]
    assert before > 0.15 and after < before / 3, (before, after)
    # temperature_scale(p, T) == softmax(logits / T); 1 / T undoes it
    np.testing.assert_allclose(evaluate.temperature_scale(probs, 4.0),
                               np.exp(test_logits / 4) / np.exp(test_logits / 4).sum(1, keepdims=True),
                               rtol=1e-9)
    np.testing.assert_allclose(evaluate.temperature_scale(evaluate.temperature_scale(probs, 4.0), 0.25),
                               probs, rtol=1e-6, atol=1e-12)
    # an already calibrated model keeps T close to 1
    z, y = _overconfident(2000, 2)
    assert 0.85 < evaluate.fit_temperature(z / 4, y)["temperature"] < 1.15


def test_linear_probe_is_a_softmax_layer_on_raw_features():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (120, 4)) * [1, 10, 0.1, 1] + [0, 5, -3, 0]
    y = (x[:, 0] + 0.2 * x[:, 1] + rng.normal(0, 0.5, 120) > 1).astype(int)
    kernel, bias = evaluate.fit_linear_probe(x, y, num_classes=3)  # class 2 absent
    scaler = StandardScaler().fit(x)
    ref = LogisticRegression(C=1.0, max_iter=5000).fit(scaler.transform(x), y)
    logits = x @ kernel + bias
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(probs[:, :2], ref.predict_proba(scaler.transform(x)), atol=1e-4)
    assert probs[:, 2].max() < 1e-4
    (out,) = evaluate.linear_probe(x, y, [x[:5]], num_classes=3)
    np.testing.assert_allclose(out, probs[:5], atol=1e-6)
