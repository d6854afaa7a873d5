"""CLI subcommands ``export``, ``serve`` and ``build-web``.

    nsfwkit export MODEL --out DIR [--format tfjs,tflite,onnx|all] [--quantize none,float16,uint8,dynamic,int8]
                   [--calibration DIR] [--calibration-limit N] [--precision-plan measured|none]
                   [--strict] [--no-nsfwjs] [--overwrite]
    nsfwkit serve [DIR] [--port P]                  (DIR default: dist/web)
    nsfwkit build-web [--out DIR] [--model M | --export DIR] [--galleries DIR] [--run RUN_DIR]
                                                    (DIR default: dist/web)

Exit status: 0 ok (an export row that misses its parity bar is warned about on stderr, even with
-q); 1 the export or build itself failed (the message names the build, e.g. ``tflite/int8: ...``),
the converter or a runtime is missing, the port cannot be opened, or with ``export --strict`` a
row missed its bar (the export is kept); 2 usage error (unknown model, format or precision, refused output
folder, a calibration folder without a usable image, bad port).
TensorFlow is imported inside the handlers only, so ``nsfwkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..zoo import DEFAULT_MODEL
from .errors import FAILED, OK, CommandError, from_exception, report

__all__ = ["register"]


def _print_sizes(rows) -> None:
    """The size table; ``stored as`` tells how a quantised export is really stored (tensors and
    MB per dtype): the default exports are mixed precision, mostly not in their nominal dtype."""
    print(f"{'format':<14} {'quantization':<12} {'files':>5} {'MB':>8}  {'path':<18} stored as (tensors, MB)")
    for r in rows:
        print(f"{r['format']:<14} {r['quantization']:<12} {r['files']:>5} {r['mb']:>8.2f}  "
              f"{r['path']:<18} {r.get('stored_as', '')}".rstrip())


def _print_runtimes(rows, result) -> None:
    """The parity rows of every format and the combinations not made."""
    from .. import convert

    if rows:
        print(convert.table_text(rows))
    for item in result.not_made:
        print(f"not made: {item['format']} {item['precision']} ({item['reason']})", file=sys.stderr)


def _warn(rows, calibration) -> int:
    """stderr lines, printed even with -q: the calibration folder's count of used and skipped
    files, and one warning per row that misses its bar; returns how many missed."""
    from ..convert import runtimes

    if calibration and calibration["source"] != "samples":
        print(f"nsfwkit export: {runtimes.calibration_line(calibration)}", file=sys.stderr)
    missed = [r for r in rows if r["passed"] is False]
    for row in missed:
        report("nsfwkit export", row["path"], f"max |dp| {row['max_abs_diff']:.2e} misses the bar "
                                              f"{row['tolerance']:g} (or top-1 changed); see export.json")
    return len(missed)


def _cmd_export(args: argparse.Namespace) -> int:
    from .. import convert, fileio, zoo
    from ..convert import formats

    try:
        formats.resolve(args.format, args.quantize)   # a bad list fails before the model loads
    except formats.FormatError as exc:
        raise CommandError(exc.option, str(exc)) from None
    try:
        model, spec = zoo.load(args.model, safe_mode=not args.unsafe_load)
    except (OSError, ValueError) as exc:   # ModelNotFoundError, NotADirectoryError, bad file...
        raise from_exception(exc, args.model) from None
    try:
        result = convert.export(model, args.out, spec=spec, quantizations=args.quantize,
                                nsfwjs=False if args.no_nsfwjs else None, formats=args.format,
                                calibration=args.calibration, calibration_limit=args.calibration_limit or None,
                                overwrite=args.overwrite, progress=not args.quiet and sys.stderr.isatty(),
                                precision_plan=args.precision_plan == "measured")
    except (FileExistsError, NotADirectoryError, fileio.UnwritableFolderError) as exc:   # refused --out: usage
        raise from_exception(exc, args.out) from None
    except formats.FormatError as exc:
        raise CommandError(exc.option, str(exc)) from None
    except convert.CalibrationError as exc:                  # no usable calibration image: usage
        raise from_exception(exc, args.calibration) from None
    except convert.ConverterMissingError as exc:
        raise from_exception(exc, "tensorflowjs", code=FAILED) from None
    except convert.RuntimeMissingError as exc:
        raise from_exception(exc, "--format", code=FAILED) from None
    except (OSError, ValueError, RuntimeError) as exc:       # the export itself failed
        raise from_exception(exc, args.out, code=FAILED) from None
    rows = convert.runtime_table(result.out_dir)
    missed = _warn(rows, next((r["calibration"] for r in result.sizes if r.get("calibration")), None))
    if not args.quiet:
        _print_sizes(result.sizes)
        _print_runtimes(rows, result)
        print(f"exported {spec.name} to {result.out_dir}", file=sys.stderr)
        if result.nsfwjs:
            first = next(iter(result.nsfwjs.values()))
            print(f"for nsfwjs: nsfwjs.load('<url of {first.relative_to(result.out_dir)}>/', "
                  f"{{type: 'graph', size: {spec.image_size}}})", file=sys.stderr)
    if missed and args.strict:
        report("nsfwkit export", "--strict", f"{missed} export(s) missed the parity bar (kept in {result.out_dir})")
        return FAILED
    return OK


def _cmd_serve(args: argparse.Namespace) -> int:
    from .. import serve, webview

    folder = Path(args.dir) if args.dir else webview.site_dir()
    if not (0 <= args.port <= 65535):
        raise CommandError("--port", f"must be 0-65535, got {args.port}")
    try:
        serve.serve(folder, port=args.port, quiet=args.quiet)
    except NotADirectoryError as exc:
        raise from_exception(exc, folder) from None
    except OSError as exc:
        raise CommandError(f"127.0.0.1:{args.port}", f"cannot listen ({exc.strerror or exc})", code=FAILED) from None
    return OK


def _cmd_build_web(args: argparse.Namespace) -> int:
    from .. import fileio, webview, zoo

    out = args.out or webview.site_dir()
    try:
        index = webview.build(args.out, model=args.model, export_dir=args.export,
                              galleries_from=args.galleries, run_dir=args.run)
    except (FileNotFoundError, FileExistsError, zoo.ModelNotFoundError,
            fileio.UnwritableFolderError) as exc:   # SiteFolderError included
        raise from_exception(exc, out) from None
    except (OSError, ValueError) as exc:
        raise from_exception(exc, out, code=FAILED) from None
    site = json.loads((index.parent / "site.json").read_text(encoding="utf-8"))
    kinds = ", ".join(site["galleries"]) or "none yet"
    serve_arg = "" if index.parent.resolve() == webview.site_dir().resolve() else f" {index.parent}"
    print(f"built {index} (galleries: {kinds}); view it with: nsfwkit serve{serve_arg}")
    return OK


def register(subparsers) -> None:
    """Add ``export``, ``serve`` and ``build-web`` to the ``nsfwkit`` CLI."""
    p = subparsers.add_parser(
        "export", help="export a model as SavedModel + TensorFlow.js / TFLite / ONNX models",
        description="Write DIR/saved_model, DIR/tfjs/<q>/ (input raw RGB 0-255) and, for nsfwjs's "
                    "five classes, DIR/nsfwjs/<q>/ (input 0-1: load it with nsfwjs.load(url, "
                    "{type: 'graph', size})); with --format tflite/onnx also DIR/tflite/<q>/model.tflite "
                    "and DIR/onnx/<q>/model.onnx (input raw RGB 0-255, spec.json beside each, parity "
                    "measured in LiteRT / onnxruntime; TF.js rows in Node, or emulated without it); "
                    "plus spec.json and export.json (one size and parity row per format and precision).")
    p.add_argument("model", help=f"pretrained name ({DEFAULT_MODEL}, inception_v3) or a .keras file")
    p.add_argument("--out", required=True, help="export folder to create")
    p.add_argument("--format", default="tfjs",
                   help="comma list of tfjs, tflite, onnx, or all (default: tfjs; the SavedModel is always "
                        "written)")
    p.add_argument("--quantize", action="append",
                   help="comma list (or repeat): none, float16, uint8 (tfjs), dynamic, int8 (tflite), all; "
                        "each is made in every chosen format that has it (default: every precision of "
                        "each format)")
    p.add_argument("--calibration", default=None, metavar="DIR",
                   help="your own images to calibrate the quantised tflite/onnx builds (int8 ranges, the "
                        "measured mix); default: the kit's safe samples plus generated images")
    p.add_argument("--calibration-limit", type=int, default=200, metavar="N",
                   help="use a seeded sample of at most N images of --calibration (default 200; 0: all)")
    p.add_argument("--precision-plan", choices=("measured", "none"), default="measured",
                   help="measured (default): quantised exports (TF.js float16/uint8, TFLite float16/dynamic/"
                        "int8, ONNX float16) keep the most sensitive weight tensors or layers in float32 so "
                        "they stay within the parity bars (mixed precision, larger); none: everything in "
                        "the nominal precision (smallest, larger error)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when an export row misses its parity bar (the export is kept)")
    p.add_argument("--no-nsfwjs", action="store_true", help="skip the nsfwjs-ready flavour")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing export folder (only one holding export.json)")
    p.add_argument("--unsafe-load", action="store_true", help="load a trusted .keras file outside safe mode")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_export)

    p = subparsers.add_parser("serve", help="serve a folder (default dist/web/) on 127.0.0.1",
                              description="Static files on 127.0.0.1 only, to loopback Host names only; "
                                          "paths outside the folder are refused.")
    p.add_argument("dir", nargs="?", default=None, help="folder to serve (default: dist/web/, the web view)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    p.add_argument("-q", "--quiet", action="store_true", help="no request log")
    p.set_defaults(func=_cmd_serve)

    p = subparsers.add_parser(
        "build-web", help="build the static web view into dist/web/",
        description="Build the page, vendored TF.js, the model and the galleries into a folder of its "
                    "own (default dist/web/), replacing only what a previous build wrote there (marked .nsfwkit.json).")
    p.add_argument("--out", default=None, help="site folder (default: dist/web/; must be new, empty or a "
                                               "previous build)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="pretrained name or .keras file to ship (exported into the cache)")
    p.add_argument("--export", default=None, help="use this export folder (nsfwkit export) instead")
    p.add_argument("--galleries", default=None,
                   help="folder with filters/ and activation/ manifests to copy (default: those in dist/, "
                        "else the previous build's)")
    p.add_argument("--run", default=None,
                   help="pipeline run folder (e.g. dist/runs/demo) whose visualisation stages to show")
    p.set_defaults(func=_cmd_build_web)
