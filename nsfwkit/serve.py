"""Serve a folder (the built web view, an export) on 127.0.0.1 only.

A static file server with these guarantees: it binds the loopback interface only; it answers
only requests addressed to it by a loopback name (``Host: 127.0.0.1:<port>`` or
``localhost:<port>``, and the bare names on port 80, where browsers leave the port out; anything
else gets 421, a missing Host 400), so a web page whose DNS name is rebound to 127.0.0.1 cannot
read the folder; it never serves anything outside its folder (``..``, absolute paths and symlinks
that leave the folder answer 404; a path that is not UTF-8 answers 400), nor hidden entries
(dotfiles, ``.git/``), nor anything but regular files (a FIFO or device in the folder answers 404
without being opened); and it sends the headers a TF.js page needs (``application/wasm``, no
caching, ``nosniff``).

Connections are served by a fixed pool of threads (``threads``, default 16) with a socket timeout
(``timeout``, default 30 s): idle or stalled clients are dropped when it runs out, waiting
connections beyond a bounded queue are closed at once, so many idle sockets cost neither a thread
each nor the server's life. A client that goes away mid-response is one short log line, not a
traceback. It is for looking at the web view (``dist/web/``) locally, not for deployment.

>>> server = make_server("dist", port=0)      # port 0: pick a free one
>>> server.url
'http://127.0.0.1:43121/'
"""

from __future__ import annotations

import functools
import http.server
import os
import posixpath
import queue
import stat
import sys
import threading
import urllib.parse
from pathlib import Path

__all__ = ["HOST", "TIMEOUT", "THREADS", "allowed_hosts", "make_server", "serve", "serve_in_thread"]

HOST = "127.0.0.1"
#: Seconds a connection may stay silent (while sending its request or reading the answer).
TIMEOUT = 30.0
#: Threads serving connections; connections beyond them wait in a queue of ``4 * threads``.
THREADS = 16
#: Errors that mean the client went away; logged in one line, never as a traceback.
_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
_TYPES = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
          ".json": "application/json", ".bin": "application/octet-stream", ".css": "text/css",
          ".svg": "image/svg+xml", ".webp": "image/webp"}


def allowed_hosts(port: int) -> set[str]:
    """The ``Host`` header values the server on ``port`` answers (lower case).

    ``127.0.0.1:<port>`` and ``localhost:<port>``; on port 80, HTTP's default, browsers send the
    bare name, so ``127.0.0.1`` and ``localhost`` too.
    """
    hosts = {f"{HOST}:{port}", f"localhost:{port}"}
    if int(port) == 80:
        hosts |= {HOST, "localhost"}
    return hosts


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **_TYPES}

    def __init__(self, *args, directory: str, quiet: bool, timeout: float | None, **kwargs):
        self._root = Path(directory).resolve()
        self._quiet = quiet
        self.timeout = timeout  # StreamRequestHandler.setup() puts it on the socket
        super().__init__(*args, directory=str(self._root), **kwargs)

    def parse_request(self) -> bool:
        """The stdlib's parsing, then the Host check (DNS rebinding) and a UTF-8 path check."""
        if not super().parse_request():
            return False
        host = self.headers.get("Host")
        if host is None:
            self.send_error(400, "Bad request: a Host header is required")
            return False
        if host.strip().lower() not in allowed_hosts(self.server.server_address[1]):
            self.send_error(421, "Misdirected request: this server answers to 127.0.0.1 or localhost only")
            return False
        try:
            urllib.parse.unquote(urllib.parse.urlsplit(self.path).path, errors="strict")
        except (UnicodeDecodeError, ValueError):
            self.send_error(400, "Bad request: the path is not valid UTF-8")
            return False
        return True

    def _servable(self, parts: list[str]) -> Path | None:
        """The file or folder that URL path ``parts`` name, or ``None`` when it must not be served.

        Refused: ``.``/``..`` and separators inside a part, hidden names (before and after
        resolving links), anything resolving outside the folder, and anything that exists but is
        neither a regular file nor a folder (FIFOs, sockets, devices: never opened).
        """
        if any(p.startswith(".") or "\\" in p or "\0" in p or os.sep in p for p in parts):
            return None
        try:
            resolved = self._root.joinpath(*parts).resolve()
        except (OSError, RuntimeError):
            return None
        if resolved != self._root and not resolved.is_relative_to(self._root):
            return None  # e.g. a symlink pointing out
        if any(p.startswith(".") for p in resolved.relative_to(self._root).parts):
            return None  # a link to a hidden file
        try:
            mode = resolved.stat().st_mode
        except OSError:
            return resolved  # missing: the stdlib answers 404
        return resolved if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else None

    def translate_path(self, path: str) -> str:
        """Map a URL path into the folder; anything that must not be served maps to nowhere (404)."""
        refused = os.path.join(os.devnull, "refused")  # can never be opened: 404
        try:
            path = urllib.parse.unquote(urllib.parse.urlsplit(path).path, errors="strict")
        except (UnicodeDecodeError, ValueError):
            return refused
        resolved = self._servable([p for p in posixpath.normpath(path).split("/") if p])
        if resolved is None:
            return refused
        out = str(resolved)
        if path.endswith("/") and not out.endswith(os.sep):
            out += os.sep
        return out

    def send_head(self):
        """The stdlib's, with a folder's page (``index.html``) checked like any other file."""
        parts = urllib.parse.urlsplit(self.path)
        if parts.path.endswith("/"):
            self.path = urllib.parse.urlunsplit(parts._replace(path=parts.path + "index.html"))
        return super().send_head()

    def list_directory(self, path):  # no directory listings
        self.send_error(404, "Not found")
        return None

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        super().end_headers()

    def log_message(self, format, *args):  # noqa: A002 (stdlib signature)
        if not self._quiet:
            super().log_message(format, *args)


