// workerbridge worker bootstrap: a module worker that boots Pyodide and serves requests.
//
// Everything is resolved against this file's own URL, so the bundle works at any path.
// The page passes its options as JSON in the worker's name:
// {"modules": [url, ...], "snapshot": true}. With "snapshot" (the default) the worker
// boots from a Pyodide memory snapshot kept in Cache Storage when one matches this
// Pyodide build, this bundle and these modules; otherwise it boots normally and makes
// that snapshot right after importing its modules, before it serves anything.
// Wire format: see py/workerbridge/_envelope.py; this file only ever builds the ERROR
// envelope that reports a failed boot.
import { loadPyodide } from "../pyodide/pyodide.mjs";

const PROTOCOL_VERSION = 1;
const USER_MODULE_DIR = "/home/pyodide/workerbridge_user";
const SNAPSHOT_CACHE = "workerbridge-snapshots";
// Part of every snapshot key: bump it when what happens before a snapshot changes here.
const SNAPSHOT_FORMAT = 1;

// A worker that closes itself would otherwise vanish without a word: say so first, so
// the page settles its pending calls and replaces the worker.
const closeWorker = self.close.bind(self);
self.close = () => {
  self.postMessage({
    v: PROTOCOL_VERSION, kind: "error", code: "crashed", error_type: "WorkerCrashedError",
    message: "the worker closed itself",
  });
  closeWorker();
};

// Step 0: hold messages that arrive while Python boots.
const early = [];
let deliver = (data) => early.push(data);
self.addEventListener("message", (event) => deliver(event.data));

function options() {
  try {
    return JSON.parse(self.name || "{}");
  } catch {
    return {};
  }
}

async function bootPyodide(extra = {}) {
  return loadPyodide({ indexURL: new URL("../pyodide/", import.meta.url).href, ...extra });
}

