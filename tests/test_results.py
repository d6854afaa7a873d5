"""``classify --out DIR``: Parquet shards, resume after a crash, changed inputs, bad shards, the lock, read-back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nsfwkit import cli, fileio
from nsfwkit.classify import classify
from nsfwkit.results import PROGRESS_FILE, ResultsFolderError, classify_to, read_results, read_table, results_open

from data_helpers import tiny_backbone
from results_helpers import by_path, max_prob_difference, write_animation, write_images


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_backbone(tmp_path_factory.mktemp("model"), image_size=16)


@pytest.fixture
def images(tmp_path) -> Path:
    write_images(tmp_path / "imgs", 12)
    (tmp_path / "imgs" / "broken.jpg").write_text("<html>not an image</html>")
    return tmp_path / "imgs"


def _stream(paths, tiny, **kwargs) -> dict:
    return by_path(classify(paths, model=str(tiny), batch_size=4, **kwargs))


def test_out_equals_the_streaming_results_each_input_once(images, tiny, tmp_path):
    run = classify_to(tmp_path / "out", [images], model=str(tiny), batch_size=4, rows_per_shard=5)
    assert (run["classified"], run["failed"], run["skipped"], run["removed"]) == (13, 1, 0, [])
    record = json.loads((tmp_path / "out" / PROGRESS_FILE).read_text())
    assert [s["rows"] for s in record["shards"]] == [5, 5, 3] and record["complete"]
    got, want = by_path(read_results(tmp_path / "out")), _stream([images], tiny)
    assert max_prob_difference(got, want) == 0.0  # same engine, same numbers
    assert "not an image" in got[str(images / "broken.jpg")].error or got[str(images / "broken.jpg")].error


def test_resume_classifies_exactly_new_and_changed_files_and_reports_removed(images, tiny, tmp_path):
    out = tmp_path / "out"
    classify_to(out, [images], model=str(tiny), batch_size=4, rows_per_shard=4)
    changed, removed = images / "img00003.jpg", images / "img00007.jpg"
    write_images(tmp_path / "other", 1, prefix="x")
    os.replace(tmp_path / "other" / "x00000.jpg", changed)  # other bytes, new size/mtime
    removed.unlink()
    write_images(images, 1, prefix="new")
    seen = []
    run = classify_to(out, [images], model=str(tiny), batch_size=4, on_result=lambda r: seen.append(r.path))
    assert sorted(seen) == sorted([str(changed), str(images / "new00000.jpg")])
    assert (run["classified"], run["skipped"], run["removed"]) == (2, 11, [str(removed)])
    got = by_path(read_results(out))
    assert max_prob_difference(got, _stream([images], tiny)) == 0.0  # every current input once, fresh values
    assert str(removed) in {r["path"] for r in read_table(out, include_removed=True).to_pylist()}


def test_verify_keys_by_content_not_mtime(images, tiny, tmp_path):
    out = tmp_path / "out"
    classify_to(out, [images], model=str(tiny), verify=True)
    target = images / "img00001.jpg"
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))  # same bytes, new mtime
    assert classify_to(out, [images], model=str(tiny), verify=True)["classified"] == 0
    seen = []
    classify_to(out, [images], model=str(tiny), on_result=lambda r: seen.append(r.path))
    assert seen == [str(target)]  # by size + mtime: the touched file only


def test_truncated_shard_is_detected_and_its_files_redone(images, tiny, tmp_path):
    out = tmp_path / "out"
    classify_to(out, [images], model=str(tiny), rows_per_shard=5)
    shard = out / "part-000002.parquet"
    shard.write_bytes(shard.read_bytes()[:-40])  # a crash mid-write of a non-atomic writer
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's own error type
        import pyarrow.parquet as pq

        pq.read_table(shard)
    assert len(read_results(out)) == 8  # never read as good
    run = classify_to(out, [images], model=str(tiny), rows_per_shard=5)
    assert run["classified"] == 5 and run["skipped"] == 8 and "truncated" in run["problems"][0]
    assert max_prob_difference(by_path(read_results(out)), _stream([images], tiny)) == 0.0
    assert not shard.exists() or shard.stat().st_size > 0


def test_unrecorded_shard_of_a_crash_is_dropped(images, tiny, tmp_path):
    out = tmp_path / "out"
    classify_to(out, [images], model=str(tiny), rows_per_shard=20)
    # a crash after the shard's rename, before the progress record: a shard nobody recorded
    (out / "part-000007.parquet").write_bytes((out / "part-000001.parquet").read_bytes())
    run = classify_to(out, [images], model=str(tiny))
    assert run["classified"] == 0 and not (out / "part-000007.parquet").exists()
    assert len(read_results(out)) == 13


def test_a_users_file_with_a_shard_name_is_never_deleted(images, tiny, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    classify_to(out, [images], model=str(tiny), rows_per_shard=20)
    (out / "part-000002.parquet").write_bytes(b"my own notes, not Parquet")   # the next shard's name
    pq.write_table(pa.table({"x": [1]}), out / "part-000009.parquet")       # a Parquet file of the user's
    mine = {n: (out / n).read_bytes() for n in ("part-000002.parquet", "part-000009.parquet")}
    (images / "new.jpg").write_bytes((images / "img00001.jpg").read_bytes())
    run = classify_to(out, [images], model=str(tiny), rows_per_shard=20)
    assert run["classified"] == 1 and all("left as it is" in p for p in run["problems"]) and len(run["problems"]) == 2
    assert {n: (out / n).read_bytes() for n in mine} == mine                # kept, and never written over
    assert json.loads((out / PROGRESS_FILE).read_text())["shards"][-1]["name"] == "part-000010.parquet"
    assert len(read_results(out)) == 14


def test_classify_out_that_cannot_be_created_is_a_usage_error(images, tiny, tmp_path, capsys):
    parent = tmp_path / "a-file"
    parent.write_text("x")
    code = cli.main(["classify", str(images), "--model", str(tiny), "--out", str(parent / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write the output folder" in err and err.count("\n") == 1


def test_second_writer_is_refused_and_foreign_folders_untouched(images, tiny, tmp_path):
    out = tmp_path / "out"
    classify_to(out, [images], model=str(tiny))
    with fileio.folder_lock(out):
        with pytest.raises(fileio.FolderBusyError, match="in use"):
            with results_open(out, {}, []):
                pass
        code = cli.main(["classify", str(images), "--model", str(tiny), "--out", str(out), "-q"])
        assert code == 2
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    assert cli.main(["classify", str(images), "--model", str(tiny), "--out", str(user), "-q"]) == 2
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]


def test_other_settings_refuse_to_mix_into_a_folder(images, tiny, tmp_path):
    out = tmp_path / "out"
    classify_to(out, [images], model=str(tiny))
    with pytest.raises(ResultsFolderError, match="threshold"):
        classify_to(out, [images], model=str(tiny), threshold=0.5)
    classify_to(tmp_path / "capped", [images], model=str(tiny), max_frames=5)
    with pytest.raises(ResultsFolderError, match="max_frames"):  # an option left out differs too
        classify_to(tmp_path / "capped", [images], model=str(tiny))


def test_animation_frame_columns(tmp_path, tiny):
    write_images(tmp_path / "in", 2)
    write_animation(tmp_path / "in" / "anim.gif", frames=3)
    classify_to(tmp_path / "worst", [tmp_path / "in"], model=str(tiny))
    rows = {Path(r["path"]).name: r for r in read_table(tmp_path / "worst").to_pylist()}
    assert rows["anim.gif"]["frames"] == 3 and rows["anim.gif"]["nsfw_mean"] is not None
    assert rows["img00000.jpg"]["frames"] is None and rows["img00000.jpg"]["frame"] is None
    classify_to(tmp_path / "all", [tmp_path / "in"], model=str(tiny), frames="all")
    frames = [r for r in read_results(tmp_path / "all") if r.path.endswith("anim.gif")]
    assert [r.frame for r in frames] == [0, 1, 2]
    want = [r for r in classify([tmp_path / "in"], model=str(tiny), frames="all") if r.path.endswith("anim.gif")]
    assert [r.probs for r in frames] == [r.probs for r in want]


def test_results_command(images, tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["classify", str(images), "--model", str(tiny), "--out", str(out), "--threshold", "0.5",
                     "-q"]) == 1  # one broken file
    capsys.readouterr()
    assert cli.main(["results", str(out)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 13 and len({r["path"] for r in rows}) == 13
    assert cli.main(["results", str(out), "--flagged", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) - 1 == sum(bool(r.get("flagged")) for r in rows)
    assert cli.main(["results", str(images)]) == 2
    assert cli.main(["classify", str(images), "--model", str(tiny), "--engine", "ray"]) == 2  # no --out
    assert "--engine — needs --out DIR" in capsys.readouterr().err
    (images / "broken.jpg").unlink()
    assert cli.main(["classify", str(images), "--model", str(tiny), "--out", str(out), "--threshold", "0.5",
                     "-q"]) == 0  # the failed input is gone: every current input classified


def test_out_uses_the_one_discovery_rule_and_reports_skipped_entries(tiny, tmp_path, capsys):
    folder = tmp_path / "imgs"
    first, _ = write_images(folder, 2)
    (folder / ".hidden.jpg").write_bytes(first.read_bytes())
    os.mkfifo(folder / "pipe.jpg")  # would hang a reader
    os.symlink(folder / "gone.png", folder / "dangling.png")
    (folder / "vector.svg").write_text("<svg/>")  # refused with a message: a failure, not a skip
    out = tmp_path / "out"
    code = cli.main(["classify", str(folder), "--model", str(tiny), "--out", str(out), "--report-skipped"])
    err = capsys.readouterr().err
    assert code == 1, err  # the SVG was refused
    assert "2 classified, 1 failed" in err and "3 skipped" in err, err
    for name in (".hidden.jpg", "pipe.jpg", "dangling.png"):
        assert f"skipped {folder / name}" in err, err
    assert sorted(Path(r.path).name for r in read_results(out)) == ["img00000.jpg", "img00001.jpg", "vector.svg"]


@pytest.mark.slow
def test_kill_9_then_the_same_command_gives_every_file_once(tmp_path, tiny):
    """The issue's "done when": kill -9 in the middle of a run over thousands of files, run again."""
    files = write_images(tmp_path / "many", 2000, size=16)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "nsfwkit", "classify", str(tmp_path / "many"), "--model", str(tiny),
           "--out", str(out), "--batch-size", "1", "--shard-size", "50", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if len(json.loads((out / PROGRESS_FILE).read_text())["shards"]) >= 3:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    record = json.loads((out / PROGRESS_FILE).read_text())
    assert not record.get("complete") and 3 <= len(record["shards"]) < 40  # really killed mid-run
    assert subprocess.run(cmd, timeout=300).returncode == 0
    got = by_path(read_results(out))
    assert len(got) == len(files)
    assert max_prob_difference(got, _stream([tmp_path / "many"], tiny)) < 1e-6
