// Pyodide memory snapshots for workerbridge workers: keys, Cache Storage, (de)serialising.
//
// A snapshot is the WebAssembly memory of a worker that has imported its modules and
// served nothing (about 30 MB). Booting from one skips CPython's start-up and every
// import. The file system is not in it (Emscripten keeps files in JS), so a snapshot
// boot still installs the same files. Entries live in Cache Storage under a key naming
// the Pyodide build, the package's content hash and the user modules' source, so a
// stale one is never looked up; one that is corrupt is caught by its checksum, and one
// Pyodide refuses anyway makes the worker boot normally (worker.mjs).

const CACHE_NAME = "workerbridge-snapshots";
// Part of every key: bump it when what runs before a snapshot is made changes.
const FORMAT = 2;

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function snapshotKey(bundle, sources, plan) {
  if (!bundle.pyodide_build || !bundle.content_hash) return null;
  // The packages in it: their lock's hash and which of them this worker loaded.
  const packages = plan ? [plan.hash, plan.entries.map((e) => [e.name, e.sha256])] : [];
  const text = JSON.stringify([FORMAT, bundle.pyodide_build, bundle.content_hash,
    sources.map((s) => [s.name, s.text]), packages]);
  return hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text))).slice(0, 32);
}

export function checksum(bytes) {
  // FNV-1a over 32-bit words: ~20 ms for 30 MB here, against SHA-256's ~100 ms; it
  // catches a truncated or overwritten entry, which is what can happen to one.
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  let h = (0x811c9dc5 ^ bytes.byteLength) >>> 0;
  for (let i = 0; i < words.length; i++) h = Math.imul(h ^ words[i], 16777619);
  for (let i = words.length << 2; i < bytes.byteLength; i++) h = Math.imul(h ^ bytes[i], 16777619);
  return (h >>> 0).toString(16);
}

/** Where a worker keeps and finds its snapshot; open() says why it cannot. */
export class SnapshotStore {
  static async open(opts, bundle, sources, base, plan) {
    // -> a store, or { reason } when snapshots cannot be used here.
    if (opts.snapshot === false) return { reason: null };
    if (plan && plan.compiled.length) {
      return {
        reason: `snapshots are off for this pool: ${plan.compiled.join(", ")} `
          + `${plan.compiled.length > 1 ? "are compiled packages" : "is a compiled package"}, `
          + "and a restored snapshot cannot bring back a dynamic library",
      };
    }
    if (!self.caches || !self.crypto || !crypto.subtle) return { reason: "no Cache Storage here" };
    const key = await snapshotKey(bundle, sources, plan);
    if (!key) return { reason: "bundle.json names no Pyodide build" };
    try {
      return new SnapshotStore(await caches.open(CACHE_NAME), key, base);
    } catch (err) {
      return { reason: `Cache Storage refused: ${err && err.message ? err.message : err}` };
    }
  }

  constructor(cache, key, base) {
    this.cache = cache;
    this.key = key;
    this.url = new URL(`snapshot/${key}.bin`, base).href;
  }

  async read() {
    // -> { bytes }, or { reason } for an entry that cannot be used, or {} for none.
    const response = await this.cache.match(this.url);
    if (!response) return {};
    if (response.headers.get("x-workerbridge-key") !== this.key) {
      return { reason: "its key does not match" };
    }
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (String(bytes.byteLength) !== response.headers.get("x-workerbridge-length")) {
      return { reason: "it is truncated" };
    }
    if (checksum(bytes) !== response.headers.get("x-workerbridge-sum")) {
      return { reason: "its checksum does not match (corrupt)" };
    }
    return { bytes };
  }

  async write(bytes) {
    await this.cache.put(this.url, new Response(bytes, {
      headers: {
        "content-type": "application/octet-stream",
        "x-workerbridge-key": this.key,
        "x-workerbridge-length": String(bytes.byteLength),
        "x-workerbridge-sum": checksum(bytes),
      },
    }));
  }

  async remove() {
    await this.cache.delete(this.url);
  }
}

// Pyodide saves each JS object Python holds at snapshot time as the path it was reached
// by (js.Object.fromEntries). A constructor's `prototype` is a read-only property, which
// escapes that recording, so `js.Object.prototype.toString` is saved here as
// ["Object", "toString"]. Any other JS object stops the snapshot (the reason is logged).
export function builtinSerializer() {
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
      if (typeof desc.value === "function" && !names.has(desc.value)) {
        names.set(desc.value, [name, member]);
      }
    }
  }
  return (obj) => {
    const path = names.get(obj);
    if (!path) {
      throw new Error(`Python holds a JS ${Object.prototype.toString.call(obj)} made at import`);
    }
    return path;
  };
}

export function builtinDeserializer([name, member]) {
  const proto = self[name].prototype;
  return member === undefined ? proto : proto[member];
}
