"""Interactive notebook widgets (ipywidgets). Wiring only: every picture comes from ``nsfwkit.viz``.

``LayerBrowser(model, spec)`` explores one layer and one channel at a time. Side by side:

* the input image; the chosen channel's activation overlaid on it; the channel's filter
  visualisation (its maximally-activating input, :func:`nsfwkit.viz.filters.maximize_filters`);
  and the **dataset examples** that activate the channel most, with their activation maps
  (:func:`nsfwkit.viz.activations.top_activating_examples`; blurred by default, like the kit's
  dataset grids, because datasets may be explicit and notebooks get shared);
* a focus view following ``mode``: ``activation`` (the channel's map), ``filter``, or ``cam``: a
  class activation map computed at this layer with any method of
  :data:`nsfwkit.viz.attributions.ALL_METHODS` (a method picker: the CAMs, LayerCAM, and the pixel
  attributions gradients / SmoothGrad / Integrated Gradients, which ignore the layer) for the
  predicted class or any class picked (a class picker). When the map is near-empty, the caption
  says why and suggests the last conv layer;
* the layer's most active channels for the image, as buttons that jump to a channel.

Everything is cached per layer (and channel, image, class, method), so revisiting is instant. In a
notebook the heavy work (filter optimisation, Score-CAM, dataset examples) runs in one background
thread, so the other controls stay live; a status line says what is being computed and dims the
panels still waiting. Each refresh bumps a generation counter: a background result is drawn only
if no newer request came in meanwhile (it is kept in the cache either way), and queued work of an
older generation is skipped. Outside a notebook (scripts, tests) everything runs inline.
"""

from __future__ import annotations

import dataclasses
import html
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["LayerBrowser", "MODES", "PANELS"]

MODES = ("filter", "activation", "cam")
#: The side-by-side panels (``show=`` picks some).
PANELS = ("image", "activation", "filter", "examples", "channels")
#: Methods cheap enough to run inline (one forward + backward pass); any other (Score-CAM, SmoothGrad,
#: Integrated Gradients, future ones) runs in the background.
QUICK_CAM_METHODS = ("grad_cam", "grad_cam_plus_plus", "gradients", "layer_cam")
#: A CAM with less than NEAR_EMPTY of its area above NEAR_EMPTY_LEVEL (half its peak) is reported as
#: near-empty: a few hot pixels and nothing else (measured on the default model and the astronaut: 0.2-4%
#: at block_1..block_6, 8-17% at block_16 and out_relu).
NEAR_EMPTY, NEAR_EMPTY_LEVEL = 0.02, 0.5
_STYLE = """<style>
.nsfwkit-stale { opacity: 0.35; transition: opacity 0.2s; }
.nsfwkit-label { font-size: 12px; color: var(--jp-ui-font-color1, #333); line-height: 1.3; }
.nsfwkit-status progress { width: 80px; height: 10px; vertical-align: middle; }
</style>"""


@dataclasses.dataclass(frozen=True)
class _State:
    """The control values of one request."""

    layer: str
    channel: int
    mode: str
    image: str
    method: str
    class_index: int  # -1: the predicted class


@dataclasses.dataclass(frozen=True)
class _Examples:
    """The dataset examples, loaded once at the model's input size."""

    names: list
    images: np.ndarray  # uint8 (N, S, S, 3)
    total: int  # files or images offered (before max_examples)
    skipped: int  # unreadable files


