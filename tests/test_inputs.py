"""Issue 9 part B: one input-discovery rule, file names as data, escaped names, a decode pixel budget."""

from __future__ import annotations

import base64
import csv
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from inputs_helpers import NON_UTF8, awkward_folder, model_file, save_png
from PIL import Image, features

from nsfwkit import cli
from nsfwkit.images import ImageError, PixelBudget, read_file
from nsfwkit.inputs import Skipped, display_path, find_inputs, name_fields, name_from_fields

SKIPPED = {".hidden.png": "hidden", "broken.jpg": "broken link", "linked": "link to a folder (not followed)",
           "notes.txt": "not an image or video extension", "pipe.jpg": "not a regular file (FIFO)",
           "zero.png": "not a regular file (device)"}


def _rel(root, path) -> str:
    return os.path.relpath(path, root)


def test_find_inputs_keeps_regular_files_and_says_why_it_left_each_entry_out(tmp_path):
    """Findings 5 and 7: FIFOs, devices, broken links, hidden files were dropped (or read) silently."""
    root = awkward_folder(tmp_path / "in")
    found = find_inputs([root])
    assert [_rel(root, p) for p in found.items] == ["a.png", "c.heic", "d.svg", "sub/b.png"]
    assert {_rel(root, s.path): s.reason for s in found.skipped} == SKIPPED
    seen: list[Skipped] = []
    flat = find_inputs([root], recursive=False, on_skipped=seen.append)
    assert [_rel(root, p) for p in flat.items] == ["a.png", "c.heic", "d.svg"]
    assert ("sub", "folder (not recursive)") in {(_rel(root, s.path), s.reason) for s in seen}
    assert seen == flat.skipped
    assert find_inputs([root / "pipe.jpg"]).items == [root / "pipe.jpg"]  # named explicitly: tried (and refused)


def test_read_file_refuses_a_fifo_and_a_device_without_reading(tmp_path):
    """Finding 5: `prepare` blocked on a FIFO and read /dev/zero until memory ran out."""
    root = awkward_folder(tmp_path / "in")
    for name in ("pipe.jpg", "zero.png"):
        with pytest.raises(ImageError, match="not a regular file"):
            read_file(root / name)  # returns at once: nothing opens the FIFO for writing
    with pytest.raises(ImageError, match="over the 10-byte limit"):
        read_file(root / "a.png", max_bytes=10)
    assert read_file(root / "a.png") == (root / "a.png").read_bytes()


def test_classify_counts_refused_and_skipped_inputs(tmp_path, capsys):
    """Finding 7: three images, two of them unsupported, gave "1 classified, 0 failed" and exit 0."""
    assert features.check("avif"), "Pillow here must read AVIF (README lists it as supported)"
    root = awkward_folder(tmp_path / "in")
    Image.open(root / "a.png").convert("RGB").save(root / "e.avif")
    model = model_file(tmp_path)
    code = cli.main(["classify", str(root), "--model", str(model), "--format", "jsonl", "--report-skipped"])
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    skipped = {_rel(root, r["path"]): r["skipped"] for r in rows if "skipped" in r}
    results = {_rel(root, r["path"]): r for r in rows if "skipped" not in r}
    assert skipped == SKIPPED
    assert sorted(results) == ["a.png", "c.heic", "d.svg", "e.avif", "sub/b.png"]
    assert "HEIC is not supported" in results["c.heic"]["error"] and "SVG" in results["d.svg"]["error"]
    assert "top" in results["e.avif"]
    assert code == 1
    assert "3 classified, 2 failed, 6 skipped (" in captured.err


def _run_classify(argv, env_extra, cwd):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONIOENCODING"))}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "nsfwkit", *argv], capture_output=True, env=env, cwd=cwd,
                          timeout=300)


LOCALES = [{"PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"}, {"LC_ALL": "C.UTF-8"}, {"LC_ALL": "C"}]


@pytest.mark.parametrize("locale", LOCALES, ids=["strict", "C.UTF-8", "C"])
def test_non_utf8_name_classified_and_written_as_valid_utf8(tmp_path, locale):
    """Finding 6: a non-UTF-8 name killed the batch (strict locale) or wrote invalid UTF-8 into JSONL."""
    root = tmp_path / "in"
    root.mkdir()
    save_png(os.path.join(os.fsencode(root), NON_UTF8))
    save_png(root / "z.png", seed=3)
    model = model_file(tmp_path)
    outputs = {}
    for fmt in ("jsonl", "table"):
        proc = _run_classify(["classify", "in", "--model", str(model), "--format", fmt], locale, tmp_path)
        assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
        out, err = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")  # strict: valid UTF-8 or fail
        assert "Traceback" not in err and "\x1b" not in out + err and "2 classified, 0 failed" in err
        outputs[fmt] = out.splitlines()
    assert len(outputs["table"]) == 3 and outputs["table"][1].endswith("in/bad\\xff\\x1b[2J\\x0aname.png")
    first, second = [json.loads(line) for line in outputs["jsonl"]]
    assert base64.b64decode(first["path_bytes"]) == b"in/" + NON_UTF8
    assert first["path"] == "in/bad\\xff\\x1b[2J\\x0aname.png" and "path_bytes" not in second
    assert os.path.exists(os.fsencode(tmp_path) + b"/" + base64.b64decode(first["path_bytes"]))


