"""The model spec: what a caller must know about a classifier, saved as JSON beside every model."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["ModelSpec", "NSFWJS_CLASSES", "DEFAULT_NSFW_CLASSES", "spec_path_for"]

#: The five classes of GantMan's nsfw_model / nsfwjs, in output order.
NSFWJS_CLASSES: tuple[str, ...] = ("Drawing", "Hentai", "Neutral", "Porn", "Sexy")
#: Classes whose probabilities are summed into the binary NSFW score by default.
DEFAULT_NSFW_CLASSES: tuple[str, ...] = ("Hentai", "Porn", "Sexy")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything a caller needs to feed a model and read its output.

    Attributes:
        name: short model name (``mobilenet_v2``) or the file stem.
        class_names: output classes, in output order.
        image_size: the model's square input side in pixels.
        nsfw_classes: classes whose probabilities sum to the binary NSFW score.
        threshold: the operating threshold on the NSFW score (``nsfw >= threshold`` flags).
        input_name: name of the model's input layer.
        input_range: the pixel range the model expects; always raw RGB 0-255.
        resize: how images are brought to ``image_size`` before the model
            (``bilinear_align_corners``, as nsfwjs does).
        preprocessing: what the model does to its input internally (documentation only).
        last_conv_layer: the last convolutional feature layer, for CAMs (may be ``None``).
        source: where the weights came from.
        extra: free-form provenance (versions, hashes, metrics).
    """

    name: str
    class_names: tuple[str, ...]
    image_size: int
    nsfw_classes: tuple[str, ...] = DEFAULT_NSFW_CLASSES
    threshold: float = 0.5
    input_name: str = "image"
    input_range: tuple[float, float] = (0.0, 255.0)
    resize: str = "bilinear_align_corners"
    preprocessing: str = "inside the model"
    last_conv_layer: str | None = None
    source: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "nsfw_classes", tuple(self.nsfw_classes))
        object.__setattr__(self, "input_range", tuple(self.input_range))
        unknown = [c for c in self.nsfw_classes if c not in self.class_names]
        if unknown and self.class_names:
            if self.nsfw_classes != DEFAULT_NSFW_CLASSES:
                raise ValueError(f"nsfw_classes {unknown} are not among the class names {list(self.class_names)}")
            # The default (nsfwjs's) NSFW classes on a model with other names: keep those that exist.
            # The NSFW score of a model with none of them is 0 until nsfw_classes is set.
            object.__setattr__(
                self, "nsfw_classes", tuple(c for c in self.nsfw_classes if c in self.class_names)
            )
        if int(self.image_size) <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")

    @property
    def nsfw_indices(self) -> tuple[int, ...]:
        """Output indices of :attr:`nsfw_classes`."""
        return tuple(self.class_names.index(c) for c in self.nsfw_classes)

    def replace(self, **changes: Any) -> "ModelSpec":
        """Return a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("class_names", "nsfw_classes", "input_range"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the spec as JSON atomically; return the path."""
        from .fileio import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelSpec":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def spec_path_for(model_path: str | os.PathLike) -> Path:
    """The spec file that belongs beside a model file: ``model.keras`` -> ``model.spec.json``."""
    model_path = Path(model_path)
    if model_path.is_dir():
        return model_path / "spec.json"
    return model_path.with_name(model_path.stem + ".spec.json")
