// Drive a LayerBrowser notebook in a real JupyterLab with headless Chromium (playwright-core + Debian's
// chromium). Used by tests/test_jupyterlab.py, which starts the server.
//
// Usage: node tests/jupyterlab_check.mjs REQUEST.json
// REQUEST.json: {"url": "http://127.0.0.1:PORT/", "token", "notebook": path relative to the server root,
//   "chromium": "/usr/bin/chromium", "user_data_dir": a fresh temporary folder,
//   "screenshots": folder for the PNGs, "timeout_ms": per wait}
// Prints one JSON object: {"console": [{type, text}], "page_errors": [...], "external": [urls not on
//   127.0.0.1], "steps": [{name, changed, caption, screenshot}], "stderr_outputs": [texts],
//   "widget_errors": [texts], "fallback": bool, "panels": {name: width}, "status_log": [texts],
//   "kernels": [names], "failure": message | null}
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const request = JSON.parse(readFileSync(process.argv[2], "utf8"));
const timeout = request.timeout_ms ?? 180000;
mkdirSync(request.screenshots, { recursive: true });
const context = await chromium.launchPersistentContext(request.user_data_dir, {
  executablePath: request.chromium ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1600, height: 1300 },
});
const out = { console: [], page_errors: [], external: [], steps: [], stderr_outputs: [], widget_errors: [],
              fallback: false, panels: {}, status_log: [], kernels: [], failure: null };
const W = ".nsfwkit-layer-browser";

// SHA-256 and size of the bytes an <img> shows (ipywidgets gives it a blob: URL).
const digest = (page, selector) => page.evaluate(async (sel) => {
  const img = document.querySelector(sel);
  if (!img || !img.src || !img.complete || !img.naturalWidth) return null;
  const bytes = await (await fetch(img.src)).arrayBuffer();
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("") + ":" + bytes.byteLength;
}, selector);

const ready = (page) => page.waitForFunction((w) => {
  const status = document.querySelector(`${w} .nsfwkit-status`);
  return status && status.textContent.trim().startsWith("ready");
}, W, { timeout });

