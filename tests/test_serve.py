"""nsfwkit serve: 127.0.0.1 only, nothing outside the folder, right MIME types, prints its URL."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time

import pytest

from nsfwkit import serve


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<p>home</p>")
    (root / "sub" / "a.wasm").write_bytes(b"\0asm")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    server = serve.serve_in_thread(root)
    yield server
    server.shutdown()
    server.server_close()


def _get(server, path):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def test_binds_loopback_only(served):
    assert served.server_address[0] == "127.0.0.1"
    assert served.url.startswith("http://127.0.0.1:")


def test_serves_files_with_types(served):
    resp, body = _get(served, "/")
    assert resp.status == 200 and body == b"<p>home</p>"
    resp, body = _get(served, "/sub/a.wasm")
    assert resp.status == 200 and resp.getheader("Content-Type") == "application/wasm"
    assert resp.getheader("Cache-Control") == "no-store"


@pytest.mark.parametrize("path", ["/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt",
                                  "/sub/%2E%2E/%2E%2E/secret.txt", "/link.txt", "/..%2fsecret.txt",
                                  "//etc/passwd", "/sub/"])
def test_refuses_paths_outside_and_listings(served, path):
    resp, body = _get(served, path)
    assert resp.status == 404
    assert b"outside" not in body and b"root:" not in body


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(NotADirectoryError):
        serve.make_server(tmp_path / "nope")


def test_cli_serve_prints_url(tmp_path):
    (tmp_path / "index.html").write_text("hi")
    code = ("import sys; from nsfwkit import cli_convert; import argparse; p=argparse.ArgumentParser(); "
            "cli_convert.register(p.add_subparsers()); a=p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    proc = subprocess.Popen([sys.executable, "-c", code, "serve", str(tmp_path), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line
        url = line.split("at ", 1)[1].split()[0]
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        for _ in range(50):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/index.html")
                assert conn.getresponse().read() == b"hi"
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
    bad = subprocess.run([sys.executable, "-c", code, "serve", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a folder" in bad.stderr
