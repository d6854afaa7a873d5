// Load an nsfwkit export into the real nsfwjs package, as an nsfwjs app would, and classify.
//
// Usage: node nsfwkit/js/nsfwjs_load.mjs REQUEST.json   (normally run by nsfwkit.convert.node.run_node)
// REQUEST.json: {"url": "http://127.0.0.1:PORT/nsfwjs/float32/" (a folder URL ending in "/",
//                 or a model.json URL), "size": int, "backend": "wasm" | "cpu",
//                "images": [{"name", "width", "height", "file": raw RGB H*W*3 bytes}]}
// Prints {"backend", "results": [{"name", "probs": {className: p}}], "load_ms"}.
// This is the documented nsfwjs path for self-hosted models: nsfwjs.load(url, {type: "graph",
// size}); nsfwjs then does its own preprocessing (pixels / 255, bilinear resize, corners aligned).
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

import { importPackage } from "./packages.mjs";
import { initTfjs } from "./tfjs_node.mjs";

const request = JSON.parse(readFileSync(process.argv[2], "utf8"));
const tf = await initTfjs(request.backend ?? "wasm");
const nsfwjs = await importPackage("nsfwjs");

const t0 = performance.now();
const model = await nsfwjs.load(request.url, { type: "graph", size: request.size });
const loadMs = performance.now() - t0;
const results = [];
for (const item of request.images) {
  const bytes = readFileSync(item.file);
  const img = tf.tensor3d(new Int32Array(bytes), [item.height, item.width, 3], "int32");
  const predictions = await model.classify(img, 100);
  img.dispose();
  const probs = {};
  for (const p of predictions) probs[p.className] = p.probability;
  results.push({ name: item.name, probs });
}
model.dispose();
process.stdout.write(JSON.stringify({ backend: tf.getBackend(), results, load_ms: loadMs }) + "\n");
