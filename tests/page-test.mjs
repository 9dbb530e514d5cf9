#!/usr/bin/env node
// Whole-page test of the built demo (trunk's dist/) with npm playwright-core driving the system
// Chromium (never a downloaded browser), headless, WebGPU through SwiftShader:
//
//   node tests/page-test.mjs dist [--backend webgpu,cpu] [--shots DIR] [--image FILE] [--text "…"]
//                               [--no-fallback-check] [--encode-again] [--url URL]
//
// For each backend: serve dist/ on 127.0.0.1 (--url: open the page where another server, e.g.
// tools/demo.sh, serves that directory), open the page, wait until the model is loaded,
// check the backend label, check the empty-sentence message, upload an image, type a sentence,
// press Enter, wait for the mask, check that it is non-empty and of the image's size, run the
// sentence again (re-query on the cached encoding), correct it with a click and a right click,
// reset the clicks, save a screenshot (--encode-again: encode the
// image again, with the kernels compiled). On the first backend it
// also reloads the page offline (service worker cache). With the embedded model, every synthetic
// sample of web/samples/samples.json is run with each of its sentences on the CPU backend; the
// IoU of the page's mask with the generator's ground truth ("truth") must reproduce the shipped
// model's IoU measured by the CLI ("model_iou") within 0.1, and each sentence is reported against
// the 0.5 target (--no-sample-check skips; --strict-samples makes the 0.5 target a check). Then, in a browser without WebGPU, the
// page must fall back to the CPU and say so (--no-fallback-check skips). Prints the timings as JSON lines
// ("page-test timing {...}") and "page-test: N passed, M failed".
//
// The page loads the embedded model (dist/models/nano/nano.rsb); a build without it uses the
// synthetic nano model (?model=synthetic). Environment: CHROMIUM (default
// /usr/lib/chromium/chromium), PAGE_TIMEOUT seconds per wait (default 300).

import { chromium } from "playwright-core";
import { createServer } from "node:http";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, statSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { execFileSync } from "node:child_process";
import { join, extname, resolve, normalize } from "node:path";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const dist = resolve(args.find((a, i) => !a.startsWith("--") && !(i > 0 && args[i - 1].startsWith("--"))) || "dist");
const backends = opt("backend", "webgpu,cpu").split(",");
const shots = resolve(opt("shots", "target/page-test"));
// A synthetic scene: the trained nano model knows its objects, so its mask is non-empty.
const imagePath = resolve(opt("image", "web/samples/synth-tanks.png"));
const sentence = opt("text", "the largest white storage tank");
const timeout = 1000 * Number(process.env.PAGE_TIMEOUT || 300);
const executablePath = process.env.CHROMIUM || "/usr/lib/chromium/chromium";

if (!existsSync(join(dist, "index.html"))) {
  console.error(`page-test: ${dist}/index.html not found (run \`trunk build\` first)`);
  process.exit(2);
}
const embedded = existsSync(join(dist, "models/nano/nano.rsb"));
const model = embedded ? "embedded" : "synthetic";

// ---- static server ----------------------------------------------------------------------------
const TYPES = {
  ".html": "text/html",
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".css": "text/css",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".rsb": "application/octet-stream",
  ".tif": "image/tiff",
};
const server = createServer((req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
  let file = join(dist, path);
  try {
    if (statSync(file).isDirectory()) file = join(file, "index.html");
    const body = readFileSync(file);
    res.writeHead(200, { "Content-Type": TYPES[extname(file)] || "application/octet-stream", "Content-Length": body.length });
    res.end(body);
  } catch {
    res.writeHead(404);
    res.end("not found");
  }
});
const url = opt("url", null);
if (!url) await new Promise((r) => server.listen(0, "127.0.0.1", r));
const base = url ? (url.endsWith("/") ? url : `${url}/`) : `http://127.0.0.1:${server.address().port}/`;

// ---- browser ----------------------------------------------------------------------------------
const profile = mkdtempSync(join(tmpdir(), "rsrefseg-pw-"));
const launchArgs = [
  "--headless=new",
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  ignoreDefaultArgs: ["--headless"],
  args: launchArgs,
  viewport: { width: 1366, height: 900 },
});

let passed = 0;
let failed = 0;
function check(cond, what) {
  if (cond) {
    passed++;
    console.log(`  ok: ${what}`);
  } else {
    failed++;
    console.log(`  FAILED: ${what}`);
  }
}

