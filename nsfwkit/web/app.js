// The nsfwkit web view: an in-browser classifier and galleries of the visualisation manifests.
// Static: reads site.json, the model and the manifests from its own origin; never uploads.
import * as clf from "./classifier.js";
import * as motion from "./motion.js";

const tf = window.tf;
const $ = (id) => document.getElementById(id);
const state = { model: null, info: null, site: null, galleries: {}, tab: null };

async function fetchJson(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------
async function initBackend() {
  // tf-backend-wasm.min.js finds its .wasm files beside itself (vendor/); it can only export
  // setWasmPaths when the tf global is extensible, so use it when present.
  if (tf.wasm && typeof tf.wasm.setWasmPaths === "function") {
    tf.wasm.setWasmPaths(new URL("vendor/", document.baseURI).href);
  }
  if (!(await tf.setBackend("wasm"))) await tf.setBackend("cpu");
  await tf.ready();
}

async function loadModel(url) {
  const model = await tf.loadGraphModel(new URL(url, document.baseURI).href);
  const info = clf.modelInfo(model);
  tf.tidy(() => model.predict(tf.zeros([1, info.imageSize, info.imageSize, 3]))); // warm-up
  return { model, info };
}

function describeModel(info) {
  const nsfw = info.nsfwClasses.length ? ` · NSFW = ${info.nsfwClasses.join(" + ")} ≥ ${info.threshold}` : "";
  return `Model: ${info.name} (${info.imageSize}×${info.imageSize}, ${info.quantization}) · ` +
    `backend: ${tf.getBackend()}${nsfw}`;
}

// ---------------------------------------------------------------------------------------------
// Classifier
// ---------------------------------------------------------------------------------------------
/** Decode an image file to a (H, W, 3) int32 tensor: transparency over white, EXIF applied. */
async function decode(file) {
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height);
  return tf.browser.fromPixels(data, 3);
}

function colormap(v) { // a compact jet-like map, v in 0-1 -> [r, g, b] 0-255
  const r = Math.min(Math.max(1.5 - Math.abs(4 * v - 3), 0), 1);
  const g = Math.min(Math.max(1.5 - Math.abs(4 * v - 2), 0), 1);
  const b = Math.min(Math.max(1.5 - Math.abs(4 * v - 1), 0), 1);
  return [r * 255, g * 255, b * 255];
}

/** The image at most 224 px on its long side, as an int32 (h, w, 3) tensor. */
function previewPixels(pixels) {
  const [h, w] = pixels.shape;
  const scale = 224 / Math.max(h, w);
  const size = [Math.max(1, Math.round(h * scale)), Math.max(1, Math.round(w * scale))];
  return tf.tidy(() => tf.image.resizeBilinear(pixels.toFloat(), size, true).clipByValue(0, 255).toInt());
}

async function drawPreview(pixels, canvas) {
  const small = previewPixels(pixels);
  canvas.width = small.shape[1];
  canvas.height = small.shape[0];
  await tf.browser.toPixels(small, canvas);
  small.dispose();
}

/** The map blended over the image; computed from the tensors (no canvas read-back, so redrawing
 * for each explanation method costs no getImageData). */
async function drawCam(pixels, cam, canvas) {
  const small = previewPixels(pixels);
  const [height, width] = small.shape;
  const rgba = await tf.browser.toPixels(small);
  const heat = tf.tidy(() => tf.image.resizeBilinear(
    tf.tensor3d(cam.heatmap, [cam.height, cam.width, 1]), [height, width], true));
  const values = await heat.data();
  tf.dispose([small, heat]);
  for (let i = 0; i < values.length; i++) {
    const [r, g, b] = colormap(Math.min(Math.max(values[i], 0), 1));
    const a = 0.5;
    rgba[4 * i] = (1 - a) * rgba[4 * i] + a * r;
    rgba[4 * i + 1] = (1 - a) * rgba[4 * i + 1] + a * g;
    rgba[4 * i + 2] = (1 - a) * rgba[4 * i + 2] + a * b;
  }
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(new ImageData(rgba, width, height), 0, 0);
}

