"""The kit's Jupyter kernel and JupyterLab command line."""

from __future__ import annotations

import json
import sys

import pytest

from nsfwkit import jupyter

TF_NOISE = ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard")


def test_kernel_spec_and_install(tmp_path, monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager

    folder = jupyter.install_kernel(tmp_path)
    assert folder == tmp_path / "share" / "jupyter" / "kernels" / "nsfwkit"
    assert json.loads((folder / "kernel.json").read_text()) == jupyter.kernel_spec()
    assert (folder / "logo-64x64.png").is_file()
    jupyter.install_kernel(tmp_path)  # idempotent
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    spec = KernelSpecManager().get_kernel_spec("nsfwkit")
    assert spec.argv[0] == sys.executable and "--IPKernelApp.capture_fd_output=False" in spec.argv
    assert spec.env == {"TF_CPP_MIN_LOG_LEVEL": "2"} and spec.display_name == "Python 3 (nsfwkit)"
    assert jupyter.kernel_spec(env={"TF_CPP_MIN_LOG_LEVEL": "0", "X": "1"})["env"] == {"TF_CPP_MIN_LOG_LEVEL": "0",
                                                                                      "X": "1"}


def test_lab_command(tmp_path):
    cmd = jupyter.lab_command(tmp_path, port=9999, token="t0k")
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"]
    for setting in ("--ServerApp.ip=127.0.0.1", "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
                    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                    f"--ServerApp.root_dir={tmp_path}", "--ServerApp.port=9999", "--ServerApp.open_browser=False",
                    "--IdentityProvider.token=t0k"):
        assert setting in cmd
    assert "--ServerApp.open_browser=True" in jupyter.lab_command(tmp_path, open_browser=True)


def _streams_of(kernel_name: str, code: str, *, linger: float = 3.0) -> tuple[str, str]:
    """stdout and stderr a notebook would show for ``code``, including output that arrives late
    (ipykernel forwards file-descriptor output from a watcher thread, after the cell is idle)."""
    import queue
    import time

    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=120)
    out: dict[str, str] = {"stdout": "", "stderr": ""}
    try:
        msg_id, idle_at = kc.execute(code), None
        while idle_at is None or time.monotonic() - idle_at < linger:
            try:
                msg = kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if msg["msg_type"] == "stream":
                out[msg["content"]["name"]] += msg["content"]["text"]
            elif (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
                  and msg["parent_header"].get("msg_id") == msg_id):
                idle_at = time.monotonic()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return out["stdout"], out["stderr"]


@pytest.mark.slow
def test_kit_kernel_keeps_tensorflow_start_up_out_of_the_notebook(tmp_path, monkeypatch):
    jupyter.install_kernel(tmp_path)
    plain = jupyter.kernel_spec()  # the same kernel with ipykernel's default fd capture: the control
    plain["argv"] = [a for a in plain["argv"] if "capture_fd_output" not in a]
    control = tmp_path / "share" / "jupyter" / "kernels" / "fd-capture"
    control.mkdir()
    (control / "kernel.json").write_text(json.dumps(plain))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    monkeypatch.delenv("PYTEST_CURRENT_TEST")  # ipykernel never captures fd output under pytest
    code = "import tensorflow as tf\nprint('sum', int(tf.constant(1) + 1))"

    out, err = _streams_of("nsfwkit", code)
    assert "sum 2" in out and not [n for n in TF_NOISE if n in err], err
    out, err = _streams_of("fd-capture", code)
    assert "sum 2" in out and [n for n in TF_NOISE if n in err], "control: TensorFlow printed nothing at start-up?"
