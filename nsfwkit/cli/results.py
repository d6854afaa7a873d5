"""``classify --out DIR`` (resumable Parquet shards, ``--engine ray``) and ``nsfwkit results DIR``.

Exit status as ``classify``: 0 every input classified, 1 some failed (in this run or, for inputs a
resumed run skipped, in an earlier one), 2 usage error (including a refused or busy ``--out`` folder).
"""

from __future__ import annotations

import argparse
import sys

from ..inputs import display_path, skipped_summary
from .errors import FAILED, OK, CommandError, from_exception, report

__all__ = ["register", "add_out_arguments", "check_out_arguments", "classify_out"]


def add_out_arguments(p: argparse.ArgumentParser) -> None:
    """The ``classify`` flags of a resumable run."""
    g = p.add_argument_group("resumable results (--out)")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="write results as Parquet shards into DIR; the same command resumes (nsfwkit results DIR)")
    g.add_argument("--verify", action="store_true",
                   help="with --out: recognise done files by content SHA-256 instead of size + mtime")
    g.add_argument("--shard-size", type=int, default=1000, help="with --out: inputs per Parquet shard")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="with --out: ray = decoding tasks + model actors on Ray Data (pip install 'nsfwkit[ray]')")
    g.add_argument("--address", default=None,
                   help="--engine ray: a Ray cluster to join (e.g. 10.0.0.1:6379 or auto); default: embedded local Ray")
    g.add_argument("--actors", type=int, default=1, help="--engine ray: model actors (each loads the model once)")
    g.add_argument("--gpu", action="store_true", help="--engine ray: one GPU per model actor")


def check_out_arguments(args: argparse.Namespace) -> None:
    """Refuse the resumable-run flags without ``--out`` (they would silently do nothing)."""
    if args.out is not None:
        return
    for flag, used in (("--engine", args.engine != "local"), ("--address", args.address is not None),
                       ("--verify", args.verify), ("--actors", args.actors != 1), ("--gpu", args.gpu)):
        if used:
            raise CommandError(flag, "needs --out DIR (results go to Parquet shards there)")


def classify_out(args: argparse.Namespace, model_source: str, spec, nsfw_classes, sampling: dict | None = None) -> int:
    """``classify ... --out DIR``: the resumable run; a summary line on stderr."""
    from ..fileio import FolderBusyError, ForeignFolderError
    from ..results import ResultsFolderError, classify_to

    if args.shard_size < 1:
        raise CommandError("--shard-size", f"must be at least 1, got {args.shard_size}")
    ray_options = {"address": args.address, "actors": args.actors, "gpu": args.gpu,
                   "input_scale": args.input_scale} if args.engine == "ray" else None

    def on_result(result) -> None:
        if not result.ok and not args.quiet:
            report("nsfwkit classify", result.path, result.error)

    try:
        run = classify_to(args.out, args.paths, model=model_source if args.engine == "ray" else args.loaded_model,
                          spec=spec, threshold=args.threshold, nsfw_classes=nsfw_classes,
                          recursive=not args.no_recursive, frames=args.frames or "worst", verify=args.verify,
                          rows_per_shard=args.shard_size, engine=args.engine, ray_options=ray_options,
                          on_result=on_result, batch_size=args.batch_size, safe_mode=not args.unsafe_load,
                          progress=sys.stderr.isatty() and not args.quiet,
                          **{k: v for k, v in (sampling or {}).items() if v is not None})
    except (ForeignFolderError, FolderBusyError, ResultsFolderError) as exc:
        raise from_exception(exc, args.out) from None
    except (ValueError, ImportError) as exc:  # e.g. --engine ray without Ray installed, or too few CPUs for --actors
        raise CommandError("--engine ray" if args.engine == "ray" else args.out, str(exc)) from None
    for error in run["folder_errors"]:
        report("nsfwkit classify", error.path, error.reason)
    for problem in run["problems"]:
        report("nsfwkit classify", args.out, problem)
    skips = skipped_summary(run["skipped_inputs"])
    if args.report_skipped:
        for entry in run["skipped_inputs"]:
            print(f"nsfwkit classify: skipped {display_path(entry.path)} — {entry.reason}", file=sys.stderr)
    if run["classified"] + run["skipped"] == 0 and not run["folder_errors"]:
        raise CommandError(" ".join(args.paths), "no image files found in the given paths"
                           + (f" ({skips})" if skips else ""))
    if not args.quiet:
        extra = f", {run['flagged']} flagged at threshold {args.threshold}" if args.threshold is not None else ""
        skips = f", {skips}{'' if args.report_skipped else '; --report-skipped lists them'}" if skips else ""
        print(f"nsfwkit classify: {run['classified'] - run['failed']} classified, {run['failed']} failed, "
              f"{run['skipped']} already done ({run['skipped_failed']} of them failed), "
              f"{len(run['removed'])} removed since the last run{skips}{extra} "
              f"(model {display_path(spec.name)}) -> {display_path(str(args.out))}", file=sys.stderr)
    return FAILED if run["failed"] or run["skipped_failed"] or run["folder_errors"] else OK


def _cmd_results(args: argparse.Namespace) -> int:
    from ..classify import Writer
    from ..results import ResultsFolderError, read_results, read_table

    try:
        table = read_table(args.folder)
        results = read_results(args.folder, flagged=args.flagged)
    except (ResultsFolderError, OSError) as exc:
        raise from_exception(exc, args.folder) from None
    class_names = [c[5:] for c in table.column_names if c.startswith("prob_")]
    has_frames = any(r.frame is not None for r in results)
    threshold = 0.5 if any(r.flagged is not None for r in results) else None  # only switches the column on
    writer = Writer(args.format, class_names, sys.stdout, threshold=threshold, frames=has_frames)
    for result in results:
        writer.write(result)
    return OK


def register(subparsers) -> None:
    """Add ``results``."""
    p = subparsers.add_parser("results", help="print the results of classify --out DIR",
                              description="Read a classify --out folder back: one row per input, last run wins.")
    p.add_argument("folder", metavar="DIR")
    p.add_argument("--format", choices=("jsonl", "csv", "table"), default="jsonl")
    p.add_argument("--flagged", action="store_true", help="only inputs flagged at the run's --threshold")
    p.set_defaults(func=_cmd_results)
