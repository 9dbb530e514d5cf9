// Page logic of rsrefseg-web. The model runs in a Web Worker (web/worker.js); this script only
// handles the UI: model picker and progress, image input (file, drop, paste, samples), the
// sentence box, and drawing the mask overlay, heat map, predicted IoU and timings.
//
// Signals for page tests:
//   document.body.dataset.ready = "1"     start-up finished (model loaded or failed)
//   #status[data-state]                   "loading" | "busy" (encoding, with seconds) | "ready" | "error"
//   #backend-used                         "WebGPU" | "CPU"
//   #result[data-state]                   "empty" | "running" | "done" | "error";
//                                         data-mask-width / -height / -area when done,
//                                         data-clicks: the correction clicks of the answer
//   #input-status[data-state]             "image" once an image is encoded, "error" on bad input
//   #canvas-stack[data-scene]             "1" while a whole scene (tiled per sentence) is shown;
//                                         data-zoom: the view's zoom factor
//   #result[data-tiles-answered]          tiles SAM answered for the last sentence on a scene
// URL parameters: ?backend=webgpu|cpu, ?model=embedded|synthetic|<bundle URL>.

const $ = (id) => document.getElementById(id);
const t0 = performance.now();

const EMBEDDED_MODEL = "models/nano/nano.rsb";
// The wasm side's limit too (crates/rsrefseg-web/src/api.rs): an uncompressed 8192² RGB GeoTIFF fits.
const MAX_FILE_BYTES = 256 * 1024 * 1024;
// Longest side the picture is drawn at: whole scenes get more pixels, for zooming in.
const VIEW_SIDE = 1024;
const SCENE_VIEW_SIDE = 4096;
const MAX_SIDE = 16384;
const MAX_PIXELS = 8192 * 8192;
const REQUEST_TIMEOUT_MS = 15 * 60 * 1000;

const state = {
  worker: null,
  backend: null, // what the worker runs on
  model: null, // model info
  modelSource: null, // {kind, url?, bytes?}
  image: null, // {bitmap, width, height, name, scene?}
  result: null,
  busy: false,
  // Correction clicks on the current answer (original image pixels) and the sentence they correct.
  clicks: [],
  clickText: null,
};

// ---------------------------------------------------------------------------------------------
// Worker RPC

class ModelWorker {
  constructor(onPanic) {
    this.nextId = 1;
    this.pending = new Map();
    this.onPanic = onPanic;
    this.worker = new Worker("worker.js", { type: "module" });
    this.worker.onmessage = (e) => this.receive(e.data);
    this.worker.onerror = (e) => this.failAll(`the worker failed: ${e.message || "script error"}`);
  }

  receive(msg) {
    if (msg.type === "progress") {
      this.pending.get(msg.id)?.onProgress?.(msg.loaded, msg.total, msg.scene);
    } else if (msg.type === "result") {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      clearTimeout(p.timer);
      msg.ok ? p.resolve(msg.result) : p.reject(new Error(msg.error));
    } else if (msg.type === "panic") {
      this.failAll(`the model crashed: ${msg.message}`);
      this.onPanic?.(msg.message);
    } else if (msg.type === "failed") {
      this.failAll(`the WebAssembly module did not load: ${msg.error}`);
    }
  }

