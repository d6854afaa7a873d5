"""``nsfwkit visualize``: filters, activations and class activation maps in one command.

Writes ``<out>/filters/`` and ``<out>/activation/`` (default ``dist/``), each with a
``manifest.json`` the web view reads (schema: ``nsfwkit/viz/MANIFESTS.md``). Exit status: 0 ok,
1 the image could not be used, 2 usage errors (bad flags, unknown model or layer, no GPU for
``--gpu``).

``--cam`` takes any explanation method (the CAMs and the pixel attributions of
:mod:`nsfwkit.viz.attributions`); per-class maps (``--class all``) are drawn on the
``--scale`` of :func:`nsfwkit.viz.classmaps.class_maps`: ``weighted`` (default, evidence ×
probability), ``shared`` (raw evidence on one scale per method) or ``per_map`` (``--per-map-scale``).
Integrated Gradients maps record their completeness error in the manifest, and a warning goes to
stderr when it is above :data:`nsfwkit.viz.attributions.COMPLETENESS_TOLERANCE` (raise
``--ig-steps`` or use ``--ig-baseline blur``). ``--faithfulness`` scores every map by deletion /
insertion AUC into the manifest and prints a per-method table; ``--sanity`` adds the rank correlation with the maps
of a copy whose top weighted layer is re-initialised and flags the methods whose maps survive it
(only that first cascade step: the full cascade, ``sanity_check``, is notebook 06's).
"""

from __future__ import annotations

import argparse
import sys

from ..viz.attributions import ALL_METHODS
from ..viz.cam import METHODS as CAM_METHODS
from ..zoo import DEFAULT_MODEL
from .errors import FAILED, OK, CommandError, from_exception

__all__ = ["register"]


