"""CLI subcommands for datasets, training and evaluation.

``nsfwkit demo-data OUT``            write the safe offline demo dataset
``nsfwkit download LISTS DEST``      fetch URL lists (one text file per class) into DEST/<class>/
``nsfwkit prepare DATASET --out DIR`` validate, de-duplicate, split; write manifest.csv & reports
``nsfwkit train MANIFEST OUT``       fine-tune (resumes automatically if OUT holds a checkpoint)
``nsfwkit evaluate MODEL MANIFEST``  report, plots, threshold and model card (+ baseline)

Exit codes: 0 ok (``prepare``: a manifest was written; quarantined files are reported, not
failures), 1 some inputs failed (``download``: failed URLs), 2 usage error or unusable input.
TensorFlow is imported only inside the handlers that need it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..inputs import display_path, skipped_summary
from ..zoo import DEFAULT_MODEL
from .errors import FAILED, OK, from_exception

__all__ = ["register"]


def _demo_data(args) -> int:
    from .. import demo_data

    classes = demo_data.BINARY_CLASSES if args.binary else demo_data.DEMO_CLASSES
    try:
        root = demo_data.make_demo_dataset(args.out, per_class=args.per_class, classes=classes,
                                           seed=args.seed, faults=not args.no_faults,
                                           overwrite=args.overwrite)
    except FileExistsError as exc:
        raise from_exception(exc, args.out) from None
    print(f"demo dataset: {root} ({len(classes)} classes x {args.per_class} images; abstract "
          "textures - demonstrates the mechanics, not accuracy)")
    return OK


def _download(args) -> int:
    from .. import download

    try:
        report = download.download(args.lists, args.dest, workers=args.workers,
                                   timeout=(args.connect_timeout, args.read_timeout),
                                   deadline_s=args.deadline, retries=args.retries,
                                   max_bytes=int(args.max_mb * 1024 * 1024),
                                   max_redirects=args.max_redirects,
                                   trust_env=not args.no_env_proxy, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as exc:
        raise from_exception(exc, args.lists) from None
    counts = report.counts()
    print(f"downloaded {counts['downloaded']}, already there {counts['exists']}, "
          f"failed {counts['failed']}; report: {report.report_path}")
    for r in report.failed[:20]:
        print(f"  failed: {r.url}: {r.reason}", file=sys.stderr)
    if len(report.failed) > 20:
        print(f"  ... and {len(report.failed) - 20} more (see the report)", file=sys.stderr)
    return FAILED if report.failed else OK


def _prepare(args) -> int:
    from .. import fileio
    from ..data.manifest import is_prepared_folder

    out = Path(args.out)
    created = not out.exists()
    try:  # a refused or unwritable --out fails here, before any validation
        with fileio.owned_folder(out, "prepare", legacy=is_prepared_folder):
            return _prepare_into(args)
    except BaseException:
        kit_only = {fileio.OWNER_MARKER, fileio.LOCK_FILE}
        if created and fileio.folder_kind(out) == "prepare" and {p.name for p in out.iterdir()} <= kit_only:
            for name in (fileio.OWNER_MARKER, fileio.LOCK_FILE):
                (out / name).unlink(missing_ok=True)
            out.rmdir()  # nothing was written: leave nothing behind
        raise


def _prepare_into(args) -> int:
    from .. import data

    val, test = args.val, args.test
    try:
        ds = data.prepare(args.dataset, classes=args.classes or None,
                          fractions=(1 - val - test, val, test), seed=args.seed,
                          near_duplicates=args.near_duplicates,
                          conflicts="keep" if args.keep_conflicts else "exclude",
                          max_bytes=int(args.max_mb * 1024 * 1024), progress=not args.quiet,
                          keep_empty_classes=args.keep_empty_classes, engine=args.engine,
                          address=args.address)
    except (data.DatasetError, ValueError) as exc:
        raise from_exception(exc, args.dataset) from None
    out = Path(args.out)
    files = ds.write(out)
    s = ds.summary()
    print(f"{s['valid']} usable of {s['files']} files in {len(ds.class_names)} classes; "
          f"{s['quarantined']} quarantined, {s['duplicate_groups']} duplicate groups, "
          f"{s['label_conflicts']} label conflicts; splits {s['splits']}")
    for w in ds.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if ds.skipped:
        print(f"{skipped_summary(ds.skipped)} (left out of the dataset; counted in summary.json)", file=sys.stderr)
    for r in ds.quarantine[:20]:
        print(f"  quarantined: {display_path(r.path)}: {r.reason}", file=sys.stderr)
    print(f"manifest: {display_path(files['manifest'])}")
    return 0  # quarantined files are reported (quarantine.csv), not a failure: `prepare && train` chains


def _load_config(text: str | None) -> dict:
    if not text:
        return {}
    path = Path(text)
    if path.is_file():
        import yaml

        return dict(yaml.safe_load(path.read_text()) or {})
    return dict(json.loads(text))


def _train(args) -> int:
    from .. import data, train

    try:
        cfg = _load_config(args.config)
    except (ValueError, OSError) as exc:
        raise from_exception(exc, "--config") from None
    for key in ("backbone", "weights", "image_size", "batch_size", "epochs_head",
                "epochs_finetune", "lr_head", "lr_finetune", "unfreeze", "seed", "patience", "clip_frames"):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = None if key == "weights" and value == "none" else value
    try:
        result = train.train(args.manifest, args.out, cfg, resume=not args.restart,
                             progress=not args.quiet, skip_missing=args.skip_missing)
    except train.TrainingError as exc:
        raise from_exception(exc, args.manifest, code=FAILED) from None
    except (data.DatasetError, ValueError) as exc:
        raise from_exception(exc, args.out) from None
    print(f"model: {result.model_path} ({result.steps} steps)")
    _report_skipped(result.skipped_missing, args.manifest)
    return OK


def _report_skipped(missing: list[str], manifest) -> None:
    """One warning line for the files ``--skip-missing`` left out (the first few named)."""
    if missing:
        first = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        print(f"warning: skipped {len(missing)} files of {manifest} that are missing ({first})", file=sys.stderr)


def _evaluate(args) -> int:
    from .. import data, evaluate, paths

    out = args.out or paths.runs_dir() / "evaluate" / Path(args.model).stem
    update = {"auto": None, "yes": True, "no": False}[args.update_spec]
    try:
        run = evaluate.evaluate_run(args.model, args.manifest, out, target=args.target,
                                    confidence=args.confidence or None, probe=not args.no_probe,
                                    baseline=None if args.baseline == "none" else args.baseline,
                                    redact_images=not args.no_redact, update_spec=update,
                                    skip_missing=args.skip_missing)
    except (data.DatasetError, ValueError, FileNotFoundError) as exc:
        raise from_exception(exc, args.model) from None
    test = run.report["test"]
    mc, bn = test.get("multiclass", {}), test.get("binary", {})
    if mc:
        print(f"test accuracy {mc['accuracy']:.3f}, macro F1 {mc['macro']['f1']:.3f}, "
              f"ECE {mc['calibration']['ece']:.3f}")
    if bn and bn["operating_point"].get("threshold") is not None:
        op = bn["operating_point"]
        val_op = bn.get("val_operating_point") or {}
        print(f"NSFW AUC {bn['roc_auc']}, threshold {op['threshold']:.4f} ({args.target}, chosen on "
              f"val): test recall {op['recall']} {op.get('recall_ci')}, FPR {op['fpr']} {op.get('fpr_ci')}")
        if not val_op.get("met"):
            print(f"warning: the target is not supported by the val split: {val_op.get('reason')}",
                  file=sys.stderr)
        print("threshold written into the model's spec" if run.spec_updated else
              "threshold NOT written into the model's spec (see --update-spec)")
    for name, path in run.files.items():
        print(f"{name}: {path}")
    _report_skipped(run.skipped_missing, args.manifest)
    if run.clips_left_out:
        print(f"warning: {run.clips_left_out} clips of val/test left out (evaluation scores still images only)",
              file=sys.stderr)
    return OK


def register(subparsers) -> None:
    """Add ``demo-data``, ``download``, ``prepare``, ``train`` and ``evaluate``."""
    p = subparsers.add_parser("demo-data", help="write the safe offline demo dataset")
    p.add_argument("out", help="folder to create")
    p.add_argument("--per-class", type=int, default=40, help="images per class (default 40)")
    p.add_argument("--binary", action="store_true", help="sfw/nsfw instead of the 5 classes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-faults", action="store_true", help="no broken/duplicate files")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a demo dataset written there with other arguments")
    p.set_defaults(func=_demo_data)

    p = subparsers.add_parser("download", help="download URL lists into a folder per class")
    p.add_argument("lists", help="folder of <class>.txt / urls_<class>.txt files, or one file")
    p.add_argument("dest", help="dataset folder to fill")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--connect-timeout", type=float, default=5.0)
    p.add_argument("--read-timeout", type=float, default=15.0)
    p.add_argument("--deadline", type=float, default=60.0, help="seconds per file, at most")
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--max-mb", type=float, default=20.0, help="size cap per file (MB)")
    p.add_argument("--max-redirects", type=int, default=5)
    p.add_argument("--no-env-proxy", action="store_true",
                   help="ignore HTTP(S)_PROXY / netrc from the environment")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_download)

    p = subparsers.add_parser("prepare", help="validate, de-duplicate and split a dataset",
                              epilog="exit status: 0 the manifest was written (quarantined files are "
                                     "listed in quarantine.csv, not failures); 2 usage error or no "
                                     "usable dataset (nothing written)")
    p.add_argument("dataset", help="folder with one sub-folder per class")
    p.add_argument("--out", required=True, help="where to write manifest.csv and the reports")
    p.add_argument("--classes", nargs="*", help="class folders to use (default: all)")
    p.add_argument("--val", type=float, default=0.15)
    p.add_argument("--test", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--near-duplicates", type=int, default=5,
                   help="perceptual-hash distance counted as the same image (-1: off)")
    p.add_argument("--keep-conflicts", action="store_true",
                   help="keep label-conflict groups (in one split) instead of excluding them")
    p.add_argument("--max-mb", type=float, default=256.0, help="larger files are quarantined")
    p.add_argument("--keep-empty-classes", action="store_true",
                   help="keep class folders without a usable image in the class list")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="ray: validate and hash in Ray tasks (pip install 'nsfwkit[ray]')")
    p.add_argument("--address", default=None, help="--engine ray: a Ray cluster to join; default: embedded local Ray")
    p.set_defaults(func=_prepare)

    p = subparsers.add_parser("train", help="fine-tune a backbone on a prepared dataset")
    p.add_argument("manifest", help="manifest.csv from `nsfwkit prepare`")
    p.add_argument("out", help="run folder (an interrupted run there resumes)")
    p.add_argument("--config", help="TrainConfig fields as a JSON string or a YAML file")
    p.add_argument("--backbone", help=f"{DEFAULT_MODEL} | inception_v3 | keras:<Application> | file")
    p.add_argument("--weights", help="for keras: backbones: imagenet | none | weights file")
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs-head", type=int)
    p.add_argument("--epochs-finetune", type=int)
    p.add_argument("--lr-head", type=float)
    p.add_argument("--lr-finetune", type=float)
    p.add_argument("--unfreeze", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--patience", type=int)
    p.add_argument("--clip-frames", type=int, metavar="N",
                   help="train on up to N sampled frames of each video/animation (default 0: still images only)")
    p.add_argument("--restart", action="store_true",
                   help="start over: delete the kit's checkpoints in OUT/checkpoints (nothing else)")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out manifest files that are missing (counted and reported) instead of refusing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("evaluate", help="evaluate a model on a prepared dataset")
    p.add_argument("model", help="model.keras (spec beside it)")
    p.add_argument("manifest", help="manifest.csv")
    p.add_argument("--out", help="folder for report.json, model_card.md and the plots "
                                 "(default: dist/runs/evaluate/<model stem>)")
    p.add_argument("--update-spec", choices=("auto", "yes", "no"), default="auto",
                   help="write the chosen threshold into the model's spec: auto (default) only "
                        "for models trained by nsfwkit")
    p.add_argument("--target", default="nsfw_recall>=0.95",
                   help="threshold target: 'nsfw_recall>=0.95' or 'fpr<=0.01'")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="the target must hold with this confidence on val (one-sided Clopper-Pearson "
                        "bound; 0: the point estimate)")
    p.add_argument("--no-probe", action="store_true",
                   help="skip the linear-probe baseline (nsfwkit-trained models only)")
    p.add_argument("--baseline", default=DEFAULT_MODEL, help="baseline model, or 'none'")
    p.add_argument("--no-redact", action="store_true", help="show mistakes unblurred")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out manifest files that are missing (counted and reported) instead of refusing")
    p.set_defaults(func=_evaluate)

