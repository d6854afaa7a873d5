"""The dataset CLI subcommands (nsfwkit.cli.data, run through nsfwkit.cli.main)."""

from __future__ import annotations

import argparse
import json

from nsfwkit import cli, data
from nsfwkit.cli import data as cli_data

from data_helpers import HostileServer


def test_register_adds_the_subcommands():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_data.register(sub)
    for argv in (["demo-data", "x"], ["download", "l", "d"], ["prepare", "d", "--out", "o"],
                 ["train", "m", "o"], ["evaluate", "m", "x"]):
        args = parser.parse_args(argv)
        assert callable(args.func)


def test_demo_data_and_prepare_exit_codes(tmp_path, capsys):
    assert cli.main(["demo-data", str(tmp_path / "ds"), "--per-class", "4"]) == 0
    assert "not accuracy" in capsys.readouterr().out
    # the demo dataset has planted broken files: reported, not a failure -> 0, manifest written
    # (so `nsfwkit prepare ... && nsfwkit train ...` chains on real scraped data)
    assert cli.main(["prepare", str(tmp_path / "ds"), "--out", str(tmp_path / "01")]) == 0
    captured = capsys.readouterr()
    assert "3 quarantined" in captured.out and "empty file" in captured.err
    assert len(data.read_manifest(tmp_path / "01" / "manifest.csv")) > 0
    assert json.loads((tmp_path / "01" / "summary.json").read_text())["quarantined"] == 3
    clean = tmp_path / "clean"
    assert cli.main(["demo-data", str(clean), "--per-class", "3", "--binary", "--no-faults"]) == 0
    assert cli.main(["prepare", str(clean), "--out", str(tmp_path / "02")]) == 0
    assert cli.main(["prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "03")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    # demo-data refuses to write into a user folder
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "a.txt").write_text("mine")
    assert cli.main(["demo-data", str(tmp_path / "user")]) == 2
    # other arguments on an existing demo dataset: refused unless --overwrite
    assert cli.main(["demo-data", str(clean), "--per-class", "4", "--binary"]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert cli.main(["demo-data", str(clean), "--per-class", "4", "--binary",
                          "--overwrite"]) == 0


def test_download_exit_codes(tmp_path, capsys):
    with HostileServer() as srv:
        lists = tmp_path / "lists"
        lists.mkdir()
        (lists / "neutral.txt").write_text(srv.url("/ok/1.jpg") + "\n")
        assert cli.main(["download", str(lists), str(tmp_path / "ds"), "--no-env-proxy",
                              "-q"]) == 0
        (lists / "porn.txt").write_text(srv.url("/missing.jpg") + "\n")
        assert cli.main(["download", str(lists), str(tmp_path / "ds"), "--retries", "0",
                              "--no-env-proxy"]) == 1
        out = capsys.readouterr()
        assert "already there 1" in out.out and "HTTP 404" in out.err
    assert cli.main(["download", str(tmp_path / "nope"), str(tmp_path / "ds")]) == 2