  failAll(message) {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error(message));
    }
    this.pending.clear();
  }

  call(op, args = {}, { transfer = [], onProgress } = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${op} did not answer within ${REQUEST_TIMEOUT_MS / 60000} minutes`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, onProgress, timer });
      this.worker.postMessage({ id, op, args }, transfer);
    });
  }

  terminate() {
    this.failAll("the worker was restarted");
    this.worker.terminate();
  }
}

// ---------------------------------------------------------------------------------------------
// Status helpers

function setStatus(text, st) {
  const el = $("status");
  el.textContent = text;
  el.dataset.state = st;
}

function notice(text) {
  const el = $("notice");
  el.textContent = text || "";
  el.hidden = !text;
}

function inputStatus(text, st = "") {
  const el = $("input-status");
  el.textContent = text;
  el.dataset.state = st;
}

function progress(fraction) {
  const bar = $("progress");
  if (fraction === null) {
    bar.hidden = true;
    return;
  }
  bar.hidden = false;
  if (fraction === undefined) bar.removeAttribute("value");
  else bar.value = fraction;
}

const ms = (v) => (v >= 100 ? `${Math.round(v)} ms` : `${v.toFixed(1)} ms`);
const mb = (b) => `${(b / 1e6).toFixed(1)} MB`;

/** The header line once a model is loaded: the backend, and what to do next. */
function readyStatus() {
  const where = state.backend === "webgpu" ? "WebGPU" : "CPU";
  const next = !state.image
    ? " Choose an image."
    : state.image.scene
      ? ` ${state.image.name} is a whole scene: type a sentence.`
      : ` ${state.image.name} is encoded: type a sentence.`;
  setStatus(`Ready (${where}).${next}`, "ready");
}

/** Forget the last answer: mask, heat map, scores and the download button, so that nothing on
 * screen describes an image or sentence other than the current ones. */
function clearResult() {
  state.result = null;
  state.clicks = [];
  state.clickText = null;
  $("result").dataset.state = "empty";
  for (const id of ["mask-canvas", "heat-canvas", "tiles-canvas"]) {
    const c = $(id);
    c.getContext("2d").clearRect(0, 0, c.width, c.height);
  }
  for (const id of ["stat-iou", "stat-mask", "stat-query", "stat-clicks"]) $(id).textContent = "–";
  $("result").dataset.clicks = "0";
  $("heat-range").textContent = "–";
  delete $("result").dataset.tilesAnswered;
  updateButtons();
}

/** Example sentences for images that are not samples (the synthetic benchmark's grammar). */
const GENERIC_EXAMPLES = ["the largest building", "the white vehicle", "the first building from the left"];

function updateButtons() {
  const ready = !!(state.model && state.image && !state.busy);
  $("segment").disabled = !ready;
  // A whole scene's mask is offered as a GeoTIFF (a PNG of 67 megapixels would strain the page).
  $("download").disabled = !state.result || !!state.result.scene;
  $("reset-clicks").disabled = !state.result || state.clicks.length === 0 || state.busy;
  const scene = state.result?.scene;
  $("download-tiff").hidden = $("download-geojson").hidden = !scene;
  $("download-tiff").disabled = $("download-geojson").disabled = !scene;
}

// ---------------------------------------------------------------------------------------------
// Backend and model

function startWorker() {
  state.worker?.terminate();
  state.worker = new ModelWorker((message) => {
    console.error("rsrefseg worker panic:", message);
    setStatus("The model crashed; restarting it…", "error");
    state.model = null;
    state.image = null;
    updateButtons();
    // Restart with the same backend and model.
    setTimeout(() => boot(false).catch(() => {}), 100);
  });
}

async function selectBackend(requested) {
  const { backend, version } = await state.worker.call("init", { backend: requested });
  state.backend = backend;
  $("version").textContent = version;
  $("backend-used").textContent = backend === "webgpu" ? "WebGPU" : "CPU";
  $("backend-used").dataset.backend = backend;
  $("stat-backend").textContent = backend === "webgpu" ? "WebGPU" : "CPU (burn Flex, wasm SIMD128, one thread)";
  if (requested === "webgpu" && backend !== "webgpu") {
    notice("WebGPU is not available in this browser (no adapter), so the model runs on the CPU — slower, but the same results.");
  } else {
    notice("");
  }
  return backend;
}

async function loadModel(source) {
  state.model = null;
  state.result = null;
  updateButtons();
  const start = performance.now();
  let info;
  setStatus("Loading the model…", "loading");
  progress(undefined);
  try {
    if (source.kind === "synthetic") {
      info = await state.worker.call("loadSynthetic", {});
    } else if (source.kind === "file") {
      const bytes = source.bytes.slice(0); // keep a copy for backend switches
      info = await state.worker.call("loadModel", { bytes }, { transfer: [bytes] });
    } else {
      const url = source.url;
      info = await state.worker.call(
        "loadModelUrl",
        { url },
        {
          onProgress: (loaded, total) => {
            progress(total ? loaded / total : undefined);
            $("status").textContent = `Loading the model… ${mb(loaded)}${total ? ` of ${mb(total)}` : ""}`;
          },
        },
      );
    }
  } finally {
    progress(null);
  }
  state.model = info;
  state.modelSource = source;
  const what = { embedded: "embedded nano", synthetic: "synthetic nano (untrained)", file: source.name, url: source.url }[
    source.kind
  ];
  $("model-status").textContent = `Model: ${what} — ${info.summary}; loaded in ${ms(performance.now() - start)}.`;
  return info;
}

/** Start (or restart) the worker, pick the backend and load the model. */
async function boot(first) {
  startWorker();
  setStatus("Starting the model worker…", "loading");
  // The worker asks for a WebGPU adapter itself and falls back to the CPU without one.
  await selectBackend($("backend").value);
  const source = state.modelSource || initialModelSource();
  await loadModel(source);
  if (first) {
    const took = performance.now() - t0;
    $("stat-ready").textContent = ms(took);
    $("stat-ready").dataset.ms = String(Math.round(took));
  }
  readyStatus();
  if (state.image?.bytes) await encodeImage(state.image.bytes.slice(0), state.image.name);
}

function initialModelSource() {
  const m = new URLSearchParams(location.search).get("model");
  if (m === "synthetic") {
    $("model-source").value = "synthetic";
    return { kind: "synthetic" };
  }
  if (m && m !== "embedded") {
    $("model-source").value = "url";
    $("model-url").value = m;
    $("model-url-box").hidden = false;
    return { kind: "url", url: m };
  }
  return { kind: "embedded", url: EMBEDDED_MODEL };
}

async function switchModel(source) {
  try {
    await loadModel(source);
    setStatus(`Ready (${state.backend === "webgpu" ? "WebGPU" : "CPU"}).`, "ready");
    if (state.image?.bytes) await encodeImage(state.image.bytes.slice(0), state.image.name);
  } catch (err) {
    setStatus(`Could not load the model: ${err.message}`, "error");
  }
}

// ---------------------------------------------------------------------------------------------
// Image input

function drawImage(bitmap, side = VIEW_SIDE) {
  const canvas = $("image-canvas");
  const mask = $("mask-canvas");
  const tiles = $("tiles-canvas");
  const scale = Math.min(1, side / Math.max(bitmap.width, bitmap.height));
  canvas.width = mask.width = tiles.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = mask.height = tiles.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  mask.getContext("2d").clearRect(0, 0, mask.width, mask.height);
  const heat = $("heat-canvas");
  heat.getContext("2d").clearRect(0, 0, heat.width, heat.height);
}

async function takeFile(file, name, sentences = GENERIC_EXAMPLES) {
  if (!file) return;
  name = name || file.name || "pasted image";
  clearResult();
  if (file.size > MAX_FILE_BYTES) {
    inputStatus(`${name} is ${mb(file.size)}: the largest accepted image file is ${MAX_FILE_BYTES >> 20} MB.`, "error");
    return;
  }
  if (file.size === 0) {
    inputStatus(`${name} is empty.`, "error");
    return;
  }
  const bytes = await file.arrayBuffer();
  if (await encodeImage(bytes, name)) setExamples(sentences);
}

/** Show the image (browser decode for display) and encode it in the worker (wasm decode). */
async function encodeImage(bytes, name) {
  clearResult();
  setSceneView(null);
  let bitmap = null;
  try {
    bitmap = await createImageBitmap(new Blob([bytes]));
  } catch {
    // The browser cannot show it (e.g. TIFF); the worker may still decode it.
  }
  if (bitmap && Math.max(bitmap.width, bitmap.height) > MAX_SIDE) {
    inputStatus(`${name} is ${bitmap.width}×${bitmap.height}: the longest accepted side is ${MAX_SIDE} pixels.`, "error");
    return false;
  }
  if (bitmap && bitmap.width * bitmap.height > MAX_PIXELS) {
    inputStatus(`${name} is ${bitmap.width}×${bitmap.height}: at most 8192×8192 pixels (67 megapixels) are accepted.`, "error");
    return false;
  }
  if (!state.model) {
    inputStatus("The model is not loaded yet.", "error");
    return false;
  }
  state.busy = true;
  updateButtons();
  // Show the picture at once, and count the seconds: a first encode on WebGPU compiles its
  // kernels and can take a minute.
  if (bitmap) drawImage(bitmap);
  const started = performance.now();
  const tick = () => {
    const s = Math.round((performance.now() - started) / 1000);
    const text = `Encoding ${name}…${s >= 1 ? ` ${s} s` : ""}`;
    inputStatus(text, "busy");
    setStatus(text, "busy");
  };
  tick();
  const timer = setInterval(tick, 1000);
  try {
    const r = await state.worker.call("setImage", { bytes: bytes.slice(0) });
    if (!bitmap && r.scene) bitmap = await previewBitmap(r.scene);
    if (!bitmap) {
      // Not displayable by the browser: show a gray placeholder of the right size.
      const c = new OffscreenCanvas(r.width, r.height);
      const ctx = c.getContext("2d");
      ctx.fillStyle = "#888";
      ctx.fillRect(0, 0, r.width, r.height);
      bitmap = c.transferToImageBitmap();
    }
    state.image = { bitmap, width: r.width, height: r.height, name, bytes, scene: r.scene || null };
    drawImage(bitmap, r.scene ? SCENE_VIEW_SIDE : VIEW_SIDE);
    setSceneView(r.scene);
    const t = r.timings;
    $("stat-image").textContent = r.scene
      ? `${r.width}×${r.height} scene, decode ${ms(t.decode)}: ${r.scene.rows}×${r.scene.cols} tiles of ${r.scene.tile} px` +
        ` (overlap ${r.scene.overlap})${r.scene.georeferenced ? `, georeferenced${r.scene.epsg ? ` (EPSG:${r.scene.epsg})` : ""}` : ""}`
      : `${r.width}×${r.height}: decode ${ms(t.decode)}, pre-process ${ms(t.preprocess)}, encode ${ms(t.encode)}`;
    $("stat-image").dataset.encodeMs = String(t.encode);
    if (r.scene) {
      inputStatus(
        `${name} (${r.width}×${r.height}) is a whole scene: each sentence finds its tiles on a localization map of all ` +
          `${r.scene.rows * r.scene.cols} tiles, then SAM answers the best ones. Type a sentence and press Enter; scroll to zoom, drag to pan.`,
        "image",
      );
      readyStatus();
      return true;
    }
    // The model sees the image at its input size: a few pixels say little about any object.
    const tiny = Math.max(r.width, r.height) < 32
      ? ` It is only ${r.width}×${r.height} pixels: the model enlarges it to its input size, so expect little.`
      : "";
    inputStatus(`${name} (${r.width}×${r.height}) is ready: type a sentence and press Enter.${tiny}`, "image");
    readyStatus();
    return true;
  } catch (err) {
    state.image = null;
    // The previous image is no longer the one sentences would run on: take it off screen.
    const c = $("image-canvas");
    c.getContext("2d").clearRect(0, 0, c.width, c.height);
    inputStatus(`Cannot use ${name}: ${err.message}`, "error");
    readyStatus();
    return false;
  } finally {
    clearInterval(timer);
    state.busy = false;
    updateButtons();
  }
}

// ---------------------------------------------------------------------------------------------
// Segmentation and drawing

async function runSegment() {
  const text = $("sentence").value.trim();
  // Clicks correct the answer to one sentence: a new sentence starts without them.
  if (text !== state.clickText) {
    state.clicks = [];
    state.clickText = null;
  }
  if (!text) {
    clearResult();
    inputStatus("The sentence is empty: describe the object to segment, e.g. “the largest white storage tank”.", "error");
    return;
  }
  if (state.busy) return;
  if (!state.model) {
    inputStatus("The model is not loaded yet.", "error");
    return;
  }
  if (!state.image) {
    inputStatus("Choose an image first (a sample below, a file, drop or paste), then the sentence runs on it.", "error");
    return;
  }
  state.busy = true;
  updateButtons();
  $("result").dataset.state = "running";
  const clicks = state.clicks.slice();
  inputStatus(clicks.length ? `Correcting “${text}” with ${clicks.length} click(s)…` : `Segmenting “${text}”…`, "busy");
  if (state.image.scene) clearTiles();
  try {
    const r = await state.worker.call("segment", { text, clicks }, { onProgress: (_l, _t, p) => p && sceneProgress(text, p) });
    if (r.scene) {
      showSceneResult(text, r);
      return;
    }
    state.result = r;
    state.clickText = text;
    drawMask(r.mask, r.width, r.height);
    drawClicks();
    $("stat-clicks").textContent = clicks.length
      ? `${clicks.filter((c) => c.positive).length} on the object, ${clicks.filter((c) => !c.positive).length} not`
      : "none (click the image to correct)";
    $("result").dataset.clicks = String(clicks.length);
    drawHeat(r.heat, r.heatWidth, r.heatHeight);
    $("heat-range").textContent =
      r.heatMax > r.heatMin ? `dark ${prob(r.heatMin)} → bright ${prob(r.heatMax)}` : "flat map";
    const t = r.timings;
    $("stat-iou").textContent = r.iou.toFixed(3);
    const pct = ((100 * r.area) / (r.width * r.height)).toFixed(1);
    $("stat-mask").textContent = `${r.width}×${r.height}, ${r.area} px (${pct} %)`;
    $("stat-query").textContent =
      `text ${ms(t.text)}, prompter ${ms(t.prompter)}, decoder ${ms(t.decoder)}, post ${ms(t.post)} — total ${ms(t.total)}`;
    $("stat-query").dataset.totalMs = String(t.total);
    const res = $("result");
    res.dataset.maskWidth = r.width;
    res.dataset.maskHeight = r.height;
    res.dataset.maskArea = r.area;
    res.dataset.state = "done";
    const corrected = clicks.length ? ` after ${clicks.length} click(s)` : "";
    inputStatus(`“${text}”${corrected}: predicted IoU ${r.iou.toFixed(3)}.${r.note ? " " + r.note : ""}`, "image");
  } catch (err) {
    clearResult();
    $("result").dataset.state = "error";
    inputStatus(err.message, "error");
  } finally {
    state.busy = false;
    updateButtons();
  }
}

/** A mask of a whole scene, drawn at the view's resolution: a view pixel is red when any scene
 * pixel it stands for is in the mask, so that small objects stay visible when zoomed out. */
function drawSceneMask(mask, w, h) {
  const canvas = $("mask-canvas");
  const ctx = canvas.getContext("2d");
  const cw = canvas.width, ch = canvas.height;
  const img = ctx.createImageData(cw, ch);
  for (let y = 0; y < ch; y++) {
    const y0 = Math.floor((y * h) / ch), y1 = Math.max(y0 + 1, Math.floor(((y + 1) * h) / ch));
    for (let x = 0; x < cw; x++) {
      const x0 = Math.floor((x * w) / cw), x1 = Math.max(x0 + 1, Math.floor(((x + 1) * w) / cw));
      let on = false;
      for (let yy = y0; yy < y1 && !on; yy++) for (let xx = x0; xx < x1; xx++) if (mask[yy * w + xx]) { on = true; break; }
      if (on) img.data.set([255, 48, 32, 255], (y * cw + x) * 4);
    }
  }
  ctx.putImageData(img, 0, 0);
}

function drawMask(mask, w, h) {
  const tmp = new OffscreenCanvas(w, h);
  const ctx = tmp.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    if (mask[i]) {
      img.data[i * 4] = 255;
      img.data[i * 4 + 1] = 48;
      img.data[i * 4 + 2] = 32;
      img.data[i * 4 + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  const canvas = $("mask-canvas");
  const out = canvas.getContext("2d");
  out.clearRect(0, 0, canvas.width, canvas.height);
  out.imageSmoothingEnabled = false;
  out.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

// ---------------------------------------------------------------------------------------------
// Whole scenes: zoomable view, tiles' progress, results and exports

const view = { zoom: 1, x: 0, y: 0, drag: null };

function applyView() {
  const stack = $("canvas-stack");
  stack.style.transform = view.zoom === 1 && !view.x && !view.y ? "" : `translate(${view.x}px, ${view.y}px) scale(${view.zoom})`;
  stack.dataset.zoom = String(view.zoom);
}

/** Switch the picture between a single input (click to correct) and a whole scene (zoom, pan,
 * tiles drawn over it). */
function setSceneView(scene) {
  Object.assign(view, { zoom: 1, x: 0, y: 0, drag: null });
  applyView();
  $("viewport").classList.toggle("scene", !!scene);
  $("canvas-stack").dataset.scene = scene ? "1" : "";
  $("tiles-canvas").hidden = !scene;
  // A scene's heat map has one cell per tile: show the cells, not a blur.
  $("heat-canvas").style.imageRendering = scene ? "pixelated" : "";
  $("view-hint").textContent = scene
    ? "Whole scene — scroll to zoom, drag to pan, double-click to reset. Tiles: shaded by the sentence's localization score, outlined yellow where SAM answered."
    : "Mask overlay — click to correct: click = on the object, shift-click or right-click = not on it";
}

/** The view's bitmap for a scene the browser cannot decode (a GeoTIFF): the worker's preview. */
async function previewBitmap(scene) {
  const { previewWidth: w, previewHeight: h, preview } = scene;
  const data = new Uint8ClampedArray(w * h * 4);
  for (let i = 0; i < w * h; i++) data.set([preview[i * 3], preview[i * 3 + 1], preview[i * 3 + 2], 255], i * 4);
  return createImageBitmap(new ImageData(data, w, h));
}

function clearTiles() {
  const c = $("tiles-canvas");
  c.getContext("2d").clearRect(0, 0, c.width, c.height);
}

/** One tile's progress: shaded by its localization score (its colour from the heat ramp), a
 * yellow outline once SAM answered it. */
function drawTile(tile) {
  if (!state.image) return;
  const c = $("tiles-canvas");
  const ctx = c.getContext("2d");
  const s = c.width / state.image.width;
  const [x, y, w, h] = [tile.x0 * s, tile.y0 * s, tile.width * s, tile.height * s];
  if (tile.answered) {
    ctx.strokeStyle = "#fadc28";
    ctx.lineWidth = Math.max(2, c.width / 400);
    ctx.strokeRect(x + 1, y + 1, w - 2, h - 2);
  } else if (tile.score !== null && tile.score !== undefined) {
    // Logits around 0: −4 → dark, +4 → bright.
    const v = Math.max(0, Math.min(255, Math.round(((tile.score + 4) / 8) * 255)));
    const [r, g, b] = ramp(v);
    ctx.fillStyle = `rgba(${r}, ${g}, ${b}, 0.18)`;
    ctx.fillRect(x, y, w, h);
  }
}

function sceneProgress(text, p) {
  drawTile(p.tile);
  const what = p.phase === "locate" ? "Localizing" : "SAM answering";
  const msg = `“${text}”: ${what} tile ${p.done} of ${p.total}…`;
  inputStatus(msg, "busy");
  setStatus(msg, "busy");
}

function showSceneResult(text, r) {
  state.result = r;
  state.clickText = null;
  const sc = r.scene;
  drawSceneMask(r.mask, r.width, r.height);
  clearTiles();
  for (const t of sc.tiles) if (!t.answered) drawTile(t);
  for (const t of sc.tiles) if (t.answered) drawTile(t);
  drawHeat(r.heat, r.heatWidth, r.heatHeight);
  $("heat-range").textContent =
    sc.selection === "localize" ? `one cell per tile: the sentence's best dense-prompt probability, ${prob(r.heatMin)} → ${prob(r.heatMax)}` : "every tile answered";
  const t = sc.timings;
  $("stat-iou").textContent = `${r.iou.toFixed(3)} (best answered tile)`;
  const pct = ((100 * r.area) / (r.width * r.height)).toFixed(3);
  $("stat-mask").textContent = `${r.width}×${r.height}, ${r.area} px (${pct} %), ${sc.polygons} polygon(s)`;
  $("stat-query").textContent =
    `localization ${ms(t.locate)} (${sc.tiles.length} tiles), SAM ${ms(t.answer)} on ${sc.tilesAnswered} tile(s), merge ${ms(t.merge)} — total ${ms(t.total)}`;
  $("stat-query").dataset.totalMs = String(t.total);
  $("stat-clicks").textContent = "not on whole scenes";
  const res = $("result");
  res.dataset.maskWidth = r.width;
  res.dataset.maskHeight = r.height;
  res.dataset.maskArea = r.area;
  res.dataset.clicks = "0";
  res.dataset.tilesAnswered = String(sc.tilesAnswered);
  res.dataset.state = "done";
  inputStatus(`“${text}” on the whole scene: ${r.area} px in ${sc.tilesAnswered} answered tile(s).${r.note ? " " + r.note : ""}`, "image");
  readyStatus();
}

