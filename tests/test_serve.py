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


# --------------------------------------------------------------------------------------------
# Issue 9 finding 13: timeouts, a bounded pool, regular files only, no dotfiles, port 80, quiet pipes
# --------------------------------------------------------------------------------------------
@pytest.fixture
def tight(tmp_path):
    """A server with a short timeout and a pool of 8 over a folder with a FIFO, dotfiles, a big file."""
    root = tmp_path / "site"
    (root / ".git").mkdir(parents=True)
    (root / "index.html").write_text("<p>home</p>")
    (root / ".env").write_text("TOKEN=secret")
    (root / ".git" / "config").write_text("[core] secret")
    (root / "visible.txt").write_text("fine")
    os.symlink(root / ".env", root / "env-link.txt")
    os.mkfifo(root / "pipe.js")
    (root / "big.bin").write_bytes(b"\0" * (32 << 20))
    server = serve.serve_in_thread(root, timeout=0.5, threads=8, quiet=False)
    yield server
    server.shutdown()
    server.server_close()


def test_idle_connections_time_out_and_never_cost_a_thread_each(tight):
    import socket
    import threading

    before = threading.active_count()
    # 30 idle sockets: more than the pool of 8, fewer than pool + queue (8 + 32), so none is refused
    idle = [socket.create_connection(("127.0.0.1", tight.server_address[1])) for _ in range(30)]
    try:
        time.sleep(0.3)
        assert threading.active_count() <= before + 1  # the pool of 8 existed already; no thread per socket
        started = time.monotonic()
        resp, body = _get(tight, "/visible.txt")  # served once the idle ones ahead of it time out
        assert resp.status == 200 and body == b"fine"
        assert time.monotonic() - started < 15
        for sock in idle:  # each idle socket was closed by the server after its timeout
            sock.settimeout(10)
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in idle:
            sock.close()


def test_connections_beyond_the_queue_are_closed_at_once_and_logged(tmp_path, capfd):
    import socket

    (tmp_path / "visible.txt").write_text("fine")
    server = serve.serve_in_thread(tmp_path, timeout=5, threads=1, quiet=False)  # room: 1 + a queue of 4
    socks = []
    try:
        socks = [socket.create_connection(("127.0.0.1", server.server_address[1])) for _ in range(10)]
        time.sleep(1.0)  # well under the 5 s idle timeout: only a refused socket is closed by now
        closed = 0
        for sock in socks:
            sock.setblocking(False)
            try:
                closed += sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except BlockingIOError:  # still open, waiting its turn
                pass
        assert 5 <= closed <= 6, closed  # 10 sockets, room for 4 or 5 of them
        assert capfd.readouterr().err.count("too many waiting connections, closed") == closed
    finally:
        for sock in socks:
            sock.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("path", ["/pipe.js", "/.env", "/.git/config", "/env-link.txt", "/%2eenv"])
def test_fifos_and_hidden_files_are_not_served(tight, path):
    resp, body = _get(tight, path)  # _get's own timeout (10 s) would fail a hang on the FIFO
    assert resp.status == 404 and b"secret" not in body


def test_bare_host_is_accepted_on_port_80_only(served, monkeypatch):
    assert serve.allowed_hosts(80) == {"127.0.0.1", "localhost", "127.0.0.1:80", "localhost:80"}
    assert serve.allowed_hosts(8000) == {"127.0.0.1:8000", "localhost:8000"}
    # a server on port 80 (the handler reads the port from the server, as it would after binding 80)
    monkeypatch.setattr(served, "server_address", ("127.0.0.1", 80))
    conn = http.client.HTTPConnection("127.0.0.1", served.socket.getsockname()[1], timeout=10)
    for host in ("127.0.0.1", "localhost", "LOCALHOST", "127.0.0.1:80", "evil.example"):
        conn.putrequest("GET", "/index.html", skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        resp = conn.getresponse()
        assert (resp.status, resp.read() == b"<p>home</p>") == ((421, False) if "evil" in host else (200, True))
        conn.close()


def test_client_going_away_is_not_a_traceback(tight, capfd):
    import socket
    import struct

    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", tight.server_address[1]))
        sock.sendall(f"GET /big.bin HTTP/1.1\r\nHost: 127.0.0.1:{tight.server_address[1]}\r\n\r\n".encode())
        sock.recv(1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        sock.close()
    time.sleep(1.0)
    assert _get(tight, "/visible.txt")[0].status == 200  # still serving
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
    assert 1 <= err.count("client went away") <= 3, err  # each reset seen, in one line
