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