function download(blob, suffix) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  const base = (state.image?.name || "image").replace(/\.[^.]+$/, "");
  a.download = `${base}-${suffix}`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function wireSceneView() {
  const vp = $("viewport");
  const stack = $("canvas-stack");
  vp.addEventListener(
    "wheel",
    (e) => {
      if (!state.image?.scene) return;
      e.preventDefault();
      const rect = vp.getBoundingClientRect();
      const [px, py] = [e.clientX - rect.left, e.clientY - rect.top];
      const zoom = Math.max(1, Math.min(64, view.zoom * Math.exp(-e.deltaY * 0.002)));
      // Keep the point under the cursor in place.
      view.x = px - ((px - view.x) * zoom) / view.zoom;
      view.y = py - ((py - view.y) * zoom) / view.zoom;
      view.zoom = zoom;
      if (zoom === 1) view.x = view.y = 0;
      applyView();
    },
    { passive: false },
  );
  stack.addEventListener("pointerdown", (e) => {
    if (!state.image?.scene) return;
    view.drag = { x: e.clientX - view.x, y: e.clientY - view.y };
    stack.classList.add("dragging");
    stack.setPointerCapture(e.pointerId);
  });
  stack.addEventListener("pointermove", (e) => {
    if (!view.drag) return;
    view.x = e.clientX - view.drag.x;
    view.y = e.clientY - view.drag.y;
    applyView();
  });
  const end = () => {
    view.drag = null;
    stack.classList.remove("dragging");
  };
  stack.addEventListener("pointerup", end);
  stack.addEventListener("pointercancel", end);
  vp.addEventListener("dblclick", () => {
    if (!state.image?.scene) return;
    Object.assign(view, { zoom: 1, x: 0, y: 0 });
    applyView();
  });
  $("download-tiff").addEventListener("click", () => {
    const sc = state.result?.scene;
    if (sc) download(new Blob([sc.geotiff], { type: "image/tiff" }), "mask.tif");
  });
  $("download-geojson").addEventListener("click", () => {
    const sc = state.result?.scene;
    if (sc) download(new Blob([sc.geojson], { type: "application/geo+json" }), "mask.geojson");
  });
}

