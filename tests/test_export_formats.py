"""``nsfwkit export --format tflite,onnx``: the format/precision lists, the one export.json with a
parity row per format and precision, ``--calibration``, the size/parity table and chart, on a
model fine-tuned by the kit's own ``nsfwkit.train`` and on the tiny runtime model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nsfwkit import cli, convert
from nsfwkit.convert import formats

from convert_helpers import require_converter, require_node
from data_helpers import tiny_backbone, tiny_dataset
from runtime_helpers import build_runtime_model, require, runtime_spec


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """A 3-class model fine-tuned by ``nsfwkit.train`` (tiny backbone, 32x32), its model path."""
    from nsfwkit import data, train

    base = tmp_path_factory.mktemp("finetune")
    root = tiny_dataset(base / "ds", classes=("neutral", "porn", "sexy"), per_class=6, size=32)
    data.prepare(root).write(base / "run" / "01_data")
    backbone = tiny_backbone(base / "backbone", image_size=32)
    config = dict(backbone=str(backbone), batch_size=4, epochs_head=1, epochs_finetune=1, unfreeze=2,
                  lr_head=1e-2, lr_finetune=1e-3, checkpoint_every=100, patience=0)
    result = train.train(base / "run" / "01_data" / "manifest.csv", base / "run" / "02", config, verbose=False)
    return result.model_path


@pytest.fixture
def calibration_folder(tmp_path):
    """Three readable images, one broken file and one file without an image extension."""
    from PIL import Image

    from nsfwkit import samples

    folder = tmp_path / "calib"
    folder.mkdir()
    for i, name in enumerate(("astronaut", "coffee", "blobs")):
        Image.fromarray(samples.sample_images()[name]).save(folder / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


# --------------------------------------------------------------------------------------------
# Which format gets which precision
# --------------------------------------------------------------------------------------------
def test_resolve_applies_each_precision_to_the_formats_that_have_it():
    targets, not_made = formats.resolve("tfjs,tflite,onnx", ["none,float16", "int8"])
    assert targets == {"tfjs": ["float32", "float16"], "tflite": ["float32", "float16", "int8"],
                       "onnx": ["float32", "float16"]}
    assert not_made == [{"format": "tfjs", "precision": "int8", "reason": "tfjs has no int8 build"},
                        {"format": "onnx", "precision": "int8", "reason": "onnx has no int8 build"}]
    assert formats.resolve("all", None) == (
        {"tfjs": ["float32", "float16", "uint8"], "tflite": ["float32", "float16", "dynamic", "int8"],
         "onnx": ["float32", "float16"]}, [])
    assert formats.resolve(["ONNX"], "all") == ({"onnx": ["float32", "float16"]}, [])
    assert formats.resolve("tfjs", None) == ({"tfjs": ["float32", "float16", "uint8"]}, [])  # today's default


def test_resolve_takes_one_list_per_group_of_formats():
    per = {"tfjs": ["float32", "uint8"], "tflite,onnx": ["none", "int8"]}
    assert formats.resolve("all", per) == (
        {"tfjs": ["float32", "uint8"], "tflite": ["float32", "int8"], "onnx": ["float32"]},
        [{"format": "onnx", "precision": "int8", "reason": "onnx has no int8 build"}])
    assert formats.resolve("tfjs", per) == ({"tfjs": ["float32", "uint8"]}, [])   # other groups unused
    assert formats.resolve("tfjs,onnx", {"tfjs": ["none"]}) == (
        {"tfjs": ["float32"], "onnx": ["float32", "float16"]}, [])
    with pytest.raises(formats.FormatError, match="'uint8' is not a precision of onnx"):
        formats.resolve("onnx", {"onnx": ["uint8"]})


@pytest.mark.parametrize("fmts,quants,option,message", [
    ("tfjs,coreml", None, "--format", "unknown format 'coreml'"),
    ("", None, "--format", "no format given"),
    ("tfjs", "int8", "--quantize", "'int8' is not a precision of tfjs"),
    ("onnx", "dynamic,uint8", "--quantize", "'dynamic' is not a precision of onnx"),
    ("tfjs,onnx", "uint8", "--quantize", "none of uint8 applies to onnx"),
    ("tflite", ",", "--quantize", "quantizations is empty"),
])
def test_resolve_refuses_what_cannot_be_made(fmts, quants, option, message):
    with pytest.raises(formats.FormatError, match=message) as info:
        formats.resolve(fmts, quants)
    assert info.value.option == option


@pytest.mark.parametrize("argv,what", [
    (["--format", "tflite", "--quantize", "uint8"], "--quantize"),
    (["--format", "pytorch"], "--format"),
])
def test_cli_bad_lists_are_usage_errors_before_the_model_loads(argv, what, tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "no_model.keras"), "--out", str(tmp_path / "exp"), *argv]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"nsfwkit export: {what} — "), line
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# The table and the chart: hand-made export.json rows
# --------------------------------------------------------------------------------------------
_SUMMARY = {"sizes": [
    {"format": "saved_model", "quantization": "float32", "mb": 9.0, "bytes": 9_000_000, "path": "saved_model"},
    {"format": "tfjs_graph", "quantization": "float32", "mb": 8.9, "bytes": 8_900_000, "path": "tfjs/float32"},
    {"format": "nsfwjs_graph", "quantization": "float32", "mb": 8.9, "bytes": 8_900_000, "path": "nsfwjs/float32"},
    {"format": "tflite", "quantization": "int8", "precision": "int8", "mb": 3.1, "bytes": 3_100_000,
     "path": "tflite/int8/model.tflite", "max_abs_diff": 0.01, "top1_agree": 1.0, "decision_flips": 0,
     "n_images": 10, "tolerance": 0.02, "passed": True, "runtime": "ai-edge-litert 2.3.0",
     "calibration": {"source": "samples", "images": 28, "skipped": []}},
    {"format": "onnx", "quantization": "float32", "precision": "float32", "mb": 8.8, "bytes": 8_800_000,
     "path": "onnx/float32/model.onnx", "max_abs_diff": 0.0, "top1_agree": 1.0, "decision_flips": 0,
     "n_images": 10, "tolerance": 1e-5, "passed": True, "runtime": "onnxruntime 1.32.0", "calibration": None},
]}


def test_runtime_table_one_row_per_deployable_model():
    rows = convert.runtime_table(_SUMMARY, tfjs_parity={"float32": {"max_abs_diff": 4e-7, "top1_agree": 1.0,
                                                                    "tolerance": 1e-5, "passed": True,
                                                                    "images": 9}})
    assert [(r["format"], r["precision"]) for r in rows] == [("tfjs", "float32"), ("tflite", "int8"),
                                                              ("onnx", "float32")]
    assert rows[0]["max_abs_diff"] == 4e-7 and rows[0]["n_images"] == 9 and rows[0]["runtime"].startswith("TF.js")
    assert rows[0]["decision_flips"] is None      # not measured by a summary without probabilities
    assert rows[1]["calibration"] == "samples (28 images)" and rows[2]["calibration"] is None
    text = convert.table_text(rows).splitlines()
    assert len(text) == 4 and text[2].split()[:6] == ["tflite", "int8", "3.10", "1.0e-02", "2e-02", "100%"]
    bare = convert.runtime_table(_SUMMARY)
    assert bare[0]["max_abs_diff"] is None and bare[0]["tolerance"] == 1e-5
    assert convert.table_text(bare).splitlines()[1].split()[3] == "-"


def test_runtime_table_counts_tfjs_decision_flips_from_a_parity_report():
    import numpy as np

    spec = runtime_spec()  # NSFW = Hentai + Porn + Sexy, threshold 0.5
    keras_p = np.array([[0.1, 0.1, 0.28, 0.32, 0.2], [0.6, 0.1, 0.2, 0.05, 0.05]])
    tfjs_p = np.array([[0.1, 0.1, 0.41, 0.19, 0.2], [0.6, 0.1, 0.2, 0.05, 0.05]])  # first flips to SFW
    report = convert.compare(keras_p, tfjs_p, quantization="float32")
    (row, *_) = convert.runtime_table(_SUMMARY, tfjs_parity={"float32": report}, spec=spec)
    assert row["decision_flips"] == 1 and row["max_abs_diff"] == pytest.approx(0.13) and not row["passed"]


def test_plot_size_vs_error_draws_measured_rows_on_a_log_axis():
    rows = convert.runtime_table(_SUMMARY)
    fig = convert.plot_size_vs_error(rows)
    size_ax, err_ax = fig.axes[:2]
    assert [round(p.get_height(), 2) for p in size_ax.patches] == [8.9, 3.1, 8.8]
    assert err_ax.get_yscale() == "log"
    assert [p.get_height() for p in err_ax.patches] == [0.01, 1e-9]   # tfjs unmeasured; 0 floored
    assert [t.get_text() for t in err_ax.get_xticklabels()] == ["tfjs\nfloat32", "tflite\nint8", "onnx\nfloat32"]


# --------------------------------------------------------------------------------------------
# Real exports, measured in LiteRT and onnxruntime
# --------------------------------------------------------------------------------------------
def test_cli_exports_a_kit_fine_tuned_model_to_tflite_and_onnx(fine_tuned, tmp_path, capsys):
    require("ai_edge_litert", "onnxruntime", "tf2onnx", "onnx")
    out = tmp_path / "exp"
    argv = ["export", str(fine_tuned), "--out", str(out), "--format", "tflite,onnx", "--quantize", "none,int8"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "not made: onnx int8 (onnx has no int8 build)" in captured.err
    assert "misses the bar" not in captured.err
    assert "tflite  int8" in captured.out and "onnxruntime" in captured.out
    summary = json.loads((out / "export.json").read_text())
    assert summary["formats"] == ["tflite", "onnx"] and summary["tfjs"] == {}
    assert summary["not_made"] == [{"format": "onnx", "precision": "int8", "reason": "onnx has no int8 build"}]
    rows = {(r["format"], r["precision"]): r for r in summary["sizes"] if r["format"] in ("tflite", "onnx")}
    assert sorted(rows) == [("onnx", "float32"), ("tflite", "float32"), ("tflite", "int8")]
    bars = {"float32": 1e-5, "int8": 2e-2}
    for (fmt, precision), row in rows.items():
        assert row["max_abs_diff"] <= bars[precision] and row["top1_agree"] == 1.0, (fmt, precision, row)
        assert row["passed"] and row["decision_flips"] == 0 and row["n_images"] == 10
        assert row["path"] == f"{fmt}/{precision}/model.{fmt}" and (out / row["path"]).is_file()
        assert row["bytes"] == (out / row["path"]).stat().st_size
        assert row["runtime"].startswith({"tflite": "ai-edge-litert ", "onnx": "onnxruntime "}[fmt])
    # without --calibration the row names the default set
    assert rows[("tflite", "int8")]["calibration"] == {"source": "samples", "images": 28, "available": 28,
                                                       "sampled": False, "skipped": []}
    assert rows[("tflite", "float32")]["calibration"] is None
    sidecar = json.loads((out / "tflite" / "int8" / "spec.json").read_text())
    assert sidecar["class_names"] == ["neutral", "porn", "sexy"] and sidecar["input"]["dtype"] == "uint8"
    table = convert.runtime_table(out)
    assert [(r["format"], r["precision"]) for r in table] == [("tflite", "float32"), ("tflite", "int8"),
                                                               ("onnx", "float32")]


def test_cli_calibration_folder_is_loaded_counted_and_reported(fine_tuned, calibration_folder, tmp_path, capsys):
    """Three images calibrate the int8 ranges (a broken file is skipped and listed). So few
    images can give ranges that held-out images exceed: the row shows it and the CLI warns."""
    require("ai_edge_litert")
    out = tmp_path / "exp"
    argv = ["export", str(fine_tuned), "--out", str(out), "--format", "tflite", "--quantize", "int8",
            "--calibration", str(calibration_folder), "-q"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    err = captured.err
    (row,) = [r for r in json.loads((out / "export.json").read_text())["sizes"] if r["format"] == "tflite"]
    assert row["calibration"]["source"] == str(calibration_folder) and row["calibration"]["images"] == 3
    assert row["calibration"]["available"] == 4 and not row["calibration"]["sampled"]   # 4 image names
    skipped = row["calibration"]["skipped"]
    assert [s["file"].rsplit("/", 1)[-1] for s in skipped] == ["broken.jpg", "notes.txt"]
    assert skipped[1]["reason"] == "not an image extension (.txt)"
    assert row["plan"]["calibration_images"] == 3
    # reported even with -q, once per run
    lines = [line for line in err.splitlines() if line.startswith("nsfwkit export: calibration ")]
    assert lines == [f"nsfwkit export: calibration {calibration_folder}: 3 images used, 2 skipped "
                     f"(first: {skipped[0]['file']} — {skipped[0]['reason']})"]
    assert captured.out == ""
    assert ("nsfwkit export: tflite/int8/model.tflite — max |dp|" in err) == (not row["passed"])


def test_default_calibration_set_is_named_in_the_row(tmp_path):
    require("onnxruntime", "tf2onnx", "onnx")
    result = convert.export(build_runtime_model(), tmp_path / "exp", spec=runtime_spec(), formats="onnx",
                            quantizations="float16", progress=False)
    assert result.onnx == {"float16": tmp_path / "exp" / "onnx" / "float16"} and result.tfjs == {}
    (row,) = [r for r in result.sizes if r["format"] == "onnx"]
    assert row["calibration"] == {"source": "samples", "images": 28, "available": 28, "sampled": False,
                                  "skipped": []}
    assert row["passed"] and row["max_abs_diff"] <= 1e-3
    assert json.loads((tmp_path / "exp" / "export.json").read_text())["onnx"] == {"float16": "onnx/float16"}


@pytest.mark.parametrize("case", ["empty", "unused"])
def test_cli_calibration_errors_fail_before_anything_is_written(case, tmp_path, capsys):
    model = tmp_path / "tiny.keras"
    build_runtime_model().save(model)
    runtime_spec().save(tmp_path / "tiny.spec.json")
    folder = tmp_path / "calib"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"nope")
    (folder / "readme.md").write_text("no pixels here")
    quantize, what = {"empty": ("int8", str(folder)), "unused": ("none", "--calibration")}[case]
    argv = ["export", str(model), "--out", str(tmp_path / "exp"), "--format", "tflite",
            "--quantize", quantize, "--calibration", str(folder)]
    require("ai_edge_litert")
    assert cli.main(argv) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"nsfwkit export: {what} — "), line
    assert ("no usable calibration image" if case == "empty" else "none is requested") in line
    if case == "empty":   # the extensions read, and both files counted
        assert all(part in line for part in ("(files read: .apng, ", ".bmp, ", ".jpg, ", "; 2 skipped: ")), line
        assert line.endswith("readme.md: not an image extension (.md))"), line
    assert not (tmp_path / "exp").exists()


def test_cli_missing_runtime_fails_before_anything_is_written(tmp_path, capsys, monkeypatch):
    from nsfwkit.convert import runtimes

    model = tmp_path / "tiny.keras"
    build_runtime_model().save(model)
    runtime_spec().save(tmp_path / "tiny.spec.json")

    def absent(module, package):
        raise runtimes.RuntimeMissingError(f"{package} is not installed (No module named {module!r})")

    monkeypatch.setattr(runtimes, "require", absent)
    assert cli.main(["export", str(model), "--out", str(tmp_path / "exp"), "--format", "onnx"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("nsfwkit export: --format — onnx is not installed"), line
    assert not (tmp_path / "exp").exists()


# --------------------------------------------------------------------------------------------
# Review fixes: TF.js parity rows, --strict, named build errors, one calibration load, reuse
# --------------------------------------------------------------------------------------------
@pytest.mark.node
def test_tfjs_rows_carry_parity_on_the_same_images_measured_or_emulated(tmp_path, monkeypatch):
    """The TF.js rows of export.json are measured in Node on the TFLite/ONNX rows' images; the
    planner's emulation of the same folders (Node hidden) agrees with Node and says it is one."""
    require_converter()
    require_node()
    require("ai_edge_litert")
    from nsfwkit.convert import inference_model, node

    model, spec = build_runtime_model(), runtime_spec()
    result = convert.export(model, tmp_path / "exp", spec=spec, formats="tfjs,tflite", quantizations="none,uint8",
                            nsfwjs=False, progress=False)
    summary = json.loads((tmp_path / "exp" / "export.json").read_text())
    rows = {(r["format"], r["quantization"]): r for r in summary["sizes"]}
    n_images = rows[("tflite", "float32")]["n_images"]
    assert n_images == 10
    for q, bar in (("float32", 1e-5), ("uint8", 1e-2)):
        row = rows[("tfjs_graph", q)]
        assert row["runtime"] == "TF.js 4.22.0 (Node, wasm)" and row["n_images"] == n_images, row
        assert row["tolerance"] == bar and row["passed"] and row["max_abs_diff"] <= bar and row["top1_agree"] == 1.0
        assert row["decision_flips"] == 0
    assert rows[("tfjs_graph", "uint8")]["max_abs_diff"] > rows[("tfjs_graph", "float32")]["max_abs_diff"]
    table = {(r["format"], r["precision"]): r for r in convert.runtime_table(result.out_dir)}
    assert table[("tfjs", "uint8")]["max_abs_diff"] == rows[("tfjs_graph", "uint8")]["max_abs_diff"]

    def no_node(*_a, **_k):
        raise node.NodeMissingError("Node.js (>= 20) is not installed")

    monkeypatch.setattr(node, "_node", no_node)
    levels = {q: info["levels"] for q, info in summary["precision"]["tfjs"].items()}
    emulated = formats.tfjs_parity_rows(result.tfjs, reference=result.tfjs["float32"], levels=levels,
                                        keras_model=inference_model(model), spec=spec)
    for q, row in emulated.items():
        assert row["runtime"] == "emulated (planner)" and "not installed" in row["runtime_note"]
        assert row["n_images"] == n_images
        assert row["max_abs_diff"] == pytest.approx(rows[("tfjs_graph", q)]["max_abs_diff"], abs=2e-6), q


