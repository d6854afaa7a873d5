// Run an nsfwkit TF.js graph model in Node (wasm backend) on pixel buffers decoded by Python.
//
// Usage: node nsfwkit/js/tfjs_predict.mjs REQUEST.json   (normally run by nsfwkit.convert.node.run_node)
// REQUEST.json: {
//   "model_dir": folder holding model.json + shards (read from disk, loaded from memory:
//                Node cannot load file:// URLs without tfjs-node),
//   "backend": "wasm" (default) | "cpu",
//   "images": [{"name": str, "width": int, "height": int, "file": path,
//               "dtype": "uint8" (raw RGB H*W*3, preprocessed here by nsfwkit/web/classifier.js)
//                      | "float32" (an already preprocessed S*S*3 model input, fed as is)}],
//   "dump_inputs": folder or null (write each preprocessed model input as float32 <name>.f32),
//   "gradcam": bool (also compute Grad-CAM of the top class, if the model carries its metadata),
//   "repeat": int (timing runs per image, default 0)
// }
// Prints one JSON object on stdout: {"backend", "metadata", "results": [{"name", "probs",
//   "cam"?: {"height", "width", "class_index", "heatmap"}}], "load_ms", "ms_per_image"}.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath, pathToFileURL } from "node:url";

import { initTfjs } from "./tfjs_node.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const request = JSON.parse(readFileSync(process.argv[2], "utf8"));
const tf = await initTfjs(request.backend ?? "wasm");
const clf = await import(pathToFileURL(path.join(here, "..", "web", "classifier.js")).href);   // nsfwkit/web/

const t0 = performance.now();
const modelJson = JSON.parse(readFileSync(path.join(request.model_dir, "model.json"), "utf8"));
const handler = clf.memoryHandler(tf, modelJson, (p) => readFileSync(path.join(request.model_dir, p)));
const model = await tf.loadGraphModel(handler);
const info = clf.modelInfo(model);
const loadMs = performance.now() - t0;

const results = [];
let inferMs = 0;
let runs = 0;
for (const item of request.images) {
  const bytes = readFileSync(item.file);
  let batch;
  let pixels = null;
  if ((item.dtype ?? "uint8") === "uint8") {
    if (bytes.length !== item.width * item.height * 3) {
      throw new Error(`${item.file}: expected ${item.width * item.height * 3} bytes, got ${bytes.length}`);
    }
    pixels = tf.tensor3d(new Int32Array(bytes), [item.height, item.width, 3], "int32");
    batch = clf.preprocess(tf, pixels, info);
  } else {
    const values = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    batch = tf.tensor4d(values, [1, item.height, item.width, 3], "float32");
  }
  if (request.dump_inputs) {
    writeFileSync(path.join(request.dump_inputs, `${item.name}.f32`), Buffer.from((await batch.data()).buffer));
  }
  const probs = Array.from(await clf.predictBatch(tf, model, batch));
  for (let i = 0; i < (request.repeat ?? 0); i++) {
    const t = performance.now();
    await clf.predictBatch(tf, model, batch);
    inferMs += performance.now() - t;
    runs += 1;
  }
  const result = { name: item.name, probs };
  if (request.gradcam && pixels) {
    const cam = await clf.gradCam(tf, model, pixels, info);
    if (cam) {
      result.cam = { height: cam.height, width: cam.width, class_index: cam.classIndex,
                     heatmap: Array.from(cam.heatmap) };
    }
  }
  tf.dispose([batch, pixels].filter(Boolean));
  results.push(result);
}
process.stdout.write(JSON.stringify({
  backend: tf.getBackend(), metadata: info.raw, results,
  load_ms: loadMs, ms_per_image: runs ? inferMs / runs : null,
}) + "\n");
