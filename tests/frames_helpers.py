"""Generated moving pictures for the frame tests: hand-written GIFs, PyAV videos, a flatness model.

Everything is made here, in ``tmp_path``: scikit-image's safe photos, flat generated cartoons,
GIF bytes written by hand (so disposal, partial frames and transparency are exactly what the test
says), and videos encoded with the same PyAV the loader decodes with.
"""

from __future__ import annotations

import struct

import numpy as np

from convert_helpers import missing


def require_av():
    """PyAV, or skip locally / FAIL under ``$CI`` (the `video` extra must be installed there)."""
    try:
        import av
    except ImportError:
        missing("needs PyAV (pip install 'nsfwkit[video]')")
    return av


def photo(size: int = 48) -> np.ndarray:
    """scikit-image's cat, resized: a textured, safe photo, ``uint8`` ``(size, size, 3)``."""
    from PIL import Image

    from nsfwkit import samples

    return np.asarray(Image.fromarray(samples.sample_images()["chelsea"]).resize((size, size)))


def cartoon(size: int = 48, seed: int = 0) -> np.ndarray:
    """A flat pastel cartoon: two solid discs on a solid background (no texture at all)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = rng.integers(90, 200, 3)
    img = np.empty((size, size, 3), np.int64)
    img[:] = base
    for _ in range(2):
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 5) ** 2] = base + rng.integers(-40, 41, 3)
    return img.astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# GIFs by hand


def _lzw(indices: list[int], min_code_size: int) -> bytes:
    """GIF LZW data that a decoder reads back as ``indices``: literal codes, a clear code after
    every two (so the code table never grows past the first width)."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    width = min_code_size + 1
    codes = [clear]
    for k in range(0, len(indices), 2):
        codes += indices[k:k + 2] + [clear]
    codes[-1] = end
    bits = nbits = 0
    out = bytearray()
    for code in codes:
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 255)
            bits >>= 8
            nbits -= 8
    if nbits:
        out.append(bits & 255)
    return bytes(out)


def gif_bytes(size: tuple[int, int], palette: list[tuple[int, int, int]], frames: list[dict],
              *, background: int = 0) -> bytes:
    """A GIF89a with a 4-colour global table; each frame a dict: ``pixels`` (indices, (h, w)),
    ``left``, ``top``, ``delay_cs``, ``disposal`` (0-3) and optionally ``transparent`` (an index)."""
    width, height = size
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80 | 0x01, background, 0))
    out += bytes(np.array(list(palette) + [(0, 0, 0)] * (4 - len(palette)), np.uint8).ravel())
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for frame in frames:
        transparent = frame.get("transparent")
        flags = (frame["disposal"] << 2) | (transparent is not None)
        out += b"\x21\xf9\x04" + struct.pack("<BHB", flags, frame["delay_cs"], transparent or 0) + b"\x00"
        h, w = frame["pixels"].shape
        out += b"\x2c" + struct.pack("<HHHHB", frame["left"], frame["top"], w, h, 0)
        data = _lzw([int(v) for v in frame["pixels"].ravel()], 2)
        out += b"\x02"
        for k in range(0, len(data), 255):
            out += bytes([len(data[k:k + 255])]) + data[k:k + 255]
        out += b"\x00"
    return bytes(out + b"\x3b")


def browser_composite(size, palette, frames, background=(255, 255, 255)):
    """What a browser shows for each frame of :func:`gif_bytes`' GIF, over ``background``, and
    when: a transparent canvas, each frame's opaque pixels drawn on it, then the canvas disposed
    (2: the frame's rectangle cleared, 3: put back as it was), delays of 0 or 1 cs played as 10."""
    width, height = size
    canvas = np.zeros((height, width, 4), np.float64)
    shown, times, t = [], [], 0.0
    for frame in frames:
        before = canvas.copy()
        h, w = frame["pixels"].shape
        for y in range(h):
            for x in range(w):
                index = frame["pixels"][y, x]
                if index != frame.get("transparent"):
                    canvas[frame["top"] + y, frame["left"] + x] = (*palette[index], 255)
        alpha = canvas[..., 3:] / 255
        shown.append(np.rint(canvas[..., :3] * alpha + np.array(background) * (1 - alpha)).astype(np.uint8))
        times.append(round(t, 6))
        t += (10 if frame["delay_cs"] <= 1 else frame["delay_cs"]) / 100
        if frame["disposal"] == 2:
            canvas[frame["top"]:frame["top"] + h, frame["left"]:frame["left"] + w] = 0
        elif frame["disposal"] == 3:
            canvas = before
    return shown, times


