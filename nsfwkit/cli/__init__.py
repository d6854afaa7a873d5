"""The ``nsfwkit`` command line: one module per command group, one error path.

=====================  =========================================================
``classify``           :mod:`nsfwkit.cli.classify` (``--out DIR``: :mod:`nsfwkit.cli.results`)
``results``            :mod:`nsfwkit.cli.results` (read a ``classify --out`` folder back)
``run``                :mod:`nsfwkit.cli.run` (the notebook series)
``models``             :mod:`nsfwkit.cli.models` (the offline pretrained models)
``demo-data``, ``download``, ``prepare``, ``train``, ``evaluate``
                       :mod:`nsfwkit.cli.data`
``export``, ``serve``, ``build-web``
                       :mod:`nsfwkit.cli.convert`
``visualize``          :mod:`nsfwkit.cli.viz`
=====================  =========================================================

Each module has ``register(subparsers)``; its handlers raise
:class:`~nsfwkit.cli.errors.CommandError`, which :func:`main` alone turns into one line on stderr,
``nsfwkit <command>: <what> — <why>``, and the exit status: 0 ok, 1 some inputs failed or the work
failed, 2 usage error (see :mod:`nsfwkit.cli.errors`). TensorFlow is imported inside the handlers
only, so ``nsfwkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import fileio
from . import classify, convert, data, models, results, run, viz
from .errors import FAILED, USAGE, CommandError, from_argparse, from_exception, report

__all__ = ["main", "build_parser", "CommandError"]

#: The command groups, in ``nsfwkit --help`` order.
_GROUPS = (classify, results, run, models, data, convert, viz)


class _Parser(argparse.ArgumentParser):
    """argparse's own errors (unknown flag, bad value) go through the same error path."""

    commands = None  #: the sub-commands (``add_subparsers``'s action)

    def add_subparsers(self, **kwargs):
        self.commands = super().add_subparsers(**kwargs)
        return self.commands

    def error(self, message: str):
        self.print_usage(sys.stderr)
        raise from_argparse(self.prog, message)


def _quiet_tensorflow() -> None:
    # Must be set before TensorFlow is imported; only for the CLI process, never on import.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


#: What each command's exit status means (``nsfwkit --help`` prints it).
EXIT_CODES = """\
exit status (every command: 2 = usage error, e.g. bad flags, a missing input, an output folder the kit
  does not own or cannot write (checked before any work); 1 = the output folder is in use by another
  nsfwkit process (its PID is named); 130 = interrupted):
  classify    0 every file classified; 1 some files failed (each reported); 2 also: no image files
  prepare     0 manifest written (quarantined files are reported in quarantine.csv, not failures)
  download    0 every URL fetched or already there; 1 some URLs failed (see the report)
  train       0 model written; 1 the run trained 0 steps (nothing saved); 2 also: unusable manifest,
              missing files (see --skip-missing) or a run folder with another config
  evaluate    0 report written (a target the val split cannot support is stated, not an error);
              2 also: an empty val/test split, a val split without NSFW or safe images, or
              missing files (see --skip-missing)
  demo-data   0 written; 2 also: the folder holds files the kit did not write
  run         0 every stage ran; 1 a stage (notebook cell) failed
  export      0 exported; 1 the conversion failed or the converter is missing
  serve       0 stopped; 1 cannot listen on the port
  build-web   0 built; 1 a file could not be written
  visualize   0 written; 1 the image could not be used
  models      0 built / listed
"""


def build_parser() -> _Parser:
    from .. import __version__

    parser = _Parser(prog="nsfwkit",
                     description="NSFW image classification research kit (Keras 3 / TensorFlow).",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"nsfwkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in _GROUPS:
        group.register(sub)
    return parser


def _parse(parser: _Parser, argv) -> argparse.Namespace:
    """Parse; arguments no sub-command knows are that sub-command's error, not the top level's."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = parser.commands.choices.get(args.command, parser) if parser.commands else parser
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status. Every failure is reported here, once."""
    _quiet_tensorflow()
    parser = build_parser()
    prog = parser.prog
    try:
        args = _parse(parser, argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return USAGE
        prog = f"{parser.prog} {args.command}"
        return int(args.func(args) or 0)
    except CommandError as exc:
        error = exc
    except KeyboardInterrupt:
        error = CommandError("interrupted", "stopped by the user", code=130)
    except BrokenPipeError:  # `nsfwkit classify DIR | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (fileio.ForeignFolderError, fileio.UnwritableFolderError) as exc:  # refused before any work
        error = from_exception(exc, "output folder", code=USAGE)
    except fileio.FolderBusyError as exc:  # another nsfwkit process writes there: try again later
        error = from_exception(exc, "output folder", code=FAILED)
    except OSError as exc:  # a file no handler expected to fail (disk full, permissions...)
        error = from_exception(exc, "file", code=FAILED)
    report(error.prog or prog, error.what, error.why)
    return error.code