/** The correction clicks over the mask: green on the object, blue not on it. */
function drawClicks() {
  if (!state.image) return;
  const canvas = $("mask-canvas");
  const ctx = canvas.getContext("2d");
  const s = canvas.width / state.image.width;
  const r = Math.max(4, canvas.width / 80);
  for (const c of state.clicks) {
    ctx.beginPath();
    ctx.arc(c.x * s, c.y * s, r, 0, 2 * Math.PI);
    ctx.fillStyle = c.positive ? "#28e650" : "#288cff";
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 2;
    ctx.fill();
    ctx.stroke();
  }
}

/** A click on the image corrects the current answer (beyond the paper): a plain click marks a
 * point on the object, a right click or shift-click a point that is not; only SAM's decoder runs
 * again, on the sentence's cached prompts. */
function addClick(event, positive) {
  if (!state.result || state.busy || !state.image || state.image.scene) return;
  const canvas = $("image-canvas");
  const rect = canvas.getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * state.image.width;
  const y = ((event.clientY - rect.top) / rect.height) * state.image.height;
  if (!(x >= 0 && y >= 0 && x <= state.image.width && y <= state.image.height)) return;
  state.clicks.push({ x, y, positive });
  $("sentence").value = state.clickText ?? $("sentence").value;
  runSegment();
}