# ---------------------------------------------------------------------------------------------
# Videos with PyAV


def write_video(path, frames, *, fps: int = 10, codec: str = "libx264", pix_fmt: str = "yuv420p",
                rotation: int | None = None, options: dict | None = None, container_options=None):
    """Encode ``frames`` (RGB ``uint8`` arrays of one size) at ``fps``; returns ``path``."""
    av = require_av()
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def grey_ramp(count: int, size: tuple[int, int] = (32, 24), step: int = 10) -> list[np.ndarray]:
    """Frames whose grey level says their index: frame ``i`` is ``i * step`` everywhere."""
    width, height = size
    return [np.full((height, width, 3), (i * step) % 256, np.uint8) for i in range(count)]


# ---------------------------------------------------------------------------------------------
# A model whose NSFW score is known: flat pictures score high, textured ones low

#: Flatness model: logit(Porn) - logit(Neutral) = SLOPE * (PIVOT - texture), texture being the
#: mean squared difference between horizontally and vertically neighbouring pixels (grey).
SLOPE, PIVOT = 0.02, 400.0


def texture(images: np.ndarray) -> np.ndarray:
    """The flatness model's feature, by hand: ``(N, S, S, 3)`` -> ``(N,)``."""
    grey = np.asarray(images, np.float64).mean(-1)
    dx = grey[:, :-1, :-1] - grey[:, :-1, 1:]
    dy = grey[:, :-1, :-1] - grey[:, 1:, :-1]
    return (dx ** 2).mean((1, 2)) + (dy ** 2).mean((1, 2))


def flatness_probs(images: np.ndarray) -> np.ndarray:
    """The flatness model's output, by hand: ``(N, 5)`` nsfwjs-class probabilities."""
    z = SLOPE * (PIVOT - texture(images))
    porn = 1 / (1 + np.exp(-z))
    out = np.zeros((len(z), 5))
    out[:, 2], out[:, 3] = 1 - porn, porn  # Neutral, Porn; the other classes ~0
    return out


def flatness_model(image_size: int = 32):
    """A tiny Keras model computing :func:`flatness_probs` (raw 0-255 input named ``image``)."""
    import keras

    inputs = keras.Input((image_size, image_size, 3), name="image")
    diffs = keras.layers.Conv2D(2, 2, use_bias=False, name="differences")(inputs)
    squared = keras.layers.Multiply()([diffs, diffs])
    energy = keras.layers.GlobalAveragePooling2D()(squared)
    logits = keras.layers.Dense(5, name="logits")(energy)
    model = keras.Model(inputs, keras.layers.Softmax()(logits), name="flatness")
    kernel = np.zeros((2, 2, 3, 2), np.float32)
    kernel[0, 0, :, :] = 1 / 3   # top-left pixel, grey
    kernel[0, 1, :, 0] = -1 / 3  # minus its right neighbour
    kernel[1, 0, :, 1] = -1 / 3  # minus the one below
    model.get_layer("differences").set_weights([kernel])
    dense = np.zeros((2, 5), np.float32)
    bias = np.full(5, -40.0, np.float32)  # Drawing, Hentai, Sexy: never
    dense[:, 3], bias[3] = -SLOPE / 2, SLOPE * PIVOT / 2   # Porn
    dense[:, 2], bias[2] = SLOPE / 2, -SLOPE * PIVOT / 2   # Neutral
    model.get_layer("logits").set_weights([dense, bias])
    return model
