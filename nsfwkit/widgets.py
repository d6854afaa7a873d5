"""Interactive notebook widgets (ipywidgets). Wiring only: every picture comes from ``nsfwkit.viz``.

``LayerBrowser(model)`` shows one layer at a time: a layer dropdown, a channel slider, a mode
toggle (``filter`` = the channel's maximally-activating input, ``activation`` = the channel's
map for the chosen image, ``cam`` = a Grad-CAM overlay computed at the chosen layer) and an
image picker. Results are cached, so moving back and forth is instant after the first visit.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["LayerBrowser"]

MODES = ("filter", "activation", "cam")


class LayerBrowser:
    """Browse a model's layers, channels and class maps in a notebook.

    Args:
        model: a Keras functional classifier taking raw 0-255 images.
        spec: its :class:`~nsfwkit.spec.ModelSpec` (class names, input size); optional.
        images: ``{name: (H, W, 3) array}`` or a list of image files (default: the kit's safe
            sample images).
        layers: layer names to offer (default: every conv-like layer).
        recipe, steps, seed: filter optimisation settings (kept small: it runs on demand).
        cam_method: ``grad_cam``, ``grad_cam_plus_plus`` or ``score_cam``.

    Attributes:
        layer, channel, mode, image: the control widgets (set their ``.value`` to drive it).
        view: the ``ipywidgets.Image`` showing the PNG; info: an ``HTML`` caption.
        widget: the whole box (displaying the browser displays it).
    """

    def __init__(self, model, spec=None, *, images: Mapping[str, np.ndarray] | Sequence[str] | None = None,
                 layers: Sequence[str] | None = None, recipe: str = "classic", steps: int = 32,
                 seed: int = 0, cam_method: str = "grad_cam", size: int = 224):
        import ipywidgets as widgets

        from . import images as imaging
        from .viz.layers import conv_layers, input_size, layer_path

        self.model, self.spec = model, spec
        self.recipe, self.steps, self.seed, self.cam_method = recipe, int(steps), int(seed), cam_method
        if images is None:
            from .samples import sample_images

            images = sample_images()
        if not isinstance(images, Mapping):
            from pathlib import Path

            images = {Path(p).name: imaging.load_image(p) for p in images}
        if not images:
            raise ValueError("LayerBrowser needs at least one image")
        self._images = dict(images)
        self._side = input_size(model)
        names = [layer_path(model, l) for l in layers] if layers else conv_layers(model)
        if not names:
            raise ValueError(f"model {model.name!r} has no conv-like layers to browse")
        self._cache: dict = {}
        self._busy = False

        self.layer = widgets.Dropdown(options=names, value=names[-1], description="layer")
        self.channel = widgets.IntSlider(min=0, max=max(0, self._channels(names[-1]) - 1), value=0,
                                         description="channel", continuous_update=False)
        self.mode = widgets.ToggleButtons(options=list(MODES), value="activation", description="mode")
        self.image = widgets.Dropdown(options=list(self._images), description="image")
        self.view = widgets.Image(format="png", width=size, height=size)
        self.info = widgets.HTML()
        for control in (self.layer, self.channel, self.mode, self.image):
            control.observe(self._changed, names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.layer, self.image]), widgets.HBox([self.mode, self.channel]),
            self.view, self.info,
        ])
        self.refresh()

    # -- wiring -----------------------------------------------------------------------------
    def _channels(self, layer: str) -> int:
        from .viz.layers import feature_model

        return int(feature_model(self.model, [layer], head=None).outputs[0].shape[-1])

    def _changed(self, change) -> None:
        if self._busy:
            return
        if change["owner"] is self.layer:
            self._busy = True
            try:
                self.channel.max = max(0, self._channels(self.layer.value) - 1)
                self.channel.value = min(self.channel.value, self.channel.max)
            finally:
                self._busy = False
        self.refresh()

    def _pixels(self, name: str) -> np.ndarray:
        from .viz.layers import as_model_input

        key = ("pixels", name)
        if key not in self._cache:
            self._cache[key] = as_model_input(self.model, self._images[name])[0][0]
        return self._cache[key]

    def render(self) -> tuple[np.ndarray, str]:
        """The current picture (``uint8`` RGB) and its caption, from ``nsfwkit.viz``."""
        from .viz import activations, cam, filters
        from .viz.pixels import overlay

        layer, channel, mode, name = self.layer.value, int(self.channel.value), self.mode.value, self.image.value
        if mode == "filter":
            key = ("filter", layer, channel)
            if key not in self._cache:
                self._cache[key] = filters.maximize_filters(
                    self.model, layer, filters=[channel], recipe=self.recipe, steps=self.steps,
                    seed=self.seed, progress=False)
            result = self._cache[key]
            caption = (f"{layer} filter {channel}: activation {result.activation_start[0]:.3g} &rarr; "
                       f"{result.activation_reached[0]:.3g} ({self.recipe}, {self.steps} steps)")
            return result.images[0], caption
        if mode == "activation":
            key = ("activation", layer, name)
            if key not in self._cache:
                self._cache[key] = activations.activations(self.model, self._pixels(name), layers=[layer])
            maps = self._cache[key].layers[layer][0]
            values = maps[..., channel]
            caption = (f"{layer} channel {channel} on {name}: mean {values.mean():.3g}, max {values.max():.3g}; "
                       f"most active channels {activations.most_active_channels(maps, count=5).tolist()}")
            return activations.channel_image(values, min_side=224), caption
        key = ("cam", layer, name)
        if key not in self._cache:
            self._cache[key] = cam.compute_cam(self.model, self._pixels(name), method=self.cam_method, layer=layer,
                                               max_channels=64)
        result = self._cache[key]
        c = int(result.class_index[0])
        label = self.spec.class_names[c] if self.spec is not None and c < len(self.spec.class_names) else c
        caption = (f"{self.cam_method} at {layer} for class {label} "
                   f"(p={result.probabilities[0, c]:.3f}) on {name}")
        return overlay(self._pixels(name), result.maps[0]), caption

    def refresh(self) -> None:
        """Recompute the picture for the current control values."""
        from .viz.pixels import png_bytes

        picture, caption = self.render()
        self.view.value = png_bytes(picture)
        self.info.value = caption

    def _ipython_display_(self):  # pragma: no cover - notebook display hook
        from IPython.display import display

        display(self.widget)
