"""Serve a folder (the built web view, an export) on 127.0.0.1 only.

A static file server with four guarantees: it binds the loopback interface only; it answers
only requests addressed to it by a loopback name (``Host: 127.0.0.1:<port>`` or
``localhost:<port>``; anything else gets 421, a missing Host 400), so a web page whose DNS name
is rebound to 127.0.0.1 cannot read the folder; it never serves anything outside its folder
(``..``, absolute paths and symlinks that leave the folder answer 404; a path that is not UTF-8
answers 400); and it sends the headers a TF.js page needs (``application/wasm``, no caching,
``nosniff``). It is for looking at the web view (``dist/web/``) locally, not for deployment.

>>> server = make_server("dist", port=0)      # port 0: pick a free one
>>> server.url
'http://127.0.0.1:43121/'
"""

from __future__ import annotations

import functools
import http.server
import os
import posixpath
import threading
import urllib.parse
from pathlib import Path

__all__ = ["HOST", "make_server", "serve", "serve_in_thread"]

HOST = "127.0.0.1"
_TYPES = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
          ".json": "application/json", ".bin": "application/octet-stream", ".css": "text/css",
          ".svg": "image/svg+xml", ".webp": "image/webp"}


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **_TYPES}

    def __init__(self, *args, directory: str, quiet: bool, **kwargs):
        self._root = Path(directory).resolve()
        self._quiet = quiet
        super().__init__(*args, directory=str(self._root), **kwargs)

    def _allowed_hosts(self) -> set[str]:
        port = self.server.server_address[1]
        return {f"{HOST}:{port}", f"localhost:{port}"}

    def parse_request(self) -> bool:
        """The stdlib's parsing, then the Host check (DNS rebinding) and a UTF-8 path check."""
        if not super().parse_request():
            return False
        host = self.headers.get("Host")
        if host is None:
            self.send_error(400, "Bad request: a Host header is required")
            return False
        if host.strip().lower() not in self._allowed_hosts():
            self.send_error(421, "Misdirected request: this server answers to 127.0.0.1 or localhost only")
            return False
        try:
            urllib.parse.unquote(urllib.parse.urlsplit(self.path).path, errors="strict")
        except (UnicodeDecodeError, ValueError):
            self.send_error(400, "Bad request: the path is not valid UTF-8")
            return False
        return True

    def translate_path(self, path: str) -> str:
        """Map a URL path into the folder; anything that would leave it maps to nowhere."""
        try:
            path = urllib.parse.unquote(urllib.parse.urlsplit(path).path, errors="strict")
        except (UnicodeDecodeError, ValueError):
            return str(self._root / ".nsfwkit-refused")
        parts = [p for p in posixpath.normpath(path).split("/") if p]
        if any(p in ("..", ".") or "\\" in p or "\0" in p or os.sep in p for p in parts):
            return str(self._root / ".nsfwkit-refused")  # never exists: 404
        candidate = self._root.joinpath(*parts)
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError):
            return str(self._root / ".nsfwkit-refused")
        if resolved != self._root and not resolved.is_relative_to(self._root):
            return str(self._root / ".nsfwkit-refused")  # e.g. a symlink pointing out
        out = str(resolved)
        if path.endswith("/") and not out.endswith(os.sep):
            out += os.sep
        return out

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


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"


def make_server(directory: str | os.PathLike, *, port: int = 0, quiet: bool = True) -> _Server:
    """A threading HTTP server for ``directory`` on 127.0.0.1:``port`` (0 = any free port).

    Raises:
        NotADirectoryError: ``directory`` is not a folder.
        OSError: the port is taken.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder (build the web view with `nsfwkit build-web`)")
    handler = functools.partial(_Handler, directory=str(root), quiet=quiet)
    return _Server((HOST, int(port)), handler)


def serve_in_thread(directory: str | os.PathLike, *, port: int = 0) -> _Server:
    """Start :func:`make_server` in a daemon thread; call ``.shutdown()`` to stop it."""
    server = make_server(directory, port=port)
    threading.Thread(target=server.serve_forever, name="nsfwkit-serve", daemon=True).start()
    return server


def serve(directory: str | os.PathLike, *, port: int = 8000, quiet: bool = False) -> None:
    """Serve ``directory`` until Ctrl-C, printing the URL."""
    server = make_server(directory, port=port, quiet=quiet)
    print(f"Serving {Path(directory).resolve()} at {server.url} (127.0.0.1 only; Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