def register(subparsers) -> None:
    """Add the ``visualize`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "visualize",
        help="filters, activations and CAMs of a model into dist/filters and dist/activation",
        description=(
            "Compute what a classifier looks at: maximally-activating inputs of conv filters "
            "(dist/filters), the internal activations and class activation maps for one image "
            "(dist/activation), each with a JSON manifest for the web view."
        ),
    )
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"{DEFAULT_MODEL} (default), inception_v3, a .keras/.h5 file, or keras:<Application>")
    p.add_argument("--image", default=None, help="image to explain (default: the kit's sample cat photo)")
    p.add_argument("--filters", type=int, default=8, metavar="N", help="filters per layer (default 8)")
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="layers for filters and activations (default: a spread from early to late)")
    p.add_argument("--steps", type=int, default=None, metavar="S",
                   help="optimisation steps (default 80 classic, 256 quality)")
    p.add_argument("--recipe", choices=("classic", "quality"), default="quality",
                   help="classic: the original normalised gradient ascent; quality: lucid-style (default)")
    p.add_argument("--seed", type=int, default=0, help="random seed (outputs are deterministic for it)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="parent folder of filters/ and activation/ (default dist/)")
    p.add_argument("--cam", nargs="+", default=list(CAM_METHODS), choices=ALL_METHODS, metavar="METHOD",
                   help=f"explanation methods: {' '.join(ALL_METHODS)} (default the CAMs: {' '.join(CAM_METHODS)})")
    p.add_argument("--cam-layer", default=None, help="CAM layer (default: the model's last conv layer)")
    p.add_argument("--class", dest="class_index", default=None,
                   help="class to explain: a name, an index, or 'all' (default: the top-1 class)")
    p.add_argument("--score-cam-channels", type=int, default=256, metavar="K",
                   help="Score-CAM uses the K highest-variance channels (0 = all; default 256)")
    p.add_argument("--channels", type=int, default=8, metavar="N",
                   help="per-channel activation PNGs per layer (default 8, plus the 8 most active)")
    p.add_argument("--scale", choices=("weighted", "shared", "per_map"), default=None,
                   help="brightness of per-class maps: weighted (default, evidence x probability: a map is bright "
                        "where the class has evidence and probability), shared (raw evidence on one scale, "
                        "whatever the probability) or per_map (each map stretched to its own maximum)")
    p.add_argument("--per-map-scale", action="store_true", help="the same as --scale per_map")
    p.add_argument("--faithfulness", action="store_true",
                   help="score every map by deletion / insertion AUC (RISE) into the manifest; print a table")
    p.add_argument("--faithfulness-steps", type=int, default=32, metavar="K",
                   help="points per deletion / insertion curve (default 32: 2 forward passes of 32 images a map)")
    p.add_argument("--baseline", choices=("blur", "grey", "black"), default="blur",
                   help="what deleted / not yet inserted pixels become (default blur)")
    p.add_argument("--ig-steps", type=int, default=None, metavar="S",
                   help="Integrated Gradients path steps (default 64); raise them when the completeness warning "
                        "fires")
    p.add_argument("--ig-baseline", choices=("black", "grey", "blur"), default=None,
                   help="Integrated Gradients baseline (default: compute_attribution's); blur needs fewer steps")
    p.add_argument("--sanity", action="store_true",
                   help="also randomise the model's top layer (on a copy) and flag methods whose maps survive "
                        "(rank correlation > 0.5); about twice the maps' cost again: fine on small models")
    p.add_argument("--only", nargs="+", choices=("filters", "activations", "cam"), default=None,
                   help="compute only these parts")
    p.add_argument("--gpu", action="store_true",
                   help="run on the GPU with mixed precision and XLA (fails if no GPU is visible)")
    p.add_argument("--unsafe-load", action="store_true",
                   help="load model files outside Keras safe mode (only for files you trust)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_visualize)


def _check_flags(args: argparse.Namespace) -> None:
    if args.filters < 1:
        raise CommandError("--filters", "must be at least 1")
    if args.steps is not None and args.steps < 0:
        raise CommandError("--steps", "must be >= 0")
    if args.score_cam_channels < 0 or args.channels < 0:
        raise CommandError("--score-cam-channels and --channels", "must be >= 0")
    if args.faithfulness_steps < 2:
        raise CommandError("--faithfulness-steps", "must be at least 2")
    if args.ig_steps is not None and args.ig_steps < 1:
        raise CommandError("--ig-steps", "must be at least 1")
    if args.per_map_scale and args.scale not in (None, "per_map"):
        raise CommandError("--per-map-scale", f"contradicts --scale {args.scale}")
    if args.image is not None:
        from ..images import ImageError
        from ..inputs import check_input_file

        try:  # the discovery rule of classify and prepare: a regular file (never a FIFO or a device)
            check_input_file(args.image)
        except ImageError as exc:
            raise CommandError(exc.path, exc.reason, code=FAILED) from None


def _cmd_visualize(args: argparse.Namespace) -> int:
    _check_flags(args)
    from .. import zoo
    from ..images import ImageError
    from ..viz.report import visualize

    if args.gpu:
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            raise CommandError("--gpu", "TensorFlow sees no GPU (is tensorflow-cpu installed instead of "
                               "tensorflow[and-cuda], or CUDA_VISIBLE_DEVICES empty?); run without --gpu")
    try:
        model, spec = zoo.load(args.model, safe_mode=not args.unsafe_load)
    except (zoo.ModelNotFoundError, ValueError, OSError) as exc:
        raise from_exception(exc, args.model) from None
    if args.gpu:
        from ..viz.layers import mixed_precision_copy

        model = mixed_precision_copy(model)
    quiet = args.quiet
    try:
        written = visualize(
            model, spec, args.image, out=args.out,
            parts=_parts(args.only), layers=args.layers, filters=args.filters, recipe=args.recipe,
            steps=args.steps, seed=args.seed, cam_methods=args.cam, cam_layer=args.cam_layer,
            class_index=args.class_index, score_cam_channels=args.score_cam_channels or None,
            channels=args.channels, jit_compile=args.gpu,
            progress=False if quiet else None,
            log=(lambda line: None) if quiet else None,
            scale=_scale(args), faithfulness=args.faithfulness or args.sanity,
            sanity=args.sanity, faithfulness_steps=args.faithfulness_steps, baseline=args.baseline,
            ig_steps=args.ig_steps, ig_baseline=args.ig_baseline,
        )
    except ImageError as exc:
        raise from_exception(exc, args.image or "the sample image", code=FAILED) from None
    except FileExistsError as exc:
        raise from_exception(exc, args.out or "dist/") from None
    except ValueError as exc:   # LayerNotFoundError included: unknown layer or class
        raise from_exception(exc, spec.name) from None
    for kind, path in written.items():
        print(f"{kind}: {path}")
    if "activation" in written:
        _print_faithfulness(written["activation"])
    return OK


def _print_faithfulness(manifest_path) -> None:
    """The faithfulness table (stdout) and a warning per Integrated Gradients map whose
    completeness error is above the tolerance (stderr)."""
    from ..viz.attributions import completeness_warning
    from ..viz.outputs import read_manifest
    from ..viz.report import faithfulness_table

    manifest = read_manifest(manifest_path.parent)
    for entry in manifest.get("cams", ()):
        if "completeness_error" in entry:
            line = completeness_warning(entry["completeness_error"], entry["score_difference"],
                                        what=f"{entry['method']} of {entry['class_name']}")
            if line:
                print(f"warning: {line}", file=sys.stderr)
    table = faithfulness_table(manifest)
    if table:
        print(table)


def _scale(args) -> str:
    return "per_map" if args.per_map_scale else args.scale or "weighted"


def _parts(only):
    if not only:
        return ("filters", "activations", "cam")
    return tuple(dict.fromkeys(only))