async function readState(page) {
  return page.evaluate(() => ({
    status: document.getElementById("status").textContent,
    state: document.getElementById("status").dataset.state,
    backend: document.getElementById("backend-used").textContent,
    notice: document.getElementById("notice").hidden ? "" : document.getElementById("notice").textContent,
    readyMs: Number(document.getElementById("stat-ready").dataset.ms || NaN),
  }));
}

async function runBackend(backend, first) {
  console.log(`page-test: backend ${backend}, model ${model}`);
  const page = await context.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`[pageerror] ${e.message}`));
  try {
    const url = `${base}?backend=${backend}&model=${model}`;
    const start = Date.now();
    await page.goto(url);
    await page.waitForSelector("body[data-ready='1']", { timeout });
    const s = await readState(page);
    console.log(`  page ready after ${((Date.now() - start) / 1000).toFixed(1)} s: ${JSON.stringify(s)}`);
    check(s.state === "ready", `the page is ready (${s.status})`);
    const want = backend === "webgpu" ? "WebGPU" : "CPU";
    check(s.backend === want, `backend label ${JSON.stringify(s.backend)} is ${want}`);

    // Image upload.
    await page.setInputFiles("#file-input", imagePath);
    await page.waitForSelector("#input-status[data-state='image'], #input-status[data-state='error']", { timeout });
    const imageState = await page.$eval("#input-status", (e) => [e.dataset.state, e.textContent]);
    check(imageState[0] === "image", `image accepted (${imageState[1]})`);
    const header = await page.$eval("#status", (e) => e.textContent);
    const imageName = imagePath.split("/").pop();
    check(header.includes(imageName) && /encoded/.test(header), `the header follows the image (${header})`);
    const encodeMs = Number(await page.$eval("#stat-image", (e) => e.dataset.encodeMs));

    // Empty sentence: a clear message, no run.
    await page.fill("#sentence", "   ");
    await page.press("#sentence", "Enter");
    const emptyMsg = await page.$eval("#input-status", (e) => [e.dataset.state, e.textContent]);
    check(emptyMsg[0] === "error" && /empty/.test(emptyMsg[1]), `empty sentence refused (${emptyMsg[1]})`);

    // Sentence + Enter → mask.
    const queries = [];
    for (let i = 0; i < 2; i++) {
      await page.fill("#sentence", sentence);
      await page.press("#sentence", "Enter");
      await page.waitForSelector("#result[data-state='done'], #result[data-state='error']", { timeout });
      const r = await page.evaluate(() => {
        const el = document.getElementById("result");
        return {
          state: el.dataset.state,
          width: Number(el.dataset.maskWidth),
          height: Number(el.dataset.maskHeight),
          area: Number(el.dataset.maskArea),
          totalMs: Number(document.getElementById("stat-query").dataset.totalMs),
          iou: document.getElementById("stat-iou").textContent,
          message: document.getElementById("input-status").textContent,
        };
      });
      queries.push(r);
      // Leave the "done" state so that the second run is awaited for real.
      await page.evaluate(() => (document.getElementById("result").dataset.state = "empty"));
    }
    const [r1, r2] = queries;
    check(r1.state === "done", `segmentation finished (${r1.message})`);
    const { width, height } = await imageSize(page);
    check(r1.width === width && r1.height === height, `mask is ${r1.width}×${r1.height}, the image's size ${width}×${height}`);
    check(r1.area > 0, `mask is non-empty (${r1.area} px)`);
    check(r2.state === "done" && r2.area === r1.area, `re-query on the cached encoding gives the same mask`);
    check(await page.$eval("#download", (b) => !b.disabled), "mask download enabled");
    // The heat map is stretched over its own range: it spans dark to bright, not a black square.
    const heat = await page.$eval("#heat-canvas", (c) => {
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let lo = 765, hi = 0;
      for (let i = 0; i < d.length; i += 4) {
        const v = d[i] + d[i + 1] + d[i + 2];
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      return { lo, hi, range: document.getElementById("heat-range").textContent };
    });
    check(heat.hi - heat.lo > 600, `heat map spans dark to bright (${heat.lo}..${heat.hi} of 0..765; ${heat.range})`);

    // Correction clicks: a click on the image re-answers the sentence with it (decoder only), a
    // right click adds a negative one, and "Reset clicks" answers the sentence without them.
    const afterClick = async (act) => {
      await page.evaluate(() => (document.getElementById("result").dataset.state = "empty"));
      await act();
      await page.waitForSelector("#result[data-state='done'], #result[data-state='error']", { timeout });
      return page.evaluate(() => {
        const el = document.getElementById("result");
        return { state: el.dataset.state, clicks: Number(el.dataset.clicks), area: Number(el.dataset.maskArea),
          stat: document.getElementById("stat-clicks").textContent, message: document.getElementById("input-status").textContent };
      });
    };
    const box = await page.$eval("#image-canvas", (c) => { const r = c.getBoundingClientRect(); return { x: r.x, y: r.y, w: r.width, h: r.height }; });
    const c1 = await afterClick(() => page.mouse.click(box.x + box.w / 2, box.y + box.h / 2));
    check(c1.state === "done" && c1.clicks === 1 && c1.stat.startsWith("1 on the object"), `a click corrects the answer (${c1.stat}; ${c1.message})`);
    const c2 = await afterClick(() => page.mouse.click(box.x + box.w / 4, box.y + box.h / 4, { button: "right" }));
    check(c2.state === "done" && c2.clicks === 2 && c2.stat.includes("1 not"), `a right click adds a click off the object (${c2.stat})`);
    const c3 = await afterClick(() => page.click("#reset-clicks"));
    check(c3.state === "done" && c3.clicks === 0 && c3.area === r1.area, `reset clicks gives the sentence's own answer again (${c3.area} px)`);

    mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: join(shots, `page-${backend}.png`), fullPage: true });
    if (backend === "cpu") {
      // A 1×1 image is taken, with a warning that the model can say little about it.
      const onePixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
      await page.evaluate(() => (document.getElementById("input-status").dataset.state = ""));
      await page.setInputFiles("#file-input", { name: "tiny.png", mimeType: "image/png", buffer: Buffer.from(onePixel, "base64") });
      await page.waitForSelector("#input-status[data-state='image'], #input-status[data-state='error']", { timeout });
      const tiny = await page.$eval("#input-status", (e) => [e.dataset.state, e.textContent]);
      check(tiny[0] === "image" && /only 1×1 pixels/.test(tiny[1]), `a 1×1 image is taken with a warning (${tiny[1]})`);
    }

    // --encode-again: the same image again, the encode time with every kernel compiled (off by
    // default: ~50 s on SwiftShader).
    let encodeAgainMs = null;
    if (args.includes("--encode-again")) {
      await page.evaluate(() => {
        document.getElementById("input-status").dataset.state = "";
        document.getElementById("file-input").value = "";
      });
      await page.setInputFiles("#file-input", imagePath);
      await page.waitForSelector("#input-status[data-state='image'], #input-status[data-state='error']", { timeout });
      encodeAgainMs = Number(await page.$eval("#stat-image", (e) => e.dataset.encodeMs));
    }
    console.log(
      `page-test timing ${JSON.stringify({
        backend,
        model,
        time_to_ready_ms: s.readyMs,
        encode_ms: encodeMs,
        encode_again_ms: encodeAgainMs,
        first_query_ms: r1.totalMs,
        requery_ms: r2.totalMs,
        iou: r1.iou,
      })}`,
    );

    if (first) {
      // Offline: the service worker serves the page, wasm and model from Cache Storage.
      await page.waitForFunction(() => navigator.serviceWorker?.controller || navigator.serviceWorker?.ready, null, { timeout });
      await page.evaluate(async () => {
        await navigator.serviceWorker.ready;
      });
      await context.setOffline(true);
      try {
        await page.reload();
        await page.waitForSelector("body[data-ready='1']", { timeout });
        const off = await readState(page);
        check(off.state === "ready", `reloaded offline from the service worker cache (${off.status})`);
      } finally {
        await context.setOffline(false);
      }
    }
  } catch (err) {
    failed++;
    console.log(`  FAILED: ${err.message}`);
    console.log(logs.slice(-30).join("\n"));
    mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: join(shots, `page-${backend}-failed.png`), fullPage: true }).catch(() => {});
  } finally {
    await page.close();
  }
}