@pytest.mark.parametrize("locale", LOCALES, ids=["strict", "C.UTF-8", "C"])
def test_prepare_writes_and_reads_back_non_utf8_names_and_skips_fifos(tmp_path, locale):
    """Findings 5 and 6: `prepare` crashed writing manifest.csv, and hung on a FIFO."""
    from nsfwkit.data.manifest import read_manifest

    for name in ("neutral", "porn"):
        (tmp_path / "ds" / name).mkdir(parents=True)
        for k in range(4):
            save_png(tmp_path / "ds" / name / f"{k}.png", seed=10 * len(name) + k)
    exact = os.path.join(os.fsencode(tmp_path), b"ds/porn", NON_UTF8)
    save_png(exact, seed=99)
    os.mkfifo(tmp_path / "ds" / "neutral" / "pipe.jpg")
    os.symlink("/dev/zero", tmp_path / "ds" / "neutral" / "zero.png")
    proc = _run_classify(["prepare", str(tmp_path / "ds"), "--out", str(tmp_path / "out"), "-q"], locale, tmp_path)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    text = (tmp_path / "out" / "manifest.csv").read_bytes().decode("utf-8")  # valid UTF-8
    row = next(r for r in csv.DictReader(text.splitlines()) if r.get("path_bytes"))
    assert base64.b64decode(row["path_bytes"]) == exact and "\n" not in row["path"]
    assert os.fsencode(next(r["path"] for r in read_manifest(tmp_path / "out") if "bad" in r["path"])) == exact
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["valid"] == 9
    assert summary["skipped"] == {"not a regular file (FIFO)": 1, "not a regular file (device)": 1}


def test_display_path_escapes_what_a_terminal_would_obey():
    """Finding 12, by hand: every control character, bidi override and undecodable byte escaped."""
    assert display_path("plain/name é.png") == "plain/name é.png"
    assert display_path("a\x1b[2Jb\nc\rd\te\x7ff\x85g\u202eh") == r"a\x1b[2Jb\x0ac\x0dd\x09e\x7ff\x85g\u202eh"
    assert display_path(os.fsdecode(b"x\xffy")) == r"x\xffy" and display_path(b"x\xff") == r"x\xff"
    fields = name_fields(os.fsdecode(b"d/\xff.png"))
    assert fields == {"path": r"d/\xff.png", "path_bytes": base64.b64encode(b"d/\xff.png").decode()}
    assert os.fsencode(name_from_fields(fields)) == b"d/\xff.png"
    assert name_fields("ok\n.png") == {"path": "ok\n.png"}  # valid UTF-8: exact (JSON/CSV escape it)


