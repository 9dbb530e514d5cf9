// The model's Web Worker (a module worker): loads the wasm built by trunk from
// crates/rsrefseg-web (`data-type="worker"`: unhashed names rsrefseg-web.js / rsrefseg-web_bg.wasm)
// and answers the page's requests one at a time. The page's UI thread never runs the model.
//
// Protocol (page → worker): {id, op, args}
//   op "init"          args {backend: "webgpu" | "cpu"}  → {backend, version}
//   op "loadModel"     args {bytes: ArrayBuffer}         → model info
//   op "loadModelUrl"  args {url}                        → model info (+ progress messages)
//   op "loadSynthetic" args {seed?}                      → model info
//   op "setImage"      args {bytes: ArrayBuffer}         → {width, height, backend, timings}
//   op "segment"       args {text}                       → {width, height, mask, heatWidth,
//                                                          heatHeight, heat, heatMin, heatMax,
//                                                          iou, area, tokens, note, backend,
//                                                          timings}
// Worker → page:
//   {type: "result", id, ok: true, result} | {type: "result", id, ok: false, error}
//   {type: "progress", id, loaded, total}       (download of loadModelUrl; total 0 = unknown)
//   {type: "panic", message}                    (the wasm panicked: the page restarts the worker)
//   {type: "ready"} / {type: "failed", error}   (the wasm module loaded / did not load)
// Model info: {backend, summary, imageSize, maxTokens, loadMs[, downloadMs, bytes]}.

import init, * as api from "./rsrefseg-web.js";

self.rsrefsegOnPanic = (message) => self.postMessage({ type: "panic", message: String(message) });

const wasmReady = init({ module_or_path: new URL("./rsrefseg-web_bg.wasm", import.meta.url) }).then(
  () => self.postMessage({ type: "ready" }),
  (err) => {
    self.postMessage({ type: "failed", error: String(err && err.message ? err.message : err) });
    throw err;
  },
);

const ops = {
  async init({ backend }) {
    return { backend: await api.init(backend || "webgpu"), version: api.version() };
  },
  loadModel: ({ bytes }) => api.loadModel(new Uint8Array(bytes)),
  loadModelUrl: ({ url }, id) =>
    api.loadModelUrl(String(url), (loaded, total) => self.postMessage({ type: "progress", id, loaded, total })),
  loadSynthetic: ({ seed }) => api.loadSyntheticModel(seed ?? undefined),
  setImage: ({ bytes }) => api.setImage(new Uint8Array(bytes)),
  segment: ({ text }) => api.segment(String(text ?? "")),
};

// One request at a time, in arrival order (the model and the cached image are shared state).
let queue = Promise.resolve();

self.onmessage = (event) => {
  const { id, op, args } = event.data || {};
  queue = queue.then(async () => {
    try {
      await wasmReady;
      const fn = ops[op];
      if (!fn) throw new Error(`unknown operation ${op}`);
      const result = await fn(args || {}, id);
      const transfer = [];
      if (result && result.mask instanceof Uint8Array) transfer.push(result.mask.buffer);
      if (result && result.heat instanceof Uint8Array) transfer.push(result.heat.buffer);
      self.postMessage({ type: "result", id, ok: true, result }, transfer);
    } catch (err) {
      self.postMessage({ type: "result", id, ok: false, error: String(err && err.message ? err.message : err) });
    }
  });
};
