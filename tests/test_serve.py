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


def _get(server, path, *, host=None, skip_host=False):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    if skip_host or host is not None:
        conn.putrequest("GET", path, skip_host=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
    else:
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


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:{port}", "127.0.0.1",
                                  "127.0.0.1:1", "localhost", "evil.localhost:{port}", "[::1]:{port}",
                                  "127.0.0.1:{port}.attacker.example"])
def test_refuses_foreign_host_headers(served, host):
    """DNS rebinding: a page at attacker.example whose name now resolves to 127.0.0.1 sends
    its own Host; it must not read the folder."""
    resp, body = _get(served, "/index.html", host=host.format(port=served.server_address[1]))
    assert resp.status == 421
    assert b"home" not in body


def test_missing_host_header_is_refused(served):
    resp, body = _get(served, "/index.html", skip_host=True)
    assert resp.status == 400 and b"home" not in body


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}"])
def test_accepts_loopback_host_headers(served, host):
    resp, body = _get(served, "/index.html", host=host.format(port=served.server_address[1]))
    assert resp.status == 200 and body == b"<p>home</p>"


@pytest.mark.parametrize("path", ["/%ff", "/sub/%c3%28.txt", "/%ff/../index.html"])
def test_non_utf8_path_is_a_bad_request(served, path):
    resp, _ = _get(served, path)
    assert resp.status == 400
    # the server is still up and answers the next request
    assert _get(served, "/")[0].status == 200


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(NotADirectoryError):
        serve.make_server(tmp_path / "nope")


def test_cli_serve_prints_url(tmp_path):
    (tmp_path / "index.html").write_text("hi")
    nsfwkit = [sys.executable, "-m", "nsfwkit"]
    proc = subprocess.Popen([*nsfwkit, "serve", str(tmp_path), "--port", "0"],
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
        else:
            pytest.fail(f"nsfwkit serve never accepted a connection on port {port}")
    finally:
        proc.terminate()
        proc.wait(10)
    bad = subprocess.run([*nsfwkit, "serve", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a folder" in bad.stderr
