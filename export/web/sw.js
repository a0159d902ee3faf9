// Service worker of the hmer web bundle: every file of the bundle is cached at the first visit,
// so later visits load from the cache and work with the network cut. CACHE changes with the
// bundle's content (hmer-web build writes it), which replaces the old cache.
const CACHE = "__CACHE__";
const FILES = __FILES__;

self.addEventListener("install", e => e.waitUntil(
  caches.open(CACHE).then(c => c.addAll(FILES)).then(() => self.skipWaiting())));
self.addEventListener("activate", e => e.waitUntil(
  caches.keys().then(keys => Promise.all(keys.filter(k => k.startsWith("hmer-") && k !== CACHE).map(k => caches.delete(k))))
    .then(() => self.clients.claim())));
self.addEventListener("fetch", e => e.respondWith(
  caches.open(CACHE).then(c => c.match(e.request, { ignoreSearch: true })).then(hit => hit || fetch(e.request))));
