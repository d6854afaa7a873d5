"""Progress bars that stay readable wherever they are shown.

``tqdm.auto`` draws a widget inside Jupyter: after a page reload (or in a saved, executed notebook)
the widget's model is gone and the output shows "Error displaying widget: model not found". The
kit's bars are plain-text ``tqdm`` instead: on a terminal they go to stderr (stdout stays clean for
results such as ``nsfwkit classify --format jsonl``); inside a Jupyter kernel they go to stdout, as
ordinary text that JupyterLab redraws in place (``\\r``) and that survives a reload.
"""

from __future__ import annotations

import sys

__all__ = ["in_kernel", "progress_bar"]


def in_kernel() -> bool:
    """True when ``sys.stdout`` is a Jupyter kernel's output stream (notebook, papermill)."""
    return type(sys.stdout).__module__.startswith("ipykernel")


def progress_bar(iterable=None, **kwargs):
    """A text ``tqdm`` bar: stdout in a Jupyter kernel (updated at most twice a second), else stderr.

    Takes ``tqdm``'s arguments (``total``, ``desc``, ``unit``, ``disable``, ``leave``...); ``file``,
    ``mininterval`` and ``ncols`` are only defaults.
    """
    from tqdm.std import tqdm

    if in_kernel():
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("mininterval", 0.5)
        kwargs.setdefault("ncols", 100)
    else:
        kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, **kwargs)
