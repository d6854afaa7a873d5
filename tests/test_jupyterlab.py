"""The LayerBrowser in a real JupyterLab: the kit's server settings and kernel, Chromium driving the page.

JupyterLab runs headless on 127.0.0.1 (a free port, a token) over a temporary root holding one small
notebook that builds a LayerBrowser on the default model with small settings, with the kit's
``nsfwkit`` kernel installed in a temporary Jupyter path and every Jupyter config/data folder
isolated. ``tests/jupyterlab_check.mjs`` (playwright-core + Debian's chromium) runs the notebook,
checks the widget rendered, drives the channel buttons, layer, mode and class controls and compares
the bytes of the pictures, and saves screenshots under ``dist/test-artifacts/jupyterlab/``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from nsfwkit import jupyter

from convert_helpers import ARTIFACTS, CHROMIUM, require_chromium

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.node]
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ARTIFACTS / "jupyterlab"
#: Lines of the server log that mean something is broken (the ES-module one: a package.json with
#: "type": "module" above JupyterLab's own scripts).
SERVER_ERRORS = re.compile(r"^\[E |Traceback|require is not defined in ES module scope|Fail to get yarn configuration|"
                           r"Could not determine jupyterlab build status", re.M)
CELLS = [
    "# LayerBrowser smoke test",
    "from nsfwkit import zoo\nfrom nsfwkit.widgets import LayerBrowser\n\nmodel, spec = zoo.load(\"mobilenet_v2\")",
    "browser = LayerBrowser(model, spec, layers=[\"block_3_expand_relu\", \"block_13_expand_relu\", \"out_relu\"],\n"
    "                       steps=4, examples_count=3)\nbrowser",
]


def _notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(CELLS[0])] + [nbformat.v4.new_code_cell(c) for c in CELLS[1:]]
    nb.metadata["kernelspec"] = {"name": jupyter.KERNEL_NAME, "display_name": "Python 3 (nsfwkit)",
                                 "language": "python"}
    nbformat.write(nb, path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer {url} in {timeout} s:\n{log.read_text()[-4000:]}")


def _isolated_env(tmp: Path) -> dict:
    prefix = tmp / "env"
    jupyter.install_kernel(prefix)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTEST_"))}
    env.update(JUPYTER_PATH=str(prefix / "share" / "jupyter"), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    return env


def test_layer_browser_in_jupyterlab(tmp_path):
    require_chromium()
    root = tmp_path / "root"  # outside the repository: the server's cwd and the kernels' cwd
    root.mkdir()
    _notebook(root / "browser.ipynb")
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    port, token, log = _free_port(), secrets.token_hex(16), tmp_path / "server.log"
    with open(log, "w") as sink:
        server = subprocess.Popen(jupyter.lab_command(root, port=port, token=token), cwd=root,
                                  env=_isolated_env(tmp_path), stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", server, log)
        request = tmp_path / "request.json"
        request.write_text(json.dumps({
            "url": f"http://127.0.0.1:{port}/", "token": token, "notebook": "browser.ipynb", "chromium": CHROMIUM,
            "user_data_dir": str(tmp_path / "profile"), "screenshots": str(SCREENSHOTS), "timeout_ms": 240000}))
        proc = subprocess.run(["node", str(ROOT / "tests" / "jupyterlab_check.mjs"), str(request)],
                              capture_output=True, text=True, timeout=1500, cwd=ROOT)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    shots = sorted(SCREENSHOTS.glob("*.png"))
    print("JupyterLab screenshots:\n  " + "\n  ".join(map(str, shots)), file=sys.stderr)
    server_log = log.read_text()
    shutil.copyfile(log, SCREENSHOTS / "server.log")

    assert result["failure"] is None, result["failure"] + "\n" + server_log[-3000:]
    assert result["kernels"] == [jupyter.KERNEL_NAME]
    assert not result["widget_errors"] and not result["fallback"], result
    assert all(width > 0 for width in result["panels"].values()), result["panels"]
    assert [s["name"] for s in result["steps"]] == ["channel-button", "layer", "mode-cam", "class", "mode-filter"]
    unchanged = [s["name"] for s in result["steps"] if not s["changed"]]
    assert not unchanged, f"the picture did not change after: {unchanged}"
    assert "(predicted)" not in result["steps"][3]["caption"] and " filter " in result["steps"][4]["caption"]
    assert any(t.startswith("computing") for t in result["status_log"]), "never said it was busy"
    assert result["stderr_outputs"] == [], "stray stderr in the notebook: " + " | ".join(result["stderr_outputs"])
    assert result["external"] == [], f"JupyterLab tried the network: {result['external']}"
    assert result["page_errors"] == [] and [m for m in result["console"] if m["type"] == "error"] == [], result
    assert not SERVER_ERRORS.findall(server_log), "\n".join(
        line for line in server_log.splitlines() if SERVER_ERRORS.search(line))[-3000:]
    assert len(shots) >= 6