function renderResult(summary, info, ms) {
  const body = $("probs").querySelector("tbody");
  body.replaceChildren();
  for (const { className, probability } of summary.classes) {
    const row = document.createElement("tr");
    row.dataset.class = className;
    row.dataset.prob = String(probability);
    if (info.nsfwClasses.includes(className)) row.classList.add("nsfw");
    const name = document.createElement("td");
    name.textContent = className;
    const value = document.createElement("td");
    value.textContent = probability.toFixed(4);
    const bar = document.createElement("td");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${(100 * probability).toFixed(1)}%`;
    bar.append(fill);
    row.append(name, value, bar);
    body.append(row);
  }
  const verdict = $("verdict");
  if (info.nsfwClasses.length) {
    verdict.textContent = `${summary.isNsfw ? "NSFW" : "SFW"} — NSFW score ${summary.nsfwScore.toFixed(3)} ` +
      `(threshold ${info.threshold})`;
    verdict.className = `verdict ${summary.isNsfw ? "nsfw" : "sfw"}`;
  } else {
    verdict.textContent = `Top class: ${summary.top}`;
    verdict.className = "verdict";
  }
  verdict.dataset.nsfwScore = String(summary.nsfwScore);
  $("timing").textContent = `${ms.toFixed(0)} ms in this browser`;
  $("result").hidden = false;
}

async function classifyFile(file) {
  $("error").hidden = true;
  if (!state.model) return showError("The model is not loaded.");
  if (await classifyMoving(file)) return;
  let pixels;
  try {
    pixels = await decode(file);
  } catch (err) {
    return showError(`${file.name}: cannot decode this image (${err.message || err}).`);
  }
  try {
    const t0 = performance.now();
    const summary = await clf.classify(tf, state.model, pixels, state.info);
    const ms = performance.now() - t0;
    await drawPreview(pixels, $("preview"));
    renderResult(summary, state.info, ms);
    explained.pixels?.dispose();
    explained.pixels = pixels.clone();
    await explainImage($("explain-method").value || "grad_cam");
    document.body.dataset.classified = file.name;
  } catch (err) {
    showError(`${file.name}: ${err.message || err}`);
  } finally {
    pixels.dispose();
  }
}

function initClassifier() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) classifyFile(e.target.files[0]); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) classifyFile(file);
  });
}

// ---------------------------------------------------------------------------------------------
// Moving pictures: animations and videos, judged by their worst frame (sampling: motion.js)
// ---------------------------------------------------------------------------------------------
function motionNote(text) {
  $("motion-note").textContent = text;
  $("motion-note").hidden = false;
}

/** Classify every sampled frame; keep the worst frame's pixels. */
async function classifyFrames(clip) {
  const rows = [];
  let worst = null;
  let ms = 0;
  for await (const frame of clip.frames) {
    const t0 = performance.now();
    const summary = await clf.classify(tf, state.model, frame.pixels, state.info);
    ms += performance.now() - t0;
    rows.push({ index: frame.index, time: frame.time, nsfwScore: summary.nsfwScore, summary });
    if (worst === null || summary.nsfwScore > worst.summary.nsfwScore) {
      if (worst) worst.pixels.dispose();
      worst = { pixels: frame.pixels, summary, row: rows.length - 1 };
    } else {
      frame.pixels.dispose();
    }
  }
  return { rows, worst, ms };
}

function renderMotion(file, clip, { rows, worst, ms }) {
  const box = $("motion");
  const w = rows[worst.row];
  const where = `${w.index === null ? "" : `frame ${w.index} `}@ ${w.time.toFixed(2)} s`;
  const perFrame = ms / rows.length;
  $("motion-summary").textContent = `Worst of ${rows.length} frames: ${where} — NSFW score ` +
    `${w.nsfwScore.toFixed(3)}${clip.state.truncated ? ` (${clip.state.truncated})` : ""}`;
  motion.drawStrip($("strip"), rows, worst.row, state.info.threshold);
  Object.assign(box.dataset, {
    source: clip.source, worstIndex: String(w.index), worstTime: String(w.time), msPerFrame: String(perFrame),
    truncated: clip.state.truncated ?? "",
    frames: JSON.stringify(rows.map((r) => ({ index: r.index, time: r.time, nsfw: r.nsfwScore, probs: r.summary.probs }))),
  });
  box.hidden = false;
  renderResult(w.summary, state.info, ms);
  $("timing").textContent = `${rows.length} frames, ${perFrame.toFixed(0)} ms per frame in this browser ` +
    `(the table and the image: the worst frame)`;
}

/** Classify an animation or a video frame by frame; false when `file` is a still (or cannot be
 * read as frames here: then only its first frame is classified, and the page says so). */
async function classifyMoving(file) {
  $("motion").hidden = true;
  $("motion-note").hidden = true;
  const kind = motion.movingKind(file);
  if (!kind) return false;
  if (kind === "animation" && !motion.hasImageDecoder()) {
    motionNote("This browser has no ImageDecoder (WebCodecs, secure pages only): if this image is animated, " +
      "only its first frame was classified.");
    return false;
  }
  const started = performance.now();
  let clip;
  try {
    clip = kind === "video" ? await motion.videoFrames(tf, file) : await motion.animationFrames(tf, file);
  } catch (err) {
    showError(`${file.name}: cannot decode this ${kind} (${err.message || err}).`);
    return true;
  }
  if (!clip) return false;   // one frame: a still image
  let result = null;
  try {
    result = await classifyFrames(clip);
    if (!result.rows.length) throw new Error("no frame could be decoded");
    $("cam-figure").hidden = true;   // explanations: still images only
    $("explain").hidden = true;
    await drawPreview(result.worst.pixels, $("preview"));
    renderMotion(file, clip, result);
    $("motion").dataset.wallMs = String(performance.now() - started);   // decoding included
    document.body.dataset.classified = file.name;
  } catch (err) {
    showError(`${file.name}: ${err.message || err}`);
  } finally {
    if (result?.worst) result.worst.pixels.dispose();
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Explanations of the uploaded image: the methods of nsfwkit.viz.attributions.ALL_METHODS
// (site.json "explanation_methods") that classifier.js computes in the page; the others are
// listed as computed in Python.
// ---------------------------------------------------------------------------------------------
const METHOD_LABELS = { grad_cam: "Grad-CAM", gradients: "vanilla gradients", smoothgrad: "SmoothGrad" };
/** Noisy copies per SmoothGrad map in the page (Python's default is 25; see the timing shown). */
const SMOOTHGRAD_SAMPLES = 8;
const explained = { pixels: null };

function initExplain(site) {
  const all = Array.isArray(site.explanation_methods) ? site.explanation_methods : clf.PAGE_METHODS;
  const here = clf.PAGE_METHODS.filter((m) => all.includes(m));
  const select = $("explain-method");
  select.replaceChildren(...here.map((m) => new Option(METHOD_LABELS[m] ?? m, m)));
  const python = all.filter((m) => !here.includes(m));
  $("explain-python").textContent = python.length
    ? `Computed in Python: ${python.join(", ")} (nsfwkit visualize --cam METHOD, notebook 06).` : "";
  select.addEventListener("change", () => { if (explained.pixels) explainImage(select.value); });
}

/** Compute `method` for the last uploaded image, draw it over the image; returns its summary. */
async function explainImage(method) {
  const pixels = explained.pixels;
  if (!pixels || !state.model) return null;
  const t0 = performance.now();
  const map = method === "grad_cam"
    ? await clf.gradCam(tf, state.model, pixels, state.info)
    : await clf.inputGradients(tf, state.model, pixels, state.info, null,
      { samples: method === "smoothgrad" ? SMOOTHGRAD_SAMPLES : 0 });
  const ms = performance.now() - t0;
  if (!map) return null;
  await drawCam(pixels, map, $("cam"));
  const name = state.info.classNames[map.classIndex] ?? `class ${map.classIndex}`;
  const where = method === "grad_cam" ? (state.info.cam.layer ?? "") : "input pixels";
  const samples = method === "smoothgrad" ? ` (${SMOOTHGRAD_SAMPLES} samples)` : "";
  $("cam-caption").textContent = `${METHOD_LABELS[method] ?? method}${samples} · ${name} · ${where}`;
  $("explain-timing").textContent = `${ms.toFixed(0)} ms in this browser`;
  $("explain-method").value = method;
  $("cam-figure").hidden = false;
  $("explain").hidden = false;
  let peak = 0;
  let hot = 0;
  for (const v of map.heatmap) { peak = Math.max(peak, v); if (v > 0.25) hot += 1; }
  return { method, ms, height: map.height, width: map.width, peak, hot: hot / map.heatmap.length,
    heatmap: map.heatmap, classIndex: map.classIndex };
}

// ---------------------------------------------------------------------------------------------
// Galleries (manifest schema: nsfwkit/viz/MANIFESTS.md; unknown fields are ignored)
// ---------------------------------------------------------------------------------------------
function figure(src, caption, wide = false) {
  const fig = document.createElement("figure");
  if (wide) fig.className = "wide";
  const img = document.createElement("img");
  img.src = src;
  img.alt = caption;
  img.loading = "lazy";
  const cap = document.createElement("figcaption");
  cap.textContent = caption;
  fig.append(img, cap);
  return fig;
}

const fmt = (v, digits = 2) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "–");

/** Gallery kinds -> {layers: [{name, items: [{src, caption, wide}]}], note}. */
function buildGalleries(site, manifests) {
  const out = {};
  const base = (path) => path.slice(0, path.lastIndexOf("/") + 1);
  const filters = manifests.filters;
  if (filters && Array.isArray(filters.layers)) {
    const dir = base(site.galleries.filters);
    out.filters = {
      title: "Filters",
      note: `Inputs that maximise each filter (${filters.recipe ?? "?"} recipe, model ${filters.model ?? "?"}).`,
      layers: filters.layers.map((l) => ({
        name: String(l.layer ?? "layer"),
        items: [
          ...(Array.isArray(l.filters) ? l.filters : []).filter((f) => f && f.file).map((f) =>
            ({ src: dir + f.file, caption: `#${f.index ?? "?"} · gain ${fmt(f.gain, 1)}` })),
        ],
      })),
    };
  }
  const act = manifests.activation;
  if (act && Array.isArray(act.layers)) {
    const dir = base(site.galleries.activation);
    const top = act.top_class ? `${act.top_class.name} ${fmt(act.top_class.probability, 3)}` : "";
    out.activation = {
      title: "Activations",
      note: `Channel activations for ${act.image?.source ?? "the sample image"}${top ? ` (top: ${top})` : ""}.`,
      layers: act.layers.map((l) => {
        const seen = new Set();
        const items = [];
        if (act.image?.file) items.push({ src: dir + act.image.file, caption: "input" });
        for (const [group, label] of [[l.channels, "channel"], [l.most_active, "most active"]]) {
          for (const c of Array.isArray(group) ? group : []) {
            if (!c || !c.file || seen.has(c.file)) continue;
            seen.add(c.file);
            items.push({ src: dir + c.file, caption: `${label} ${c.index ?? "?"} · mean ${fmt(c.mean)}` });
          }
        }
        return { name: `${l.layer ?? "layer"}${Array.isArray(l.shape) ? ` (${l.shape.join("×")})` : ""}`, items };
      }),
    };
  }
  const camManifest = manifests.cam ?? (act && Array.isArray(act.cams) && act.cams.length ? act : null);
  if (camManifest && Array.isArray(camManifest.cams) && camManifest.cams.length) {
    const dir = base(manifests.cam ? site.galleries.cam : site.galleries.activation);
    {
      const byLayer = new Map();
      for (const c of camManifest.cams) {
        const key = `${c.layer ?? "layer"} · ${c.method ?? "cam"}`;
        if (!byLayer.has(key)) byLayer.set(key, []);
        const scores = typeof c.deletion_auc === "number"
          ? ` · deletion ${fmt(c.deletion_auc, 3)} insertion ${fmt(c.insertion_auc, 3)}${c.flagged ? " · flagged" : ""}` : "";
        const caption = (c.caption ?? `${c.class_name ?? c.class_index} ${fmt(c.probability, 3)}`) + scores;
        if (c.overlay) byLayer.get(key).push({ src: dir + c.overlay, caption: `${caption} · overlay` });
        if (c.heatmap) byLayer.get(key).push({ src: dir + c.heatmap, caption: `${caption} · map` });
      }
      out.cam = {
        title: "Class activation maps",
        note: "Where the network looked, per class (computed in Python by nsfwkit.viz).",
        layers: [...byLayer].map(([name, items]) => ({ name, items })),
      };
    }
  }
  return out;
}

