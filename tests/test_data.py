"""Dataset preparation: scan, validate (quarantine), de-duplicate, split, manifest, demo dataset."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from nsfwkit import data, demo_data, fileio

from data_helpers import encode, tiny_dataset, write_image


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG header claiming width x height (tiny file, huge image)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
            ">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    raw = zlib.compress(b"\0" * 64)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------------
# demo dataset
# ------------------------------------------------------------------------------------------
def test_demo_dataset_is_deterministic_and_laid_out_like_a_real_one(tmp_path):
    a = demo_data.make_demo_dataset(tmp_path / "a", per_class=6, seed=3)
    b = demo_data.make_demo_dataset(tmp_path / "b", per_class=6, seed=3)
    da, db = _tree_digest(a), _tree_digest(b)
    assert da == db
    assert sorted(p.name for p in a.iterdir() if p.is_dir()) == list(demo_data.DEMO_CLASSES)
    for rel in demo_data.FAULTS:
        assert (a / rel).is_file(), rel
    # nested sub-folders, several formats
    suffixes = {Path(k).suffix for k in da}
    assert {".jpg", ".png", ".webp"} <= suffixes
    assert any(k.count("/") >= 3 for k in da)
    assert "MECHANICS" in (a / "README.txt").read_text()
    # a second call with the same arguments keeps the files; a different seed changes them
    mtime = (a / "README.txt").stat().st_mtime_ns
    demo_data.make_demo_dataset(a, per_class=6, seed=3)
    assert (a / "README.txt").stat().st_mtime_ns == mtime
    c = demo_data.make_demo_dataset(tmp_path / "c", per_class=6, seed=4)
    assert _tree_digest(c) != da


def test_demo_dataset_never_deletes_a_user_folder(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "precious.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        demo_data.make_demo_dataset(user, per_class=2)
    assert (user / "precious.jpg").read_bytes() == b"x"


def test_demo_dataset_with_other_arguments_needs_overwrite(tmp_path):
    root = demo_data.make_demo_dataset(tmp_path / "demo", per_class=2, seed=1)
    added = root / "neutral" / "my_own.jpg"  # a user added a file to the demo folder
    added.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        demo_data.make_demo_dataset(root, per_class=3, seed=1)
    assert added.read_bytes() == b"mine"  # nothing deleted without overwrite
    demo_data.make_demo_dataset(root, per_class=3, seed=1, overwrite=True)
    assert added.read_bytes() == b"mine"  # --overwrite deletes only what the kit generated
    assert (root / "neutral" / "set_a" / "neutral_0002.jpg").is_file()
    assert fileio.folder_kind(root) == "demo"


def test_demo_overwrite_of_an_older_kits_dataset_keeps_the_users_files(tmp_path):
    root = demo_data.make_demo_dataset(tmp_path / "demo", per_class=3, classes=("neutral", "porn"), seed=1)
    (root / fileio.OWNER_MARKER).unlink()       # as an older kit left it: its signature line only
    (root / ".nsfwkit-demo").write_text("v1 per_class=3 classes=neutral,porn seed=1 faults=True sizes=96-160\n")
    (root / "porn" / "mine").mkdir()
    (root / "porn" / "mine" / "a.jpg").write_bytes(b"mine")
    (root / "neutral" / "set_b" / "nested" / "keep.txt").write_text("mine")
    demo_data.make_demo_dataset(root, per_class=1, classes=("neutral",), seed=2, faults=False, overwrite=True)
    assert (root / "porn" / "mine" / "a.jpg").read_bytes() == b"mine"
    assert (root / "neutral" / "set_b" / "nested" / "keep.txt").read_text() == "mine"
    assert not (root / "porn" / "set_a").exists() and not (root / "notes.txt").exists()
    assert not (root / "neutral" / "set_b" / "nested" / "neutral_0001.jpg").exists()
    assert sorted(p.name for p in (root / "neutral" / "set_a").iterdir()) == ["neutral_0000.jpg"]
    assert fileio.folder_kind(root) == "demo"


def test_prepare_demo_dataset_finds_every_planted_fault(tmp_path):
    root = demo_data.make_demo_dataset(tmp_path / "demo", per_class=12)
    before = _tree_digest(root)
    ds = data.prepare(root)
    assert _tree_digest(root) == before  # nothing moved, changed or deleted
    quarantined = {Path(r.path).name: r.reason for r in ds.quarantine}
    assert set(quarantined) == {"empty.jpg", "truncated.jpg", "error_page.jpg"}
    assert "empty" in quarantined["empty.jpg"]
    assert "truncated" in quarantined["truncated.jpg"]
    assert "HTML" in quarantined["error_page.jpg"]
    by_name = {Path(r.path).name: r for r in ds.valid}
    assert by_name["mislabelled_extension.png"].format == "JPEG"
    assert by_name["mislabelled_extension.png"].split in data.SPLITS
    # exact duplicate in one class: one copy kept, the other excluded with a note
    orig, copy = by_name["hentai_0001.jpg"], by_name["copy_of_0001.jpg"]
    assert orig.group == copy.group and orig.sha256 == copy.sha256
    kept, dropped = sorted([orig, copy], key=lambda r: r.path)  # the first path is kept
    assert kept.split in data.SPLITS and dropped.split == "excluded"
    assert f"exact duplicate of {kept.path}" in dropped.note
    # near duplicate (resized + re-encoded): its own group, both kept in the same split
    near, source = by_name["resaved_0002.jpg"], by_name["neutral_0002.jpg"]
    assert near.sha256 != source.sha256 and near.group == source.group
    assert near.split == source.split and near.split in data.SPLITS
    # label conflict: reported and excluded from every split
    conflict = ds.conflicts()
    assert len(conflict) == 1
    members = {Path(r.path).name for r in next(iter(conflict.values()))}
    assert members == {"also_neutral_0000.jpg", "neutral_0000.jpg"}
    assert all(r.split == "excluded" for r in next(iter(conflict.values())))
    # exactly the three planted groups, one of each kind
    groups = ds.duplicate_groups()
    assert len(groups) == 3
    assert sorted(len(g) for g in groups.values()) == [2, 2, 2]
    assert {os.path.basename(p) for p in ds.ignored} == {"README.txt", "notes.txt"}


def test_manifest_and_reports_are_written(tmp_path):
    root = demo_data.make_demo_dataset(tmp_path / "demo", per_class=10)
    ds = data.prepare(root)
    out = ds.write(tmp_path / "run" / "01_data")
    rows = data.read_manifest(out["manifest"])
    assert set(data.MANIFEST_FIELDS) == set(rows[0])
    assert len(rows) == len(ds.valid)
    for row in rows:
        assert Path(row["path"]).is_file()
        assert int(row["width"]) > 0 and int(row["height"]) > 0 and int(row["size"]) > 0
        assert len(row["sha256"]) == 64
    with open(out["quarantine"]) as fh:
        assert len(list(csv.DictReader(fh))) == 3
    with open(out["duplicates"]) as fh:
        kinds = {r["kind"] for r in csv.DictReader(fh)}
    assert kinds == {"exact", "near", "label_conflict"}
    summary = json.loads(out["summary"].read_text())
    assert summary["class_names"] == list(demo_data.DEMO_CLASSES)
    assert summary["quarantined"] == 3 and summary["label_conflicts"] == 1
    paths, labels, names = data.manifest_arrays(out["manifest"], "train")
    assert names == demo_data.DEMO_CLASSES and len(paths) == len(labels) > 0
    assert not list((tmp_path / "run" / "01_data").glob(".*tmp*"))  # atomic writes left nothing


def test_split_is_deterministic_stratified_and_keeps_groups_together(tmp_path):
    root = demo_data.make_demo_dataset(tmp_path / "demo", per_class=20)
    a, b = data.prepare(root, seed=1), data.prepare(root, seed=1)
    assert [r.split for r in a.records] == [r.split for r in b.records]
    c = data.prepare(root, seed=2)
    assert [r.split for r in a.records] != [r.split for r in c.records]
    for name, counts in a.counts().items():
        usable = counts["train"] + counts["val"] + counts["test"]
        assert counts["val"] >= 2 and counts["test"] >= 2, (name, counts)
        assert abs(counts["train"] - 0.7 * usable) <= 2, (name, counts)
    for rs in a.duplicate_groups().values():
        assert len({r.split for r in rs if r.split != "excluded"}) <= 1


def test_big_duplicate_group_never_lands_in_val_or_test():
    # one class: a 30-image duplicate group and nine single images (39 images; val/test
    # targets 5.85 each): whatever the seed, the big group must go to train
    keys = [f"k{i}" for i in range(10)]
    sizes = [30] + [1] * 9
    for seed in range(20):
        splits = data.split_groups(keys, ["a"] * 10, sizes, seed=seed)
        assert splits[0] == "train", (seed, splits)
        assert splits.count("val") >= 1 and splits.count("test") >= 1, (seed, splits)
    # sizes placed largest first by deficit: hand-computed for 3 groups of sizes 8, 1, 1
    # (targets 7 / 1.5 / 1.5): the two small ones seed val and test, the 8 goes to train
    assert data.split_groups(["x", "y", "z"], ["a"] * 3, [8, 1, 1], seed=0).count("train") == 1
    assert data.split_groups(["x", "y", "z"], ["a"] * 3, [8, 1, 1], seed=0)[0] == "train"


def test_split_groups_hand_computed():
    # one class, sizes 1, quotas 70/15/15 of 10 images: first three groups seed the splits
    keys = [f"k{i}" for i in range(6)]
    splits = data.split_groups(keys, ["a"] * 6, [5, 1, 1, 1, 1, 1], fractions=(0.7, 0.15, 0.15))
    sizes = dict(zip(keys, [5, 1, 1, 1, 1, 1]))
    totals = {s: sum(sizes[k] for k, sp in zip(keys, splits) if sp == s) for s in data.SPLITS}
    assert sum(totals.values()) == 10 and all(totals[s] >= 1 for s in data.SPLITS)
    assert splits == data.split_groups(keys, ["a"] * 6, [5, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError):
        data.split_groups(keys, ["a"] * 6, [1] * 6, fractions=(1, -1, 0))


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "oversize_bytes", "oversize_pixels",
                                  "mislabelled"])
def test_bad_files_are_quarantined_with_a_reason(tmp_path, kind):
    root = tiny_dataset(tmp_path / "ds", per_class=4)
    bad = root / "porn" / "sub" / "bad.jpg"
    bad.parent.mkdir(parents=True)
    good = (root / "porn" / "porn_000.jpg").read_bytes()
    payload = {
        "empty": b"", "truncated": good[: len(good) // 3], "text": b"hello, not an image\n",
        "oversize_bytes": good + b"\0" * 5000, "oversize_pixels": _huge_png(20_000, 20_000),
        "mislabelled": encode(np.full((30, 30, 3), 9, np.uint8), "PNG"),
    }[kind]
    bad.write_bytes(payload)
    ds = data.prepare(root, max_bytes=len(good) + 1000, max_pixels=10_000_000)
    reasons = {Path(r.path).name: r.reason for r in ds.quarantine}
    if kind == "mislabelled":  # a PNG named .jpg is a valid image: the bytes decide
        assert reasons == {}
        rec = next(r for r in ds.valid if r.path == str(bad))
        assert rec.format == "PNG" and (rec.width, rec.height) == (30, 30)
        return
    assert list(reasons) == ["bad.jpg"]
    expected = {"empty": "empty", "truncated": "truncated", "text": "text",
                "oversize_bytes": "limit", "oversize_pixels": "pixels"}[kind]
    assert expected in reasons["bad.jpg"], reasons
    assert bad.read_bytes() == payload  # never touched
    assert len(ds.valid) == 8


def test_empty_class_folder_and_one_class_dataset(tmp_path):
    root = tiny_dataset(tmp_path / "ds", per_class=5)
    (root / "sexy").mkdir()
    (root / "sexy" / "readme.md").write_text("nothing here")
    (root / "hentai").mkdir()
    (root / "hentai" / "broken.jpg").write_bytes(b"")  # every file quarantined
    ds = data.prepare(root)
    assert ds.empty_classes == ["sexy"]
    assert any("'sexy' holds no image files" in w for w in ds.warnings)
    # classes without a usable image are dropped from the class list, with a warning
    assert ds.class_names == ("neutral", "porn")
    assert any("'hentai' dropped" in w for w in ds.warnings)
    assert any("'sexy' dropped" in w for w in ds.warnings)
    assert ds.counts()["hentai"]["quarantined"] == 1
    out = ds.write(tmp_path / "run0")
    assert data.manifest_class_names(out["manifest"]) == ("neutral", "porn")
    kept = data.prepare(root, keep_empty_classes=True)
    assert kept.class_names == ("hentai", "neutral", "porn", "sexy")
    assert kept.counts()["sexy"] == {s: 0 for s in (*data.SPLITS, "excluded", "quarantined")}
    one = tiny_dataset(tmp_path / "one", classes=("neutral",), per_class=5)
    ds1 = data.prepare(one)
    assert ds1.class_names == ("neutral",)
    assert any("at least two classes" in w for w in ds1.warnings)
    ds1.write(tmp_path / "run1")  # still writes a manifest


def test_unusable_dataset_errors_are_clear(tmp_path):
    with pytest.raises(data.DatasetError, match="not found"):
        data.prepare(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    write_image(tmp_path / "flat" / "a.jpg", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(data.DatasetError, match="one sub-folder per class"):
        data.prepare(tmp_path / "flat")
    (tmp_path / "bad" / "x").mkdir(parents=True)
    (tmp_path / "bad" / "x" / "a.jpg").write_bytes(b"")
    with pytest.raises(data.DatasetError, match="none of 1 image files is usable"):
        data.prepare(tmp_path / "bad")
    with pytest.raises(data.DatasetError, match="manifest not found"):
        data.read_manifest(tmp_path / "missing.csv")


def test_class_weights_and_nsfw_names():
    w = data.class_weights([0, 0, 0, 1], 3)
    np.testing.assert_allclose(w, [4 / 6, 2.0, 0.0], rtol=1e-6)
    assert data.default_nsfw_classes(demo_data.DEMO_CLASSES) == ("hentai", "porn", "sexy")
    assert data.default_nsfw_classes(("sfw", "nsfw")) == ("nsfw",)
    assert data.default_nsfw_classes(("Drawing", "Hentai", "Neutral", "Porn", "Sexy")) == (
        "Hentai", "Porn", "Sexy")


def test_redact_blurs_beyond_recognition_and_plots_render(tmp_path):
    rng = np.random.default_rng(0)
    img = (rng.uniform(0, 1, (64, 80, 3)) * 255).astype(np.uint8)
    red = data.redact(img)
    assert red.shape == img.shape and red.dtype == np.uint8
    # high-frequency content is gone: neighbouring pixels are close, the original's are not
    assert np.abs(np.diff(red.astype(int), axis=1)).mean() < 0.2 * np.abs(np.diff(img.astype(int), axis=1)).mean()
    root = demo_data.make_demo_dataset(tmp_path / "demo", per_class=4)
    ds = data.prepare(root)
    fig = data.plot_class_balance(ds)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) >= 5
    valid = ds.valid
    fig2 = data.plot_samples([r.path for r in valid], [r.label for r in valid], per_class=2)
    assert len(fig2.axes) == 10 and "redacted" in fig2._suptitle.get_text()
    plain = data.plot_samples([r.path for r in valid], [r.label for r in valid], per_class=2,
                              redact_images=False)
    shown = np.asarray(fig2.axes[0].images[0].get_array(), float)
    clear = np.asarray(plain.axes[0].images[0].get_array(), float)
    assert shown.shape == clear.shape
    assert np.abs(shown - clear).mean() > 1.0
    np.testing.assert_array_equal(data.redact(clear.astype(np.uint8)), shown)


def test_validation_shows_progress_by_default(tmp_path, capsys):
    root = tiny_dataset(tmp_path / "ds", per_class=2, size=16)
    files, _ = data.scan_folder(root)
    data.validate_files(files)  # not a terminal (captured), still a bar: notebooks get one too
    assert "validate" in capsys.readouterr().err
    data.validate_files(files, progress=False)
    assert "validate" not in capsys.readouterr().err
