// Where the kit's Node scripts get their npm packages (TF.js, nsfwjs, playwright-core) from.
//
//   const nsfwjs = await importPackage("nsfwjs");
//   const wasmFile = resolvePackage("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm");
//
// The scripts ship inside the Python package (nsfwkit/js/), possibly in site-packages, where a bare
// `import "nsfwjs"` finds no node_modules by walking up, and ES modules ignore NODE_PATH. So the
// Python bridge (nsfwkit.convert.node.run_node) names the folder in $NSFWKIT_NODE_MODULES; without
// it (a script run by hand in a checkout) packages resolve from the script's own folder upwards.
// A package is resolved as require() resolves it (its "main" / "require" entry) and loaded with
// import(): for a CommonJS entry, `.default` is its module.exports.
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

const folder = process.env.NSFWKIT_NODE_MODULES;
// createRequire wants a file: a (non-existent) one inside the folder resolves from the folder itself
const require = createRequire(folder ? path.join(path.resolve(folder), "_nsfwkit_.js") : import.meta.url);

export function resolvePackage(specifier) {
  return require.resolve(specifier);
}

export function importPackage(specifier) {
  return import(pathToFileURL(resolvePackage(specifier)).href);
}
