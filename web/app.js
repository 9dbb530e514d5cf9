// Page logic for rsrefseg-web: loads the wasm module, picks a backend, and wires the image
// drop zone, the sentence box and the mask overlay. Segmentation itself is not wired yet: the
// page reports "model loading" until the web crate can load weights.
//
// Readiness signal for page tests: document.body.dataset.ready = "1" once init has finished,
// and #status[data-state] is "ready" or "error".

const $ = (id) => document.getElementById(id);

function setStatus(text, state) {
  const el = $("status");
  el.textContent = text;
  el.dataset.state = state;
}

/**
 * Trunk injects a module script that loads the wasm, sets `window.wasmBindings` and then fires
 * `TrunkApplicationStarted`; wait for whichever comes first.
 */
function loadModule(timeoutMs = 120000) {
  if (window.wasmBindings) return Promise.resolve(window.wasmBindings);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the wasm module did not load")), timeoutMs);
    window.addEventListener(
      "TrunkApplicationStarted",
      () => {
        clearTimeout(timer);
        resolve(window.wasmBindings);
      },
      { once: true },
    );
  });
}

/** Only ask the wasm module for WebGPU when the browser really has an adapter. */
async function webgpuAvailable() {
  try {
    return !!(navigator.gpu && (await navigator.gpu.requestAdapter()));
  } catch {
    return false;
  }
}

let wasm = null;
let image = null; // ImageBitmap of the dropped image

async function selectBackend(requested) {
  const wanted = requested === "webgpu" && !(await webgpuAvailable()) ? "cpu" : requested;
  const used = await wasm.init(wanted);
  $("backend-used").textContent = used === "webgpu" ? "WebGPU" : "CPU";
  const got = await wasm.smokeTest();
  const expected = wasm.smokeTestExpected();
  if (Math.abs(got - expected) > 1e-2 * Math.max(1, Math.abs(expected))) {
    throw new Error(`backend self-check failed on ${used}: ${got} vs ${expected}`);
  }
  return used;
}

function drawImage(bitmap) {
  const canvas = $("image-canvas");
  const mask = $("mask-canvas");
  const scale = Math.min(1, 1024 / Math.max(bitmap.width, bitmap.height));
  canvas.width = mask.width = Math.round(bitmap.width * scale);
  canvas.height = mask.height = Math.round(bitmap.height * scale);
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  mask.getContext("2d").clearRect(0, 0, mask.width, mask.height);
}

/** Paint a binary mask (Uint8Array, row-major, w×h) as a translucent overlay. */
export function drawMask(maskBytes, w, h) {
  const canvas = $("mask-canvas");
  const tmp = new OffscreenCanvas(w, h);
  const ctx = tmp.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    if (maskBytes[i]) {
      img.data.set([255, 64, 32, 140], i * 4);
    }
  }
  ctx.putImageData(img, 0, 0);
  const out = canvas.getContext("2d");
  out.clearRect(0, 0, canvas.width, canvas.height);
  out.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

async function takeFile(file) {
  if (!file || !file.type.startsWith("image/")) return;
  image = await createImageBitmap(file);
  drawImage(image);
  updateButton();
}

function updateButton() {
  $("segment").disabled = !(wasm && wasm.modelLoaded() && image && $("sentence").value.trim());
}

function wireUi() {
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
  $("file-input").addEventListener("change", (e) => takeFile(e.target.files[0]));
  $("sentence").addEventListener("input", updateButton);
  $("backend").addEventListener("change", async (e) => {
    try {
      setStatus("Switching backend…", "loading");
      const used = await selectBackend(e.target.value);
      setStatus(`Ready (${used}).`, "ready");
    } catch (err) {
      setStatus(`Backend error: ${err}`, "error");
    }
  });
}

async function main() {
  wireUi();
  // ?backend=cpu|webgpu preselects the backend (used by web/page-test.py).
  const requested = new URLSearchParams(location.search).get("backend");
  if (requested === "cpu" || requested === "webgpu") $("backend").value = requested;
  try {
    wasm = await loadModule();
    $("version").textContent = wasm.version();
    const used = await selectBackend($("backend").value);
    setStatus(`Ready (${used}). Model loading…`, "ready");
    $("model-status").textContent = wasm.modelLoaded()
      ? "Model loaded."
      : "Model loading: weights are not available in this build yet.";
  } catch (err) {
    console.error(err);
    setStatus(`Failed to start: ${err}`, "error");
  } finally {
    updateButton();
    document.body.dataset.ready = "1";
  }
}

main();
