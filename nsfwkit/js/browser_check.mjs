// Drive the nsfwkit web view in headless Chromium (playwright-core + Debian's /usr/bin/chromium).
//
// Usage: node nsfwkit/js/browser_check.mjs REQUEST.json   (normally run by nsfwkit.convert.node.run_node)
// REQUEST.json: {
//   "url": "http://127.0.0.1:PORT/" (the built site, served by nsfwkit.serve),
//   "chromium": "/usr/bin/chromium", "user_data_dir": a fresh temporary folder,
//   "upload": path of an image file to pick in the page's file input (optional),
//   "pixels": [{"name", "width", "height", "file": raw RGB bytes, "model_url"?: site-relative}],
//   "galleries": bool (walk every gallery tab and layer, count images that loaded),
//   "explain": [method, ...] (after "upload": draw each explanation of the uploaded image),
//   "bench": {"models": [{"name", "url", "input_range": [lo, hi]}], "size": int, "repeat": int,
//             "file": raw RGB bytes, "width", "height"} (optional: latency per model, same page),
//   "screenshot": path for a full-page PNG (optional),
//   "moving": [paths of animations / videos to pick in the file input, one after the other] (optional),
//   "no_image_decoder": bool (remove WebCodecs' ImageDecoder before the page starts, as older browsers lack it)
// }
// Prints one JSON object: {"console": [{type, text}], "page_errors": [...], "requests": [urls],
//   "upload": {"probs": {class: p}, "verdict": str, "nsfw_score": float, "cam": bool} | null,
//   "pixels": [{"name", "probs"}], "galleries": {kind: {"layers", "images", "broken"}},
//   "bench": {name: ms_per_image}, "backend": str,
//   "moving": [{"name", "shown": bool, "source", "frames": [{index, time, nsfw, probs}], "worst_index",
//               "worst_time", "ms_per_frame", "wall_ms", "truncated", "note", "error", "strip_points", "worst_marked", "table": {class: p}}],
//   "image_decoder": bool,
//   "explain": {"options": [methods offered], "python": str, "maps": {method: {"ms", "height", "width",
//     "peak", "hot", "heatmap": [...], "caption", "overlay_diff": mean |overlay - image| per byte}}}}
import { readFileSync } from "node:fs";
import { importPackage } from "./packages.mjs";

const { chromium } = (await importPackage("playwright-core")).default;   // CommonJS entry

