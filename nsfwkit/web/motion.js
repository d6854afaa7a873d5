// Moving pictures in the web view: the frames of animated GIF/WebP/APNG files and of videos, sampled
// as nsfwkit.frames.load_frames samples them in Python, and the score-over-time strip.
//
// * Animations: every frame (at most MAX_FRAMES), each the composited picture a viewer sees, decoded by
//   WebCodecs' ImageDecoder. A frame's time is the sum of the earlier frames' durations, durations of
//   10 ms or less counting as 100 ms (as browsers play them, and as Python counts).
//   Without ImageDecoder (older browsers, or a page not served from a secure origin) the caller
//   classifies the first frame only, and says so.
// * Videos: a <video> element seeked to one point per second (VIDEO_FPS) plus the last frame, each
//   drawn into a canvas; the time is the presented frame's media time when the browser reports it
//   (requestVideoFrameCallback), else the time seeked to.
// Everything stays in the page: files are read through object URLs, never sent anywhere.

/** As nsfwkit.frames: MAX_FRAMES frames at most, nothing after MAX_SECONDS, VIDEO_FPS for videos. */
export const MAX_FRAMES = 3600;
export const MAX_SECONDS = 3600.0;
export const VIDEO_FPS = 1.0;
const MIN_DURATION_MS = 10;
const DEFAULT_DURATION_MS = 100;
const ANIMATED_TYPES = ["image/gif", "image/webp", "image/png", "image/apng", "image/avif"];

/** "video", "animation" (a type that can hold several frames) or null, from the file's type. */
export function movingKind(file) {
  if (file.type.startsWith("video/")) return "video";
  return ANIMATED_TYPES.includes(file.type) ? "animation" : null;
}

export const hasImageDecoder = () => typeof globalThis.ImageDecoder === "function";

/** Pixels of a drawable (VideoFrame, <video>) as a (H, W, 3) int32 tensor, transparency over white. */
function toPixels(tf, source, width, height) {
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(source, 0, 0, width, height);
  return tf.browser.fromPixels(ctx.getImageData(0, 0, width, height), 3);
}

/**
 * The frames of an animated image: {count, frames: async iterator of {index, time, pixels}} or null
 * when it holds one frame (a still). pixels: a tf tensor the consumer disposes.
 */
export async function animationFrames(tf, file, { maxFrames = MAX_FRAMES, maxSeconds = MAX_SECONDS } = {}) {
  const decoder = new ImageDecoder({ data: await file.arrayBuffer(), type: file.type, preferAnimation: true });
  await decoder.tracks.ready;
  await decoder.completed;   // all bytes parsed: the frame count is final
  const count = decoder.tracks.selectedTrack ? decoder.tracks.selectedTrack.frameCount : 1;
  if (count <= 1) { decoder.close(); return null; }
  const state = { truncated: null };
  async function* frames() {
    let timeMs = 0;
    try {
      for (let index = 0; index < count; index++) {
        if (timeMs / 1000 > maxSeconds) { state.truncated = `stopped at ${maxSeconds} s`; return; }
        if (index >= maxFrames) { state.truncated = `stopped after ${maxFrames} frames`; return; }
        const { image } = await decoder.decode({ frameIndex: index });
        const pixels = toPixels(tf, image, image.displayWidth, image.displayHeight);
        const durationMs = (image.duration ?? 0) / 1000;
        image.close();
        yield { index, time: timeMs / 1000, pixels };
        timeMs += durationMs <= MIN_DURATION_MS ? DEFAULT_DURATION_MS : durationMs;
      }
    } finally {
      decoder.close();
    }
  }
  return { count, frames: frames(), state, source: "ImageDecoder" };
}

const once = (target, ok, fail = "error") => new Promise((resolve, reject) => {
  const done = (e) => {
    target.removeEventListener(ok, done);
    target.removeEventListener(fail, done);
    if (e.type === ok) resolve(); else reject(new Error("the browser cannot decode this video"));
  };
  target.addEventListener(ok, done);
  target.addEventListener(fail, done);
});

/** Seek to `t` and resolve with the presented frame's media time (the seek target when unknown). */
async function seek(video, t) {
  const presented = "requestVideoFrameCallback" in video
    ? new Promise((resolve) => video.requestVideoFrameCallback((_, meta) => resolve(meta.mediaTime))) : null;
  video.currentTime = t;
  await once(video, "seeked");
  const timeout = new Promise((resolve) => setTimeout(() => resolve(null), 250));
  const media = presented ? await Promise.race([presented, timeout]) : null;
  return media ?? t;
}

