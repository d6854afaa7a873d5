"""``nsfwkit models build|list``: the offline pretrained models in the model cache.

Exit status: 0 ok, 2 usage error (unknown model names).
"""

from __future__ import annotations

import argparse

from .errors import OK, CommandError

__all__ = ["register"]


def _cmd_models(args: argparse.Namespace) -> int:
    from .. import paths, zoo

    if args.action == "build":
        names = args.names or list(zoo.PRETRAINED)
        unknown = [n for n in names if n not in zoo.PRETRAINED]
        if unknown:
            raise CommandError(" ".join(unknown), f"unknown models; choose from {list(zoo.PRETRAINED)}")
        zoo.build(names, source=args.nsfwjs, force=args.force)
    else:
        for name, ready in zoo.available().items():
            default = " (default)" if name == zoo.DEFAULT_MODEL else ""
            print(f"{name:<14} {'built' if ready else 'not built'}{default}")
        print(f"cache: {paths.models_dir()}")
    return OK


def register(subparsers) -> None:
    """Add ``models``."""
    p = subparsers.add_parser("models", help="build or list the offline pretrained models")
    p.add_argument("action", choices=("build", "list"))
    p.add_argument("names", nargs="*", help="models to build (default: all)")
    p.add_argument("--nsfwjs", default=None, help="nsfwjs package folder or npm tarball")
    p.add_argument("--force", action="store_true", help="rebuild even if current")
    p.set_defaults(func=_cmd_models)
