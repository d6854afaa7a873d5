"""Run the real nsfwjs (npm) in Node on the same pixels as Keras, and compare.

The pixels are decoded once in Python and handed to Node as raw RGB bytes, so decoders cannot
differ: what is compared is nsfwjs's own preprocessing (/255, bilinear resize with corners
aligned) and network against the imported Keras model with :func:`nsfwkit.images.resize`.

The code lives with the other Node runs and parity checks: :func:`run_nsfwjs` in
:mod:`nsfwkit.convert.node` (the one Node bridge; it raises
:class:`~nsfwkit.convert.NodeMissingError` when Node.js or nsfwjs is missing) and
:func:`compare_with_nsfwjs` in :mod:`nsfwkit.convert.parity`; this module keeps their names.
"""

from __future__ import annotations

from .convert.node import NSFWJS_NAMES, run_nsfwjs
from .convert.parity import compare_with_nsfwjs

__all__ = ["NSFWJS_NAMES", "run_nsfwjs", "compare_with_nsfwjs"]