/** A probability for display: fixed-point when readable, otherwise scientific (1.2e-4). */
function prob(p) {
  return p >= 0.01 || p === 0 ? p.toFixed(3) : p.toExponential(1);
}

/** A small "inferno"-like colour ramp for the heat map. */
function ramp(v) {
  const t = v / 255;
  const r = Math.min(255, Math.round(255 * Math.min(1, 1.6 * t)));
  const g = Math.round(255 * Math.max(0, Math.min(1, 1.8 * t - 0.6)));
  const b = Math.round(255 * Math.max(0, Math.min(1, t < 0.4 ? 1.2 * t : 2.4 * t - 1.4)));
  return [r, g, b];
}

function drawHeat(heat, w, h) {
  const canvas = $("heat-canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const [r, g, b] = ramp(heat[i]);
    img.data.set([r, g, b, 255], i * 4);
  }
  ctx.putImageData(img, 0, 0);
}

function downloadMask() {
  const r = state.result;
  if (!r) return;
  const c = document.createElement("canvas");
  c.width = r.width;
  c.height = r.height;
  const ctx = c.getContext("2d");
  const img = ctx.createImageData(r.width, r.height);
  for (let i = 0; i < r.width * r.height; i++) {
    const v = r.mask[i];
    img.data.set([v, v, v, 255], i * 4);
  }
  ctx.putImageData(img, 0, 0);
  c.toBlob((blob) => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    const base = (state.image?.name || "image").replace(/\.[^.]+$/, "");
    a.download = `${base}-mask.png`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }, "image/png");
}

