"""``nsfwkit classify PATH...``: one line per input; bad files reported one by one, never fatal.

Exit status: 0 every file classified, 1 some failed, 2 usage error (bad flags, unknown model or
NSFW classes, no image files in the given paths).
"""

from __future__ import annotations

import argparse
import sys

from ..classify import FORMATS, FRAME_MODES
from ..zoo import DEFAULT_MODEL
from .errors import FAILED, OK, CommandError, from_exception, report
from .results import add_out_arguments, check_out_arguments

__all__ = ["register"]


def _nsfw_classes(args: argparse.Namespace, spec) -> list[str] | None:
    if not args.nsfw_classes:
        if not spec.nsfw_classes and args.threshold is not None:
            raise CommandError("--threshold", f"the model's classes {list(spec.class_names)} include none of the "
                               "default NSFW classes; say which to sum with --nsfw-classes")
        return None
    names = [c.strip() for c in args.nsfw_classes.split(",") if c.strip()]
    unknown = [c for c in names if c not in spec.class_names]
    if unknown:
        raise CommandError("--nsfw-classes", f"unknown {unknown}; the model's classes are {list(spec.class_names)}")
    return names


def _cmd_classify(args: argparse.Namespace) -> int:
    from .. import zoo
    from ..classify import Writer, classify

    if not 1 <= args.batch_size <= 1024:
        raise CommandError("--batch-size", f"must be between 1 and 1024, got {args.batch_size}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise CommandError("--threshold", f"must be between 0 and 1, got {args.threshold}")
    check_out_arguments(args)
    try:
        model, spec = zoo.load(args.model, safe_mode=not args.unsafe_load, input_scale=args.input_scale)
    except (zoo.ModelNotFoundError, ValueError) as exc:
        raise from_exception(exc, args.model) from None
    nsfw_classes = _nsfw_classes(args, spec)
    if args.out is not None:
        from .results import classify_out

        args.loaded_model = model
        return classify_out(args, args.model, spec, nsfw_classes)
    threshold = args.threshold
    writer = Writer(args.format, spec.class_names, sys.stdout, threshold=threshold, frames=args.frames is not None)
    total = failed = flagged = 0
    progress = sys.stderr.isatty() and not args.quiet
    for result in classify(args.paths, model=model, spec=spec, batch_size=args.batch_size,
                           threshold=threshold, nsfw_classes=nsfw_classes, progress=progress,
                           recursive=not args.no_recursive, frames=args.frames or "worst"):
        writer.write(result)
        total += 1
        failed += not result.ok
        flagged += bool(result.flagged)
        if not result.ok and args.format != "table" and not args.quiet:
            report("nsfwkit classify", result.path, result.error)
    if total == 0:
        raise CommandError(" ".join(args.paths), "no image files found in the given paths")
    if not args.quiet:
        extra = f", {flagged} flagged at threshold {threshold}" if threshold is not None else ""
        print(f"nsfwkit classify: {total - failed} classified, {failed} failed{extra} "
              f"(model {spec.name})", file=sys.stderr)
    return FAILED if failed else OK


def register(subparsers) -> None:
    """Add ``classify``."""
    p = subparsers.add_parser("classify", help="classify image files and folders",
                              description="Classify images; one line per input, bad files reported one by one.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders (recursive)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"{DEFAULT_MODEL} (default), inception_v3, a .keras/.h5 file, or keras:<Application>")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threshold", type=float, default=None,
                   help="flag images whose NSFW score (sum of the NSFW classes) is at least this")
    p.add_argument("--nsfw-classes", default=None,
                   help="comma-separated classes summed into the NSFW score (default Hentai,Porn,Sexy)")
    p.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    p.add_argument("--frames", choices=FRAME_MODES, default=None,
                   help="animations, videos: a row for the worst frame (default) or one per frame; CSV frame columns")
    p.add_argument("--input-scale", type=float, default=None,
                   help="for a model file that expects scaled pixels (e.g. 1/255 = 0.0039215686 for "
                        "GantMan's .h5 models): the scale to apply to raw 0-255 RGB")
    p.add_argument("--unsafe-load", action="store_true",
                   help="load model files outside Keras safe mode (only for files you trust)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    add_out_arguments(p)
    p.set_defaults(func=_cmd_classify)
