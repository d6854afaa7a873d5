"""``nsfwkit run``: the notebook series through papermill into ``dist/runs/<name>/``.

Exit status: 0 every stage ran, 1 a notebook failed (the message names it and the cell), 2 usage
error (unknown parameter set or stage, bad run name).
"""

from __future__ import annotations

import argparse
import sys

from .errors import FAILED, OK, from_exception

__all__ = ["register"]


def _cmd_run(args: argparse.Namespace) -> int:
    from .. import pipeline

    try:
        run_dir = pipeline.run(args.params, name=args.name, select=args.stages or None,
                               progress=not args.quiet and sys.stderr.isatty(),
                               log_output=args.log_output, timeout=args.timeout)
    except ValueError as exc:
        raise from_exception(exc, args.params) from None
    except pipeline.StageFailed as exc:
        raise from_exception(exc, exc.stage, code=FAILED) from None
    print(f"nsfwkit run: done. Run folder: {run_dir}")
    for nb in sorted((run_dir / "notebooks").glob("*.ipynb")):
        stage_dir = run_dir / nb.stem
        print(f"  {nb.stem:<16} notebook {nb}" + (f"\n  {'':<16} outputs  {stage_dir}" if stage_dir.is_dir() else ""))
    return OK


def register(subparsers) -> None:
    """Add ``run``."""
    p = subparsers.add_parser("run", help="run the notebook series with papermill into dist/runs/<name>/")
    p.add_argument("--params", default="full", help="smoke, full (default) or a YAML file")
    p.add_argument("--stages", nargs="*", default=None, help="stages to run (e.g. 00_classify or 04)")
    p.add_argument("--name", default=None, help="run folder name (default: a timestamp)")
    p.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    p.add_argument("--log-output", action="store_true", help="echo notebook output")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_run)
