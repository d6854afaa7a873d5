// nsfwkit's TensorFlow.js classifier: ONE implementation of loading, preprocessing, classifying
// and Grad-CAM, shared by the web view (browser) and the parity tests (Node, nsfwkit/js/tfjs_predict.mjs).
//
// Every function takes the TensorFlow.js namespace `tf` as its first argument, so this module
// has no imports and runs unchanged from a <script type="module"> page (tf from the vendored
// tf.min.js) and from Node (tf from node_modules).
//
// The model is a TF.js graph model written by `nsfwkit export` / nsfwkit.convert; its
// model.json carries `userDefinedMetadata.nsfwkit` (class names, input size, input range,
// resize method, NSFW classes and threshold, Grad-CAM node names).

/** Metadata of a loaded graph model (`userDefinedMetadata.nsfwkit`), with defaults filled in. */
export function modelInfo(model) {
  const meta = (model.metadata && model.metadata.nsfwkit) || {};
  const size = meta.image_size ?? model.inputs[0].shape[1];
  const classes = meta.class_names ?? [];
  return {
    name: meta.name ?? "model",
    classNames: classes,
    imageSize: size,
    inputRange: meta.input_range ?? [0, 255],
    nsfwClasses: meta.nsfw_classes ?? [],
    threshold: meta.threshold ?? 0.5,
    quantization: meta.quantization ?? "float32",
    cam: meta.cam ?? null,
    raw: meta,
  };
}

/**
 * Bring decoded RGB pixels to the model's input, exactly as nsfwkit.images.resize does in Python
 * (and as nsfwjs does): bilinear resize with corners aligned, no antialiasing, skipped when the
 * image is already size x size; then scaled to the model's input range (0-255 models get the
 * raw values; 0-1 models, i.e. nsfwjs-style exports, get pixels / 255 BEFORE the resize, the
 * nsfwjs order).
 *
 * @param tf the TensorFlow.js namespace
 * @param pixels tf.Tensor3D (H, W, 3) of RGB values 0-255 (int32 or float32)
 * @param info modelInfo(model)
 * @returns tf.Tensor4D float32 (1, S, S, 3)
 */
export function preprocess(tf, pixels, info) {
  return tf.tidy(() => {
    const size = info.imageSize;
    let x = pixels.toFloat();
    const [lo, hi] = info.inputRange;
    if (lo !== 0 || hi !== 255) x = x.div(255 / (hi - lo)).add(lo);
    if (x.shape[0] !== size || x.shape[1] !== size) {
      x = tf.image.resizeBilinear(x, [size, size], true);
    }
    return x.reshape([1, size, size, 3]);
  });
}

/** Probabilities (Float32Array, one per class) for a preprocessed (1, S, S, 3) batch. */
export async function predictBatch(tf, model, batch) {
  const out = model.predict(batch);
  const data = await out.data();
  out.dispose();
  return data;
}

/**
 * Classify decoded pixels.
 * @returns {probs: number[], classes: [{className, probability}] sorted, nsfwScore, isNsfw, top}
 */
export async function classify(tf, model, pixels, info = modelInfo(model)) {
  const batch = preprocess(tf, pixels, info);
  const probs = Array.from(await predictBatch(tf, model, batch));
  batch.dispose();
  return summarize(probs, info);
}

/** Class table, NSFW score (sum of the NSFW classes) and verdict at the model's threshold. */
export function summarize(probs, info) {
  const names = info.classNames.length === probs.length
    ? info.classNames : probs.map((_, i) => `class_${i}`);
  const classes = probs.map((p, i) => ({ className: names[i], probability: p }))
    .sort((a, b) => b.probability - a.probability);
  let nsfwScore = 0;
  for (const c of info.nsfwClasses) {
    const i = names.indexOf(c);
    if (i >= 0) nsfwScore += probs[i];
  }
  return {
    probs, classes, top: classes[0].className, nsfwScore,
    isNsfw: info.nsfwClasses.length > 0 && nsfwScore >= info.threshold,
  };
}

/**
 * Grad-CAM of one class on the last conv features, computed in TF.js:
 * A = features(x); w_k = mean_ij d logit_c / dA_ijk; map = relu(sum_k w_k A_k) / max.
 * Uses the pre-softmax logits node recorded at export (metadata.cam); returns null when the
 * model carries no Grad-CAM metadata.
 *
 * @returns {heatmap: Float32Array (h*w, 0-1), height, width, classIndex} or null
 */