class _Server(http.server.HTTPServer):
    """An HTTP server whose connections are handled by a fixed pool of threads."""

    def __init__(self, address, handler, *, threads: int = THREADS, quiet: bool = True):
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self._quiet = quiet
        self._waiting: queue.Queue = queue.Queue(maxsize=4 * threads)
        super().__init__(address, handler)
        self._workers = [threading.Thread(target=self._work, name=f"nsfwkit-serve-{i}", daemon=True)
                         for i in range(threads)]
        for worker in self._workers:
            worker.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"

    def process_request(self, request, client_address):
        """Queue the connection for the pool; when the queue is full, close it at once."""
        try:
            self._waiting.put_nowait((request, client_address))
        except queue.Full:
            self._log(client_address, "too many waiting connections, closed")
            self.shutdown_request(request)

    def _work(self) -> None:
        while (item := self._waiting.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:  # noqa: BLE001 - one connection must never stop the server
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def handle_error(self, request, client_address):
        """A client that went away is one line; anything else keeps the stdlib's traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, _GONE):
            self._log(client_address, f"client went away ({type(exc).__name__})")
        else:
            super().handle_error(request, client_address)

    def _log(self, client_address, message: str) -> None:
        if not self._quiet:
            print(f"{client_address[0]}:{client_address[1]} - {message}", file=sys.stderr, flush=True)

    def server_close(self):
        """Close the socket, drop the waiting connections and stop the pool."""
        super().server_close()
        while True:
            try:
                item = self._waiting.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.shutdown_request(item[0])
        for _ in self._workers:
            self._waiting.put(None)


def make_server(directory: str | os.PathLike, *, port: int = 0, quiet: bool = True,
                timeout: float | None = TIMEOUT, threads: int = THREADS) -> _Server:
    """An HTTP server for ``directory`` on 127.0.0.1:``port`` (0 = any free port).

    Args:
        directory: the folder to serve.
        port: the port; 0 picks a free one (see ``.url``).
        quiet: no request log.
        timeout: seconds a connection may stay silent before it is dropped (None: forever).
        threads: connections served at once; more wait in a bounded queue.

    Raises:
        NotADirectoryError: ``directory`` is not a folder.
        OSError: the port is taken.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder (build the web view with `nsfwkit build-web`)")
    handler = functools.partial(_Handler, directory=str(root), quiet=quiet, timeout=timeout)
    return _Server((HOST, int(port)), handler, threads=threads, quiet=quiet)


def serve_in_thread(directory: str | os.PathLike, *, port: int = 0, **options) -> _Server:
    """Start :func:`make_server` in a daemon thread; call ``.shutdown()`` then ``.server_close()`` to stop it."""
    server = make_server(directory, port=port, **options)
    threading.Thread(target=server.serve_forever, name="nsfwkit-serve", daemon=True).start()
    return server


def serve(directory: str | os.PathLike, *, port: int = 8000, quiet: bool = False,
          timeout: float | None = TIMEOUT, threads: int = THREADS) -> None:
    """Serve ``directory`` until Ctrl-C, printing the URL."""
    server = make_server(directory, port=port, quiet=quiet, timeout=timeout, threads=threads)
    print(f"Serving {Path(directory).resolve()} at {server.url} (127.0.0.1 only; Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