def _tiny_model_file(tmp_path):
    model = tmp_path / "tiny.keras"
    build_runtime_model().save(model)
    runtime_spec().save(tmp_path / "tiny.spec.json")
    return model


@pytest.mark.parametrize("strict", [False, True])
def test_a_missed_bar_is_warned_even_quiet_and_strict_exits_1(strict, tmp_path, capsys, monkeypatch):
    require("onnxruntime", "tf2onnx", "onnx")
    from nsfwkit.convert import onnx as onnx_export

    monkeypatch.setitem(onnx_export.TOLERANCES, "float32", -1.0)   # no difference can meet it
    out = tmp_path / "exp"
    argv = ["export", str(_tiny_model_file(tmp_path)), "--out", str(out), "--format", "onnx", "--quantize", "none",
            "-q"] + (["--strict"] if strict else [])
    assert cli.main(argv) == (1 if strict else 0)
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "misses the bar" in line] == [
        next(line for line in err if line.startswith("nsfwkit export: onnx/float32/model.onnx — max |dp| "))]
    assert any(line.startswith("nsfwkit export: --strict — 1 export(s) missed") for line in err) == strict
    assert (out / "onnx" / "float32" / "model.onnx").is_file()   # kept either way


def test_a_failing_build_is_named(tmp_path, monkeypatch, capsys):
    require("onnxruntime", "tf2onnx", "onnx")
    from nsfwkit.convert import runtimes

    def no_mix(*_a, **_k):
        raise runtimes.PlanError("no mix meets max |dp| <= 0.00075")

    monkeypatch.setattr(runtimes, "plan_mix", no_mix)
    with pytest.raises(runtimes.PlanError, match=r"^onnx/float16: no mix meets"):
        convert.export(build_runtime_model(), tmp_path / "exp", spec=runtime_spec(), formats="onnx",
                       quantizations="float16", progress=False)
    argv = ["export", str(_tiny_model_file(tmp_path)), "--out", str(tmp_path / "cli"), "--format", "onnx",
            "--quantize", "float16"]
    assert cli.main(argv) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == "nsfwkit export: onnx/float16 — no mix meets max |dp| <= 0.00075"
    assert not (tmp_path / "exp").exists() and not (tmp_path / "cli").exists()


