"""Mixed precision: which weight tensors of a quantised TF.js export to store as uint8, float16 or
float32, chosen by measurement.

``uint8`` exports store each weight tensor as uint8, float16 or float32 and ``float16`` exports
as float16 or float32: the cheapest mix whose emulated TF.js output stays within the bar
(:data:`~nsfwkit.convert.TOLERANCES`) on calibration images. Plain per-tensor uint8 moves the
default MobileNetV2's probabilities by ~0.2 (TF.js has no per-channel scales, and batch-norm
folding gives kernel columns very different ranges), plain float16 by ~1e-2.

- :class:`_GraphEmulator` runs a float32 TF.js graph model in TensorFlow with replaceable
  weights (and gradients with respect to them);
- :class:`_PrecisionPlanner` ranks the tensors by first-order sensitivity and bisects for the
  cheapest plan that meets the target (the method is in its docstring);
- :func:`_dequantize_like_tfjs` is what TF.js holds after loading a quantised tensor.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from .layout import _BYTES, TOLERANCES

__all__ = ["PLAN_MARGIN"]

#: Storage dtypes a tensor may get, cheapest first, per quantisation of the export.
_LEVELS = {"float16": ("float16", "float32"), "uint8": ("uint8", "float16", "float32")}
#: The planner's default target, as a fraction of the bar (:data:`TOLERANCES`): the margin
#: for images whose probabilities move more than any calibration image's. Measured in TF.js
#: (Node, wasm) on the default MobileNetV2, held-out max |dp| over 18 images (the parity tests'
#: 9 + the 9 samples), as a fraction of the bar, and the tfjs/ folder size (float32: 10.59 MB):
#:
#:     margin   float16                      uint8
#:     0.5      0.16  7.58 MB (7 f16 tensors)   0.06  5.17 MB (25 u8, 23 f16)
#:     0.75     0.19  6.47 MB (15 f16)          0.32  4.73 MB (26 u8, 24 f16)
#:     1.0      0.12  6.32 MB (18 f16)          0.31  4.68 MB (26 u8, 28 f16)
#:
#: 0.75 takes most of the size gain of 1.0 (1.1 of 1.3 MB for float16, 0.44 of 0.49 for uint8)
#: and keeps a safety factor: on a random-head MobileNetV2 the held-out error reached 0.85x the
#: calibration bound, i.e. at most 0.64x the bar here (factor 1.6; 3+ on the default model),
#: where 1.0 would leave 0.85x (factor 1.2) for models and images unlike the calibration set.
PLAN_MARGIN = 0.75
#: Activations the converter fuses into ``_FusedConv2D``/``_FusedMatMul`` (undone for gradients).
_FUSED_ACTIVATIONS = {"Relu", "Relu6", "Elu", "Selu", "Tanh", "Sigmoid", "LeakyRelu"}


def _read_weights(model_dir: Path, *, int32: bool = False) -> dict[str, np.ndarray]:
    """The weights of an unquantised graph model folder, by name: float32 ones (and int32 ones
    with ``int32=True``; others skipped)."""
    model_json = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    out: dict[str, np.ndarray] = {}
    for group in model_json["weightsManifest"]:
        data = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            count = int(np.prod(w["shape"], dtype=np.int64))
            dtype = w.get("dtype", "float32")
            if "quantization" in w or dtype not in ("float32", "int32"):
                raise ValueError(f"{model_dir}: {w['name']} is quantised or not 4-byte")
            if dtype == "float32" or int32:
                out[w["name"]] = np.frombuffer(data, "<f4" if dtype == "float32" else "<i4",
                                               count, offset).reshape(w["shape"])
            offset += 4 * count
    return out


def _dequantize_like_tfjs(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` (float32) as TF.js holds them after loading a ``dtype``-quantised tensor.

    uint8: the converter's per-tensor affine quantisation (``tensorflowjs.quantization``:
    range nudged so that 0 is exact, ``q = round((v - min) / scale)``), then TF.js's
    ``q * scale + min`` in float64 stored as float32. float16: a cast and back. float32: as is.
    """
    values = np.asarray(values, np.float32)
    if dtype == "float32":
        return values
    if dtype == "float16":
        return values.astype(np.float16).astype(np.float32)
    if dtype != "uint8":
        raise ValueError(f"unknown storage dtype {dtype!r}")
    from tensorflowjs import quantization  # noqa: PLC0415  (after _import_converter)

    q, meta = quantization.quantize_weights(values, np.uint8)
    return (q.astype(np.float64) * float(meta["scale"]) + float(meta["min"])).astype(np.float32)