def test_table_and_error_lines_never_print_control_characters(tmp_path, capsys):
    """Finding 12: a name with ESC [2J cleared the screen; a newline split a row."""
    root = tmp_path / "in"
    root.mkdir()
    save_png(root / "evil\x1b[2J\nrow\u202e.png")
    (root / "bad\x1b]0;title\x07.png").write_bytes(b"")
    model = model_file(tmp_path)
    assert cli.main(["classify", str(root), "--model", str(model)]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3  # header, one row per file
    assert "evil\\x1b[2J\\x0arow\\u202e.png" in captured.out and "bad\\x1b]0;title\\x07.png" in captured.out
    assert cli.main(["classify", str(root), "--model", str(model), "--format", "jsonl"]) == 1
    captured = capsys.readouterr()
    assert "nsfwkit classify: " in captured.err and "bad\\x1b]0;title\\x07.png — empty file" in captured.err
    for text in (captured.out, captured.err):
        assert not any(ord(c) < 32 and c != "\n" or 0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in text)


def test_pixel_budget_waits_and_lets_one_oversized_image_run_alone():
    budget = PixelBudget(100)
    budget.acquire(60)
    entered = threading.Event()

    def second():
        with budget.hold(60):
            entered.set()

    worker = threading.Thread(target=second)
    worker.start()
    assert not entered.wait(0.2)  # 60 + 60 > 100: waits
    budget.release(60)
    assert entered.wait(5)
    worker.join()
    with budget.hold(500):  # larger than the whole budget: runs, alone
        assert budget.held == 500
    assert budget.peak == 500 and budget.held == 0


def test_decoding_never_holds_more_pixels_than_the_budget(tmp_path, monkeypatch):
    """Finding 11: eight 9400x9400 PNGs decoded 4 at a time took 4.8 GB; pixels in flight are bounded."""
    from nsfwkit import classify as classify_module
    from nsfwkit.spec import NSFWJS_CLASSES, ModelSpec

    from frames_helpers import flatness_model

    sizes = [(64, 64)] * 6 + [(128, 128)] + [(64, 64)] * 3  # 4096 px each, one of 16384
    paths = [save_png(tmp_path / f"{k}.png", seed=k, size=w) for k, (w, _) in enumerate(sizes)]
    log: list[tuple[int, int, int]] = []

    class Recording(PixelBudget):
        def acquire(self, pixels: int) -> None:
            super().acquire(pixels)
            with self._cond:
                log.append((self.held, pixels, self.limit))

    monkeypatch.setattr(classify_module, "PixelBudget", Recording)
    spec = ModelSpec(name="flat", class_names=NSFWJS_CLASSES, image_size=32)
    results = list(classify_module.classify(paths, model=flatness_model(32), spec=spec, workers=4,
                                            max_decode_pixels=10_000))
    assert all(r.ok for r in results) and len(results) == 10
    assert {p for _, p, _ in log} == {4096, 16384}  # each decode held its header's pixel count
    for held, pixels, limit in log:
        assert held <= limit or held == pixels, (held, pixels)  # within budget, or one big image alone


def test_cli_warnings_are_one_line_each(tmp_path, capsys):
    """Part C leftover: warnings printed as Python tracebacks with file:line; now one line, once."""
    import keras

    inp = keras.Input((8, 8, 3), name="image")
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    path = tmp_path / "three.keras"
    keras.Model(inp, out, name="three").save(path)
    root = tmp_path / "in"
    root.mkdir()
    for k in range(3):
        save_png(root / f"{k}.png", seed=k)
    assert cli.main(["classify", str(root), "--model", str(path), "-q"]) == 0
    lines = capsys.readouterr().err.splitlines()
    spec_lines = [x for x in lines if "no spec file beside it" in x]
    nsfw_lines = [x for x in lines if "nsfw score is 0" in x]
    assert len(spec_lines) == 1 and len(nsfw_lines) == 1
    assert all(x.startswith("nsfwkit classify: ") for x in spec_lines + nsfw_lines)
    assert not any("Warning" in x or ".py:" in x for x in lines), lines


def test_cli_frame_sampling_flags_change_the_frame_count(tmp_path, capsys):
    """Issue 12: --every, --fps, --max-frames reach classify(); bad values are usage errors."""
    frames = [Image.fromarray(np.full((24, 24, 3), 40 * k, np.uint8)) for k in range(6)]
    clip = tmp_path / "six.gif"
    frames[0].save(clip, save_all=True, append_images=frames[1:], duration=100, loop=0)
    model = str(model_file(tmp_path))

    def frame_count(*flags):
        assert cli.main(["classify", str(clip), "--model", model, "--format", "jsonl", *flags]) == 0
        (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return row["frames"], row.get("truncated")

    assert frame_count() == (6, None)
    assert frame_count("--every", "2")[0] == 4  # frames 0, 2, 4 and the last, 5
    assert frame_count("--fps", "5")[0] == 4  # one per 200 ms slot (0, 2, 4) and the last
    count, truncated = frame_count("--max-frames", "2")
    assert count == 2 and "max_frames" in truncated
    assert frame_count("--max-seconds", "0.25")[0] == 3  # frames at 0, 0.1, 0.2 s
    assert cli.main(["classify", str(clip), "--model", model, "--every", "0"]) == 2
    assert "every must be a whole number" in capsys.readouterr().err
    assert cli.main(["classify", str(clip), "--fps", "1", "--every", "2"]) == 2
    assert "not allowed with" in capsys.readouterr().err


def test_visualize_refuses_a_fifo_before_loading_a_model(tmp_path, capsys, monkeypatch):
    """The same rule for visualize's image: a FIFO is refused up front (nothing opens it)."""
    from nsfwkit import zoo

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded for an unusable image")

    monkeypatch.setattr(zoo, "load", no_model)
    os.mkfifo(tmp_path / "pipe.png")
    assert cli.main(["visualize", "--image", str(tmp_path / "pipe.png"), "--out", str(tmp_path / "out")]) == 1
    assert "pipe.png — not a regular file" in capsys.readouterr().err


def test_training_reads_non_utf8_names_back_to_the_same_files(tmp_path):
    """Finding 6: train/evaluate read manifest.csv back: the digest and tf.data decode such names."""
    from nsfwkit.data import prepare
    from nsfwkit.data.manifest import manifest_arrays
    from nsfwkit.data.tfdata import decode_dataset
    from nsfwkit.train import manifest_digest

    for name in ("neutral", "porn"):
        (tmp_path / "ds" / name).mkdir(parents=True)
        for k in range(5):
            save_png(tmp_path / "ds" / name / f"{k}.png", seed=10 * len(name) + k)
    save_png(os.path.join(os.fsencode(tmp_path), b"ds/porn", NON_UTF8), seed=99)
    prepare(tmp_path / "ds", progress=False).write(tmp_path / "out")
    assert len(manifest_digest(tmp_path / "out")) == 64
    paths = [p for split in ("train", "val", "test") for p in manifest_arrays(tmp_path / "out", split)[0]]
    assert NON_UTF8 in [os.fsencode(os.path.basename(p)) for p in paths]
    indices = [int(i) for i, _ in decode_dataset(paths, image_size=8, cache=False)]
    assert indices == list(range(len(paths)))  # none dropped: every file decoded