def test_calibration_sample_is_seeded_and_capped(tmp_path):
    from PIL import Image

    from nsfwkit.convert import runtimes

    for i in range(7):
        Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(tmp_path / f"{i}.png")
    batch, report = runtimes.calibration_images(8, tmp_path, limit=3, seed=5)
    again, _ = runtimes.calibration_images(8, tmp_path, limit=3, seed=5)
    assert batch.shape == (3, 8, 8, 3) and np.array_equal(batch, again)
    assert report["images"] == 3 and report["available"] == 7 and report["sampled"]
    expected = np.sort(np.random.default_rng(5).choice(7, size=3, replace=False)) * 30
    assert batch[:, 0, 0, 0].tolist() == expected.tolist()
    assert runtimes.calibration_line(report) == (f"calibration {tmp_path}: 3 images used (a seeded sample of 7), "
                                                 "0 skipped")
    full, report = runtimes.calibration_images(8, tmp_path, limit=None)
    assert len(full) == 7 and not report["sampled"]


def test_every_build_shares_one_calibration_load_and_the_saved_model(tmp_path, monkeypatch):
    """Two quantised builds load the calibration set once; no TFLite build exports a SavedModel
    of its own (the export folder's saved_model/ is converted)."""
    require("ai_edge_litert", "onnxruntime", "tf2onnx", "onnx")
    import keras

    from nsfwkit.convert import runtimes

    loads, exports = [], []
    real_load, real_export = runtimes.calibration_images, keras.Model.export
    monkeypatch.setattr(runtimes, "calibration_images", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    monkeypatch.setattr(keras.Model, "export", lambda self, *a, **k: exports.append(a[0]) or real_export(self, *a, **k))
    result = convert.export(build_runtime_model(), tmp_path / "exp", spec=runtime_spec(), formats="tflite,onnx",
                            quantizations="none,float16", progress=False)
    assert len(loads) == 1
    assert len(exports) == 1 and "saved_model" in exports[0]   # the export folder's saved_model/ only
    rows = [r for r in result.sizes if r["format"] in ("tflite", "onnx")]
    assert len(rows) == 4 and all(r["passed"] for r in rows)
    calibrated = [r["calibration"] for r in rows if r["precision"] == "float16"]
    assert calibrated[0] == calibrated[1] and calibrated[0]["images"] == 28


def test_plot_size_vs_error_without_bars_warns_nothing():
    import warnings

    rows = [{"format": "tfjs", "precision": "float32", "mb": 1.0, "max_abs_diff": None, "tolerance": None}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = convert.plot_size_vs_error(rows)
    assert fig.axes[1].get_legend() is None and fig.axes[1].get_yscale() == "linear"
    assert [t.get_text() for t in fig.axes[1].texts] == ["not measured"]


def test_precision_plan_help_names_every_format(capsys):
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "TF.js float16/uint8, TFLite float16/dynamic/int8, ONNX float16" in help_text
    assert "--strict" in help_text and "--calibration-limit" in help_text


@pytest.mark.slow
def test_cli_exports_the_default_model_to_tflite_and_onnx_float32(tmp_path, capsys):
    require("ai_edge_litert", "onnxruntime", "tf2onnx", "onnx")
    from nsfwkit import zoo

    out = tmp_path / "exp"
    argv = ["export", zoo.DEFAULT_MODEL, "--out", str(out), "--format", "tflite,onnx", "--quantize", "none"]
    assert cli.main(argv) == 0
    assert "misses the bar" not in capsys.readouterr().err
    rows = [r for r in json.loads((out / "export.json").read_text())["sizes"] if r["format"] in ("tflite", "onnx")]
    assert [(r["format"], r["precision"]) for r in rows] == [("tflite", "float32"), ("onnx", "float32")]
    for row in rows:
        assert row["path"] == f"{row['format']}/float32/model.{row['format']}" and (out / row["path"]).is_file()
        assert row["passed"] and row["max_abs_diff"] <= 1e-5 and row["top1_agree"] == 1.0 and row["n_images"] == 10
