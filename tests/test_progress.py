"""Progress bars are plain text: stderr on a terminal, stdout inside a Jupyter kernel (no widgets)."""

from __future__ import annotations

import io
import sys

from nsfwkit.progress import in_kernel, progress_bar


class KernelStream(io.StringIO):
    """Stands in for ipykernel's OutStream (what sys.stdout is inside a notebook)."""


KernelStream.__module__ = "ipykernel.iostream"


def kernel_stdout(monkeypatch) -> KernelStream:
    """Make this test's sys.stdout look like a kernel's (inside the test: capturing swaps it at call time)."""
    stream = KernelStream()
    monkeypatch.setattr(sys, "stdout", stream)
    return stream


def test_outside_a_kernel_bars_go_to_stderr(capsys):
    assert not in_kernel()
    for _ in progress_bar(range(3), desc="work"):
        pass
    out = capsys.readouterr()
    assert "work" in out.err and "3/3" in out.err and out.out == ""


def test_inside_a_kernel_bars_are_text_on_stdout(capsys, monkeypatch):
    stream = kernel_stdout(monkeypatch)
    assert in_kernel()
    bar = progress_bar(total=2, desc="steps", leave=True)
    bar.update(2)
    bar.close()
    assert "steps" in stream.getvalue() and "2/2" in stream.getvalue()
    assert capsys.readouterr().err == ""


def test_filter_progress_follows(capsys, monkeypatch, branching_model):
    from nsfwkit.viz import filters

    stream = kernel_stdout(monkeypatch)
    filters.maximize_filters(branching_model, "stem", filters=1, recipe="classic", steps=2)
    assert "stem (classic)" in stream.getvalue()
    assert "stem" not in capsys.readouterr().err
