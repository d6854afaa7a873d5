// Shared start-up for the Node scripts: TF.js on the wasm (or cpu) backend, stdout kept for JSON.
//
//   const tf = await initTfjs(request.backend ?? "wasm");
//
// nsfwjs and TF.js log notices with console.log/info; the scripts print exactly one JSON object on
// stdout, so every console level is sent to stderr. The wasm binaries are read from node_modules
// (Node cannot fetch them, and nothing is downloaded); packages come from ./packages.mjs.
import path from "node:path";

import { importPackage, resolvePackage } from "./packages.mjs";

for (const level of ["log", "info", "debug", "warn"]) console[level] = (...args) => console.error(...args);

export async function initTfjs(backend = "wasm") {
  const tf = await importPackage("@tensorflow/tfjs");
  if (backend === "wasm") {
    const wasm = await importPackage("@tensorflow/tfjs-backend-wasm");
    const wasmFile = resolvePackage("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm");
    wasm.setWasmPaths(path.dirname(wasmFile) + path.sep);
  }
  if (!(await tf.setBackend(backend))) throw new Error(`TF.js backend ${backend} failed to initialise`);
  await tf.ready();
  return tf;
}
