"""The ``nsfwkit`` command line.

Exit status: 0 when everything succeeded, 1 when some inputs failed (each reported), 2 on usage
errors (bad flags, unknown model, no image files in the given paths); per command in
:data:`EXIT_CODES` (shown by ``nsfwkit --help``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

__all__ = ["main", "build_parser"]

#: Modules that add their own subcommands through ``register(subparsers)``.
_EXTENSIONS = ("nsfwkit.cli_data", "nsfwkit.cli_convert", "nsfwkit.cli_viz")


#: What each command's exit status means (``nsfwkit --help`` prints it).
EXIT_CODES = """\
exit status (every command: 2 = usage error, e.g. bad flags or a missing input; 130 = interrupted):
  classify    0 every file classified; 1 some files failed (each reported); 2 also: no image files
  prepare     0 manifest written (quarantined files are reported in quarantine.csv, not failures)
  download    0 every URL fetched or already there; 1 some URLs failed (see the report)
  train       0 model written; 2 also: unusable manifest or a run folder with another config
  evaluate    0 report written (a target the val split cannot support is stated, not an error);
              2 also: an empty val/test split, or a val split without NSFW or safe images
  demo-data   0 written; 2 also: the folder holds files the kit did not write
  run         0 every stage ran; 1 a stage (notebook cell) failed
  export      0 exported; 1 the conversion failed or the converter is missing
  serve       0 stopped; 1 cannot listen on the port
  build-web   0 built; 1 a file could not be written
  visualize   0 written; 1 the image could not be used
  models      0 built / listed
"""


class UsageError(Exception):
    """Bad arguments: reported on stderr with exit status 2."""


def _quiet_tensorflow() -> None:
    # Must be set before TensorFlow is imported; only for the CLI process, never on import.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _cmd_classify(args: argparse.Namespace) -> int:
    from . import zoo
    from .classify import Writer, classify

    if not 1 <= args.batch_size <= 1024:
        raise UsageError("--batch-size must be between 1 and 1024")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UsageError("--threshold must be between 0 and 1")
    try:
        model, spec = zoo.load(args.model, safe_mode=not args.unsafe_load, input_scale=args.input_scale)
    except (zoo.ModelNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    nsfw_classes = None
    if args.nsfw_classes:
        nsfw_classes = [c.strip() for c in args.nsfw_classes.split(",") if c.strip()]
        unknown = [c for c in nsfw_classes if c not in spec.class_names]
        if unknown:
            raise UsageError(f"--nsfw-classes: unknown {unknown}; the model's classes are {list(spec.class_names)}")
    if nsfw_classes is None and not spec.nsfw_classes and args.threshold is not None:
        raise UsageError(f"the model's classes {list(spec.class_names)} include none of the default NSFW "
                         "classes; say which to sum with --nsfw-classes")
    threshold = args.threshold
    writer = Writer(args.format, spec.class_names, sys.stdout, threshold=threshold)
    total = failed = flagged = 0
    progress = sys.stderr.isatty() and not args.quiet
    for result in classify(args.paths, model=model, spec=spec, batch_size=args.batch_size,
                           threshold=threshold, nsfw_classes=nsfw_classes, progress=progress,
                           recursive=not args.no_recursive):
        writer.write(result)
        total += 1
        failed += not result.ok
        flagged += bool(result.flagged)
        if not result.ok and args.format != "table" and not args.quiet:
            print(f"error: {result.path}: {result.error}", file=sys.stderr)
    if total == 0:
        print("nsfwkit classify: no image files found in the given paths", file=sys.stderr)
        return 2
    if not args.quiet:
        extra = f", {flagged} flagged at threshold {threshold}" if threshold is not None else ""
        print(f"nsfwkit classify: {total - failed} classified, {failed} failed{extra} "
              f"(model {spec.name})", file=sys.stderr)
    return 1 if failed else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from . import pipeline

    try:
        run_dir = pipeline.run(args.params, name=args.name, select=args.stages or None,
                               progress=not args.quiet and sys.stderr.isatty(),
                               log_output=args.log_output, timeout=args.timeout)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except pipeline.StageFailed as exc:
        print(f"nsfwkit run: {exc}", file=sys.stderr)
        return 1
    print(f"nsfwkit run: done. Run folder: {run_dir}")
    for nb in sorted((run_dir / "notebooks").glob("*.ipynb")):
        stage_dir = run_dir / nb.stem
        print(f"  {nb.stem:<16} notebook {nb}" + (f"\n  {'':<16} outputs  {stage_dir}" if stage_dir.is_dir() else ""))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from . import zoo

    if args.action == "build":
        names = args.names or list(zoo.PRETRAINED)
        unknown = [n for n in names if n not in zoo.PRETRAINED]
        if unknown:
            raise UsageError(f"unknown models {unknown}; choose from {list(zoo.PRETRAINED)}")
        zoo.build(names, source=args.nsfwjs, force=args.force)
    else:
        for name, ready in zoo.available().items():
            default = " (default)" if name == zoo.DEFAULT_MODEL else ""
            print(f"{name:<14} {'built' if ready else 'not built'}{default}")
        from . import paths

        print(f"cache: {paths.models_dir()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="nsfwkit", description="NSFW image classification research kit (Keras 3 / TensorFlow).",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"nsfwkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("classify", help="classify image files and folders",
                       description="Classify images; one line per input, bad files reported one by one.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders (recursive)")
    p.add_argument("--model", default="mobilenet_v2",
                   help="mobilenet_v2 (default), inception_v3, a .keras/.h5 file, or keras:<Application>")
    p.add_argument("--format", choices=("table", "csv", "jsonl"), default="table")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threshold", type=float, default=None,
                   help="flag images whose NSFW score (sum of the NSFW classes) is at least this")
    p.add_argument("--nsfw-classes", default=None,
                   help="comma-separated classes summed into the NSFW score (default Hentai,Porn,Sexy)")
    p.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    p.add_argument("--input-scale", type=float, default=None,
                   help="for a model file that expects scaled pixels (e.g. 1/255 = 0.0039215686 for "
                        "GantMan's .h5 models): the scale to apply to raw 0-255 RGB")
    p.add_argument("--unsafe-load", action="store_true",
                   help="load model files outside Keras safe mode (only for files you trust)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_cmd_classify)

    p = sub.add_parser("run", help="run the notebook series with papermill into dist/runs/<name>/")
    p.add_argument("--params", default="full", help="smoke, full (default) or a YAML file")
    p.add_argument("--stages", nargs="*", default=None, help="stages to run (e.g. 00_classify or 04)")
    p.add_argument("--name", default=None, help="run folder name (default: a timestamp)")
    p.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    p.add_argument("--log-output", action="store_true", help="echo notebook output")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("models", help="build or list the offline pretrained models")
    p.add_argument("action", choices=("build", "list"))
    p.add_argument("names", nargs="*", help="models to build (default: all)")
    p.add_argument("--nsfwjs", default=None, help="nsfwjs package folder or npm tarball")
    p.add_argument("--force", action="store_true", help="rebuild even if current")
    p.set_defaults(func=_cmd_models)

    for module_name in _EXTENSIONS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"nsfwkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `nsfwkit classify DIR | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