async function step(page, name, action) {
  const before = await digest(page, `${W} img.nsfwkit-view`);
  await action();
  let after = before;
  const deadline = Date.now() + timeout;
  while (after === before && Date.now() < deadline) {
    await page.waitForTimeout(250);
    after = await digest(page, `${W} img.nsfwkit-view`);
  }
  await ready(page);
  after = await digest(page, `${W} img.nsfwkit-view`);
  const screenshot = join(request.screenshots, `${String(out.steps.length + 1).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: screenshot, fullPage: true });
  const caption = await page.evaluate((w) => document.querySelector(`${w} .nsfwkit-info`)?.textContent ?? "", W);
  out.steps.push({ name, changed: before !== null && after !== null && before !== after, caption, screenshot });
}

const select = (page, label, choose) => page.evaluate(([w, l, c]) => {
  const box = [...document.querySelectorAll(`${w} .widget-dropdown`)]
    .find((d) => d.querySelector("label")?.textContent.trim() === l);
  const sel = box.querySelector("select");
  const options = [...sel.options].map((o) => o.textContent);
  const index = c.index ?? options.findIndex((t) => !c.avoid.includes(t));
  sel.selectedIndex = index;
  sel.dispatchEvent(new Event("change", { bubbles: true }));
  return options[index];
}, [W, label, choose]);

try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => out.console.push({ type: m.type(), text: m.text() }));
  page.on("pageerror", (e) => out.page_errors.push(String(e)));
  context.on("request", (r) => {
    const host = new URL(r.url()).hostname;
    if (!["127.0.0.1", "localhost"].includes(host) && !r.url().startsWith("blob:") && !r.url().startsWith("data:")) {
      out.external.push(r.url());
    }
  });
  await page.goto(`${request.url}lab/tree/${request.notebook}?token=${request.token}`, { waitUntil: "domcontentloaded" });
  await page.waitForSelector(".jp-Notebook .jp-Cell", { timeout });
  // the notebook's kernel (named in its metadata) is connected and idle; a kernel dialog means it was not found
  // (the status bar says "Idle" only once the kernel's websocket is up, unlike the toolbar's indicator)
  await page.waitForFunction(() => document.querySelector(".jp-Dialog") ||
    /Python 3 \(nsfwkit\) \| Idle/.test(document.querySelector("#jp-main-statusbar")?.innerText ?? ""),
  null, { timeout });
  const dialog = await page.evaluate(() => document.querySelector(".jp-Dialog")?.innerText ?? null);
  if (dialog) throw new Error(`JupyterLab asked: ${dialog}`);
  await page.click(".lm-MenuBar-itemLabel:text-is('Run')");
  await page.click(".lm-Menu-itemLabel:text-is('Run All Cells')");
  await page.waitForSelector(`${W} img.nsfwkit-view`, { timeout });
  await page.evaluate((w) => {  // every status text the widget shows from now on
    window.__statusLog = [];
    const status = document.querySelector(`${w} .nsfwkit-status`);
    new MutationObserver(() => window.__statusLog.push(status.textContent.trim()))
      .observe(status, { childList: true, subtree: true, characterData: true });
  }, W);
  await ready(page);
  await page.waitForFunction((w) => [...document.querySelectorAll(`${w} img`)]
    .filter((i) => i.offsetParent !== null).every((i) => i.complete && i.naturalWidth > 0), W, { timeout });
  await page.screenshot({ path: join(request.screenshots, "00-rendered.png"), fullPage: true });

  await step(page, "channel-button", async () => {  // the first most-active channel that is not the current one
    const current = (await page.locator(`${W} .widget-readout`).first().textContent()).trim();
    await page.locator(`${W} .widget-button`).filter({ hasNotText: new RegExp(`^${current}$`) }).first().click();
  });
  await step(page, "layer", () => select(page, "layer", { index: 0 }));
  await step(page, "mode-cam", () => page.locator(`${W} .widget-toggle-button:text-is('cam')`).click());
  const predicted = (await page.evaluate((w) => document.querySelector(`${w} .nsfwkit-info`).textContent, W))
    .match(/for class (\S+) \(predicted\)/)?.[1] ?? "";
  await step(page, "class", () => select(page, "class", { avoid: ["predicted", predicted] }));
  await step(page, "mode-filter", () => page.locator(`${W} .widget-toggle-button:text-is('filter')`).click());

  for (const name of ["image", "activation", "filter", "examples"]) {
    out.panels[name] = await page.evaluate((s) => document.querySelector(s)?.naturalWidth ?? 0, `${W} img.nsfwkit-${name}`);
  }
  out.status_log = await page.evaluate(() => window.__statusLog);
  out.stderr_outputs = await page.evaluate(() => [...document.querySelectorAll(
    ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")].map((e) => e.textContent));
  out.widget_errors = await page.evaluate(() => [...document.querySelectorAll(".jp-OutputArea-output")]
    .map((e) => e.textContent).filter((t) => t.includes("Error displaying widget")));
  out.fallback = await page.evaluate(() => [...document.querySelectorAll(".jp-OutputArea-output")]
    .some((e) => /LayerBrowser object at|VBox\(children=/.test(e.textContent)));
  const sessions = await page.evaluate(async (t) => (await fetch(`/api/sessions?token=${t}`)).json(), request.token);
  out.kernels = sessions.map((s) => s.kernel.name);
} catch (error) {
  out.failure = String(error.stack ?? error);
  try {
    const page = context.pages()[0];
    await page.screenshot({ path: join(request.screenshots, "failure.png"), fullPage: true });
  } catch { /* the page is gone */ }
} finally {
  await context.close();
}
console.log(JSON.stringify(out));