class LayerBrowser:
    """Browse a model's layers and channels: activation, filter, dataset examples and class maps.

    Args:
        model: a Keras functional classifier taking raw 0-255 images.
        spec: its :class:`~nsfwkit.spec.ModelSpec` (class names, last conv layer); optional.
        images: images to look at: ``{name: (H, W, 3) array}`` or image files (default: the kit's
            safe sample images).
        examples: the dataset the examples come from: ``{name: array}``, image files, a folder, or
            a prepared ``manifest.csv`` (default: the sample images).
        layers: layer names to offer (default: every conv-like layer).
        recipe, steps, seed: filter optimisation settings (kept small: it runs on demand).
        cam_method: the method picked first (any of :data:`nsfwkit.viz.attributions.ALL_METHODS`).
        size: the focus view's side in pixels (panels are 3/4 of it).
        examples_count: dataset examples shown per channel.
        max_examples: at most this many dataset images are scored (a seeded sample of larger sets).
        redact: blur the dataset examples (default True; False only for data you may show).
        show: which of :data:`PANELS` to show beside the focus view.
        background: run heavy work in a background thread (default: when inside a notebook kernel).

    Attributes:
        layer, channel, mode, image, method, cam_class: the controls (set ``.value`` to drive it); it
            starts on the last layer, at the channel most active for the first image.
        view: the focus ``ipywidgets.Image`` (PNG); info: its caption.
        panels: panel name -> ``ipywidgets.Image``; captions: panel name -> caption ``HTML``.
        channel_buttons: the most-active-channel buttons (click one to jump to its channel).
        status: what is being computed ("ready" when idle); generation: requests so far.
        widget: the whole box (displaying the browser displays it).
    """

    def __init__(self, model, spec=None, *, images: Mapping[str, np.ndarray] | Sequence[str] | None = None,
                 examples: Mapping[str, np.ndarray] | Sequence[str] | str | os.PathLike | None = None,
                 layers: Sequence[str] | None = None, recipe: str = "classic", steps: int = 32,
                 seed: int = 0, cam_method: str = "grad_cam", size: int = 224, examples_count: int = 6,
                 max_examples: int = 256, redact: bool = True, show: Sequence[str] = PANELS,
                 background: bool | None = None):
        from .viz.attributions import ALL_METHODS as METHODS
        from .viz.layers import conv_layers, input_size, layer_path

        self.model, self.spec = model, spec
        self.recipe, self.steps, self.seed = recipe, int(steps), int(seed)
        self.examples_count, self.max_examples, self.redact = int(examples_count), int(max_examples), bool(redact)
        unknown = sorted(set(show) - set(PANELS))
        if unknown or cam_method not in METHODS:
            raise ValueError(f"unknown panels {unknown} (choose from {PANELS})" if unknown else
                             f"unknown CAM method {cam_method!r}; choose from {', '.join(METHODS)}")
        self.show = tuple(p for p in PANELS if p in show)
        self._images = _named_images(images)
        self._examples_source = examples
        self._side = input_size(model) or (size, size)
        names = [layer_path(model, name) for name in layers] if layers else conv_layers(model)
        if not names:
            raise ValueError(f"model {model.name!r} has no conv-like layers to browse")
        self._cache: dict = {}
        self._busy = False
        self._lock = threading.Lock()
        self._working: dict[str, str] = {}  # panel -> what it waits for
        self._error = ""  # the last failure, shown until the next request
        self._tile_channels: list[int] = []
        self.generation = 0
        if background is None:
            from .progress import in_kernel

            background = in_kernel()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="nsfwkit-browser") if background else None
        self._build_widgets(names, size, METHODS, cam_method)
        self._busy = True  # start on the channel most active for the first image, not a dead channel 0
        self.channel.value = int(np.argmax(self._activation(self._state()).reshape(-1, self.channel.max + 1).mean(0)))
        self._busy = False
        self.refresh()

    # -- widgets ----------------------------------------------------------------------------
    def _build_widgets(self, names, size: int, methods, cam_method: str) -> None:
        import ipywidgets as widgets

        self.layer = widgets.Dropdown(options=names, value=names[-1], description="layer")
        self.channel = widgets.IntSlider(min=0, max=max(0, self._channels(names[-1]) - 1), value=0,
                                         description="channel", continuous_update=False)
        self.mode = widgets.ToggleButtons(options=list(MODES), value="activation", description="mode")
        self.image = widgets.Dropdown(options=list(self._images), description="image")
        self.method = widgets.Dropdown(options=list(methods), value=cam_method, description="CAM")
        classes = list(getattr(self.spec, "class_names", None) or
                       [str(i) for i in range(int(self.model.outputs[0].shape[-1]))])
        self.cam_class = widgets.Dropdown(options=[("predicted", -1)] + [(c, i) for i, c in enumerate(classes)],
                                          value=-1, description="class")
        self.view = widgets.Image(format="png", width=size, height=size)
        self.info = widgets.HTML()
        self.status = widgets.HTML("ready")
        thumb = size * 3 // 4
        self.panels = {p: widgets.Image(format="png", width=thumb * (2 if p == "examples" else 1))
                       for p in PANELS if p != "channels"}
        self.captions = {p: widgets.HTML() for p in PANELS}
        self.channel_tiles = [widgets.Image(format="png", width=56, height=56) for _ in range(8)]
        self.channel_buttons = [widgets.Button(layout=widgets.Layout(width="56px")) for _ in range(8)]
        for i, button in enumerate(self.channel_buttons):
            button.on_click(lambda _b, slot=i: self._jump(slot))
        for control in (self.layer, self.channel, self.mode, self.image, self.method, self.cam_class):
            control.observe(self._changed, names="value")
        self.widget = self._layout(widgets)

    def _layout(self, widgets):
        def labelled(name, picture):
            self.captions[name].add_class("nsfwkit-label")
            return widgets.VBox([picture, self.captions[name]], layout=widgets.Layout(margin="0 6px 0 0"))

        self.view.add_class("nsfwkit-view")
        self.status.add_class("nsfwkit-status")
        for name, picture in self.panels.items():
            picture.add_class(f"nsfwkit-{name}")
        strip = [labelled(p, self.panels[p]) for p in self.show if p in self.panels]
        tiles = zip(self.channel_tiles, self.channel_buttons, strict=True)
        grid = widgets.GridBox([widgets.VBox([t, b]) for t, b in tiles],
                               layout=widgets.Layout(grid_template_columns="repeat(4, 62px)"))
        extra = [labelled("channels", grid)] if "channels" in self.show else []
        self.info.add_class("nsfwkit-label")
        self.info.add_class("nsfwkit-info")
        box = widgets.VBox([
            widgets.HTML(_STYLE), widgets.HBox([self.layer, self.image]), widgets.HBox([self.channel, self.status]),
            widgets.HBox([self.mode]), widgets.HBox([self.method, self.cam_class]),
            widgets.HBox([widgets.VBox([self.view, self.info], layout=widgets.Layout(margin="0 12px 0 0")), *extra]),
            widgets.HBox(strip),
        ])
        box.add_class("nsfwkit-layer-browser")
        return box

    # -- events -----------------------------------------------------------------------------
    def _channels(self, layer: str) -> int:
        from .viz.layers import find_layer

        return int(find_layer(self.model, layer).output.shape[-1])  # no sub-model needed for a shape

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

    def _jump(self, slot: int) -> None:
        channel = self._tile_channels[slot] if slot < len(self._tile_channels) else None
        if channel is not None:
            self.channel.value = int(channel)

    def _state(self) -> _State:
        return _State(self.layer.value, int(self.channel.value), self.mode.value, self.image.value,
                      self.method.value, int(self.cam_class.value))

    # -- compute (all of it in nsfwkit.viz) ----------------------------------------------------
    def _get(self, key, compute: Callable):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def _pixels(self, name: str) -> np.ndarray:
        from .viz.layers import as_model_input

        return self._get(("pixels", name), lambda: as_model_input(self.model, self._images[name])[0][0])

    def _activation(self, s: _State):
        from .viz import activations

        return self._get(("activation", s.layer, s.image), lambda: activations.activations(
            self.model, self._pixels(s.image), layers=[s.layer]).layers[s.layer][0])

    def _filter(self, s: _State):
        from .viz import filters

        return self._get(("filter", s.layer, s.channel), lambda: filters.maximize_filters(
            self.model, s.layer, filters=[s.channel], recipe=self.recipe, steps=self.steps, seed=self.seed,
            progress=False))

    def _cam(self, s: _State):
        from .viz.attributions import PIXEL_METHODS, explain

        layer = None if s.method in PIXEL_METHODS else s.layer
        options = {"max_channels": 64} if s.method == "score_cam" else {}
        return self._get(("cam", layer, s.image, s.method, s.class_index), lambda: explain(
            self.model, self._pixels(s.image), method=s.method, layer=layer,
            class_index=None if s.class_index < 0 else s.class_index, **options))

    def _example_set(self) -> _Examples:
        return self._get(("examples",), lambda: _load_examples(self._examples_source, self._side,
                                                               self.max_examples, self.seed))

    def _top_examples(self, s: _State):
        from .viz import activations

        found = self._example_set()
        if not len(found.images):
            return None
        means = self._get(("means", s.layer), lambda: activations.channel_means(
            self.model, found.images, layer=s.layer))
        return self._get(("top", s.layer, s.channel), lambda: activations.top_activating_examples(
            self.model, found.images, layer=s.layer, channel=s.channel, count=self.examples_count, means=means))

    # -- pictures and captions --------------------------------------------------------------
    def render(self) -> tuple[np.ndarray, str]:
        """The focus picture (``uint8`` RGB) and its caption for the current controls (computed inline)."""
        return self._focus_picture(self._state())

    def _focus_picture(self, s: _State) -> tuple[np.ndarray, str]:
        from .viz import activations
        from .viz.pixels import overlay

        if s.mode == "filter":
            result = self._filter(s)
            return result.images[0], (
                f"{s.layer} filter {s.channel}: activation {result.activation_start[0]:.3g} &rarr; "
                f"{result.activation_reached[0]:.3g} ({self.recipe}, {self.steps} steps)")
        if s.mode == "activation":
            maps = self._activation(s)
            values = maps[..., s.channel]
            return activations.channel_image(values, min_side=224), (
                f"{s.layer} channel {s.channel} on {html.escape(s.image)}: mean {values.mean():.3g}, "
                f"max {values.max():.3g}; most active channels "
                f"{activations.most_active_channels(maps, count=5).tolist()}")
        result = self._cam(s)
        return overlay(self._pixels(s.image), result.maps[0]), self._cam_caption(s, result)

    def _cam_caption(self, s: _State, result) -> str:
        from .viz.attributions import INPUT
        from .viz.cam import cam_coverage
        from .viz.layers import last_conv_layer

        c = int(result.class_index[0])
        names = getattr(self.spec, "class_names", None) or ()
        label = names[c] if c < len(names) else c
        where = "the input pixels" if result.layer == INPUT else s.layer
        caption = (f"{s.method} at {where} for class {label}{' (predicted)' if s.class_index < 0 else ''} "
                   f"(p={result.probabilities[0, c]:.3f}) on {html.escape(s.image)}")
        coverage = float(cam_coverage(result.maps, threshold=NEAR_EMPTY_LEVEL)[0])
        if coverage >= NEAR_EMPTY:
            return caption
        last = last_conv_layer(self.model, self.spec)
        note = f"<br><b>near-empty map</b> ({coverage:.1%} of it above half its peak): "
        if result.layer != INPUT and s.layer != last:
            return caption + note + f"the class gradient barely reaches {s.layer}; try the last conv layer, {last}"
        return caption + note + f"little evidence for {label} in this image"

    def _activation_panel(self, s: _State):
        from .viz.pixels import normalize_channel, overlay

        values = self._activation(s)[..., s.channel]
        return overlay(self._pixels(s.image), normalize_channel(values)), (
            f"channel {s.channel} on the image (mean {values.mean():.3g})")

    def _filter_panel(self, s: _State):
        result = self._filter(s)
        return result.images[0], f"filter {s.channel}: activation reached {result.activation_reached[0]:.3g}"

    def _examples_panel(self, s: _State):
        from .viz.pixels import grid

        top, found = self._top_examples(s), self._example_set()
        if top is None:
            return np.full((8, 8, 3), 255, np.uint8), f"no readable examples ({found.skipped} unreadable)"
        tiles = _example_tiles(found.images[top.indices], top.maps, redact=self.redact)
        pairs = zip(top.indices, top.scores, strict=True)
        listed = ", ".join(f"{html.escape(found.names[i])} {v:.3g}" for i, v in pairs)
        sampled = found.total > len(found.images) + found.skipped
        notes = [f"of {len(found.images)}" + (f" (a sample of {found.total})" if sampled else "")]
        if found.skipped:
            notes.append(f"{found.skipped} unreadable skipped")
        if self.redact:
            notes.append("blurred: redact=False to show")
        return grid(tiles, columns=3), f"most activating examples {', '.join(notes)}: {listed}"

    # -- drawing ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw everything for the current controls (heavy parts in the background in a notebook)."""
        self.generation += 1
        self._error = ""
        gen, s = self.generation, self._state()
        heavy_focus = s.mode == "filter" or (s.mode == "cam" and s.method not in QUICK_CAM_METHODS)
        self._draw("focus", gen, heavy_focus, lambda: self._focus_picture(s), self._set_focus,
                   f"{s.mode} for {s.layer} channel {s.channel}" if s.mode != "cam" else f"{s.method} at {s.layer}")
        for panel, heavy, make in (("image", False, lambda: (self._pixels(s.image), html.escape(s.image))),
                                   ("activation", False, lambda: self._activation_panel(s)),
                                   ("filter", True, lambda: self._filter_panel(s)),
                                   ("examples", True, lambda: self._examples_panel(s))):
            if panel in self.show:
                self._draw(panel, gen, heavy, make, lambda out, p=panel: self._set_panel(p, out),
                           f"{panel} for channel {s.channel}")
        if "channels" in self.show:
            self._draw("channels", gen, False, lambda: self._activation(s), lambda maps: self._set_channels(s, maps),
                       "most active channels")

    def _draw(self, panel: str, gen: int, heavy: bool, make: Callable, put: Callable, what: str) -> None:
        if heavy and self._executor is not None:
            self._set_working(panel, what, dim=True)
            self._executor.submit(self._background, panel, gen, make, put, what)
            return
        self._set_working(panel, what)
        try:
            put(make())
        except Exception as exc:
            self._error = f"{what} failed: {type(exc).__name__}: {exc}"
            raise
        finally:
            self._set_working(panel, None)

    def _background(self, panel: str, gen: int, make: Callable, put: Callable, what: str) -> None:
        try:
            if gen != self.generation:  # a newer request is queued behind this one: skip
                return
            out = make()  # cached even when it turns out stale: revisits are instant
            if gen == self.generation:  # nothing newer came in meanwhile: still wanted
                put(out)
        except Exception as exc:  # noqa: BLE001 - a worker thread has nobody to raise to: shown in the status
            self._error = f"{what} failed: {type(exc).__name__}: {exc}"
        finally:
            if gen == self.generation:
                self._set_working(panel, None, dim=True)

    def _set_working(self, panel: str, what: str | None, *, dim: bool = False) -> None:
        """Record what ``panel`` waits for (None: nothing) and update the status line."""
        target = self.view if panel == "focus" else self.panels.get(panel)
        if dim and target is not None:
            (target.add_class if what is not None else target.remove_class)("nsfwkit-stale")
        with self._lock:  # both threads write the status: compute and set it under one lock
            if what is None:
                self._working.pop(panel, None)
            else:
                self._working[panel] = what
            busy = sorted(set(self._working.values()))
            text = f"<progress></progress> computing {html.escape('; '.join(busy))}&hellip;" if busy else "ready"
            if self._error:
                text += f" <span style='color:#c00'>{html.escape(self._error)}</span>"
            self.status.value = text

    def _set_focus(self, out) -> None:
        from .viz.pixels import png_bytes

        picture, caption = out
        self.view.value = png_bytes(picture)
        self.info.value = caption

    def _set_panel(self, panel: str, out) -> None:
        from .viz.pixels import png_bytes

        picture, caption = out
        self.panels[panel].value = png_bytes(np.clip(np.rint(picture), 0, 255).astype(np.uint8))
        self.captions[panel].value = caption

    def _set_channels(self, s: _State, maps: np.ndarray) -> None:
        from .viz import activations
        from .viz.pixels import png_bytes

        top = activations.most_active_channels(maps, count=len(self.channel_tiles)).tolist()
        self._tile_channels = top
        means = maps.reshape(-1, maps.shape[-1]).mean(axis=0)
        for i, (tile, button) in enumerate(zip(self.channel_tiles, self.channel_buttons, strict=True)):
            shown = i < len(top)
            tile.layout.display = button.layout.display = None if shown else "none"
            if shown:
                tile.value = png_bytes(activations.channel_image(maps[..., top[i]], min_side=56))
                button.description, button.tooltip = str(top[i]), f"channel {top[i]}: mean {means[top[i]]:.3g}"
                button.button_style = "info" if top[i] == s.channel else ""
        self.captions["channels"].value = f"most active channels of {s.layer} (click to jump)"

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background work queued so far is done (no-op when it runs inline)."""
        if self._executor is not None:
            self._executor.submit(lambda: None).result(timeout)

    def close(self) -> None:
        """Stop the background thread (queued work is dropped) and close the widgets."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self.widget.close()

    def _ipython_display_(self):  # pragma: no cover - notebook display hook
        from IPython.display import display

        display(self.widget)