/** COCO's compressed RLE (`counts` string, column-major runs starting with background) → a
 * row-major 0/1 array of `h × w`. */
function decodeRle({ size: [h, w], counts }) {
  const runs = [];
  for (let p = 0; p < counts.length; ) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = counts.charCodeAt(p++) - 48;
      x |= (c & 0x1f) << (5 * k++);
      more = (c & 0x20) !== 0;
      if (!more && c & 0x10) x |= -1 << (5 * k);
    }
    if (runs.length > 2) x += runs[runs.length - 2];
    runs.push(x);
  }
  const out = new Uint8Array(h * w);
  let i = 0;
  runs.forEach((n, r) => {
    for (let j = 0; j < n; j++, i++) if (r % 2) out[(i % h) * w + Math.floor(i / h)] = 1;
  });
  return out;
}

/** The page's synthetic samples answer their sentences on the object the sentence names: each
 * mask (read back from the page's mask layer) overlaps the generator's ground truth with
 * IoU ≥ 0.5. Runs on the CPU backend (SwiftShader's WebGPU is slow and numerically the same). */
async function checkSamples() {
  const index = JSON.parse(readFileSync(resolve("web/samples/samples.json"), "utf8"));
  const synthetic = index.samples.filter((s) => s.truth);
  console.log(`page-test: ${synthetic.length} synthetic samples against their ground truth (CPU)`);
  const page = await context.newPage();
  try {
    await page.goto(`${base}?backend=cpu&model=${model}`);
    await page.waitForSelector("body[data-ready='1']", { timeout });
    for (const sample of synthetic) {
      await page.evaluate(() => (document.getElementById("input-status").dataset.state = ""));
      await page.setInputFiles("#file-input", resolve("web/samples", sample.file));
      await page.waitForSelector("#input-status[data-state='image'], #input-status[data-state='error']", { timeout });
      for (const [k, sentence] of sample.sentences.entries()) {
        await page.evaluate(() => (document.getElementById("result").dataset.state = "empty"));
        await page.fill("#sentence", sentence);
        await page.press("#sentence", "Enter");
        await page.waitForSelector("#result[data-state='done'], #result[data-state='error']", { timeout });
        const got = await page.$eval("#mask-canvas", (c) => {
          const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
          return { w: c.width, h: c.height, mask: Array.from({ length: c.width * c.height }, (_, i) => (d[4 * i + 3] > 0 ? 1 : 0)) };
        });
        const truth = decodeRle(sample.truth[k]);
        const [h, w] = sample.truth[k].size;
        let inter = 0, union = 0;
        if (got.w === w && got.h === h) {
          for (let i = 0; i < w * h; i++) {
            inter += got.mask[i] & truth[i];
            union += got.mask[i] | truth[i];
          }
        }
        const iou = union ? inter / union : 0;
        const model = sample.model_iou[k];
        check(Math.abs(iou - model) <= 0.1, `${sample.file}: "${sentence}" IoU with the ground truth ${iou.toFixed(3)}, the model's (CLI) ${model.toFixed(3)}`);
        const target = iou >= 0.5 ? "reaches" : "does NOT reach";
        console.log(`  sample target: "${sentence}" ${target} IoU 0.5 (${iou.toFixed(3)})`);
        if (args.includes("--strict-samples")) check(iou >= 0.5, `"${sentence}" IoU ${iou.toFixed(3)} ≥ 0.5`);
      }
    }
  } catch (err) {
    failed++;
    console.log(`  FAILED: ${err.message}`);
  } finally {
    await page.close();
  }
}

