"""The command line's one error path.

A command that fails raises :class:`CommandError`; :func:`nsfwkit.cli.main` catches it once and
prints one line on stderr, ``nsfwkit <command>: <what> — <why>``, then exits with its code:

* ``0`` (:data:`OK`) everything succeeded;
* ``1`` (:data:`FAILED`) some inputs failed (each reported) or the work itself failed;
* ``2`` (:data:`USAGE`) usage error: bad flags, unknown model, a refused output folder, no inputs.

argparse's own errors (unknown flag, bad value) take the same form and code 2. Inputs that fail
inside a batch that goes on (a bad image among many) are reported with :func:`report`, in the
same format, and the command exits 1 at the end.
"""

from __future__ import annotations

import re
import sys

__all__ = ["OK", "FAILED", "USAGE", "CommandError", "from_exception", "from_argparse", "report"]

OK, FAILED, USAGE = 0, 1, 2


class CommandError(Exception):
    """A command's failure: ``<what>`` (the file, flag or model concerned) and ``<why>``.

    ``prog`` is set for argparse errors, which know their sub-command's name before ``main`` does.
    """

    def __init__(self, what, why: str, *, code: int = USAGE, prog: str | None = None):
        self.what, self.why, self.code, self.prog = str(what), str(why), code, prog
        super().__init__(f"{self.what} — {self.why}")


def from_exception(exc: BaseException, what, *, code: int = USAGE) -> CommandError:
    """A :class:`CommandError` for ``exc``, naming its file once.

    The kit's messages read ``<subject>: <reason>``; that subject (a path, a model name) becomes
    ``<what>``. ``what`` is the subject when the message names none (or for an ``OSError`` without
    a file name).
    """
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return CommandError(exc.filename, exc.strerror, code=code)
    message = str(exc).strip() or type(exc).__name__
    head, sep, tail = message.partition(": ")
    if sep and head and not any(c.isspace() for c in head):
        return CommandError(head, tail, code=code)
    return CommandError(what, message, code=code)


_ARGUMENT = re.compile(r"argument (?P<what>[^:]+): (?P<why>.+)", re.S)
_REQUIRED = re.compile(r"the following arguments are required: (?P<what>.+)", re.S)
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (?P<what>.+)", re.S)


def from_argparse(prog: str, message: str) -> CommandError:
    """argparse's ``error(message)`` as a usage :class:`CommandError` of ``prog``."""
    if m := _ARGUMENT.fullmatch(message):
        return CommandError(m["what"], m["why"], prog=prog)
    if m := _REQUIRED.fullmatch(message):
        return CommandError(m["what"], "required", prog=prog)
    if m := _UNRECOGNIZED.fullmatch(message):
        return CommandError(m["what"], "unrecognized arguments", prog=prog)
    return CommandError("arguments", message, prog=prog)


def report(prog: str, what, why: str) -> None:
    """Print ``<prog>: <what> — <why>`` on stderr (a failure, or one failed input of a batch).

    Both parts go through :func:`nsfwkit.inputs.display_path`: control characters and bytes that
    are not UTF-8 in a file name are escaped, never sent to the terminal raw.
    """
    from ..inputs import display_path

    print(f"{prog}: {CommandError(display_path(str(what)), display_path(str(why)))}", file=sys.stderr)
