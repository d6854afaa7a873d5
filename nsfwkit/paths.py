"""Where things live: the repository, the model cache, run folders."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "cache_dir", "models_dir", "runs_dir", "dist_dir", "node_modules_dir"]


def repo_root() -> Path:
    """The checkout this package sits in (the folder holding ``notebooks/``), else the cwd."""
    here = Path(__file__).resolve().parent.parent
    if (here / "notebooks").is_dir():
        return here
    return Path.cwd()


def cache_dir() -> Path:
    """``$NSFWKIT_CACHE``, else ``$XDG_CACHE_HOME/nsfwkit``, else ``~/.cache/nsfwkit``.

    Built models live here, outside git (they are 11-91 MB each and built at set-up).
    """
    env = os.environ.get("NSFWKIT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "nsfwkit"


def models_dir() -> Path:
    return cache_dir() / "models"


def dist_dir() -> Path:
    """``$NSFWKIT_DIST``, else ``dist/`` in the repository."""
    env = os.environ.get("NSFWKIT_DIST")
    return Path(env).expanduser() if env else repo_root() / "dist"


def runs_dir() -> Path:
    return dist_dir() / "runs"


def node_modules_dir() -> Path:
    """``$NSFWKIT_NODE_MODULES``, else ``node_modules/`` in the repository (``npm ci``).

    The npm packages (TF.js, nsfwjs, playwright-core) the kit's Node scripts import: an
    installed kit (not in a checkout) points ``$NSFWKIT_NODE_MODULES`` at a ``node_modules``
    folder holding them.
    """
    env = os.environ.get("NSFWKIT_NODE_MODULES")
    return Path(env).expanduser() if env else repo_root() / "node_modules"
