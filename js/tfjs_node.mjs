// Shared start-up for the Node scripts: TF.js on the wasm (or cpu) backend, stdout kept for JSON.
//
//   const tf = await initTfjs(request.backend ?? "wasm");
//
// nsfwjs and TF.js log notices with console.log/info; the scripts print exactly one JSON object on
// stdout, so every console level is sent to stderr. The wasm binaries are read from node_modules
// (Node cannot fetch them, and nothing is downloaded).
import { createRequire } from "node:module";
import path from "node:path";

for (const level of ["log", "info", "debug", "warn"]) console[level] = (...args) => console.error(...args);

export async function initTfjs(backend = "wasm") {
  const require = createRequire(import.meta.url);
  const tf = await import("@tensorflow/tfjs");
  if (backend === "wasm") {
    const wasm = await import("@tensorflow/tfjs-backend-wasm");
    const wasmFile = require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm");
    wasm.setWasmPaths(path.dirname(wasmFile) + path.sep);
  }
  if (!(await tf.setBackend(backend))) throw new Error(`TF.js backend ${backend} failed to initialise`);
  await tf.ready();
  return tf;
}