def _calibration_images(image_size: int) -> np.ndarray:
    """Safe images that CHOOSE the mixed precision, distinct from the parity tests' images.

    scikit-image's bundled photos that :func:`nsfwkit.samples.sample_images` does not use
    (colour and gray), mirrored centre crops of the ones it does, and generated blobs/noise
    with other seeds; resized the nsfwkit way.

    Returns:
        ``float32`` ``(N, image_size, image_size, 3)``, 0-255.
    """
    import skimage.data

    from .. import samples
    from ..images import resize

    raw = []
    for name in ("immunohistochemistry", "retina", "colorwheel", "logo",
                 "brick", "coins", "grass", "gravel", "moon", "page", "text", "cell", "clock"):
        img = np.asarray(getattr(skimage.data, name)())
        raw.append(np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3])
    raw.append(np.asarray(skimage.data.stereo_motorcycle()[0]))
    photos = samples.sample_images()
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field"):
        img = photos[name]
        h, w = img.shape[:2]
        raw.append(img[h // 8: h - h // 8, w // 8: w - w // 8][:, ::-1])
    raw += [samples.synthetic_image("blobs", image_size=160, seed=11),
            samples.synthetic_image("blobs", image_size=160, seed=12),
            samples.synthetic_image("noise", image_size=48, seed=13)]
    return np.stack([resize(np.asarray(img, np.uint8), image_size) for img in raw])


def _unfuse(graph_def) -> None:
    """Rewrite ``_FusedConv2D``/``_FusedMatMul`` (no gradient in TF) as Conv2D/MatMul +
    BiasAdd (+ activation), in place; the output keeps the fused node's name."""
    import tensorflow as tf

    nodes = []
    for node in graph_def.node:
        if node.op not in ("_FusedConv2D", "_FusedMatMul"):
            nodes.append(node)
            continue
        ops = [s.decode() for s in node.attr["fused_ops"].list.s]
        if not ops or ops[0] != "BiasAdd" or len(ops) > 2 or (ops[1:] and ops[1] not in _FUSED_ACTIVATIONS):
            raise NotImplementedError(f"{node.name}: fused ops {ops}")
        base = tf.compat.v1.NodeDef(name=node.name + "/_nsfwkit_op", op=node.op[len("_Fused"):])
        base.input.extend(node.input[:2])
        keep = (("T", "strides", "padding", "explicit_paddings", "data_format", "dilations")
                if node.op == "_FusedConv2D" else ("T", "transpose_a", "transpose_b"))
        for key in keep:
            if key in node.attr:
                base.attr[key].CopyFrom(node.attr[key])
        bias = tf.compat.v1.NodeDef(name=node.name + ("/_nsfwkit_bias" if len(ops) > 1 else ""),
                                    op="BiasAdd")
        bias.input.extend([base.name, node.input[2]])
        bias.attr["T"].CopyFrom(node.attr["T"])
        if "data_format" in node.attr:
            bias.attr["data_format"].CopyFrom(node.attr["data_format"])
        nodes += [base, bias]
        if len(ops) > 1:
            act = tf.compat.v1.NodeDef(name=node.name, op=ops[1])
            act.input.append(bias.name)
            act.attr["T"].CopyFrom(node.attr["T"])
            if ops[1] == "LeakyRelu":
                act.attr["alpha"].f = node.attr["leakyrelu_alpha"].f
            nodes.append(act)
    del graph_def.node[:]
    graph_def.node.extend(nodes)


class _GraphEmulator:
    """A float32 TF.js graph model run in TensorFlow with replaceable weights.

    The model.json topology is a TF GraphDef whose ``Const`` weights are the exact (batch-norm
    folded) arrays TF.js loads; each float32 one becomes a placeholder, so any mix of
    dequantised weights (:func:`_dequantize_like_tfjs`) can be evaluated, and gradients of the
    logits with respect to every weight give first-order sensitivities.
    """

    def __init__(self, model_dir: Path):
        import tensorflow as tf
        from google.protobuf import json_format

        model_dir = Path(model_dir)
        model_json = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
        weights = _read_weights(model_dir, int32=True)
        self.weights = {n: v for n, v in weights.items() if v.dtype == np.float32}
        self.names = list(self.weights)
        graph_def = tf.compat.v1.GraphDef()
        json_format.ParseDict(model_json["modelTopology"], graph_def)
        kept = []
        for node in graph_def.node:
            if node.op == "Const" and node.name in weights:
                if node.name in self.weights:
                    continue  # fed through a placeholder
                node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights[node.name]))
            kept.append(node)
        del graph_def.node[:]
        graph_def.node.extend(kept)
        try:
            _unfuse(graph_def)
            self.differentiable = True
        except NotImplementedError:
            self.differentiable = False
        (sig_in,) = model_json["signature"]["inputs"].values()
        (sig_out,) = model_json["signature"]["outputs"].values()
        shape = [int(d.get("size", -1)) for d in sig_in["tensorShape"]["dim"]]
        self.graph = tf.Graph()
        with self.graph.as_default():
            self._ph = {n: tf.compat.v1.placeholder(tf.float32, v.shape) for n, v in self.weights.items()}
            self._x = tf.compat.v1.placeholder(tf.float32, [s if s > 0 else None for s in shape])
            input_map = {f"{n}:0": p for n, p in self._ph.items()}
            input_map[sig_in["name"]] = self._x
            (self._y,) = tf.graph_util.import_graph_def(
                graph_def, input_map=input_map, return_elements=[sig_out["name"]], name="")
            softmax = [op for op in self.graph.get_operations() if op.type == "Softmax"]
            #: with a softmax: its input (logits); else the output itself
            self.softmax = bool(softmax)
            self._z = softmax[-1].inputs[0] if softmax else self._y
            self._grads = None
        self.session = tf.compat.v1.Session(graph=self.graph)

    def run(self, images: np.ndarray, overrides: dict[str, np.ndarray] | None = None,
            *, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """``(logits, outputs)`` float32 ``(N, classes)`` with some weights replaced."""
        feed = {self._ph[n]: v for n, v in self.weights.items()}
        feed.update({self._ph[n]: v for n, v in (overrides or {}).items()})
        zs, ys = [], []
        for start in range(0, len(images), batch_size):
            feed[self._x] = images[start: start + batch_size]
            z, y = self.session.run([self._z, self._y], feed)
            zs.append(z)
            ys.append(y)
        return np.concatenate(zs), np.concatenate(ys)

    def linear_changes(self, images: np.ndarray, deltas: dict[str, dict[str, np.ndarray]]
                       ) -> dict[str, np.ndarray]:
        """First-order change of every logit from each weight's change, per image.

        Args:
            deltas: key -> weight name -> change of that weight (e.g. its quantisation error).

        Returns:
            key -> ``float64`` ``(weights, N, classes)``: ``<d logit / d w, delta w>``.
        """
        import tensorflow as tf

        if self._grads is None:
            with self.graph.as_default():
                plist = [self._ph[n] for n in self.names]
                self._grads = [tf.gradients(self._z[0, c], plist) for c in range(int(self._z.shape[-1]))]
        out = {k: np.zeros((len(self.names), len(images), len(self._grads))) for k in deltas}
        feed = {self._ph[n]: v for n, v in self.weights.items()}
        for i in range(len(images)):
            feed[self._x] = images[i: i + 1]
            grads = self.session.run([[g for g in gs if g is not None] for gs in self._grads], feed)
            for c, gs in enumerate(self._grads):
                values = iter(grads[c])
                for k, g in enumerate(gs):
                    if g is None:
                        continue
                    value = next(values)
                    for key, delta in deltas.items():
                        out[key][k, i, c] = float(np.vdot(value, delta[self.names[k]]))
        return out

    def close(self) -> None:
        self.session.close()


class _PrecisionPlanner:
    """Chooses, by measurement, each weight tensor's storage dtype for a quantised export.

    Method (per SavedModel, shared by its float16 and uint8 conversions):

    1. Emulate the float32 graph model in TF (:class:`_GraphEmulator`) on calibration images
       (:func:`_calibration_images`, never the test images).
    2. Sensitivity of tensor ``i`` at storage dtype ``d``: the first-order change of every
       logit of every image when only that tensor is dequantised the TF.js way, ``e_i(d) =
       J_i · (deq_d(w_i) - w_i)`` (one backward pass per image and class).
    3. Upgrades (uint8 -> float16 -> float32) are ranked by "worst-case probability error
       removed per extra byte": gain ``B(e_i(lo)) - B(e_i(hi))`` over cost ``size_i x
       (bytes_hi - bytes_lo)`` (levels that do not lower ``B`` are skipped), where
       ``B(dz) = max over images of (max_c dz - min_c dz) / 4`` bounds, to
       first order, the change of every softmax probability whatever the image's
       probabilities (the softmax Jacobian ``diag(p) - p pT`` has ``|dp_c| <= (max dz - min dz)
       p_c (1 - p_c)``), so it holds for borderline images too, not only the calibration ones.
    4. The cheapest prefix of that ranking whose REAL (non-linear, emulated) logits meet
       ``B(z_quantised - z_float32) <= target`` is found by bisection; ``target`` defaults to
       three quarters of the export's bar (:data:`PLAN_MARGIN` x :data:`TOLERANCES`).
    """

    def __init__(self, reference: Path, *, input_range: tuple[float, float]):
        self.emulator = _GraphEmulator(reference)
        size = int(self.emulator._x.shape[1])
        images = _calibration_images(size)
        if input_range[1] == 1.0:
            images = images / np.float32(255.0)
        self.images = images.astype(np.float32)
        self.z0, self.p0 = self.emulator.run(self.images)
        self._sensitivity: dict[str, np.ndarray] = {}
        self._dequantized: dict[str, dict[str, np.ndarray]] = {}
        self._plans: dict[tuple[str, float], tuple[dict | None, dict[str, Any]]] = {}

    def _bound(self, dz: np.ndarray) -> float:
        if not self.emulator.softmax:
            return float(np.abs(dz).max()) if dz.size else 0.0
        return float(0.25 * (dz.max(-1) - dz.min(-1)).max()) if dz.size else 0.0

    def dequantized(self, dtype: str) -> dict[str, np.ndarray]:
        if dtype not in self._dequantized:
            self._dequantized[dtype] = {n: _dequantize_like_tfjs(v, dtype)
                                        for n, v in self.emulator.weights.items()}
        return self._dequantized[dtype]

    def sensitivity(self, dtype: str) -> np.ndarray:
        """``(weights, N, classes)`` first-order logit changes (0 for float32)."""
        em = self.emulator
        if dtype == "float32":
            return np.zeros((len(em.names), len(self.images), self.z0.shape[-1]))
        missing = [d for d in ("float16", "uint8") if d not in self._sensitivity]
        if dtype in missing:
            deltas = {d: {n: self.dequantized(d)[n] - em.weights[n] for n in em.names} for d in missing}
            if em.differentiable:
                self._sensitivity.update(em.linear_changes(self.images, deltas))
            else:  # exotic fused ops: measure each tensor alone (slower, exact)
                for d in missing:
                    self._sensitivity[d] = np.stack([
                        em.run(self.images, {n: self.dequantized(d)[n]})[0] - self.z0 for n in em.names])
        return self._sensitivity[dtype]

    def measure(self, levels: dict[str, str]) -> dict[str, float]:
        """Emulated error of a storage plan on the calibration images."""
        overrides = {n: self.dequantized(d)[n] for n, d in levels.items() if d != "float32"}
        z, p = self.emulator.run(self.images, overrides)
        return {"bound": self._bound(z - self.z0), "max_abs_diff": float(np.abs(p - self.p0).max())}

    def plan(self, quantization: str, *, target: float | None = None) -> tuple[dict, dict[str, Any]]:
        """Choose the storage dtype of every float32 weight for ``quantization``.

        Returns:
            ``(quantization_dtype_map, info)``: the converter's map (``{"uint8": [names],
            "float16": [names]}``; names absent stay float32) and a JSON-able summary.
        """
        target = float(PLAN_MARGIN * TOLERANCES[quantization] if target is None else target)
        if (quantization, target) in self._plans:
            return self._plans[quantization, target]
        t0 = time.perf_counter()
        levels = _LEVELS[quantization]
        em = self.emulator
        sizes = {n: int(v.size) for n, v in em.weights.items()}
        sens = {d: self.sensitivity(d) for d in levels}
        moves, ladders = [], {}
        for i, name in enumerate(em.names):
            # the tensor's own worst-case error per level; a level no better than a cheaper
            # one (e.g. float16 for a scalar that uint8 stores exactly) is skipped
            own = {d: self._bound(sens[d][i]) for d in levels}
            ladder = [levels[0]]
            for d in levels[1:]:
                if own[d] < own[ladder[-1]]:
                    ladder.append(d)
            ladders[name] = ladder
            for step, (lo, hi) in enumerate(zip(ladder, ladder[1:], strict=False), start=1):
                gain = own[lo] - own[hi]
                cost = sizes[name] * (_BYTES[hi] - _BYTES[lo])
                moves.append((-gain / cost, i, step))
        moves.sort()
        order, reached = [], {}
        for _, i, step in moves:  # an upgrade comes after the ones it builds on
            name = em.names[i]
            for s in range(reached.get(i, 0) + 1, step + 1):
                order.append((name, ladders[name][s]))
                reached[i] = s

        def plan_at(k: int) -> dict[str, str]:
            chosen = {n: levels[0] for n in em.names}
            chosen.update(dict(order[:k]))
            return chosen

        lo, hi, evaluations = 0, len(order), 0
        while lo < hi:  # the shortest prefix that meets the target (bisection)
            mid = (lo + hi) // 2
            evaluations += 1
            if self.measure(plan_at(mid))["bound"] <= target:
                hi = mid
            else:
                lo = mid + 1
        chosen = plan_at(lo)
        qmap = {d: [_fnmatch_escape(n) for n in em.names if chosen[n] == d]
                for d in levels if d != "float32"}
        qmap = {d: names for d, names in qmap.items() if names}
        info = self._info(quantization, chosen, t0=t0, target=target, evaluations=evaluations,
                          method="first-order logit sensitivity per tensor, greedy by gain per byte, "
                                 "bisection on the emulated calibration error")
        self._plans[quantization, target] = (qmap or None, info)
        return self._plans[quantization, target]

    def pure(self, quantization: str) -> tuple[dict, dict[str, Any]]:
        """No plan: every float32 weight tensor stored as ``quantization`` (smallest files).

        The emulated calibration error is still measured and reported, so the cost is visible.

        Returns:
            ``(quantization_dtype_map, info)`` like :meth:`plan` (``target`` is ``None``).
        """
        t0 = time.perf_counter()
        em = self.emulator
        chosen = {n: quantization for n in em.names}
        info = self._info(quantization, chosen, t0=t0, target=None, evaluations=1,
                          method=f"none: every float32 weight tensor stored as {quantization}")
        return {quantization: [_fnmatch_escape(n) for n in em.names]}, info

    def _info(self, quantization: str, chosen: dict[str, str], *, t0: float, target: float | None,
              evaluations: int, method: str) -> dict[str, Any]:
        """The JSON-able summary of a storage plan (``chosen``: weight -> dtype), measured now.

        ``seconds`` runs from ``t0`` to the end of this measurement."""
        levels = _LEVELS[quantization]
        names = self.emulator.names
        sizes = {n: int(v.size) for n, v in self.emulator.weights.items()}
        measured = self.measure(chosen)
        return {
            "method": method,
            "target": target,
            "calibration_images": int(len(self.images)),
            "calibration_bound": round(measured["bound"], 7),
            "calibration_max_abs_diff": round(measured["max_abs_diff"], 7),
            "tensors": {d: sum(1 for n in names if chosen[n] == d) for d in levels},
            "bytes": {d: int(sum(sizes[n] * _BYTES[d] for n in names if chosen[n] == d)) for d in levels},
            "weight_bytes": int(sum(sizes[n] * _BYTES[chosen[n]] for n in names)),
            "weight_bytes_all_float32": int(4 * sum(sizes.values())),
            "evaluations": evaluations,
            "seconds": round(time.perf_counter() - t0, 3),
            "levels": {n: chosen[n] for n in names},
        }

    def close(self) -> None:
        self.emulator.close()


def _fnmatch_escape(name: str) -> str:
    """The converter matches map entries with fnmatch: escape ``*?[``."""
    return re.sub(r"([*?\[])", r"[\1]", name)
