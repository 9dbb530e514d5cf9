// The model's Web Worker (a module worker): loads the wasm built by trunk from
// crates/rsrefseg-web (unhashed names rsrefseg-web.js / rsrefseg-web_bg.wasm, see index.html)
// and answers the page's requests one at a time. The page's UI thread never runs the model.
//
// Protocol (page → worker {id, op, args}; worker → page {type: "result", id, ok, result | error},
// {type: "progress", id, loaded, total} while a model downloads, {type: "progress", id, scene}
// after each tile of a whole scene, {type: "panic", message}, {type: "ready"},
// {type: "failed", error}): every op, its arguments and its result are defined once, as serde
// structs, in crates/rsrefseg-web/src/messages.rs.

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
  // On a whole scene, a progress message after every tile.
  segment: (request, id) => api.segment(request, (scene) => self.postMessage({ type: "progress", id, scene })),
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
      if (result && result.scene && result.scene.geotiff instanceof Uint8Array) transfer.push(result.scene.geotiff.buffer);
      self.postMessage({ type: "result", id, ok: true, result }, transfer);
    } catch (err) {
      self.postMessage({ type: "result", id, ok: false, error: String(err && err.message ? err.message : err) });
    }
  });
};
