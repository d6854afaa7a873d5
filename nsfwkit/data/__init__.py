"""Dataset preparation: scan, validate, de-duplicate, split, manifest; ``tf.data`` pipelines.

A dataset is a folder with one sub-folder per class (files at any depth below it, any format the
shared loader accepts), e.g. the public scrapers' ``drawings/ hentai/ neutral/ porn/ sexy/`` or
``sfw/ nsfw/``. :func:`prepare` turns it into a :class:`PreparedDataset`:

1. **scan** -- list candidate files per class with :func:`nsfwkit.inputs.find_inputs` (regular
   files with an image extension, HEIC/SVG to be quarantined with a message; hidden entries,
   FIFOs, devices, broken links and other extensions skipped and counted by reason; empty class
   folders reported).
2. **validate** -- every file is read and decoded **once** with :func:`nsfwkit.images.decode_image`
   (the loader every other path uses). Unusable files go to the *quarantine* list with the
   loader's reason; nothing is ever moved, changed or deleted.
3. **de-duplicate** -- exact duplicates by SHA-256 of the bytes, near duplicates by a 64-bit
   perceptual hash (``imagehash.phash``) within a Hamming distance. A *group* is a connected
   component of "same bytes or near copy" (a chain A~B~C is one group even when A and C are
   further apart); a group spanning several classes is a *label conflict*; an implausibly
   large group (a chain across a class) is reported with advice to tighten the distance.
4. **split** -- a deterministic, stratified train/val/test split over groups, so no image (or
   its near copy) appears in two splits. Extra exact copies inside a class and (by default)
   label-conflict groups are kept in the manifest with split ``excluded`` and a note.

:meth:`PreparedDataset.write` writes ``manifest.csv`` (path, class, split, hash, size,
dimensions, ...), ``quarantine.csv``, ``duplicates.csv`` and ``summary.json`` into a run folder.

:func:`make_dataset` builds the ``tf.data`` input pipeline used for training and evaluation. It
decodes with the same loader and resizes with the same op as inference
(``ResizeBilinear(align_corners=True)``), so a model sees identical pixels in training, in
``nsfwkit classify`` and in TensorFlow.js.

The modules, one job each (everything is importable from ``nsfwkit.data`` itself):

* :mod:`~nsfwkit.data.scan` -- :func:`scan_folder`, :func:`validate_files`, :class:`Record`,
  :class:`DatasetError` (input discovery, validation, quarantine);
* :mod:`~nsfwkit.data.duplicates` -- :func:`find_duplicate_groups` (hashing results -> groups,
  :class:`DuplicateGroups`: connected components over exact copies and near pairs);
* :mod:`~nsfwkit.data.nearpairs` -- :func:`near_pairs` (every pair of 64-bit hashes within a
  Hamming distance, through a multi-index search; :func:`unique_near_pairs` its compact form);
* :mod:`~nsfwkit.data.split` -- :func:`split_groups` (groups -> train/val/test);
* :mod:`~nsfwkit.data.manifest` -- :class:`PreparedDataset` and its files, reading a manifest
  back (:func:`read_manifest`, :func:`manifest_arrays`, ...), class names and weights;
* :mod:`~nsfwkit.data.preparation` -- :func:`prepare`, the four steps above in one call;
* :mod:`~nsfwkit.data.tfdata` -- :func:`make_dataset`, :func:`decode_dataset` (``tf.data``);
* :mod:`~nsfwkit.data.plots` -- :func:`plot_class_balance`, :func:`plot_samples`, :func:`redact`.
"""

from .duplicates import DuplicateGroups, find_duplicate_groups
from .manifest import (
    MANIFEST_FIELDS,
    NSFW_NAMES,
    MissingFilesError,
    PreparedDataset,
    class_key,
    class_weights,
    clip_frame_counts,
    default_nsfw_classes,
    existing_files,
    manifest_arrays,
    manifest_class_names,
    read_manifest,
)
from .nearpairs import near_pairs, unique_near_pairs
from .plots import plot_class_balance, plot_samples, redact
from .preparation import prepare
from .scan import DatasetError, Record, scan_folder, validate_files
from .split import SPLITS, split_groups
from .tfdata import (
    DecodedImages,
    PipelineOptions,
    decode_dataset,
    decode_for_model,
    decode_in_epoch_order,
    epoch_order,
    make_dataset,
)

__all__ = [
    "DatasetError",
    "Record",
    "PreparedDataset",
    "scan_folder",
    "validate_files",
    "find_duplicate_groups",
    "near_pairs",
    "unique_near_pairs",
    "DuplicateGroups",
    "split_groups",
    "prepare",
    "read_manifest",
    "manifest_arrays",
    "existing_files",
    "MissingFilesError",
    "default_nsfw_classes",
    "class_weights",
    "plot_class_balance",
    "plot_samples",
    "redact",
    "make_dataset",
    "decode_for_model",
    # also part of the API (used by train, evaluate, the CLI and the notebooks)
    "MANIFEST_FIELDS",
    "NSFW_NAMES",
    "SPLITS",
    "class_key",
    "manifest_class_names",
    "clip_frame_counts",
    "epoch_order",
    "decode_dataset",
    "decode_in_epoch_order",
    "DecodedImages",
    "PipelineOptions",
]