/** Sample times of a video: one per 1/fps slot up to the duration (capped), then the last frame. */
export function videoSampleTimes(duration, { fps = VIDEO_FPS, maxFrames = MAX_FRAMES, maxSeconds = MAX_SECONDS } = {}) {
  const times = [];
  let truncated = null;
  for (let k = 0; k / fps < Math.min(duration, maxSeconds); k++) {
    if (times.length >= maxFrames) { truncated = `stopped after ${maxFrames} frames`; break; }
    times.push(k / fps + 1e-3);   // just after the slot's start: the frame presented from then
  }
  if (!truncated && duration > maxSeconds) truncated = `stopped at ${maxSeconds} s`;
  if (!truncated && Number.isFinite(duration)) {
    if (times.length >= maxFrames) truncated = `stopped after ${maxFrames} frames: the last frame was not read`;
    else times.push(Math.max(0, duration - 1e-3));   // the last frame
  }
  return { times, truncated };
}

/** The sampled frames of a video file: {count, frames: async iterator of {index: null, time, pixels}}. */
export async function videoFrames(tf, file, options = {}) {
  const url = URL.createObjectURL(file);
  const video = document.createElement("video");
  video.muted = true;
  video.playsInline = true;
  video.preload = "auto";
  video.className = "offscreen";
  document.body.append(video);   // in the document, so that frames are presented (and reported)
  try {
    video.src = url;
    await once(video, "loadeddata");
  } catch (err) {
    video.remove();
    URL.revokeObjectURL(url);
    throw err;
  }
  const { times, truncated } = videoSampleTimes(video.duration, options);
  const state = { truncated };
  async function* frames() {
    let last = -1;
    try {
      for (const t of times) {
        const time = await seek(video, t);
        if (time <= last + 1e-6) continue;   // the last frame was already a sample
        last = time;
        yield { index: null, time, pixels: toPixels(tf, video, video.videoWidth, video.videoHeight) };
      }
    } finally {
      video.remove();
      URL.revokeObjectURL(url);
    }
  }
  return { count: times.length, frames: frames(), state, source: "video" };
}

/** The worst frame (highest NSFW score; the first of equal ones, as Python reports). */
export function worstFrame(rows) {
  let worst = 0;
  for (let i = 1; i < rows.length; i++) if (rows[i].nsfwScore > rows[worst].nsfwScore) worst = i;
  return worst;
}

/** Draw the score-over-time strip into an <svg>: one circle per frame, the worst one marked. */
export function drawStrip(svg, rows, worst, threshold) {
  const ns = "http://www.w3.org/2000/svg";
  const [w, h, pad] = [640, 120, 18];
  const end = Math.max(rows[rows.length - 1].time, 1e-6);
  const x = (t) => pad + (w - 2 * pad) * (t / end);
  const y = (s) => h - pad - (h - 2 * pad) * s;
  const el = (name, attrs) => {
    const e = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  };
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.replaceChildren(el("line", { x1: pad, y1: y(threshold), x2: w - pad, y2: y(threshold), class: "threshold" }),
    el("polyline", { points: rows.map((r) => `${x(r.time)},${y(r.nsfwScore)}`).join(" "), class: "score" }));
  for (const [tx, anchor, label] of [[pad, "start", "0 s"], [w - pad, "end", `${end.toFixed(2)} s`]]) {
    const text = el("text", { x: tx, y: h - 3, "text-anchor": anchor, class: "axis" });
    text.textContent = label;
    svg.append(text);
  }
  const thresholdLabel = el("text", { x: w - pad, y: y(threshold) - 3, "text-anchor": "end", class: "axis" });
  thresholdLabel.textContent = `threshold ${threshold}`;
  svg.append(thresholdLabel);
  rows.forEach((r, i) => {
    const dot = el("circle", { cx: x(r.time), cy: y(r.nsfwScore), r: i === worst ? 6 : 3,
                               class: i === worst ? "frame worst" : "frame" });
    const title = el("title", {});
    title.textContent = `${r.index === null ? "" : `frame ${r.index} `}@ ${r.time.toFixed(2)} s: ${r.nsfwScore.toFixed(3)}`;
    dot.append(title);
    svg.append(dot);
  });
}