function selectTab(kind) {
  state.tab = kind;
  for (const b of $("tabs").children) b.setAttribute("aria-selected", String(b.dataset.kind === kind));
  const g = state.galleries[kind];
  const select = $("layer-select");
  select.replaceChildren(...g.layers.map((l, i) => new Option(l.name, String(i))));
  $("layer-nav").hidden = g.layers.length === 0;
  $("gallery-note").textContent = g.note;
  showLayer(0);
}

function showLayer(index) {
  const g = state.galleries[state.tab];
  if (!g || !g.layers.length) { $("gallery").replaceChildren(); return; }
  const i = (index + g.layers.length) % g.layers.length;
  $("layer-select").value = String(i);
  const layer = g.layers[i];
  $("gallery").replaceChildren(...layer.items.map((it) => figure(it.src, it.caption, it.wide)));
  $("gallery").dataset.layer = layer.name;
}

async function initGalleries(site) {
  const manifests = {};
  for (const [kind, path] of Object.entries(site.galleries ?? {})) {
    if (!path) continue;
    try { manifests[kind] = await fetchJson(path); } catch (err) { console.warn(`${path}: ${err.message}`); }
  }
  state.galleries = buildGalleries(site, manifests);
  const kinds = Object.keys(state.galleries);
  const tabs = $("tabs");
  tabs.replaceChildren(...kinds.map((kind) => {
    const b = document.createElement("button");
    b.type = "button";
    b.role = "tab";
    b.dataset.kind = kind;
    b.textContent = state.galleries[kind].title;
    b.addEventListener("click", () => selectTab(kind));
    return b;
  }));
  $("layer-select").addEventListener("change", (e) => showLayer(Number(e.target.value)));
  $("prev-layer").addEventListener("click", () => showLayer(Number($("layer-select").value) - 1));
  $("next-layer").addEventListener("click", () => showLayer(Number($("layer-select").value) + 1));
  if (kinds.length) selectTab(kinds[0]);
  else $("gallery-note").textContent = "No visualisations yet: run the notebook pipeline (nsfwkit run), then nsfwkit build-web.";
}