async function imageSize(page) {
  const buf = readFileSync(imagePath).toString("base64");
  return page.evaluate(async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const bmp = await createImageBitmap(new Blob([bytes]));
    return { width: bmp.width, height: bmp.height };
  }, buf);
}

/** A browser without WebGPU (no --enable-unsafe-webgpu: no adapter): the page asks for WebGPU
 * and must fall back to the CPU by itself and say so. */
async function checkFallback() {
  console.log("page-test: no WebGPU adapter → CPU fallback");
  const dir = mkdtempSync(join(tmpdir(), "rsrefseg-pw-"));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath,
    headless: true,
    ignoreDefaultArgs: ["--headless"],
    args: launchArgs.filter((a) => a !== "--enable-unsafe-webgpu"),
  });
  try {
    const page = await ctx.newPage();
    await page.goto(`${base}?backend=webgpu&model=${model}`);
    await page.waitForSelector("body[data-ready='1']", { timeout });
    const s = await readState(page);
    console.log(`  ${JSON.stringify(s)}`);
    check(s.state === "ready", `the page is ready without WebGPU (${s.status})`);
    check(s.backend === "CPU", `backend label ${JSON.stringify(s.backend)} is CPU`);
    check(/WebGPU is not available/.test(s.notice), `the fallback is explained (${s.notice})`);
  } catch (err) {
    failed++;
    console.log(`  FAILED: ${err.message}`);
  } finally {
    await ctx.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A whole scene (a generated 1024² GeoTIFF, `rsrefseg synth-scene`) on the CPU backend: the
 * page takes it as a scene (tiles, preview of a TIFF the browser cannot show), reports the tiles'
 * progress, answers the sentence on it, offers the GeoTIFF and GeoJSON, and zooms. */
async function checkScene() {
  console.log("page-test: whole scene (GeoTIFF, CPU)");
  const dir = join(shots, "scene");
  execFileSync("cargo", ["run", "-q", "-p", "rsrefseg-cli", "--", "synth-scene", "--out", dir, "--cells", "4", "--targets", "1", "--seed", "4"], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  const truth = JSON.parse(readFileSync(join(dir, "truth.json"), "utf8"));
  const page = await context.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`[${m.type()}] ${m.text()}`));
  try {
    await page.goto(`${base}?backend=cpu&model=${model}`);
    await page.waitForSelector("body[data-ready='1']", { timeout });
    await page.setInputFiles("#file-input", join(dir, "scene.tif"));
    await page.waitForSelector("#input-status[data-state='image'], #input-status[data-state='error']", { timeout });
    const msg = await page.$eval("#input-status", (e) => [e.dataset.state, e.textContent]);
    check(msg[0] === "image" && /whole scene/.test(msg[1]) && /25 tiles/.test(msg[1]), `a GeoTIFF is taken as a whole scene (${msg[1]})`);
    const stat = await page.$eval("#stat-image", (e) => e.textContent);
    check(/EPSG:32633/.test(stat), `the scene's coordinate system is shown (${stat})`);
    // The preview replaced the gray placeholder (the browser cannot decode TIFF).
    const spread = await page.$eval("#image-canvas", (c) => {
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let lo = 255, hi = 0;
      for (let i = 0; i < d.length; i += 4 * 97) { lo = Math.min(lo, d[i + 1]); hi = Math.max(hi, d[i + 1]); }
      return hi - lo;
    });
    check(spread > 40, `the scene is shown from the worker's preview (green spread ${spread})`);
    const progress = [];
    await page.exposeFunction("recordStatus", (t) => progress.push(t));
    await page.evaluate(() => new MutationObserver(() => window.recordStatus(document.getElementById("input-status").textContent))
      .observe(document.getElementById("input-status"), { childList: true, characterData: true, subtree: true }));
    await page.fill("#sentence", truth.targets[0].sentence);
    await page.press("#sentence", "Enter");
    await page.waitForSelector("#result[data-state='done'], #result[data-state='error']", { timeout });
    const r = await page.evaluate(() => {
      const el = document.getElementById("result");
      return { state: el.dataset.state, w: Number(el.dataset.maskWidth), tiles: Number(el.dataset.tilesAnswered),
        tiff: !document.getElementById("download-tiff").disabled, json: !document.getElementById("download-geojson").disabled,
        query: document.getElementById("stat-query").textContent, message: document.getElementById("input-status").textContent };
    });
    check(r.state === "done" && r.w === 1024 && r.tiles >= 1 && r.tiles <= 4, `the sentence is answered on the scene (${r.tiles} tiles; ${r.query})`);
    check(progress.some((t) => /Localizing tile \d+ of 25/.test(t)) && progress.some((t) => /SAM answering tile/.test(t)),
      `the tiles' progress is reported (${progress.length} updates)`);
    check(r.tiff && r.json, "GeoTIFF and GeoJSON downloads are offered");
    const box = await page.$eval("#viewport", (c) => { const b = c.getBoundingClientRect(); return { x: b.x + b.width / 2, y: b.y + b.height / 2 }; });
    await page.mouse.move(box.x, box.y);
    await page.mouse.wheel(0, -600);
    const zoom = Number(await page.$eval("#canvas-stack", (e) => e.dataset.zoom));
    check(zoom > 1.5, `scrolling zooms the scene (×${zoom.toFixed(2)})`);
    await page.screenshot({ path: join(shots, "page-scene.png"), fullPage: true });
  } catch (err) {
    failed++;
    console.log(`  FAILED: ${err.message}`);
    console.log(logs.slice(-30).join("\n"));
  } finally {
    await page.close();
  }
}

try {
  for (const [i, b] of backends.entries()) await runBackend(b, i === 0);
  if (backends.includes("cpu") && !args.includes("--no-scene-check")) await checkScene();
  if (embedded && !args.includes("--no-sample-check")) await checkSamples();
  if (!args.includes("--no-fallback-check")) await checkFallback();
} finally {
  await context.close();
  if (!url) server.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(`page-test: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