export async function gradCam(tf, model, pixels, info = modelInfo(model), classIndex = null) {
  if (!info.cam || !info.cam.feature_node || !info.cam.logits_node) return null;
  const feat = info.cam.feature_node;
  const logitsNode = info.cam.logits_node;
  const batch = preprocess(tf, pixels, info);
  const features = model.execute(batch, feat);
  batch.dispose();
  if (classIndex === null) {
    const logits = model.execute({ [feat]: features }, logitsNode);
    classIndex = (await logits.argMax(-1).data())[0];
    logits.dispose();
  }
  // One-hot mask, not gather: gather's gradient needs UnsortedSegmentSum, absent from wasm.
  const logitsShape = model.execute({ [feat]: features }, logitsNode);
  const mask = tf.oneHot([classIndex], logitsShape.shape[1]).toFloat();
  logitsShape.dispose();
  const head = (a) => model.execute({ [feat]: a }, logitsNode).mul(mask).sum();
  const grads = tf.grad(head)(features);
  const cam = tf.tidy(() => {
    const weights = grads.mean([0, 1, 2]);                       // (K,)
    const map = features.mul(weights).sum(-1).squeeze([0]).relu(); // (h, w)
    const peak = map.max();
    return map.div(tf.maximum(peak, 1e-12));
  });
  const [height, width] = cam.shape;
  const heatmap = await cam.data();
  tf.dispose([features, grads, cam, mask]);
  return { heatmap, height, width, classIndex };
}

/**
 * An in-memory IO handler for a graph model whose model.json and weight shards the caller has
 * read (Node has no file:// loader without tfjs-node).
 * @param modelJson parsed model.json
 * @param readShard (path) => Uint8Array | ArrayBuffer for each path in weightsManifest
 */
export function memoryHandler(tf, modelJson, readShard) {
  return {
    load: async () => tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
      const specs = [];
      const parts = [];
      for (const group of manifest) {
        for (const p of group.paths) parts.push(new Uint8Array(await readShard(p)));
        specs.push(...group.weights);
      }
      const total = parts.reduce((n, b) => n + b.byteLength, 0);
      const data = new Uint8Array(total);
      let offset = 0;
      for (const b of parts) { data.set(b, offset); offset += b.byteLength; }
      return [specs, data.buffer];
    }),
  };
}

// ---------------------------------------------------------------------------------------------
// Pixel attributions in the page (nsfwkit.viz.attributions.gradients / smoothgrad)
// ---------------------------------------------------------------------------------------------
/** Methods of nsfwkit.viz.attributions.ALL_METHODS the web view computes in TF.js. SmoothGrad
 * can be (inputGradients' `samples`) but costs `samples` gradient maps, not interactive: measured
 * per map on the default MobileNetV2 in headless Chromium (wasm, 2 busy CPU cores) by
 * tests/test_web.py (two runs): Grad-CAM 0.09-0.15 s, gradients 1.5-3.4 s, SmoothGrad with 8 samples
 * 11.6-17.1 s. */
export const PAGE_METHODS = ["grad_cam", "gradients"];

/**
 * Vanilla gradients (Simonyan et al. 2014) or SmoothGrad (Smilkov et al. 2017) of one class,
 * computed in TF.js as nsfwkit.viz.attributions does in Python: g = d logit_c / d x at the
 * model-size input (the pre-softmax logits node recorded at export, metadata.cam.logits_node);
 * SmoothGrad averages g over `samples` copies of x plus Gaussian noise of standard deviation
 * noise * (max(x) - min(x)) (TF.js's generator, seeded by `seed`, so not the numpy draws);
 * then the largest |g| over the colour channels, divided by its maximum.
 *
 * @param options {samples: 0 = vanilla gradients, else SmoothGrad; noise: 0.15; seed: 0}
 * @returns {heatmap: Float32Array (S*S, 0-1), height, width, classIndex} or null when the model
 *   carries no logits node
 */
export async function inputGradients(tf, model, pixels, info = modelInfo(model), classIndex = null,
                                     options = {}) {
  if (!info.cam || !info.cam.logits_node) return null;
  return withInputGradients(tf, () => pixelGradients(tf, model, pixels, info, classIndex, options));
}

