"""Helpers for the dataset / training / evaluation tests (imported by name; fixtures are in conftest.py).

* :func:`write_image` writes a generated image in a given format;
* :func:`tiny_dataset` writes a small folder-per-class dataset with distinguishable classes;
* :func:`tiny_backbone` saves a tiny classifier (``.keras`` + spec) that trains in milliseconds;
* :class:`HostileServer` is a loopback HTTP server with good and bad endpoints (404, hang,
  HTML, oversize, redirect loop, slow trickle, flaky 503, 429 with Retry-After) for the
  downloader tests.
"""

from __future__ import annotations

import http.server
import io
import socketserver
import threading
import time
from pathlib import Path

import numpy as np

from nsfwkit import demo_data


def encode(img: np.ndarray, fmt: str = "JPEG", **kwargs) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def write_image(path: Path, img: np.ndarray, fmt: str = "JPEG") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(img, fmt))
    return path


def tiny_dataset(root: Path, *, classes=("neutral", "porn"), per_class: int = 8, size: int = 48,
                 seed: int = 0) -> Path:
    """Distinguishable generated textures (gradient vs stripes ...), JPEG, one folder per class."""
    kinds = {"neutral": "gradient", "porn": "stripes", "drawings": "lineart", "sexy": "dots",
             "hentai": "flat_shapes", "sfw": "gradient", "nsfw": "stripes"}
    for ci, name in enumerate(classes):
        for i in range(per_class):
            img = demo_data.demo_image(kinds[name], size=(size, size), seed=seed * 1000 + ci * 100 + i)
            write_image(Path(root) / name / f"{name}_{i:03d}.jpg", img)
    return Path(root)


def tiny_backbone(folder: Path, *, image_size: int = 32, classes: int = 5, seed: int = 0,
                  dropout: float = 0.0) -> Path:
    """A tiny nsfwjs-shaped classifier saved as ``tiny.keras`` + ``tiny.spec.json``.

    Input "image" (raw 0-255) -> Rescaling -> Conv -> BN -> ReLU -> GAP -> Dense(8)
    [-> Dropout(dropout), as nsfwjs's models have] -> Dense(softmax).
    """
    import keras

    from nsfwkit.spec import NSFWJS_CLASSES, ModelSpec

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="rescale_0_255")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="out_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(8, activation="relu", name="dense_1")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout_1")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="dense_out")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.keras"
    model.save(path)
    ModelSpec(name="tiny", class_names=NSFWJS_CLASSES[:classes], image_size=image_size,
              last_conv_layer="out_relu", source="test").save(folder / "tiny.spec.json")
    return path


# ------------------------------------------------------------------------------------------
# A hostile HTTP server on 127.0.0.1
# ------------------------------------------------------------------------------------------
PNG_BYTES = encode(np.full((20, 30, 3), 200, np.uint8), "PNG")
JPEG_BYTES = encode(demo_data.demo_image("stripes", size=(40, 40), seed=1))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: dict = {}

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/octet-stream",
              headers: dict | None = None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802, C901 (one hostile test server, a route per branch)
        path = self.path.split("?")[0]
        self.server.hits[path] = self.server.hits.get(path, 0) + 1
        self.server.times.setdefault(path, []).append(time.monotonic())
        try:
            if path.startswith("/ok/") and path.endswith(".png"):
                self._send(200, PNG_BYTES, "image/png")
            elif path.startswith("/ok/"):
                self._send(200, JPEG_BYTES, "image/jpeg")
            elif path == "/missing.jpg":
                self._send(404, b"<html>not found</html>", "text/html")
            elif path == "/html.jpg":
                self._send(200, b"<!DOCTYPE html><html><body>Please log in</body></html>",
                           "image/jpeg")
            elif path == "/huge.jpg":
                self._send(200, JPEG_BYTES + b"\0" * 300_000, "image/jpeg")
            elif path == "/huge-nolength.jpg":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Connection", "close")
                self.end_headers()
                for _ in range(40):
                    self.wfile.write(b"\xff" * 10_000)
                self.close_connection = True
            elif path == "/loop.jpg":
                self._send(302, b"", headers={"Location": "/loop2.jpg"})
            elif path == "/loop2.jpg":
                self._send(302, b"", headers={"Location": "/loop.jpg"})
            elif path == "/redirect.jpg":
                self._send(301, b"", headers={"Location": "/ok/target.jpg"})
            elif path == "/hang.jpg":
                time.sleep(self.server.hang_s)
                self._send(200, JPEG_BYTES, "image/jpeg")
            elif path == "/trickle.jpg":
                self.send_response(200)
                self.send_header("Content-Length", str(len(JPEG_BYTES)))
                self.end_headers()
                for i in range(0, len(JPEG_BYTES), 64):
                    self.wfile.write(JPEG_BYTES[i:i + 64])
                    self.wfile.flush()
                    time.sleep(0.1)
            elif path == "/flaky.jpg":
                if self.server.hits[path] < 2:
                    self._send(503, b"busy", "text/plain")
                else:
                    self._send(200, JPEG_BYTES, "image/jpeg")
            elif path == "/ratelimited.jpg":  # 429 with Retry-After: 1 s, then the image
                if self.server.hits[path] < 2:
                    self._send(429, b"slow down", "text/plain", headers={"Retry-After": "1"})
                else:
                    self._send(200, JPEG_BYTES, "image/jpeg")
            elif path == "/ratelimited-long.jpg":  # asks for an hour
                self._send(429, b"slow down", "text/plain", headers={"Retry-After": "3600"})
            elif path == "/truncated.jpg":
                self._send(200, JPEG_BYTES[: len(JPEG_BYTES) // 2], "image/jpeg")
            else:
                self._send(404, b"no", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # clients hanging up on purpose: quiet
        pass


class HostileServer:
    """``with HostileServer() as srv: srv.url("/ok/a.jpg")`` -- a loopback-only test server."""

    def __init__(self, *, hang_s: float = 3.0):
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.hits = {}
        self.server.times = {}
        self.server.hang_s = hang_s
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    @property
    def hits(self) -> dict:
        return self.server.hits

    @property
    def times(self) -> dict:
        """``{path: [time.monotonic() of each request]}``."""
        return self.server.times

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
