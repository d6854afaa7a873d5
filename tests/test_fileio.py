import pytest

from nsfwkit.fileio import atomic_path, replace_dir, write_json, write_text


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "a" / "report.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]  # no debris
    with atomic_path(tmp_path / "fig.png") as tmp:
        assert tmp.suffix == ".png"  # writers that pick a format by extension still work
        tmp.write_bytes(b"png")


def test_replace_dir_swaps_whole_folders(tmp_path):
    dest = tmp_path / "out"
    with replace_dir(dest) as stage:
        (stage / "old.txt").write_text("1")
    with pytest.raises(ValueError):
        with replace_dir(dest) as stage:
            (stage / "new.txt").write_text("2")
            raise ValueError
    assert sorted(p.name for p in dest.iterdir()) == ["old.txt"]
    with replace_dir(dest) as stage:
        write_text(stage / "new.txt", "2")
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_dir_gives_the_folder_a_plain_mkdir_mode(tmp_path):
    """Not mkdtemp's 0700: other users (a web server, another worker) read what the kit wrote."""
    import stat

    plain = tmp_path / "plain"
    plain.mkdir()
    with replace_dir(tmp_path / "out") as stage:
        (stage / "a.txt").write_text("1")
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_json_safe_turns_numpy_and_nan_into_plain_json():
    import json
    from pathlib import Path

    import numpy as np

    from nsfwkit.fileio import json_safe

    data = {"nan": float("nan"), "inf": np.float32(np.inf), "f": np.float32(1.5), "i": np.int64(3),
            "b": np.bool_(True), "a": np.arange(3), "nested": [(1, float("-inf")), {"p": Path("x/y.png")}],
            np.int64(7): "numpy key", 2: "int key", "s": "text", "none": None}
    out = json_safe(data)
    assert out == {"nan": None, "inf": None, "f": 1.5, "i": 3, "b": True, "a": [0, 1, 2],
                   "nested": [[1, None], {"p": "x/y.png"}], 7: "numpy key", 2: "int key", "s": "text",
                   "none": None}
    assert type(out["i"]) is int and type(out["b"]) is bool and type(next(k for k in out if k == 7)) is int
    text = json.dumps(out, allow_nan=False)  # strict JSON: no NaN/Infinity tokens
    assert json.loads(text)["7"] == "numpy key"
