"""The kit's Jupyter set-up: its own kernel, and JupyterLab started the way the kit needs it.

**The ``nsfwkit`` kernel** ("Python 3 (nsfwkit)") runs this interpreter with TensorFlow's start-up
chatter kept out of the notebooks, without anything happening when a library user imports
``nsfwkit``:

* ``TF_CPP_MIN_LOG_LEVEL=2`` hides TensorFlow's C++ info and warning lines (``cpu_feature_guard``
  ... "rebuild TensorFlow with the appropriate compiler flags");
* the oneDNN note and absl's "All log messages before absl::InitializeLog()" are written to the
  process's stderr *before* that level applies. ipykernel copies such file-descriptor output into
  the notebook; the kit's kernel does not (``IPKernelApp.capture_fd_output=False``), so it goes to
  the terminal that started JupyterLab instead. Python's own output (``print``, warnings,
  tracebacks) is shown in the notebook as usual;
* ``-Xfrozen_modules=off``, as ``ipykernel install`` does, so the debugger works without warning.

``make setup`` installs it into the virtualenv (``python -m nsfwkit.jupyter kernel --prefix
.venv``); the notebooks name it in their metadata and ``nsfwkit run`` executes them with it.

**JupyterLab** (``make lab`` = ``python -m nsfwkit.jupyter lab``) opens on ``notebooks/``, listens on
127.0.0.1 only, never fetches news or update checks, offers no extension installs (read-only
extension manager) and opens no browser when ``$CI`` is set.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["KERNEL_NAME", "KERNEL_ENV", "kernel_spec", "install_kernel", "lab_command", "main"]

KERNEL_NAME = "nsfwkit"
#: Environment of the kit's kernel.
KERNEL_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}
#: JupyterLab settings: loopback only, no network calls of its own, no extension installs.
LAB_SETTINGS = (
    "--ServerApp.ip=127.0.0.1",
    "--LabApp.news_url=None",
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    "--LabApp.extension_manager=readonly",
)


def kernel_spec(*, python: str | None = None, env: Mapping[str, str] | None = None) -> dict:
    """The ``kernel.json`` of the kit's kernel for ``python`` (default: this interpreter).

    Args:
        python: the interpreter the kernel runs.
        env: entries added to (or overriding) :data:`KERNEL_ENV`.
    """
    return {
        "argv": [python or sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher",
                 "-f", "{connection_file}", "--IPKernelApp.capture_fd_output=False"],
        "display_name": "Python 3 (nsfwkit)",
        "language": "python",
        "env": {**KERNEL_ENV, **(env or {})},
        "metadata": {"debugger": True},
    }


def install_kernel(prefix: str | os.PathLike, *, python: str | None = None) -> Path:
    """Write the kit's kernel spec under ``<prefix>/share/jupyter/kernels/nsfwkit``; return that folder.

    Idempotent; only the kit's own kernel folder is written.
    """
    from .fileio import write_json

    folder = Path(prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME
    write_json(folder / "kernel.json", kernel_spec(python=python))
    try:
        from ipykernel.kernelspec import RESOURCES
    except ImportError:  # pragma: no cover - ipykernel is a dependency
        return folder
    for logo in Path(RESOURCES).glob("logo-*"):
        shutil.copyfile(logo, folder / logo.name)
    return folder


def lab_command(root: str | os.PathLike, *, port: int = 8888, token: str | None = None,
                open_browser: bool = False, python: str | None = None) -> list[str]:
    """The command line that starts JupyterLab on ``root`` with the kit's settings.

    Args:
        root: the folder JupyterLab shows (and the kernels' working directory).
        port: the port (JupyterLab tries the next ones when it is taken).
        token: the access token (default: JupyterLab makes one and prints the URL).
        open_browser: open the user's browser on start.
        python: the interpreter that has JupyterLab (default: this one).
    """
    cmd = [python or sys.executable, "-m", "jupyterlab", *LAB_SETTINGS, f"--ServerApp.root_dir={root}",
           f"--ServerApp.port={int(port)}", f"--ServerApp.open_browser={bool(open_browser)}"]
    if token is not None:
        cmd.append(f"--IdentityProvider.token={token}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--ServerApp.allow_root=True")  # containers and CI often run as root
    return cmd


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nsfwkit.jupyter kernel --prefix DIR`` | ``python -m nsfwkit.jupyter lab [--root DIR]``."""
    from . import paths

    parser = argparse.ArgumentParser(prog="python -m nsfwkit.jupyter", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    kernel = sub.add_parser("kernel", help="install the nsfwkit kernel spec")
    kernel.add_argument("--prefix", default=sys.prefix, help="environment prefix (default: this one)")
    lab = sub.add_parser("lab", help="start JupyterLab on the notebooks")
    lab.add_argument("--root", default=str(paths.repo_root() / "notebooks"), help="folder to open")
    lab.add_argument("--port", type=int, default=8888)
    args = parser.parse_args(argv)
    if args.command == "kernel":
        print(f"kernel {KERNEL_NAME!r} installed in {install_kernel(args.prefix)}")
        return 0
    try:
        install_kernel(sys.prefix)
    except OSError as exc:
        print(f"note: could not install the {KERNEL_NAME!r} kernel in {sys.prefix} ({exc}); "
              f"run `python -m nsfwkit.jupyter kernel --prefix <env>`", file=sys.stderr)
    cmd = lab_command(args.root, port=args.port, open_browser=not os.environ.get("CI"))
    os.execv(cmd[0], cmd)
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
