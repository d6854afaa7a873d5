"""Folder ownership markers and run-folder locks (nsfwkit.fileio)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from nsfwkit import fileio


def test_claim_creates_marks_and_reuses(tmp_path):
    out = fileio.claim_folder(tmp_path / "a" / "run", "train")
    assert fileio.folder_kind(out) == "train"
    (out / "model.keras").write_text("x")
    assert fileio.claim_folder(out, "train") == out  # our own folder: fine, nothing touched
    assert (out / "model.keras").read_text() == "x"


def test_claim_refuses_user_folders_and_other_kinds(tmp_path):
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "thesis.txt").write_text("years of work")
    with pytest.raises(fileio.ForeignFolderError, match="thesis.*not written by nsfwkit"):
        fileio.claim_folder(user, "export")
    assert sorted(p.name for p in user.iterdir()) == ["thesis.txt"]  # no marker left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    fileio.claim_folder(empty, "export")
    with pytest.raises(fileio.ForeignFolderError, match="export folder, not a train folder"):
        fileio.claim_folder(empty, "train")
    (tmp_path / "file").write_text("")
    with pytest.raises(fileio.ForeignFolderError, match="not a folder"):
        fileio.claim_folder(tmp_path / "file", "train")


def test_claim_accepts_a_recognised_legacy_folder(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "export.json").write_text("{}")
    fileio.claim_folder(old, "export", legacy=lambda f: (f / "export.json").is_file())
    assert fileio.folder_kind(old) == "export"


def test_marker_content_is_checked_not_only_its_name(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / fileio.OWNER_MARKER).write_text("not json")
    (fake / "photo.jpg").write_bytes(b"1")
    assert fileio.folder_kind(fake) is None
    with pytest.raises(fileio.ForeignFolderError):
        fileio.remove_owned(fake, "export", ["photo.jpg"])
    assert (fake / "photo.jpg").exists()


def test_remove_owned_deletes_only_named_entries(tmp_path):
    out = fileio.claim_folder(tmp_path / "out", "export")
    (out / "tfjs").mkdir()
    (out / "tfjs" / "model.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    removed = fileio.remove_owned(out, "export", ["tfjs", "absent"])
    assert removed == [out / "tfjs"]
    assert sorted(p.name for p in out.iterdir()) == [fileio.OWNER_MARKER, "notes.txt"]
    for bad in ["../x", "a/b", "", fileio.OWNER_MARKER]:
        with pytest.raises(ValueError):
            fileio.remove_owned(out, "export", [bad])


_HOLD = "import sys, time; from nsfwkit import fileio\nwith fileio.folder_lock(sys.argv[1]):\n" \
        "    print('held', flush=True); time.sleep(60)\n"


def test_lock_names_the_holder_and_dies_with_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(fileio.FolderBusyError, match=f"PID {holder.pid}"):
            with fileio.folder_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 10
    while True:  # the OS drops the lock of a killed process
        try:
            with fileio.folder_lock(tmp_path):
                break
        except fileio.FolderBusyError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_lock_is_exclusive_within_a_process_too(tmp_path):
    with fileio.folder_lock(tmp_path):
        with pytest.raises(fileio.FolderBusyError):
            with fileio.folder_lock(tmp_path):
                pass
    with fileio.folder_lock(tmp_path):  # released on exit
        pass


def test_replace_owned_swaps_only_the_kits_entries(tmp_path):
    out = tmp_path / "out"
    with fileio.replace_owned(out, "export", overwrite=False) as stage:
        (stage / "a").mkdir()
        (stage / "a" / "x").write_text("1")
        (stage / "b.json").write_text("{}")
    assert fileio.owned_entries(out) == ["a", "b.json"]
    (out / "mine.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"), fileio.replace_owned(out, "export", overwrite=False):
        pass
    with fileio.replace_owned(out, "export", overwrite=True) as stage:
        (stage / "a").mkdir()
        (stage / "a" / "y").write_text("2")
    # b.json (the kit's, not written again) is gone; the user's file stays
    assert sorted(p.name for p in out.iterdir()) == [fileio.OWNER_MARKER, fileio.LOCK_FILE, "a", "mine.txt"]
    assert [p.name for p in (out / "a").iterdir()] == ["y"]
    with pytest.raises(fileio.ForeignFolderError, match="mine.txt"), \
            fileio.replace_owned(out, "export", overwrite=True) as stage:
        (stage / "mine.txt").write_text("the kit's")
    assert (out / "mine.txt").read_text() == "mine" and fileio.owned_entries(out) == ["a"]
    # a failure while staging leaves the previous result as it was, and no staging folder
    with pytest.raises(RuntimeError, match="boom"), fileio.replace_owned(out, "export", overwrite=True) as stage:
        (stage / "a").mkdir()
        raise RuntimeError("boom")
    assert (out / "a" / "y").read_text() == "2" and not list(out.glob(".nsfwkit-stage-*"))


def test_replace_owned_adopts_only_the_names_a_legacy_rule_returns(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("kit.json", "stale.png", "mine.txt"):
        (old / name).write_text(name)
    legacy = lambda f: ["kit.json", "stale.png", "gone.png"] if (f / "kit.json").is_file() else None  # noqa: E731
    with pytest.raises(FileExistsError, match="--overwrite"), fileio.replace_owned(old, "viz", overwrite=False,
                                                                                    legacy=legacy):
        pass
    assert fileio.owned_entries(old) == ["kit.json", "stale.png"]   # recorded at once, only what exists
    with fileio.replace_owned(old, "viz", overwrite=True, legacy=legacy) as stage:
        (stage / "kit.json").write_text("new")
    assert sorted(p.name for p in old.iterdir()) == [fileio.OWNER_MARKER, fileio.LOCK_FILE, "kit.json", "mine.txt"]
    assert (old / "mine.txt").read_text() == "mine.txt" and fileio.owned_entries(old) == ["kit.json"]
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / "kit.json").write_text("{}")
    with pytest.raises(TypeError, match="names"), fileio.replace_owned(tmp_path / "o2", "viz", overwrite=True,
                                                                       legacy=lambda f: True):
        pass   # a yes/no rule would adopt every name of the folder: refused


def test_owned_folder_refuses_before_writing_anything(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "photo.jpg").write_bytes(b"1")
    with pytest.raises(fileio.ForeignFolderError), fileio.owned_folder(user, "train"):
        pass
    assert [p.name for p in user.iterdir()] == ["photo.jpg"]   # not even a lock file
    (tmp_path / "file").write_text("")
    with pytest.raises(fileio.UnwritableFolderError, match="cannot write"), \
            fileio.owned_folder(tmp_path / "file" / "out", "train"):
        pass
