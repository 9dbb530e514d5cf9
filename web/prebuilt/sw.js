// Service worker of rsrefseg-web: the page works offline after the first visit.
//
// - On install it caches the app shell: index.html and every same-origin file it links (trunk's
//   hashed CSS included), the worker, the wasm, the samples and the embedded model bundle.
// - Model bundles (*.rsb) are served cache-first (they are large), refreshed in the background when
//   the server's copy has other headers (a new build);
//   everything else network-first with the cache as the offline fallback, so a rebuilt page is
//   picked up as soon as the network is there.
// Bump VERSION to drop old caches.

const VERSION = "rsrefseg-v1";
const SHELL = [
  "./",
  "index.html",
  "app.js",
  "worker.js",
  "rsrefseg-web.js",
  "rsrefseg-web_bg.wasm",
  "samples/samples.json",
  "samples/synth-tanks.png",
  "samples/synth-airport.png",
  "samples/tennis-courts.jpg",
  "samples/sports-field.jpg",
  "samples/bus-depot.jpg",
];
const MODEL = "models/nano/nano.rsb";

async function cacheShell() {
  const cache = await caches.open(VERSION);
  const urls = new Set(SHELL);
  try {
    // Whatever index.html links (e.g. the hashed stylesheet).
    const html = await (await fetch("index.html", { cache: "no-cache" })).text();
    for (const m of html.matchAll(/(?:href|src)="([^"#?]+)"/g)) {
      const u = new URL(m[1], self.registration.scope);
      if (u.origin === self.location.origin) urls.add(u.pathname.slice(new URL(self.registration.scope).pathname.length));
    }
  } catch {
    // Offline during install: cache what can be fetched.
  }
  // One by one, so that a missing file (e.g. no embedded model in this build) does not fail all.
  await Promise.all(
    [...urls, MODEL].map(async (u) => {
      try {
        const resp = await fetch(u, { cache: "no-cache" });
        if (resp.ok) await cache.put(u, resp);
      } catch {
        // ignore
      }
    }),
  );
}

self.addEventListener("install", (event) => {
  event.waitUntil(cacheShell().then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const key of await caches.keys()) if (key !== VERSION) await caches.delete(key);
      await self.clients.claim();
    })(),
  );
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname.endsWith(".rsb")) {
    event.respondWith(cacheFirst(event, req));
  } else {
    event.respondWith(networkFirst(event, req));
  }
});

// Responses are stored in the background (event.waitUntil) so that the page reads the body as
// it streams in (the model download's progress bar).
async function cacheFirst(event, req) {
  const cache = await caches.open(VERSION);
  const hit = await cache.match(req, { ignoreSearch: true });
  if (hit) {
    // A rebuilt page may ship another bundle under the same name: check its headers in the
    // background (HEAD) and refresh the cached copy for the next visit when they changed.
    event.waitUntil(refreshIfChanged(cache, req, hit));
    return hit;
  }
  const resp = await fetch(req);
  if (resp.ok) event.waitUntil(cache.put(req, resp.clone()));
  return resp;
}

async function refreshIfChanged(cache, req, cached) {
  try {
    const head = await fetch(req.url, { method: "HEAD", cache: "no-cache" });
    if (!head.ok) return;
    const key = (r) => ["etag", "last-modified", "content-length"].map((h) => r.headers.get(h) || "").join("|");
    if (key(head) !== key(cached)) {
      const resp = await fetch(req.url, { cache: "no-cache" });
      if (resp.ok) await cache.put(req, resp);
    }
  } catch {
    // offline: keep the cached bundle
  }
}

async function networkFirst(event, req) {
  const cache = await caches.open(VERSION);
  try {
    const resp = await fetch(req);
    if (resp.ok) event.waitUntil(cache.put(req, resp.clone()));
    return resp;
  } catch (err) {
    const hit = await cache.match(req, { ignoreSearch: true });
    if (hit) return hit;
    throw err;
  }
}