async function fetchOk(url, what) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${what}: HTTP ${response.status}`);
  return response;
}

async function bundleInfo() {
  // dist/workerbridge/bundle.json: the package's content hash and the Pyodide build id.
  try {
    return await (await fetchOk(new URL("bundle.json", import.meta.url), "bundle.json")).json();
  } catch {
    return {};
  }
}

async function installPackage(pyodide) {
  const response = await fetchOk(new URL("workerbridge.zip", import.meta.url), "workerbridge.zip");
  const sitePackages = pyodide.runPython("import site; site.getsitepackages()[0]");
  pyodide.unpackArchive(await response.arrayBuffer(), "zip", { extractDir: sitePackages });
}

async function fetchUserModules(urls) {
  const sources = [];
  for (const url of urls) {
    const text = await (await fetchOk(url, `worker module ${url}`)).text();
    const name = new URL(url).pathname.split("/").pop().replace(/\.py$/, "");
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`bad module name: ${name}`);
    sources.push({ name, text });
  }
  return sources;
}

function installUserModules(pyodide, sources) {
  pyodide.FS.mkdirTree(USER_MODULE_DIR);
  for (const { name, text } of sources) pyodide.FS.writeFile(`${USER_MODULE_DIR}/${name}.py`, text);
  return sources.map((s) => s.name);
}

function interruptBuffer(pyodide) {
  // Under cross-origin isolation the page can stop running Python by writing 2 into
  // slot 0 (Pyodide's interrupt word); slot 1 names the request to stop.
  if (!self.crossOriginIsolated) return undefined;
  const control = new SharedArrayBuffer(8);
  pyodide.setInterruptBuffer(new Int32Array(control, 0, 1));
  return control;
}

// --- memory snapshots ------------------------------------------------------------------
// A snapshot is the WebAssembly memory of a worker that has imported its modules and
// served nothing. The file system is not in it (Emscripten keeps files in JS), so a
// snapshot boot still installs the same files; the imports themselves are skipped.

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function snapshotKey(bundle, sources) {
  if (!bundle.pyodide_build || !bundle.content_hash) return null;
  const text = JSON.stringify([SNAPSHOT_FORMAT, bundle.pyodide_build, bundle.content_hash,
    sources.map((s) => [s.name, s.text])]);
  return hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text))).slice(0, 32);
}

function checksum(bytes) {
  // FNV-1a over 32-bit words: ~20 ms for 30 MB here, against SHA-256's ~100 ms; it
  // catches a truncated or overwritten entry, which is all Cache Storage can do to it.
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  let h = (0x811c9dc5 ^ bytes.byteLength) >>> 0;
  for (let i = 0; i < words.length; i++) h = Math.imul(h ^ words[i], 16777619);
  for (let i = words.length << 2; i < bytes.byteLength; i++) h = Math.imul(h ^ bytes[i], 16777619);
  return (h >>> 0).toString(16);
}

// Pyodide saves a JS object that Python holds at snapshot time as the path it was reached
// by (js.Object.fromEntries). A constructor's `prototype` is a read-only property, which
// escapes that recording, so `js.Object.prototype.toString` is saved here as
// ["Object", "toString"] instead. Any other JS object stops the snapshot (logged).
function builtinSerializer() {
  const names = new Map();
  for (const name of Object.getOwnPropertyNames(self)) {
    let proto;
    try {
      proto = typeof self[name] === "function" ? self[name].prototype : undefined;
    } catch {
      continue;
    }
    if (!proto || names.has(proto)) continue;
    names.set(proto, [name]);
    for (const member of Object.getOwnPropertyNames(proto)) {
      const desc = Object.getOwnPropertyDescriptor(proto, member);
      if (typeof desc.value === "function" && !names.has(desc.value)) names.set(desc.value, [name, member]);
    }
  }
  return (obj) => {
    const path = names.get(obj);
    if (!path) throw new Error(`Python holds a JS ${Object.prototype.toString.call(obj)} made at import`);
    return path;
  };
}

function builtinDeserializer([name, member]) {
  const proto = self[name].prototype;
  return member === undefined ? proto : proto[member];
}

function snapshotURL(key) {
  return new URL(`snapshot/${key}.bin`, import.meta.url).href;
}

async function readSnapshot(cache, key) {
  // -> { bytes } or { reason } (a stored entry that cannot be used), or {} (none stored).
  const response = await cache.match(snapshotURL(key));
  if (!response) return {};
  if (response.headers.get("x-workerbridge-key") !== key) return { reason: "its key does not match" };
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (String(bytes.byteLength) !== response.headers.get("x-workerbridge-length")) {
    return { reason: "it is truncated" };
  }
  if (checksum(bytes) !== response.headers.get("x-workerbridge-sum")) {
    return { reason: "its checksum does not match (corrupt)" };
  }
  return { bytes };
}

async function storeSnapshot(cache, key, bytes) {
  await cache.put(snapshotURL(key), new Response(bytes, {
    headers: {
      "content-type": "application/octet-stream",
      "x-workerbridge-key": key,
      "x-workerbridge-length": String(bytes.byteLength),
      "x-workerbridge-sum": checksum(bytes),
    },
  }));
}

async function openSnapshots(opts, bundle, sources) {
  // -> { cache, key } when snapshots can be used here, else { reason }.
  if (opts.snapshot === false) return { reason: "turned off" };
  if (!self.caches || !self.crypto || !crypto.subtle) return { reason: "no Cache Storage here" };
  const key = await snapshotKey(bundle, sources);
  if (!key) return { reason: "bundle.json names no Pyodide build" };
  try {
    return { cache: await caches.open(SNAPSHOT_CACHE), key };
  } catch (err) {
    return { reason: `Cache Storage refused: ${err && err.message ? err.message : err}` };
  }
}

async function boot() {
  const started = performance.now();
  const stages = {};
  const mark = (name, since) => { stages[name] = performance.now() - since; return performance.now(); };
  const opts = options();
  let t = performance.now();
  const [bundle, sources] = await Promise.all([bundleInfo(), fetchUserModules(opts.modules || [])]);
  const store = await openSnapshots(opts, bundle, sources);
  t = mark("fetch_ms", t);
  let pyodide;
  let snapshot = "off";
  let reason = store.reason;
  if (store.cache) {
    const found = await readSnapshot(store.cache, store.key);
    t = mark("snapshot_read_ms", t);
    if (found.bytes) {
      try {
        pyodide = await bootPyodide({
          _loadSnapshot: found.bytes, _snapshotDeserializer: builtinDeserializer,
        });
        snapshot = "loaded";
      } catch (err) {
        found.reason = `Pyodide could not restore it: ${err && err.message ? err.message : err}`;
      }
    }
    if (found.reason) {
      reason = `the cached snapshot was not used: ${found.reason}`;
      console.warn(`workerbridge: ${reason}; booting normally`);
      await store.cache.delete(snapshotURL(store.key));
    }
  }
  if (!pyodide) pyodide = await bootPyodide(store.cache ? { _makeSnapshot: true } : {});
  t = mark("pyodide_ms", t);
  await installPackage(pyodide);
  const userModules = installUserModules(pyodide, sources);
  t = mark("install_ms", t);
  const worker = pyodide.pyimport("workerbridge._worker");
  if (snapshot === "loaded") {
    worker.after_snapshot();
  } else {
    worker.prepare(pyodide.toPy(userModules));
    t = mark("import_ms", t);
    if (store.cache) {
      try {
        const bytes = pyodide.makeMemorySnapshot({ serializer: builtinSerializer() });
        t = mark("snapshot_make_ms", t);
        await storeSnapshot(store.cache, store.key, bytes);
        t = mark("snapshot_store_ms", t);
        snapshot = "made";
        stages.snapshot_mb = bytes.byteLength / 1048576;
      } catch (err) {
        reason = `no snapshot was made: ${err && err.message ? err.message : err}`;
        console.warn(`workerbridge: ${reason}`);
      }
    }
  }
  const control = interruptBuffer(pyodide);
  const info = { boot_ms: performance.now() - started, snapshot, boot_stages: stages };
  if (reason && snapshot !== "loaded") info.snapshot_reason = reason;
  const onMessage = worker.serve(control, pyodide.toPy(userModules), pyodide.toPy(info));
  deliver = (data) => onMessage(data);
  for (const data of early.splice(0)) onMessage(data);
}

boot().catch((err) => {
  self.postMessage({
    v: PROTOCOL_VERSION,
    kind: "error",
    code: "crashed",
    message: `worker failed to boot: ${err && err.message ? err.message : err}`,
    error_type: "WorkerCrashedError",
  });
  closeWorker();
});