// ---------------------------------------------------------------------------------------------
// Start-up, and a small API for tests and benchmarks (window.nsfwkit)
// ---------------------------------------------------------------------------------------------
async function main() {
  initClassifier();
  state.site = await fetchJson("site.json");
  initExplain(state.site);
  await initBackend();
  const galleries = initGalleries(state.site);
  if (state.site.model) {
    ({ model: state.model, info: state.info } = await loadModel(state.site.model));
    $("model-info").textContent = describeModel(state.info);
  } else {
    $("model-info").textContent = "No model in this build.";
  }
  await galleries;
}

window.nsfwkit = {
  tf, clf, state, loadModel, explainImage,
  /** Classify raw RGB bytes (base64, H*W*3) with a model URL (default: the page's model). */
  async classifyPixels(base64, width, height, modelUrl = null) {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const { model, info } = modelUrl ? await loadModel(modelUrl) : state;
    const pixels = tf.tensor3d(Int32Array.from(bytes), [height, width, 3], "int32");
    const summary = await clf.classify(tf, model, pixels, info);
    pixels.dispose();
    if (modelUrl) model.dispose();
    return summary.probs;
  },
};
window.nsfwkit.ready = main().then(() => { document.body.dataset.ready = "1"; }, (err) => {
  showError(`The web view failed to start: ${err.message || err}`);
  throw err;
});
