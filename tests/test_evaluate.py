"""Evaluation: hand-computed thresholds, calibration and metrics; the full report on a tiny run."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from nsfwkit import data, evaluate, train, zoo
from nsfwkit.spec import ModelSpec, spec_path_for

from data_helpers import tiny_backbone, tiny_dataset

Y = np.array([0, 0, 1, 1, 1])
S = np.array([0.1, 0.6, 0.4, 0.7, 0.9])


def test_choose_threshold_for_recall_target():
    op = evaluate.choose_threshold(Y, S, target="nsfw_recall>=0.95", confidence=None)
    assert op["threshold"] == pytest.approx(0.4)  # highest threshold that still catches all 3
    assert (op["tp"], op["fp"], op["fn"], op["tn"]) == (3, 1, 0, 1)
    assert op["fpr"] == 0.5 and op["met"] is True
    op = evaluate.choose_threshold(Y, S, target="nsfw_recall>=0.6", confidence=None)
    assert op["threshold"] == pytest.approx(0.7) and op["recall"] == pytest.approx(2 / 3)


def test_choose_threshold_for_fpr_target():
    op = evaluate.choose_threshold(Y, S, target="fpr<=0.01", confidence=None)
    assert op["threshold"] == pytest.approx(0.7)  # lowest threshold above the 0.6 negative
    assert (op["tp"], op["fp"]) == (2, 0) and op["met"] is True
    assert evaluate.choose_threshold(Y, S, target="fpr:0.01", confidence=None)["threshold"] == pytest.approx(0.7)
    assert evaluate.parse_target("nsfw_recall:0.9") == ("recall", 0.9)
    op = evaluate.choose_threshold(Y, S, target="fpr<=0.5", confidence=None)
    assert op["threshold"] == pytest.approx(0.4) and op["recall"] == 1.0
    with pytest.raises(ValueError, match="unknown target"):
        evaluate.choose_threshold(Y, S, target="precision>=0.9")


def test_binary_confusion_hand_computed():
    c = evaluate.binary_confusion(Y, S, 0.5)
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (2, 1, 1, 1)
    assert c["recall"] == pytest.approx(2 / 3) and c["fpr"] == 0.5 and c["precision"] == pytest.approx(2 / 3)


def test_calibration_ece_hand_computed():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2]])
    cal = evaluate.calibration(np.array([0, 0, 0]), probs, bins=10)
    # confidences 0.9 (right), 0.6 (wrong), 0.8 (right): (0.1 + 0.6 + 0.2) / 3
    assert cal["ece"] == pytest.approx(0.3)
    assert [b["count"] for b in cal["bins"]] == [0, 0, 0, 0, 0, 1, 0, 1, 1, 0]
    perfect = evaluate.calibration(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert perfect["ece"] == 0.0


def test_evaluate_predictions_metrics():
    y = np.array([0, 0, 1, 2, 2, 2])
    probs = np.array([[.8, .1, .1], [.2, .7, .1], [.1, .8, .1], [.1, .1, .8], [.1, .2, .7],
                      [.6, .2, .2]])
    r = evaluate.evaluate_predictions(y, probs, class_names=["neutral", "porn", "sexy"],
                                      nsfw_classes=["porn", "sexy"], threshold=0.5)
    mc = r["multiclass"]
    assert mc["accuracy"] == pytest.approx(4 / 6)
    assert mc["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert mc["per_class"]["porn"]["precision"] == 0.5 and mc["per_class"]["porn"]["recall"] == 1.0
    assert mc["per_class"]["sexy"]["recall"] == pytest.approx(2 / 3)
    b = r["binary"]
    assert (b["positives"], b["negatives"]) == (4, 2)
    # nsfw scores: .2 .8 .9 .9 .9 .4 -> at 0.5: tp 3 (last sexy has .4), fp 1
    op = b["operating_point"]
    assert (op["tp"], op["fp"], op["fn"], op["tn"]) == (3, 1, 1, 1)
    json.dumps(r)  # JSON-ready (no NaN objects)


def test_align_classes_by_loose_name_renormalises_a_subset():
    probs = np.array([[0.1, 0.2, 0.3, 0.25, 0.15], [0.0, 0.5, 0.0, 0.0, 0.5]])
    aligned = evaluate.align_classes(probs, ("Drawing", "Hentai", "Neutral", "Porn", "Sexy"),
                                     ("neutral", "porn", "drawings"))
    # 3 of the 5 classes: the model's distribution given the dataset's classes (sum 0.65)
    np.testing.assert_allclose(aligned[0], [0.3 / 0.65, 0.25 / 0.65, 0.1 / 0.65])
    np.testing.assert_allclose(aligned[1], [1 / 3] * 3)  # no mass on them: uniform
    # all classes, reordered: unchanged
    full = evaluate.align_classes(probs, ("Drawing", "Hentai", "Neutral", "Porn", "Sexy"),
                                  ("sexy", "porn", "neutral", "hentai", "drawings"))
    np.testing.assert_allclose(full, probs[:, ::-1])
    assert evaluate.align_classes(probs, ("Drawing", "Hentai", "Neutral", "Porn", "Sexy"),
                                  ("sfw", "nsfw")) is None


def test_evaluate_run_writes_report_card_plots_and_threshold(tmp_path):
    root = tiny_dataset(tmp_path / "ds", classes=("neutral", "porn", "sexy"), per_class=8, size=32)
    data.prepare(root).write(tmp_path / "run" / "01_data")
    manifest = tmp_path / "run" / "01_data" / "manifest.csv"
    backbone = tiny_backbone(tmp_path / "bb", image_size=32)
    result = train.train(manifest, tmp_path / "run" / "02", dict(
        backbone=str(backbone), batch_size=8, epochs_head=1, epochs_finetune=0, patience=0),
        verbose=False)
    model_dir = result.model_path.parent
    before = {p.name for p in model_dir.iterdir()}
    out = tmp_path / "run" / "02" / "eval"
    run = evaluate.evaluate_run(result.model_path, manifest, out, target="fpr<=0.01", confidence=None,
                                baseline=str(backbone), notes="demo only")
    assert {p.name for p in model_dir.iterdir()} == before | {"eval"}  # nothing new beside it
    report = json.loads((out / "report.json").read_text())
    assert run.files["report"] == out / "report.json"
    assert report["target"] == "fpr<=0.01" and report["split"] == "test"
    n_test = len(data.read_manifest(manifest, split="test"))
    assert report["test"]["n"] == n_test
    assert report["baseline"]["model"] == "tiny"  # the baseline's classes mapped by name
    assert "multiclass" in report["baseline"]
    # the threshold is the one choose_threshold picks on the val predictions
    model, spec0 = zoo.load(result.model_path)
    val_paths, val_y, names = data.manifest_arrays(manifest, "val")
    probs, ok = evaluate.predict(model, val_paths, image_size=spec0.image_size)
    scores = probs[:, list(spec0.nsfw_indices)].sum(1)
    y_bin = np.isin(val_y, [names.index(c) for c in ("porn", "sexy")])
    expected = evaluate.choose_threshold(y_bin[ok], scores[ok], target="fpr<=0.01", confidence=None)
    assert report["threshold"] == pytest.approx(expected["threshold"], rel=1e-6)
    assert report["threshold_met"] is True and report["spec_updated"] is True  # nsfwkit trained it
    spec = ModelSpec.load(spec_path_for(result.model_path))
    assert spec.threshold == pytest.approx(report["threshold"])
    assert report["test"]["binary"]["threshold_chosen_on"] == "val"
    card = (out / "model_card.md").read_text()
    assert "# Model card" in card and "baseline" in card and "demo only" in card
    assert "written into `model.spec.json`" in card
    for name in ("confusion", "reliability", "mistakes", "roc_pr", "threshold", "baseline_roc_pr"):
        assert run.files[name].stat().st_size > 1000, name
    assert "redacted" in run.figures["mistakes"]._suptitle.get_text()
    # the linear probe on the same backbone, and the temperature nsfwkit train folded in
    assert report["linear_probe"]["model"] == "logistic regression on tiny features"
    assert report["linear_probe"]["n"] == n_test and "accuracy" in report["linear_probe"]["multiclass"]
    assert "| metric | this model | pretrained baseline | linear probe |" in card
    cal = report["calibration"]
    assert cal["temperature"] == pytest.approx(spec.extra["calibration"]["temperature"])
    assert "inside the model" in cal["applied"] and "Temperature T" in card
    op = report["test"]["binary"]["operating_point"]
    assert op["fpr_ci"][0] <= op["fpr"] <= op["fpr_ci"][1] and op["ci_confidence"] == 0.95
    # by default the target must hold with 95% confidence: this val is far too small for it
    strict = evaluate.evaluate_run(result.model_path, manifest, tmp_path / "strict", target="fpr<=0.01",
                                   baseline=None, probe=False)
    assert strict.report["threshold_met"] is False and strict.spec_updated is False
    assert ModelSpec.load(spec_path_for(result.model_path)).threshold == pytest.approx(report["threshold"])
    strict_card = (tmp_path / "strict" / "model_card.md").read_text()
    assert "too few safe images to support the target" in strict_card
    assert "at least 299 are needed" in strict_card and "No threshold was written" in strict_card
    # a probe whose backbone cannot be loaded (e.g. imagenet weights offline) is skipped, said so
    spec_file = spec_path_for(result.model_path)
    moved = ModelSpec.load(spec_file)
    cfg = dict(moved.extra["train_config"], backbone=str(tmp_path / "gone.keras"))
    moved.replace(extra=dict(moved.extra, train_config=cfg)).save(spec_file)
    skipped = evaluate.evaluate_run(result.model_path, manifest, tmp_path / "skipped", baseline=None)
    assert skipped.report["linear_probe"] is None and "gone.keras" in skipped.report["linear_probe_skipped"]
    assert "The linear probe was skipped" in (tmp_path / "skipped" / "model_card.md").read_text()


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    """A user's own model (spec without nsfwkit's train_config) and a prepared dataset."""
    base = tmp_path_factory.mktemp("user")
    root = tiny_dataset(base / "ds", classes=("neutral", "porn", "sexy"), per_class=8, size=32)
    data.prepare(root, progress=False).write(base / "run" / "01_data")
    return tiny_backbone(base / "mine", image_size=32), base / "run" / "01_data" / "manifest.csv"


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file()}


def test_evaluate_never_touches_a_users_model_folder_unless_asked(user_model, tmp_path):
    model_path, manifest = user_model
    before = _digest(model_path.parent)
    run = evaluate.evaluate_run(model_path, manifest, tmp_path / "eval", baseline=None, confidence=None)
    assert _digest(model_path.parent) == before  # spec, model: untouched; no report beside them
    assert run.spec_updated is False and run.report["spec_updated"] is False
    assert run.spec.threshold == pytest.approx(run.report["threshold"])  # in memory only
    assert (tmp_path / "eval" / "report.json").is_file()
    card = (tmp_path / "eval" / "model_card.md").read_text()
    assert "not written into `tiny.spec.json`" in card
    # explicitly asked: the threshold goes into the spec
    run = evaluate.evaluate_run(model_path, manifest, tmp_path / "eval2", baseline=None,
                                update_spec=True, confidence=None)
    assert run.spec_updated is True
    assert ModelSpec.load(spec_path_for(model_path)).threshold == pytest.approx(run.report["threshold"])


def _rewrite_manifest(manifest: Path, folder: Path, change) -> Path:
    rows = data.read_manifest(manifest)
    for r in rows:
        change(r)
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text((manifest.parent / "summary.json").read_text())
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


def test_empty_or_one_sided_val_is_a_clear_error(tmp_path):
    base = tmp_path
    root = tiny_dataset(base / "ds", classes=("neutral", "porn", "sexy"), per_class=8, size=32)
    data.prepare(root, progress=False).write(base / "01")
    manifest = base / "01" / "manifest.csv"
    model_path = tiny_backbone(base / "mine", image_size=32)
    spec_before = spec_path_for(model_path).read_bytes()

    def no_val(r):
        if r["split"] == "val":
            r["split"] = "train"

    def safe_val_only(r):
        if r["split"] == "val" and r["class"] != "neutral":
            r["split"] = "train"

    empty = _rewrite_manifest(manifest, base / "empty", no_val)
    with pytest.raises(data.DatasetError, match="val split is empty"):
        evaluate.evaluate_run(model_path, empty, base / "e1", baseline=None, update_spec=True)
    one_sided = _rewrite_manifest(manifest, base / "one", safe_val_only)
    with pytest.raises(data.DatasetError, match="0 NSFW"):
        evaluate.evaluate_run(model_path, one_sided, base / "e2", baseline=None, update_spec=True)
    assert spec_path_for(model_path).read_bytes() == spec_before  # no threshold written
    assert not (base / "e1").exists() and not (base / "e2").exists()
    # the threshold chooser refuses one-sided data instead of returning a useless threshold
    with pytest.raises(ValueError, match="both NSFW and safe"):
        evaluate.choose_threshold(np.zeros(4), np.linspace(0.1, 0.9, 4))
    with pytest.raises(ValueError, match="both NSFW and safe"):
        evaluate.choose_threshold(np.zeros(0), np.zeros(0))
    # a one-sided test set is still evaluated (no threshold chosen on it)
    r = evaluate.evaluate_predictions(np.array([1, 2]), np.array([[.1, .8, .1], [.2, .2, .6]]),
                                      class_names=["neutral", "porn", "sexy"],
                                      nsfw_classes=["porn", "sexy"])
    assert r["binary"]["operating_point"]["threshold"] is None
    assert r["binary"]["operating_point"]["met"] is False


def test_predict_traces_the_model_once_for_repeated_calls(tmp_path):
    """evaluate.predict reuses one traced forward pass per model: a second call (and a smaller
    last batch) does not trace the model again."""
    import keras
    from PIL import Image

    calls = []

    class CountCalls(keras.layers.Layer):
        def call(self, x):
            calls.append(1)  # Python runs only when the model is built or traced
            return x

    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(CountCalls()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    built = len(calls)
    paths = []
    for i, value in enumerate([0, 100, 200]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(paths[-1])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    paths.append(tmp_path / "broken.png")
    first, ok = evaluate.predict(model, paths, image_size=8, batch_size=2)  # batches of 2 and 1
    assert len(calls) - built == 1
    second, ok2 = evaluate.predict(model, paths, image_size=8, batch_size=2)
    assert len(calls) - built == 1  # not traced again
    assert ok.tolist() == ok2.tolist() == [True, True, True, False]
    np.testing.assert_array_equal(first, second)
    expected = model.predict(np.stack([np.full((8, 8, 3), v, np.float32) for v in (0, 100, 200)]), verbose=0)
    np.testing.assert_allclose(first[:3], expected, rtol=1e-5)
    assert np.isnan(first[3]).all()


def test_evaluate_out_is_the_kits_folder_refused_if_foreign_busy_while_written(user_model, tmp_path, capsys):
    from nsfwkit import cli, fileio

    model_path, manifest = user_model
    argv = ["evaluate", str(model_path), str(manifest), "--baseline", "none", "--no-probe", "--confidence", "0"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "report.json").write_text('{"my": "report"}')
    assert cli.main([*argv, "--out", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nsfwkit evaluate: ") and "not written by nsfwkit" in err and err.count("\n") == 1
    assert sorted(p.name for p in foreign.iterdir()) == ["report.json"]
    assert (foreign / "report.json").read_text() == '{"my": "report"}'
    ours = tmp_path / "ours"
    with fileio.folder_lock(ours):                       # another evaluation is writing there
        assert cli.main([*argv, "--out", str(ours)]) == 1
        assert "in use by another nsfwkit process" in capsys.readouterr().err
    assert not (ours / "report.json").exists()
    # an older kit's evaluation (notebook 02's run/evaluation/): claimed, the user's file beside it stays
    old = tmp_path / "run" / "evaluation"
    old.mkdir(parents=True)
    (old / "report.json").write_text(json.dumps({k: None for k in evaluate._REPORT_KEYS}))
    (old / "my_notes.md").write_text("mine")
    assert cli.main([*argv, "--out", str(old)]) == 0
    assert fileio.folder_kind(old) == "evaluate" and (old / "my_notes.md").read_text() == "mine"
    assert json.loads((old / "report.json").read_text())["model"] == str(model_path)
