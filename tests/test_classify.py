"""`nsfwkit classify`: streaming, formats, exit codes, bad files one by one, same numbers as Keras."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nsfwkit import cli
from nsfwkit.classify import Result, classify, nsfw_scores, predict
from nsfwkit.images import load_image


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder of good images in several formats and sizes, plus broken ones."""
    from nsfwkit import samples

    root = tmp_path_factory.mktemp("imgs")
    imgs = samples.sample_images()
    (root / "sub").mkdir()
    Image.fromarray(imgs["chelsea"]).save(root / "cat.jpg", quality=90)
    Image.fromarray(imgs["coffee"]).save(root / "sub" / "coffee.webp", quality=90)
    Image.fromarray(imgs["rocket"][:224, :224]).save(root / "sub" / "rocket_224.png")
    Image.fromarray(imgs["checkerboard"]).save(root / "checker.gif")
    Image.fromarray(imgs["astronaut"]).save(root / "astronaut_is_a_jpeg.png", format="JPEG")
    (root / "error_page.jpg").write_text("<html><body>403 Forbidden</body></html>")
    (root / "empty.png").write_bytes(b"")
    data = (root / "cat.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "notes.txt").write_text("not picked up from folders")
    return root


# a folder's own files (sorted), then its sub-folders'
EXPECTED_ORDER = ["astronaut_is_a_jpeg.png", "cat.jpg", "checker.gif", "empty.png", "error_page.jpg",
                  "truncated.jpg", "sub/coffee.webp", "sub/rocket_224.png"]
BAD = {"empty.png": "empty", "error_page.jpg": "HTML", "truncated.jpg": "truncated|corrupt"}


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_stream_matches_in_memory_predictions(folder, default_model, batch_size):
    model, spec = default_model
    results = list(classify([folder], model=model, spec=spec, batch_size=batch_size, workers=2))
    names = [r.path.replace(str(folder) + "/", "") for r in results]
    assert names == EXPECTED_ORDER  # input order, whatever the batching
    good = [r for r in results if r.ok]
    assert {n for n, r in zip(names, results) if not r.ok} == set(BAD)
    for name, r in zip(names, results):
        if not r.ok:
            import re
            assert re.search(BAD[name], r.error), r.error
    expected = predict(model, np.stack([load_image(r.path, image_size=224) for r in good]))
    got = np.array([[r.probs[c] for c in spec.class_names] for r in good])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose([r.nsfw for r in good], nsfw_scores(expected, spec), atol=1e-5)
    assert all(r.top == spec.class_names[int(np.argmax(p))] for r, p in zip(good, expected))


def test_threshold_and_custom_nsfw_classes(folder, default_model):
    model, spec = default_model
    (r,) = classify([folder / "cat.jpg"], model=model, spec=spec, nsfw_classes=["Porn"])
    assert r.flagged is None and r.nsfw == pytest.approx(r.probs["Porn"]) and 0 < r.nsfw < 0.5
    (at,) = classify([folder / "cat.jpg"], model=model, spec=spec, nsfw_classes=["Porn"], threshold=r.nsfw)
    (above,) = classify([folder / "cat.jpg"], model=model, spec=spec, nsfw_classes=["Porn"],
                        threshold=r.nsfw * 1.001)
    assert at.flagged is True and above.flagged is False
    with pytest.raises(ValueError, match="unknown NSFW classes"):
        next(classify([folder], model=model, spec=spec, nsfw_classes=["Nude"]))


def test_result_schema():
    ok = Result("a.jpg", probs={"Neutral": 1.0}, top="Neutral", nsfw=0.0)
    assert ok.to_dict() == {"path": "a.jpg", "top": "Neutral", "probs": {"Neutral": 1.0}, "nsfw": 0.0}
    assert Result("b.jpg", error="empty file").to_dict() == {"path": "b.jpg", "error": "empty file"}


def test_cli_jsonl_reports_each_bad_file_and_exits_1(folder, capsys):
    code = cli.main(["classify", str(folder), "--format", "jsonl", "--batch-size", "2"])
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert len(rows) == len(EXPECTED_ORDER)
    for row in rows:
        if "error" in row:
            assert set(row) == {"path", "error"}
        else:
            assert set(row) == {"path", "top", "probs", "nsfw"}
            assert list(row["probs"]) == ["Drawing", "Hentai", "Neutral", "Porn", "Sexy"]
            assert row["nsfw"] == pytest.approx(row["probs"]["Hentai"] + row["probs"]["Porn"] + row["probs"]["Sexy"])
    assert "5 classified, 3 failed" in err and "truncated.jpg" in err


def test_cli_csv_all_good_exits_0(folder, capsys):
    code = cli.main(["classify", str(folder / "cat.jpg"), str(folder / "sub"), "--format", "csv",
                     "--threshold", "0.5"])
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == "path,top,nsfw,Drawing,Hentai,Neutral,Porn,Sexy,flagged,error,path_bytes"
    assert len(lines) == 4 and all(line.split(",")[8] in ("true", "false") for line in lines[1:])


@pytest.mark.parametrize("argv,message", [
    (["classify"], "required"),
    (["classify", "x.jpg", "--batch-size", "0"], "batch-size"),
    (["classify", "x.jpg", "--batch-size", "100000"], "batch-size"),
    (["classify", "x.jpg", "--threshold", "2"], "threshold"),
    (["classify", "x.jpg", "--model", "no_such_model"], "no such model"),
    (["classify", "x.jpg", "--format", "xml"], "invalid choice"),
    (["classify", "x.jpg", "--nsfw-classes", "Nude"], "unknown"),
])
def test_cli_usage_errors_exit_2(argv, message, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_console_script_table(folder):
    """The real entry point, as a user runs it: a table on stdout, a summary on stderr."""
    proc = subprocess.run([sys.executable, "-m", "nsfwkit", "classify", str(folder / "cat.jpg"),
                           str(folder / "empty.png")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:6] == ["Drawing", "Hentai", "Neutral", "Porn", "Sexy", "nsfw"]
    assert "Neutral" in lines[1] and "cat.jpg" in lines[1]
    assert "ERROR" in lines[2] and "empty file" in lines[2]


def test_no_images_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert cli.main(["classify", str(tmp_path)]) == 2
    assert "no image files" in capsys.readouterr().err


def test_closed_pipe_is_not_an_error(folder):
    proc = subprocess.run(f"{sys.executable} -m nsfwkit classify --format jsonl {folder} | head -n 1",
                          shell=True, capture_output=True, text=True, timeout=300,
                          executable="/bin/bash")
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def _three_class_model():
    import keras

    inp = keras.Input((8, 8, 3), name="image")
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    return keras.Model(inp, out, name="three")


def test_model_without_nsfw_classes_warns_or_refuses_a_threshold(folder):
    """Issue 9 finding 8: a 3-class model without NSFW class names used to report nsfw 0.0 silently."""
    import warnings

    from nsfwkit.classify import NoNSFWClassesWarning

    model, cat = _three_class_model(), folder / "cat.jpg"
    with pytest.warns(NoNSFWClassesWarning, match=r"class_0.*nsfw score is 0 .*--nsfw-classes"):
        (r,) = classify([cat], model=model)
    assert r.ok and r.nsfw == 0.0 and set(r.probs) == {"class_0", "class_1", "class_2"}
    with pytest.raises(ValueError, match="nothing can be flagged at threshold 0.5"):
        next(classify([cat], model=model, threshold=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # naming the classes: no warning
        (r,) = classify([cat], model=model, nsfw_classes=["class_2"], threshold=0.5)
    assert r.nsfw == pytest.approx(r.probs["class_2"]) and r.flagged == (r.nsfw >= 0.5)


def test_caller_model_of_the_wrong_shape_is_refused_before_decoding(folder):
    from nsfwkit.spec import NSFWJS_CLASSES, ModelSpec
    from nsfwkit.zoo import InvalidModelError

    spec = ModelSpec(name="three", class_names=NSFWJS_CLASSES, image_size=8)
    with pytest.raises(InvalidModelError, match="three: the model outputs 3 classes but its spec lists 5"):
        next(classify([folder], model=_three_class_model(), spec=spec))


def test_summarize_fails_when_nothing_was_classified(tmp_path):
    """Issue 9 finding 10: a notebook over a missing folder must not finish 'ok' with 0 images."""
    from nsfwkit.classify import NothingClassifiedError, summarize

    ok, bad = Result("a.jpg", probs={"x": 1.0}, top="x", nsfw=0.0), Result("b.jpg", error="empty file")
    assert summarize([ok, bad]) == "1 classified, 1 failed"
    with pytest.raises(NothingClassifiedError, match=r"every input failed \(b.jpg: empty file\)"):
        summarize([bad])
    with pytest.raises(NothingClassifiedError, match="no image files"):
        summarize([])
    missing = list(classify([tmp_path / "nonexistent"], model=_three_class_model(), nsfw_classes=["class_0"]))
    with pytest.raises(NothingClassifiedError, match="nonexistent"):
        summarize(missing)