/** Kernels that back-propagate through convolutions: to the input (needed) and to the filter
 * (computed by the gradient of a fused convolution even when only the input's is asked for). */
const INPUT_BACKPROP = ["Conv2DBackpropInput", "DepthwiseConv2dNativeBackpropInput"];
const FILTER_BACKPROP = ["Conv2DBackpropFilter", "DepthwiseConv2dNativeBackpropFilter"];

/**
 * Run `fn` with the active backend able to back-propagate to an input through convolutions.
 * For the duration of the call, each input-gradient kernel the backend lacks (wasm has only
 * Conv2DBackpropInput) is registered as the cpu backend's kernel (inputs copied there, output
 * back: exact, slower), and each missing filter-gradient kernel as one returning zeros: fn must
 * only ask for gradients with respect to its inputs, never to weights (tf.grad(f)(x) does not).
 * The kernels are unregistered afterwards. Returns fn's result.
 */
export async function withInputGradients(tf, fn) {
  const name = tf.getBackend();
  const added = [];
  const add = (kernelName, kernelFunc) => {
    if (name === "cpu" || tf.getKernel(kernelName, name)) return;
    tf.registerKernel({ kernelName, backendName: name, kernelFunc });
    added.push(kernelName);
  };
  for (const kernelName of INPUT_BACKPROP) {
    const cpuKernel = tf.getKernel(kernelName, "cpu");
    if (cpuKernel) add(kernelName, (call) => onCpu(tf, cpuKernel, call));
  }
  for (const kernelName of FILTER_BACKPROP) {
    add(kernelName, ({ attrs, backend }) => {
      const shape = attrs.filterShape;
      const size = shape.reduce((a, b) => a * b, 1);
      return { dataId: backend.write(new Float32Array(size), shape, "float32"), shape, dtype: "float32" };
    });
  }
  try {
    return await fn();
  } finally {
    for (const kernelName of added) tf.unregisterKernel(kernelName, name);
  }
}

function onCpu(tf, cpuKernel, { inputs, attrs, backend }) {
  const cpu = tf.findBackend("cpu");
  const moved = {};
  for (const [key, t] of Object.entries(inputs)) {
    moved[key] = { dataId: cpu.write(backend.readSync(t.dataId), t.shape, t.dtype), shape: t.shape, dtype: t.dtype };
  }
  const out = cpuKernel.kernelFunc({ inputs: moved, attrs, backend: cpu });
  const values = cpu.readSync(out.dataId);
  for (const t of [...Object.values(moved), out]) cpu.disposeData(t.dataId);
  return { dataId: backend.write(values, out.shape, out.dtype), shape: out.shape, dtype: out.dtype };
}

async function pixelGradients(tf, model, pixels, info, classIndex, { samples = 0, noise = 0.15, seed = 0 } = {}) {
  const logitsNode = info.cam.logits_node;
  const batch = preprocess(tf, pixels, info);
  const logits = model.execute(batch, logitsNode);
  if (classIndex === null) {
    const top = logits.argMax(-1);
    classIndex = (await top.data())[0];
    top.dispose();
  }
  const mask = tf.tidy(() => tf.oneHot([classIndex], logits.shape[1]).toFloat());  // not gather: see gradCam
  logits.dispose();
  const score = (x) => model.execute(x, logitsNode).mul(mask).sum();
  const gradient = tf.grad(score);
  let total = tf.zeros(batch.shape);
  const copies = Math.max(1, samples);
  const range = tf.tidy(() => batch.max().sub(batch.min()));
  const spread = noise * (await range.data())[0];
  range.dispose();
  for (let i = 0; i < copies; i++) {
    const x = samples > 0 ? tf.tidy(() => batch.add(tf.randomNormal(batch.shape, 0, spread, "float32", seed + i)))
      : batch;
    const g = gradient(x);
    const next = total.add(g);
    tf.dispose([g, total].concat(x === batch ? [] : [x]));
    total = next;
  }
  const map = tf.tidy(() => {
    const m = total.div(copies).abs().max(-1).squeeze([0]);   // (S, S)
    return m.div(tf.maximum(m.max(), 1e-12));
  });
  const [height, width] = map.shape;
  const heatmap = await map.data();
  tf.dispose([batch, mask, total, map]);
  return { heatmap, height, width, classIndex };
}