// ---------------------------------------------------------------------------------------------
// Samples and example sentences

function setExamples(sentences) {
  const chips = $("example-chips");
  chips.replaceChildren();
  const list = $("examples");
  list.replaceChildren();
  for (const s of sentences) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "chip";
    b.textContent = s;
    b.addEventListener("click", () => {
      $("sentence").value = s;
      runSegment();
    });
    chips.append(b);
    const o = document.createElement("option");
    o.value = s;
    list.append(o);
  }
}

async function loadSamples() {
  try {
    const resp = await fetch("samples/samples.json");
    const { samples } = await resp.json();
    const box = $("samples");
    for (const s of samples) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "sample";
      b.title = s.title;
      b.dataset.file = s.file;
      const img = document.createElement("img");
      img.src = `samples/${s.file}`;
      img.alt = s.title;
      img.loading = "lazy";
      const label = document.createElement("span");
      label.className = "sample-label";
      label.textContent = s.title.replace(/^(Synthetic|Photo): /, "");
      b.append(img, label);
      b.addEventListener("click", async () => {
        const blob = await (await fetch(`samples/${s.file}`)).blob();
        await takeFile(blob, s.file, s.sentences);
      });
      box.append(b);
    }
    setExamples(samples[0].sentences);
  } catch (err) {
    console.warn("no samples", err);
    setExamples(["the largest white storage tank", "the first building from the left", "the grey airplane"]);
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring

function wireUi() {
  wireSceneView();
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    takeFile(e.dataTransfer.files[0]);
  });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") $("file-input").click();
  });
  document.addEventListener("paste", (e) => {
    const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) {
      e.preventDefault();
      takeFile(file, "pasted image");
    }
  });
  $("file-input").addEventListener("change", (e) => takeFile(e.target.files[0]));
  $("prompt").addEventListener("submit", (e) => {
    e.preventDefault();
    runSegment();
  });
  $("opacity").addEventListener("input", (e) => ($("mask-canvas").style.opacity = e.target.value));
  $("mask-canvas").style.opacity = $("opacity").value;
  $("download").addEventListener("click", downloadMask);
  $("image-canvas").addEventListener("click", (e) => addClick(e, !e.shiftKey));
  $("image-canvas").addEventListener("contextmenu", (e) => {
    if (!state.result || state.image?.scene) return;
    e.preventDefault();
    addClick(e, false);
  });
  $("reset-clicks").addEventListener("click", () => {
    state.clicks = [];
    if (state.clickText) $("sentence").value = state.clickText;
    runSegment();
  });
  $("backend").addEventListener("change", () => {
    state.model = null;
    boot(false).catch((err) => setStatus(`Backend error: ${err.message}`, "error"));
  });
  $("model-source").addEventListener("change", (e) => {
    const v = e.target.value;
    $("model-url-box").hidden = v !== "url";
    if (v === "file") $("model-file").click();
    if (v === "embedded") switchModel({ kind: "embedded", url: EMBEDDED_MODEL });
    if (v === "synthetic") switchModel({ kind: "synthetic" });
  });
  $("model-file").addEventListener("change", async (e) => {
    const f = e.target.files[0];
    if (f) switchModel({ kind: "file", name: f.name, bytes: await f.arrayBuffer() });
  });
  $("model-url-load").addEventListener("click", () => {
    const url = $("model-url").value.trim();
    if (url) switchModel({ kind: "url", url });
  });
}

function registerServiceWorker() {
  if ("serviceWorker" in navigator && location.protocol !== "file:") {
    navigator.serviceWorker.register("sw.js").catch((err) => console.warn("service worker not registered:", err));
  }
}

async function main() {
  wireUi();
  const requested = new URLSearchParams(location.search).get("backend");
  if (requested === "cpu" || requested === "webgpu") $("backend").value = requested;
  registerServiceWorker();
  loadSamples();
  try {
    await boot(true);
  } catch (err) {
    console.error(err);
    const missing = /HTTP 404/.test(err.message) && (state.modelSource || initialModelSource()).kind === "embedded";
    setStatus(
      missing
        ? "This build has no embedded model (models/nano/nano.rsb). Pick a bundle file or URL, or the synthetic model."
        : `Failed to start: ${err.message}`,
      "error",
    );
  } finally {
    updateButtons();
    document.body.dataset.ready = "1";
  }
}

main();
