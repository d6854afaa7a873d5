"""The command line's one error path: every command fails as ``nsfwkit <command>: <what> — <why>``
on stderr, with the documented exit status (1 inputs or work failed, 2 usage error)."""

from __future__ import annotations

import importlib.metadata

import pytest

from nsfwkit import cli
from nsfwkit.cli import errors

COMMANDS = sorted(cli.build_parser().commands.choices)


def _bad_arguments(tmp_path) -> dict[str, tuple[list[str], int, str]]:
    """command -> (argv, exit status, the line's ``<what>``), each failing in the handler."""
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "mine.jpg").write_bytes(b"mine")
    t = str(tmp_path)
    return {
        "classify": (["classify", "x.jpg", "--batch-size", "0"], 2, "--batch-size"),
        "run": (["run", "--params", "no_such_set"], 2, "no_such_set"),
        "models": (["models", "build", "no_such_model"], 2, "no_such_model"),
        "demo-data": (["demo-data", f"{t}/user"], 2, f"{t}/user"),
        "download": (["download", f"{t}/no_lists", f"{t}/ds"], 2, f"{t}/no_lists"),
        "prepare": (["prepare", f"{t}/no_dataset", "--out", f"{t}/out"], 2, f"{t}/no_dataset"),
        "train": (["train", f"{t}/manifest.csv", f"{t}/run", "--config", "{not json"], 2, "--config"),
        "evaluate": (["evaluate", f"{t}/no_model.keras", f"{t}/manifest.csv"], 2, f"{t}/no_model.keras"),
        "export": (["export", f"{t}/no_model.keras", "--out", f"{t}/exp"], 2, f"{t}/no_model.keras"),
        "serve": (["serve", f"{t}/no_site"], 2, f"{t}/no_site"),
        "build-web": (["build-web", "--out", f"{t}/file.txt"], 2, f"{t}/file.txt"),
        "visualize": (["visualize", "--image", f"{t}/no_image.png"], 1, f"{t}/no_image.png"),
        "results": (["results", f"{t}/no_results"], 2, f"{t}/no_results"),
    }


def _last_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_fails_the_same_way(command, tmp_path, capsys):
    argv, code, what = _bad_arguments(tmp_path)[command]
    assert cli.main(argv) == code
    line = _last_line(capsys)
    assert line.startswith(f"nsfwkit {command}: {what} — "), line
    assert len(line) > len(f"nsfwkit {command}: {what} — "), "a reason follows the dash"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "user"]   # nothing written
    assert [p.name for p in (tmp_path / "user").iterdir()] == ["mine.jpg"]


def test_the_table_covers_every_command(tmp_path):
    assert sorted(_bad_arguments(tmp_path)) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_argparse_errors_take_the_same_form(command, capsys):
    assert cli.main([command, "--no-such-flag"]) == errors.USAGE
    line = _last_line(capsys)
    assert line.startswith(f"nsfwkit {command}: ") and " — " in line, line


@pytest.mark.parametrize("argv,line", [
    (["classify", "x.jpg", "--format", "xml"], "nsfwkit classify: --format — invalid choice: 'xml'"),
    (["classify"], "nsfwkit classify: PATH — required"),
    (["classify", "x.jpg", "--bogus"], "nsfwkit classify: --bogus — unrecognized arguments"),
    (["no-such-command"], "nsfwkit: COMMAND — invalid choice: 'no-such-command'"),
])
def test_argparse_messages(argv, line, capsys):
    assert cli.main(argv) == errors.USAGE
    assert _last_line(capsys).startswith(line)


def test_unexpected_os_errors_are_runtime_failures(tmp_path, capsys, monkeypatch):
    """An OS error the handler did not plan for: one line naming its file, exit 1, no traceback."""
    from nsfwkit import demo_data

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "ds" / "neutral" / "x.png"))

    monkeypatch.setattr(demo_data, "make_demo_dataset", disk_full)
    assert cli.main(["demo-data", str(tmp_path / "ds")]) == errors.FAILED
    assert _last_line(capsys) == f"nsfwkit demo-data: {tmp_path / 'ds' / 'neutral' / 'x.png'} — No space left on device"


def test_an_output_folder_that_cannot_be_written_is_a_usage_error(tmp_path, capsys):
    """A parent that is a file (root ignores chmod): refused before any work, one line, exit 2."""
    (tmp_path / "file.txt").write_text("x")
    assert cli.main(["demo-data", str(tmp_path / "file.txt" / "ds")]) == errors.USAGE
    assert _last_line(capsys).startswith(f"nsfwkit demo-data: {tmp_path / 'file.txt' / 'ds'} — cannot write")


@pytest.mark.parametrize("message,what,why", [
    ("/data/x.jpg: not an image (HTML)", "/data/x.jpg", "not an image (HTML)"),   # the message's subject
    ("unknown class 'Kitten'; choose from ['a']", "SUBJECT", "unknown class 'Kitten'; choose from ['a']"),
    ("notebook 03.ipynb failed in cell 4 ('x = 1'): ValueError: y", "SUBJECT",     # no subject: a sentence
     "notebook 03.ipynb failed in cell 4 ('x = 1'): ValueError: y"),
])
def test_from_exception_names_the_subject_once(message, what, why):
    error = errors.from_exception(ValueError(message), "SUBJECT")
    assert (error.what, error.why, error.code) == (what, why, errors.USAGE)


def test_from_exception_uses_the_os_error_file_name():
    error = errors.from_exception(FileNotFoundError(2, "No such file or directory", "/x/y"), "z", code=1)
    assert (error.what, error.why, error.code) == ("/x/y", "No such file or directory", 1)


def test_console_script_is_cli_main():
    (entry,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "nsfwkit"]
    assert entry.value == "nsfwkit.cli:main"
    assert entry.load() is cli.main
