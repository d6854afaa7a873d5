"""``nsfwkit classify PATH...``: one line per input; bad files reported one by one, never fatal.

Exit status: 0 every input found was classified, 1 some input was not (a file that failed or was
refused: HEIC, SVG, corrupt...; a folder that could not be listed), 2 usage error (bad flags,
unknown model or NSFW classes, no image files in the given paths). Folder entries left out
(hidden, not a regular file, broken link, other extensions: :func:`nsfwkit.inputs.find_inputs`)
are counted in the summary and do not change the exit status; ``--report-skipped`` lists them.
Warnings (a model without NSFW classes, a model file without a spec) are one line each on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

from ..classify import FORMATS, FRAME_MODES
from ..frames import MAX_FRAMES, MAX_SECONDS, check_sampling
from ..inputs import display_path, skipped_summary
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


@contextlib.contextmanager
def _one_line_warnings(prog: str):
    """Warnings raised inside become one ``<prog>: <message>`` line on stderr each, once per run.

    Yields a function that prints the warnings caught so far (call it as work goes on).
    """
    shown: set = set()
    with warnings.catch_warnings(record=True) as caught:  # the filters in force decide what is shown

        def flush() -> None:
            while caught:
                item = caught.pop(0)
                key = (item.category, str(item.message))
                if key not in shown:
                    shown.add(key)
                    print(f"{prog}: {display_path(str(item.message))}", file=sys.stderr)

        try:
            yield flush
        finally:
            flush()


def _sampling(args: argparse.Namespace) -> dict:
    sampling = {"fps": args.fps, "every": args.every, "max_frames": args.max_frames, "max_seconds": args.max_seconds}
    try:
        check_sampling(**sampling)
    except ValueError as exc:
        raise CommandError("--fps/--every/--max-frames/--max-seconds", str(exc)) from None
    return sampling


def _large_pillow_blocks() -> None:
    """Pillow's 16 MB image blocks stay in glibc's per-thread heaps after a huge decode; blocks over
    glibc's mmap threshold go back to the system when freed (8 x 88 Mpx PNGs: 3.5 -> 2.7 GB peak RSS).
    The command owns its process, so it sets this (the ``PILLOW_BLOCK_SIZE`` setting); the library does not."""
    from PIL import Image

    Image.core.set_block_size(64 << 20)


def _cmd_classify(args: argparse.Namespace) -> int:
    if not 1 <= args.batch_size <= 1024:
        raise CommandError("--batch-size", f"must be between 1 and 1024, got {args.batch_size}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise CommandError("--threshold", f"must be between 0 and 1, got {args.threshold}")
    check_out_arguments(args)
    sampling = _sampling(args)
    _large_pillow_blocks()
    with _one_line_warnings("nsfwkit classify") as flush:
        return _run(args, sampling, flush)


def _run(args: argparse.Namespace, sampling: dict, flush) -> int:
    from .. import zoo
    from ..classify import Writer, classify

    try:
        model, spec = zoo.load(args.model, safe_mode=not args.unsafe_load, input_scale=args.input_scale)
    except (zoo.ModelNotFoundError, ValueError) as exc:
        raise from_exception(exc, args.model) from None
    flush()
    nsfw_classes = _nsfw_classes(args, spec)
    if args.out is not None:
        from .results import classify_out

        args.loaded_model = model
        return classify_out(args, args.model, spec, nsfw_classes, sampling)
    threshold = args.threshold
    writer = Writer(args.format, spec.class_names, sys.stdout, threshold=threshold, frames=args.frames is not None)
    skipped: list = []

    def on_skipped(entry) -> None:
        skipped.append(entry)
        if args.report_skipped:
            writer.write_skipped(entry)

    total = failed = flagged = 0
    progress = sys.stderr.isatty() and not args.quiet
    for result in classify(args.paths, model=model, spec=spec, batch_size=args.batch_size,
                           threshold=threshold, nsfw_classes=nsfw_classes, progress=progress,
                           recursive=not args.no_recursive, frames=args.frames or "worst",
                           on_skipped=on_skipped, **sampling):
        flush()
        writer.write(result)
        total += 1
        failed += not result.ok
        flagged += bool(result.flagged)
        if not result.ok and args.format != "table" and not args.quiet:
            report("nsfwkit classify", result.path, result.error)
    skips = skipped_summary(skipped)
    if total == 0:
        raise CommandError(" ".join(args.paths), "no image files found in the given paths"
                           + (f" ({skips})" if skips else ""))
    if not args.quiet:
        extra = f", {flagged} flagged at threshold {threshold}" if threshold is not None else ""
        skips = f", {skips}{'' if args.report_skipped else '; --report-skipped lists them'}" if skips else ""
        print(f"nsfwkit classify: {total - failed} classified, {failed} failed{skips}{extra} "
              f"(model {display_path(spec.name)})", file=sys.stderr)
    return FAILED if failed else OK


def _add_frame_flags(p: argparse.ArgumentParser) -> None:
    sample = p.add_mutually_exclusive_group()
    sample.add_argument("--fps", type=float, default=None, metavar="F",
                        help="animations, videos: sample F frames per second of presentation time "
                             "(default: every frame of animations, 1 per second of videos)")
    sample.add_argument("--every", type=int, default=None, metavar="N",
                        help="animations, videos: every N-th frame instead (1: all frames)")
    p.add_argument("--max-frames", type=int, default=MAX_FRAMES, metavar="N",
                   help=f"classify at most N frames of each input (default {MAX_FRAMES}); the row says truncated")
    p.add_argument("--max-seconds", type=float, default=MAX_SECONDS, metavar="S",
                   help=f"decode nothing presented after S seconds (default {MAX_SECONDS:g})")


def register(subparsers) -> None:
    """Add ``classify``."""
    p = subparsers.add_parser("classify", help="classify image files and folders",
                              description="Classify images; one line per input, bad files reported one by one.",
                              epilog="exit status: 0 every input found was classified, 1 some were not (failed or "
                                     "refused, e.g. HEIC/SVG), 2 usage error or no image found; skipped folder "
                                     "entries are counted in the summary")
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
    p.add_argument("--report-skipped", action="store_true",
                   help="also write a row for each folder entry left out (hidden, not a regular file, broken "
                        "link, other extension): JSONL {\"path\", \"skipped\": reason}")
    _add_frame_flags(p)
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
