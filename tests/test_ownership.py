"""Issue 9 part A: output folders the kit owns, run-folder locks, manifests that resolve from
anywhere, unwritable outputs; and the property that no command ever changes a user's file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsfwkit import cli, data, fileio, train, webview
from nsfwkit.convert import layout

from convert_helpers import build_tiny_model, require_converter, tiny_spec
from data_helpers import tiny_backbone, tiny_dataset

#: A folder no process can create, root included (/proc refuses new entries).
UNWRITABLE = Path("/proc/nsfwkit-no-such-dir/out")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared 2-class dataset of 32x32 textures (prepared from its own folder) and a tiny backbone."""
    base = tmp_path_factory.mktemp("own")
    tiny_dataset(base / "ds", classes=("neutral", "porn"), per_class=6, size=32)
    cwd = os.getcwd()
    os.chdir(base)
    try:  # as `cd base && nsfwkit prepare ds --out 01`: paths given relative to that directory
        data.prepare("ds").write("01")
    finally:
        os.chdir(cwd)
    return base / "01" / "manifest.csv", tiny_backbone(base / "backbone", image_size=32, classes=2)


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_tiny_model().save(path)
    tiny_spec().save(path.with_name("tiny.spec.json"))
    return path


def _config(backbone, **kw):
    return {"backbone": str(backbone), "batch_size": 4, "epochs_head": 1, "epochs_finetune": 0,
            "checkpoint_every": 1, "patience": 0, "calibrate": False, **kw}


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: relative path -> (bytes, mtime) for files, ("dir",) for folders."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = ("dir",) if path.is_dir() else (path.read_bytes(), path.stat().st_mtime_ns)
    return out