const request = JSON.parse(readFileSync(process.argv[2], "utf8"));
const context = await chromium.launchPersistentContext(request.user_data_dir, {
  executablePath: request.chromium ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1200, height: 900 },
});
const out = { console: [], page_errors: [], requests: [], upload: null, pixels: [], galleries: {}, bench: {},
              moving: [] };
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => out.console.push({ type: m.type(), text: m.text() }));
  page.on("pageerror", (e) => out.page_errors.push(String(e)));
  context.on("request", (r) => out.requests.push(r.url()));
  if (request.no_image_decoder) await page.addInitScript(() => { delete window.ImageDecoder; });
  await page.goto(request.url, { waitUntil: "load" });
  await page.waitForFunction(() => window.nsfwkit && window.nsfwkit.ready, null, { timeout: 60000 });
  await page.evaluate(() => window.nsfwkit.ready);
  out.backend = await page.evaluate(() => window.tf.getBackend());

  if (request.upload) {
    await page.setInputFiles("#file", request.upload);
    await page.waitForFunction(() => document.body.dataset.classified, null, { timeout: 60000 });
    await page.waitForTimeout(200);
    out.upload = await page.evaluate(() => {
      const probs = {};
      for (const row of document.querySelectorAll("#probs tbody tr")) probs[row.dataset.class] = Number(row.dataset.prob);
      const verdict = document.getElementById("verdict");
      return { probs, verdict: verdict.textContent, nsfw_score: Number(verdict.dataset.nsfwScore),
               cam: !document.getElementById("cam-figure").hidden };
    });
  }

  if (request.explain) {
    out.explain = await page.evaluate(() => ({
      options: [...document.querySelectorAll("#explain-method option")].map((o) => o.value),
      python: document.getElementById("explain-python").textContent, maps: {},
    }));
    for (const method of request.explain) {
      out.explain.maps[method] = await page.evaluate(async (m) => {
        const r = await window.nsfwkit.explainImage(m);
        if (!r) return null;
        const bytes = (id) => {   // read a copy: repeated read-backs of one canvas make Chromium warn
          const src = document.getElementById(id);
          const copy = document.createElement("canvas");
          [copy.width, copy.height] = [src.width, src.height];
          const ctx = copy.getContext("2d", { willReadFrequently: true });
          ctx.drawImage(src, 0, 0);
          return ctx.getImageData(0, 0, copy.width, copy.height).data;
        };
        const [a, b] = [bytes("cam"), bytes("preview")];
        let diff = 0;
        for (let i = 0; i < a.length; i++) diff += Math.abs(a[i] - b[i]);
        return { ...r, heatmap: Array.from(r.heatmap), overlay_diff: diff / a.length,
                 caption: document.getElementById("cam-caption").textContent };
      }, method);
    }
  }

  for (const item of request.pixels ?? []) {
    const b64 = readFileSync(item.file).toString("base64");
    const probs = await page.evaluate(([b, w, h, u]) => window.nsfwkit.classifyPixels(b, w, h, u),
      [b64, item.width, item.height, item.model_url ?? null]);
    out.pixels.push({ name: item.name, probs });
  }

  if (request.galleries) {
    const kinds = await page.$$eval("#tabs button", (bs) => bs.map((b) => b.dataset.kind));
    for (const kind of kinds) {
      await page.click(`#tabs button[data-kind="${kind}"]`);
      const layers = await page.$$eval("#layer-select option", (os) => os.length);
      let images = 0;
      let broken = 0;
      for (let i = 0; i < layers; i++) {
        await page.selectOption("#layer-select", String(i));
        await page.waitForFunction(() => [...document.querySelectorAll("#gallery img")].every((im) => im.complete), null, { timeout: 20000 });
        const counts = await page.$$eval("#gallery img", (ims) => [ims.length, ims.filter((im) => im.naturalWidth === 0).length]);
        images += counts[0];
        broken += counts[1];
      }
      out.galleries[kind] = { layers, images, broken };
    }
    if (kinds.length) await page.click(`#tabs button[data-kind="${kinds[0]}"]`);
  }

  out.image_decoder = await page.evaluate(() => typeof ImageDecoder === "function");
  for (const file of request.moving ?? []) {
    await page.evaluate(() => { document.body.dataset.classified = ""; document.getElementById("file").value = ""; });
    await page.setInputFiles("#file", file);
    const name = file.split("/").pop();
    await page.waitForFunction((n) => document.body.dataset.classified === n || !document.getElementById("error").hidden,
      name, { timeout: 120000 });
    out.moving.push(await page.evaluate((n) => {
      const box = document.getElementById("motion");
      const d = box.dataset;
      const table = {};
      for (const row of document.querySelectorAll("#probs tbody tr")) table[row.dataset.class] = Number(row.dataset.prob);
      const text = (id) => (document.getElementById(id).hidden ? null : document.getElementById(id).textContent);
      return { name: n, shown: !box.hidden, source: d.source ?? null, frames: JSON.parse(d.frames ?? "[]"),
               worst_index: d.worstIndex === "null" ? null : Number(d.worstIndex), worst_time: Number(d.worstTime),
               ms_per_frame: Number(d.msPerFrame), wall_ms: Number(d.wallMs), truncated: d.truncated || null, note: text("motion-note"),
               error: text("error"), strip_points: document.querySelectorAll("#strip circle").length,
               worst_marked: document.querySelectorAll("#strip circle.worst").length, table };
    }, name));
  }

  if (request.screenshot) await page.screenshot({ path: request.screenshot, fullPage: true });

  if (request.bench) {
    const b = request.bench;
    const b64 = readFileSync(b.file).toString("base64");
    out.bench = await page.evaluate(async ({ b64, b }) => {
      const { tf, clf } = window.nsfwkit;
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const pixels = tf.tensor3d(Int32Array.from(bytes), [b.height, b.width, 3], "int32");
      const loaded = [];
      for (const m of b.models) {
        const url = new URL(m.url, document.baseURI).href;
        const model = m.format === "layers" ? await tf.loadLayersModel(url) : await tf.loadGraphModel(url);
        const info = { imageSize: b.size, inputRange: m.input_range, classNames: [], nsfwClasses: [], threshold: 0.5 };
        loaded.push({ name: m.name, model, info });
      }
      const run = async ({ model, info }) => {   // the full per-image path: preprocess + predict
        const x = clf.preprocess(tf, pixels, info);
        await clf.predictBatch(tf, model, x);
        x.dispose();
      };
      for (const m of loaded) for (let i = 0; i < 3; i++) await run(m);   // warm-up
      const times = Object.fromEntries(loaded.map((m) => [m.name, []]));
      for (let r = 0; r < b.repeat; r++) {
        for (const m of loaded) {           // interleaved, so both see the same conditions
          const t0 = performance.now();
          await run(m);
          times[m.name].push(performance.now() - t0);
        }
      }
      pixels.dispose();
      const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
      return Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
    }, { b64, b });
  }
} finally {
  await context.close();
}
process.stdout.write(JSON.stringify(out) + "\n");