def _named_images(images) -> dict[str, np.ndarray]:
    """``{name: array}`` from a mapping, image files (named by file name) or None (the samples)."""
    from . import images as imaging

    if images is None:
        from .samples import sample_images

        images = sample_images()
    if not isinstance(images, Mapping):
        images = {Path(p).name: imaging.load_image(p) for p in images}
    if not images:
        raise ValueError("LayerBrowser needs at least one image")
    return dict(images)


def _example_files(source, errors: list) -> list[Path]:
    """The image files of a folder, a ``manifest.csv`` (paths relative to it allowed) or a list of
    files and folders; folders that cannot be listed go to ``errors``."""
    from .images import iter_image_files

    if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".csv":
        from .data import read_manifest

        folder = Path(source).parent
        return [Path(r["path"]) if Path(r["path"]).is_absolute() else folder / r["path"]
                for r in read_manifest(source)]
    return list(iter_image_files([source] if isinstance(source, (str, os.PathLike)) else list(source),
                                 on_error=errors.append))


def _load_examples(source, side: tuple[int, int], limit: int, seed: int) -> _Examples:
    """Load the dataset examples at the model's input size; unreadable files are counted, not fatal."""
    from .images import load_images, resize

    if source is None or isinstance(source, Mapping):
        if source is None:
            from .samples import sample_images

            source = sample_images()
        names = list(source)[:limit]
        arrays = np.stack([resize(np.asarray(source[n]), side) for n in names]) if names else np.zeros((0, *side, 3))
        return _Examples(names, np.clip(np.rint(arrays), 0, 255).astype(np.uint8), len(source), 0)
    folder_errors: list = []
    files = _example_files(source, folder_errors)
    chosen = files
    if len(files) > limit:
        picks = np.sort(np.random.default_rng(seed).choice(len(files), size=limit, replace=False))
        chosen = [files[i] for i in picks]
    arrays, paths, errors = load_images(chosen, image_size=side)
    return _Examples([Path(p).name for p in paths], np.clip(np.rint(arrays), 0, 255).astype(np.uint8),
                     len(files), len(errors) + len(folder_errors))


def _example_tiles(images: np.ndarray, maps: np.ndarray, *, redact: bool, side: int = 112) -> list[np.ndarray]:
    """Each example with its map overlaid (one scale for all, so strengths compare), blurred if asked."""
    from .images import resize
    from .viz.pixels import overlay

    low, high = float(maps.min()), float(maps.max())
    scaled = (maps - low) / (high - low) if high > low else np.zeros_like(maps)
    tiles = [overlay(resize(image, side), resize(m[..., None], side)[..., 0])
             for image, m in zip(images, scaled, strict=True)]
    if redact:
        from .data import redact as blur

        tiles = [blur(t) for t in tiles]
    return tiles
