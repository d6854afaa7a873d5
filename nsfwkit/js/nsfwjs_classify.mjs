// Classify raw RGB pixel buffers with the real nsfwjs package, in Node, on the wasm backend.
//
// Usage: node nsfwkit/js/nsfwjs_classify.mjs REQUEST.json   (normally run by nsfwkit.convert.node.run_node)
// REQUEST.json: {"model": "MobileNetV2" | "InceptionV3", "backend": "wasm" | "cpu",
//                "images": [{"name": str, "width": int, "height": int, "rgb": "file of H*W*3 bytes"}],
//                "repeat": int (optional, timing runs per image)}
// Prints one JSON object: {"backend", "model", "results": [{"name", "probs": {class: p}}],
//                          "load_ms", "ms_per_image"}.
// The pixels are decoded by Python, so both sides see the same bytes and only nsfwjs's own
// preprocessing (÷255, bilinear resize with corners aligned) and network are under test.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

import { importPackage } from "./packages.mjs";
import { initTfjs } from "./tfjs_node.mjs";

const request = JSON.parse(readFileSync(process.argv[2], "utf8"));
const tf = await initTfjs(request.backend ?? "wasm");
const nsfwjs = await importPackage("nsfwjs");

const t0 = performance.now();
const model = await nsfwjs.load(request.model ?? "MobileNetV2");
const loadMs = performance.now() - t0;

const results = [];
let inferMs = 0;
let runs = 0;
for (const item of request.images) {
  const bytes = readFileSync(item.rgb);
  if (bytes.length !== item.width * item.height * 3) {
    throw new Error(`${item.rgb}: expected ${item.width * item.height * 3} bytes, got ${bytes.length}`);
  }
  const img = tf.tensor3d(new Int32Array(bytes), [item.height, item.width, 3], "int32");
  const predictions = await model.classify(img, 5);
  const repeat = request.repeat ?? 0;
  for (let i = 0; i < repeat; i++) {
    const t = performance.now();
    await model.classify(img, 5);
    inferMs += performance.now() - t;
    runs += 1;
  }
  img.dispose();
  const probs = {};
  for (const p of predictions) probs[p.className] = p.probability;
  results.push({ name: item.name, probs });
}
process.stdout.write(JSON.stringify({
  backend: tf.getBackend(), model: request.model ?? "MobileNetV2", results,
  load_ms: loadMs, ms_per_image: runs ? inferMs / runs : null,
}) + "\n");