# ------------------------------------------------------------------------------------------
# Finding 1: export --overwrite only replaces the kit's own export entries
# ------------------------------------------------------------------------------------------
def test_export_overwrite_keeps_user_files_beside_an_export_json(tmp_path, tiny_model_file, capsys):
    require_converter()
    user = tmp_path / "thesis"
    (user / "photos").mkdir(parents=True)
    (user / "export.json").write_text('{"mine": true}')
    (user / "thesis.txt").write_text("years of work")
    (user / "photos" / "a.jpg").write_bytes(b"\xff\xd8 not really")
    before = _snapshot(user)
    argv = ["export", str(tiny_model_file), "--out", str(user), "--quantize", "none", "--no-nsfwjs",
            "--overwrite", "-q", "--precision-plan", "none"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nsfwkit export: ") and "not written by nsfwkit" in err and err.count("\n") == 1
    assert _snapshot(user) == before
    # the kit's own export: --overwrite replaces its entries one by one, a file the user added stays
    ours = tmp_path / "exp"
    argv[3] = str(ours)
    assert cli.main(argv) == 0
    assert fileio.folder_kind(ours) == "export"
    (ours / "notes.txt").write_text("my notes on this export")
    assert cli.main(argv) == 0
    assert (ours / "notes.txt").read_text() == "my notes on this export"
    assert (ours / "tfjs" / "float32" / "model.json").is_file()
    assert set(fileio.owned_entries(ours)) == {"export.json", "saved_model", "spec.json", "tfjs"}
    assert not [p for p in ours.iterdir() if p.name.startswith(".nsfwkit-stage-")]


def test_an_older_kits_export_is_recognised_by_content_only(tmp_path):
    old = tmp_path / "old"
    (old / "tfjs" / "float32").mkdir(parents=True)
    (old / "export.json").write_text(json.dumps({k: [] for k in layout._EXPORT_KEYS}))
    assert layout._legacy_export(old) == ["export.json", "tfjs"]
    (old / "thesis.txt").write_text("mine")
    (old / "finetuned.keras").write_text("my model")
    (old / "calibration").mkdir()
    # only the exact names an older export wrote are the kit's: never the user's files beside them
    assert layout._legacy_export(old) == ["export.json", "tfjs"]
    # nor may a one-format exporter (TF.js, TFLite, ONNX) replace such a folder wholesale
    with pytest.raises(FileExistsError, match="calibration, finetuned.keras, thesis.txt"), \
            layout._atomic_dir(old, overwrite=True):
        pass
    assert (old / "thesis.txt").read_text() == "mine"
    (old / "thesis.txt").unlink()
    (old / "export.json").write_text('{"model": "x"}')   # an export.json without the kit's keys
    assert layout._legacy_export(old) is None


def test_export_overwrite_of_an_older_kits_export_keeps_the_users_files(tmp_path, tiny_model_file):
    require_converter()
    old = tmp_path / "old"
    (old / "tfjs" / "float32").mkdir(parents=True)
    (old / "tfjs" / "float32" / "model.json").write_text("{}")
    (old / "export.json").write_text(json.dumps({k: [] for k in layout._EXPORT_KEYS}))
    (old / "calibration").mkdir()
    (old / "calibration" / "mycal.jpg").write_bytes(b"\xff\xd8 mine")
    (old / "finetuned.keras").write_bytes(b"my finetuned model")
    mine = {k: v for k, v in _snapshot(old).items() if k.startswith(("calibration", "finetuned"))}
    argv = ["export", str(tiny_model_file), "--out", str(old), "--quantize", "none", "--no-nsfwjs",
            "--overwrite", "-q", "--precision-plan", "none"]
    assert cli.main(argv) == 0
    after = _snapshot(old)
    assert {k: after.get(k) for k in mine} == mine
    assert json.loads((old / "export.json").read_text())["model"] == tiny_spec().name
    assert set(fileio.owned_entries(old)) == {"export.json", "saved_model", "spec.json", "tfjs"}


def test_single_format_export_never_deletes_a_users_file_and_is_locked(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.json").write_text('{"userDefinedMetadata": {"nsfwkit": {}}}')
    (folder / "finetuned.keras").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="finetuned.keras"), layout._atomic_dir(folder, overwrite=True):
        pass
    assert (folder / "finetuned.keras").read_bytes() == b"mine"
    (folder / "finetuned.keras").unlink()
    with layout._atomic_dir(folder, overwrite=True) as stage:
        (stage / "model.json").write_text("{}")
        with pytest.raises(fileio.FolderBusyError), fileio.folder_lock(folder):
            pass
    assert (folder / "model.json").read_text() == "{}"


def test_older_kits_run_and_prepare_folders_are_recognised_by_content(prepared, tmp_path):
    from nsfwkit.data.manifest import is_prepared_folder

    old = tmp_path / "run"
    (old / "checkpoints").mkdir(parents=True)
    (old / "config.json").write_text(json.dumps({k: 0 for k in train._RUN_CONFIG_KEYS}))
    (old / "model.keras").write_text("x")
    assert train._legacy_run(old)
    (old / "config.json").write_text('{"lr": 0.1}')       # the user's own config.json
    assert not train._legacy_run(old)
    assert is_prepared_folder(prepared[0].parent)
    user = tmp_path / "prep"
    user.mkdir()
    (user / "manifest.csv").write_text("my,own,columns\n")
    (user / "summary.json").write_text("{}")
    assert not is_prepared_folder(user)


# ------------------------------------------------------------------------------------------
# Finding 2: train OUT must be the kit's run folder; --restart deletes only its checkpoints
# ------------------------------------------------------------------------------------------
def test_train_refuses_a_users_folder_and_restart_keeps_user_checkpoint_files(prepared, tmp_path, capsys):
    manifest, backbone = prepared
    user = tmp_path / "user"
    user.mkdir()
    for name in ("model.keras", "log.csv", "config.json"):
        (user / name).write_text(f"the user's own {name}")
    before = _snapshot(user)
    for restart in ([], ["--restart"]):
        assert cli.main(["train", str(manifest), str(user), "--config", json.dumps(_config(backbone)),
                         "-q", *restart]) == 2
        assert "not written by nsfwkit" in capsys.readouterr().err
        assert _snapshot(user) == before
    run = tmp_path / "run"
    train.train(manifest, run, _config(backbone), verbose=False)
    mine = run / "checkpoints" / "my-notes.txt"
    mine.write_text("keep me")
    (run / "checkpoints" / "ckpt-mine").mkdir()
    result = train.train(manifest, run, _config(backbone), resume=False, verbose=False)
    assert result.resumed_from is None and result.steps > 0
    assert mine.read_text() == "keep me" and (run / "checkpoints" / "ckpt-mine").is_dir()
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["global_step"] == result.steps


# ------------------------------------------------------------------------------------------
# Finding 3: manifests resolve from anywhere; missing files refused (or skipped, counted); 0 steps
# ------------------------------------------------------------------------------------------
def test_manifest_paths_resolve_from_another_directory(prepared, tmp_path, monkeypatch):
    manifest, _ = prepared
    monkeypatch.chdir(tmp_path)                           # not where prepare ran
    paths, labels, _ = data.manifest_arrays(manifest, "train")
    assert len(paths) == len(labels) > 0 and all(Path(p).is_file() for p in paths)
    stored = data.read_manifest(manifest, resolve=False)[0]["path"]
    assert not os.path.isabs(stored) and stored.startswith(os.path.join("..", "ds"))
    # an older kit's manifest (relative to where it ran) still reads, from there
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.csv").write_text("path,class,split\nds/a.png,a,train\n")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "a.png").write_bytes(b"x")
    assert data.read_manifest(old / "manifest.csv")[0]["path"] == "ds/a.png"


def _manifest_with_missing(prepared, tmp_path, n_missing: int) -> Path:
    manifest, _ = prepared
    folder = tmp_path / "m"
    folder.mkdir()
    rows = manifest.read_text().splitlines()
    lines = [rows[0]] + [f"gone/{i}.png," + r.split(",", 1)[1] for i, r in enumerate(rows[1:n_missing + 1])]
    base = os.path.relpath(manifest.parent, folder)
    lines += [os.path.join(base, r.split(",", 1)[0]) + "," + r.split(",", 1)[1] for r in rows[n_missing + 1:]]
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    (folder / "summary.json").write_text((manifest.parent / "summary.json").read_text())
    return folder / "manifest.csv"


def test_train_refuses_missing_files_unless_skipped_and_zero_steps_is_an_error(prepared, tmp_path, capsys):
    _, backbone = prepared
    manifest = _manifest_with_missing(prepared, tmp_path, 2)
    cfg = json.dumps(_config(backbone))
    assert cli.main(["train", str(manifest), str(tmp_path / "run"), "--config", cfg, "-q"]) == 2
    err = capsys.readouterr().err
    assert "2 of " in err and "files are missing" in err and "gone/0.png" in err and "--skip-missing" in err
    assert not (tmp_path / "run" / "model.keras").exists()
    assert cli.main(["train", str(manifest), str(tmp_path / "run"), "--config", cfg, "-q", "--skip-missing"]) == 0
    assert "skipped 2 files" in capsys.readouterr().err
    # every image undecodable: 0 steps is an error, and no untrained model is saved
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in data.manifest_arrays(manifest, "train")[0] + data.manifest_arrays(manifest, "val")[0]:
        if os.path.isfile(path):
            (broken / f"{Path(path).parent.name}_{Path(path).name}").write_bytes(b"not an image")
    rows = [r for r in data.read_manifest(manifest) if os.path.isfile(r["path"])]
    (broken / "manifest.csv").write_text("path,class,split\n" + "".join(
        f"{Path(r['path']).parent.name}_{Path(r['path']).name},{r['class']},{r['split']}\n" for r in rows))
    assert cli.main(["train", str(broken / "manifest.csv"), str(tmp_path / "run0"), "--config", cfg, "-q"]) == 1
    assert "0 steps" in capsys.readouterr().err
    assert not (tmp_path / "run0" / "model.keras").exists()


def test_evaluate_refuses_missing_files_with_their_count(prepared, tmp_path, capsys):
    _, backbone = prepared
    manifest = _manifest_with_missing(prepared, tmp_path, 2)
    argv = ["evaluate", str(backbone), str(manifest), "--out", str(tmp_path / "eval"), "--baseline", "none"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nsfwkit evaluate: {manifest} — 2 of ") and "gone/0.png" in err
    assert not (tmp_path / "eval").exists()


# ------------------------------------------------------------------------------------------
# Finding 4: one writer per run folder
# ------------------------------------------------------------------------------------------
_HOLD = ("import sys, time; from nsfwkit import fileio\n"
         "with fileio.owned_folder(sys.argv[1], 'train'):\n    print('held', flush=True); time.sleep(120)\n")


def test_a_second_train_into_a_busy_run_folder_refuses_at_once(prepared, tmp_path):
    manifest, backbone = prepared
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "CUDA_VISIBLE_DEVICES": ""}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run([sys.executable, "-m", "nsfwkit", "train", str(manifest), str(run), "-q",
                                 "--config", json.dumps(_config(backbone))],
                                capture_output=True, text=True, env=env, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 1, second.stderr
    last = second.stderr.strip().splitlines()[-1]  # (TensorFlow's start-up lines come first)
    assert last.startswith(f"nsfwkit train: {run} — in use by another nsfwkit process (PID {holder.pid})")
    assert not (run / "model.keras").exists() and not (run / "config.json").exists()


# ------------------------------------------------------------------------------------------
# Finding 9: unwritable outputs fail first, in one line
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["proc", "under_a_file", "a_file"])
def test_unwritable_prepare_out_fails_before_validating(tmp_path, monkeypatch, capsys, where):
    (tmp_path / "file").write_text("x")
    out = {"proc": UNWRITABLE, "under_a_file": tmp_path / "file" / "out", "a_file": tmp_path / "file"}[where]

    def must_not_run(*args, **kwargs):
        raise AssertionError("prepare validated the dataset before checking --out")

    monkeypatch.setattr(data, "prepare", must_not_run)
    assert cli.main(["prepare", str(tmp_path / "ds"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nsfwkit prepare: {out}") and err.count("\n") == 1 and "Traceback" not in err


def test_unwritable_build_web_out_fails_before_exporting(monkeypatch, capsys):
    def must_not_run(*args, **kwargs):
        raise AssertionError("build-web exported a model before checking --out")

    monkeypatch.setattr(webview, "default_export", must_not_run)
    assert cli.main(["build-web", "--out", str(UNWRITABLE)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nsfwkit build-web: {UNWRITABLE} — cannot write") and err.count("\n") == 1


def test_unwritable_train_out_is_a_one_line_usage_error(prepared, capsys):
    manifest, backbone = prepared
    assert cli.main(["train", str(manifest), str(UNWRITABLE), "-q", "--config", json.dumps(_config(backbone))]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nsfwkit train: {UNWRITABLE} — cannot write") and err.count("\n") == 1


# ------------------------------------------------------------------------------------------
# The property: no command with --overwrite/--restart changes a file it did not create
# ------------------------------------------------------------------------------------------
_KIT_NAMES = ["export.json", "spec.json", "tfjs", "saved_model", "checkpoints", "model.keras", "log.csv",
              "config.json", "manifest.csv", "summary.json", "run.json", "index.html", "vendor", "model"]
_names = st.one_of(st.sampled_from(_KIT_NAMES),
                   st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12)
                   .filter(lambda n: n not in (".", "..") and not n.startswith(".nsfwkit")))
_trees = st.recursive(st.binary(max_size=32), lambda sub: st.dictionaries(_names, sub, min_size=1, max_size=4),
                      max_leaves=8).filter(lambda t: isinstance(t, dict))


def _write_tree(folder: Path, tree: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in tree.items():
        if isinstance(value, dict):
            _write_tree(folder / name, value)
        else:
            (folder / name).write_bytes(value)


def _fake_tfjs_model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text('{"userDefinedMetadata": {"nsfwkit": {}}}')
    return folder


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_trees)
def test_no_command_changes_a_file_it_did_not_create(tree, prepared, tiny_model_file, monkeypatch):
    manifest, backbone = prepared
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        monkeypatch.setenv("NSFWKIT_DIST", str(tmp / "dist"))
        user = tmp / "dist" / "runs" / "mine"
        _write_tree(user, tree)
        before = _snapshot(user)
        model = _fake_tfjs_model(tmp / "tfjs")
        commands = {
            "train": ["train", str(manifest), str(user), "--restart", "-q", "--config", json.dumps(_config(backbone))],
            "export": ["export", str(tiny_model_file), "--out", str(user), "--overwrite", "--no-nsfwjs", "-q"],
            "build-web": ["build-web", "--out", str(user), "--export", str(model)],
            "prepare": ["prepare", str(manifest.parent.parent / "ds"), "--out", str(user), "-q"],
            "run": ["run", "--params", "smoke", "--stages", "00", "--name", "mine", "-q"],
        }
        for name, argv in commands.items():
            assert cli.main(argv) == 2, name
            assert _snapshot(user) == before, name
        # kit folders the user added files to: a rebuild replaces only what the kit wrote
        prep = tmp / "prep"
        assert cli.main(commands["prepare"][:3] + [str(prep), "-q"]) == 0
        _write_tree(prep / "extra", tree)
        extra = _snapshot(prep / "extra")
        assert cli.main(commands["prepare"][:3] + [str(prep), "-q"]) == 0
        assert _snapshot(prep / "extra") == extra
        site = tmp / "site"
        webview.build(site, export_dir=model)
        _write_tree(site / "extra", tree)
        extra = _snapshot(site / "extra")
        webview.build(site, export_dir=model)
        assert _snapshot(site / "extra") == extra and (site / "index.html").is_file()


def _kit_commands(base: Path, manifest: Path, backbone: Path, model_file: Path, tfjs: Path) -> dict:
    """Each command the kit writes a folder with, as ``name -> (argv, its folder)``, into ``base``."""
    ds = manifest.parent.parent / "ds"
    image = next(p for p in sorted(ds.rglob("*")) if p.is_file())
    return {
        "train": (["train", str(manifest), str(base / "train"), "--restart", "-q",
                   "--config", json.dumps(_config(backbone))], base / "train"),
        "export": (["export", str(model_file), "--out", str(base / "export"), "--overwrite", "--no-nsfwjs", "-q",
                    "--quantize", "none", "--precision-plan", "none"], base / "export"),
        "build-web": (["build-web", "--out", str(base / "site"), "--export", str(tfjs)], base / "site"),
        "prepare": (["prepare", str(ds), "--out", str(base / "prep"), "-q"], base / "prep"),
        "classify": (["classify", str(ds), "--model", str(backbone), "--out", str(base / "cls"), "-q"], base / "cls"),
        "evaluate": (["evaluate", str(backbone), str(manifest), "--out", str(base / "eval"), "--baseline", "none",
                      "--no-probe", "--confidence", "0"], base / "eval"),
        "visualize": (["visualize", "--model", str(backbone), "--image", str(image), "--only", "cam", "--cam",
                       "grad_cam", "--out", str(base / "viz"), "-q"], base / "viz" / "activation"),
        "demo-data": (["demo-data", str(base / "demo"), "--per-class", "2", "--binary", "--overwrite"], base / "demo"),
    }


@pytest.fixture(scope="module")
def kit_folders(prepared, tiny_model_file, tmp_path_factory):
    """Every command's folder as the kit wrote it (each command run once), and the commands."""
    manifest, backbone = prepared
    base = tmp_path_factory.mktemp("kit")
    tfjs = _fake_tfjs_model(base / "tfjs")
    commands = _kit_commands(base / "made", manifest, backbone, tiny_model_file, tfjs)
    for name, (argv, folder) in commands.items():
        assert cli.main(argv) == 0, name
        assert fileio.folder_kind(folder) is not None, name
    return base, commands, (manifest, backbone, tiny_model_file, tfjs)


#: Older kits' folders (before markers) for the commands where a legacy form is recognised: name -> files.
_LEGACY = {
    "export": {"export.json": json.dumps({k: [] for k in layout._EXPORT_KEYS})},
    "build-web": {webview.LEGACY_MARKER: "", "index.html": "old page"},
    "evaluate": {"report.json": json.dumps({"model": "m", "target": "t", "test": {}, "threshold": None})},
    "visualize": {"manifest.json": json.dumps({"schema": "nsfwkit.activation/1", "cam": "cam.png"}), "cam.png": "x"},
    "demo-data": {".nsfwkit-demo": "v1 per_class=1 classes=neutral seed=0 faults=False sizes=96-160\n"},
}


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_trees)
def test_no_command_changes_a_users_file_inside_a_kit_or_older_kit_folder(tree, kit_folders):
    import shutil

    base, made, inputs = kit_folders
    user_tree = {f"mine-{name}": value for name, value in tree.items()}  # names no kit writes
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        commands = _kit_commands(Path(tmp), *inputs)
        for name, (argv, folder) in commands.items():
            shutil.copytree(made[name][1], folder)                  # the kit's folder (its marker inside)
            _write_tree(folder, user_tree)
            before = _snapshot(folder)
            assert cli.main(argv) == 0, name
            after = _snapshot(folder)
            assert {k: after.get(k) for k in before if k.startswith("mine-")} == \
                   {k: v for k, v in before.items() if k.startswith("mine-")}, name
            if name in _LEGACY:                                     # an older kit's folder: the same rule
                old = Path(tmp) / "legacy" / name
                _write_tree(old, {**{k: v.encode() for k, v in _LEGACY[name].items()}, **user_tree})
                before = {k: v for k, v in _snapshot(old).items() if k.startswith("mine-")}
                legacy_argv = [str(old) if a == str(folder) else a for a in argv]
                if name == "visualize":
                    legacy_argv[legacy_argv.index("--out") + 1] = str(old.parent / "viz-out")
                    shutil.rmtree(old.parent / "viz-out", ignore_errors=True)
                    shutil.copytree(old, old.parent / "viz-out" / "activation")
                    old = old.parent / "viz-out" / "activation"
                assert cli.main(legacy_argv) == 0, name
                after = _snapshot(old)
                assert {k: after.get(k) for k in before} == before, name


_HOLD_ANY = ("import sys, time; from nsfwkit import fileio\n"
             "with fileio.folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)\n")


def test_prepare_into_a_folder_another_process_writes_is_refused_at_once(prepared, tmp_path, capsys):
    manifest, _ = prepared
    out = tmp_path / "prep"
    assert cli.main(["prepare", str(manifest.parent.parent / "ds"), "--out", str(out), "-q"]) == 0
    before = _snapshot(out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_ANY, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = cli.main(["prepare", str(manifest.parent.parent / "ds"), "--out", str(out), "-q"])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert code == 1 and f"in use by another nsfwkit process (PID {holder.pid})" in err
    assert {k: v for k, v in _snapshot(out).items() if k != fileio.LOCK_FILE} == \
           {k: v for k, v in before.items() if k != fileio.LOCK_FILE}
