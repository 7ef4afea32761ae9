"""The JS half of ``idb``: one promise per IndexedDB request, nothing else awaited inside
a transaction. ``BYTES`` stands for the mark ``idb`` puts in place of a bytes value."""

SOURCE = r"""
const SPECIAL = { inf: Infinity, "-inf": -Infinity };
const key = (k) => {
  if (Array.isArray(k)) return k.map(key);
  if (k !== null && typeof k === "object" && typeof k.$k === "string") {
    return k.$k === "bin" ? new ArrayBuffer(0) : SPECIAL[k.$k];
  }
  return k;
};
const range = (r) => {
  if (r === null || r === undefined) return undefined;  // the whole store or index
  const lo = "lo" in r, hi = "hi" in r;
  if (lo && hi) return IDBKeyRange.bound(key(r.lo), key(r.hi), r.lo_open, r.hi_open);
  if (lo) return IDBKeyRange.lowerBound(key(r.lo), r.lo_open);
  if (hi) return IDBKeyRange.upperBound(key(r.hi), r.hi_open);
  return undefined;
};
// JSON-able (then one string crosses to Python, the cheap way) or not (bytes: the
// value crosses as JS objects and Python converts it).
const plain = (v) => {
  switch (typeof v) {
    case "string": case "boolean": return true;
    case "number": return Number.isFinite(v);
    case "object": {
      if (v === null) return true;
      if (Array.isArray(v)) { for (const x of v) if (!plain(x)) return false; return true; }
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) return false;
      for (const k in v) if (!plain(v[k])) return false;
      return true;
    }
    default: return false;
  }
};
const pack = (v) => (plain(v) ? JSON.stringify(v) : v);
const failure = (err) => new Error((err && err.name) || "AbortError");

const WRITES = new Set(["add", "put", "del", "delr", "clear"]);

function request(tx, r) {
  const store = tx.objectStore(r[1]);
  const source = () => (r[2] === null ? store : store.index(r[2]));
  switch (r[0]) {
    case "add": return store.add(r[2]);
    case "put": return store.put(r[2]);
    case "get": return store.get(key(r[2]));
    case "del": return store.delete(key(r[2]));
    case "delr": return store.delete(range(r[2]));
    case "clear": return store.clear();
    case "count": return source().count(range(r[3]));
    case "all": return source().getAll(range(r[3]), r[4] || undefined);
    case "last": return source().openCursor(range(r[3]), "prev");  // the highest record
  }
  throw new DOMException("unknown request", "NotSupportedError");
}

// One transaction: issue `batch`; each time a batch has succeeded, ask `step` (a
// synchronous Python callback, or null) for the next one and issue it at once, from
// IndexedDB's success callback, while the transaction is active. Resolves on `complete`
// (a read-only one as soon as its last batch has succeeded: nothing it read can be undone);
// rejects on `abort` with the DOMException's name.
function run(conn, stores, mode, batch, step) {
  return new Promise((resolve, reject) => {
    let tx;
    try {
      if (conn.closed) throw { name: "InvalidStateError" };
      tx = mode === "readwrite"
        ? conn.db.transaction(stores, mode, { durability: "strict" })
        : conn.db.transaction(stores, mode);
    } catch (err) {
      reject(failure(err));
      return;
    }
    let scanned = 0, last = null, error = null, stopped = false;
    const stop = (err) => {
      if (!error) error = err;
      if (stopped) return;
      stopped = true;
      try { tx.abort(); } catch (e) { /* already finished */ }
    };
    tx.oncomplete = () => resolve({ results: last, scanned });
    // tx.error: what made IndexedDB abort (a failed write has no handler of its own);
    // error: why we stopped it, or the first failure a handler saw.
    tx.onabort = () => reject(failure(tx.error || error));
    const issue = (reqs) => {
      if (typeof reqs === "string") reqs = JSON.parse(reqs);
      const out = new Array(reqs.length);
      let pending = reqs.length;
      const done = () => {
        const packed = pack(out);
        if (!step) {
          last = packed;
          if (mode === "readonly") resolve({ results: last, scanned });
          return;
        }
        let next;
        try { next = step(packed); } catch (err) { stop({ name: "StepFailed" }); return; }
        if (next !== undefined && next !== null) issue(next);
      };
      if (pending === 0) { done(); return; }
      for (let i = 0; i < reqs.length && !stopped; i++) {
        const r = reqs[i];
        let req;
        try { req = request(tx, r); } catch (err) { stop(err); return; }
        if (WRITES.has(r[0]) && i < reqs.length - 1) {
          // No one reads a write's result, and a transaction's requests complete in
          // order: the batch is done when its last request is. Without handlers, a
          // failed write aborts the transaction with its error (tx.error).
          out[i] = null;
          pending--;
          continue;
        }
        req.onsuccess = () => {
          let v = req.result;
          if (r[0] === "last") v = v ? v.value : null;  // a cursor: its record, not moved on
          out[i] = v === undefined || WRITES.has(r[0]) ? null : v;
          if (r[0] === "all") scanned += v.length;
          if (--pending === 0 && !stopped) done();
        };
        req.onerror = () => { if (!error) error = req.error; };  // the abort follows
      }
    };
    try { issue(batch); } catch (err) { stop(err); }
  });
}

const sameIndex = (index, want) =>
  JSON.stringify(index.keyPath) === JSON.stringify(want.path)
  && index.unique === want.unique && index.multiEntry === want.multi;

// Make the database's stores and indexes those of `spec`: create what is missing,
// re-create what changed, delete what is no longer declared (stores named "_..." are
// internal and kept). Runs inside the versionchange transaction.
function upgrade(db, tx, spec) {
  for (const name of Array.from(db.objectStoreNames)) {
    if (!(name in spec.stores) && !name.startsWith("_")) db.deleteObjectStore(name);
  }
  for (const [name, want] of Object.entries(spec.stores)) {
    let store;
    if (db.objectStoreNames.contains(name)) {
      store = tx.objectStore(name);
      if (JSON.stringify(store.keyPath) !== JSON.stringify(want.key)) {
        throw { name: "KeyPathChanged" };
      }
    } else {
      store = db.createObjectStore(name, { keyPath: want.key });
    }
    for (const iname of Array.from(store.indexNames)) {
      const w = want.indexes[iname];
      if (!w || !sameIndex(store.index(iname), w)) store.deleteIndex(iname);
    }
    for (const [iname, w] of Object.entries(want.indexes)) {
      if (!store.indexNames.contains(iname)) {
        store.createIndex(iname, w.path, { unique: w.unique, multiEntry: w.multi });
      }
    }
  }
}

function describe(db) {
  const names = Array.from(db.objectStoreNames);
  const stores = {};
  if (names.length) {
    const tx = db.transaction(names, "readonly");  // no request: it ends by itself
    for (const name of names) {
      const store = tx.objectStore(name);
      const indexes = {};
      for (const iname of Array.from(store.indexNames)) {
        const index = store.index(iname);
        indexes[iname] = { path: index.keyPath, unique: index.unique, multi: index.multiEntry };
      }
      stores[name] = { key: store.keyPath, indexes };
    }
  }
  return JSON.stringify({ version: db.version, stores });
}

// Open `name` at `version`, upgrading to `spec` (JSON, or null: must exist already).
// A tab that keeps an older version open blocks the upgrade: after `blockedMs` we give
// up with "Blocked", and should the upgrade start later anyway, abort it there.
function open(name, version, spec, blockedMs) {
  return new Promise((resolve, reject) => {
    let req;
    try { req = indexedDB.open(name, version); } catch (err) { reject(failure(err)); return; }
    let gaveUp = false, timer = null, upgradeError = null;
    req.onupgradeneeded = () => {
      const tx = req.transaction;
      tx.onabort = () => { upgradeError = upgradeError || tx.error; };
      if (gaveUp) { tx.abort(); return; }
      if (spec === null) { upgradeError = { name: "NotDefined" }; tx.abort(); return; }
      try { upgrade(req.result, tx, JSON.parse(spec)); } catch (err) {
        upgradeError = err;
        tx.abort();
      }
    };
    req.onblocked = () => {
      if (timer !== null) return;
      timer = setTimeout(() => { gaveUp = true; reject(failure({ name: "Blocked" })); },
                         blockedMs);
    };
    req.onsuccess = () => {
      clearTimeout(timer);
      const db = req.result;
      if (gaveUp) { db.close(); return; }
      const conn = { db, closed: false, reason: "" };
      // Another tab wants to upgrade: let it (close), and fail our later calls clearly.
      db.onversionchange = () => { db.close(); conn.closed = true; conn.reason = "upgraded"; };
      db.onclose = () => { conn.closed = true; conn.reason = conn.reason || "closed"; };
      resolve({ conn, schema: describe(db) });
    };
    req.onerror = (event) => {
      clearTimeout(timer);
      event.preventDefault();
      reject(failure(upgradeError || req.error));
    };
  });
}

// A batch holding bytes: JSON text in which each bytes value is {BYTES: i}, and the
// values themselves packed in one buffer (a Uint8Array of its own each, as IndexedDB
// stores them).
function revive(text, all, sizes) {
  const views = new Array(sizes.length);
  for (let i = 0, at = 0; i < sizes.length; at += sizes[i], i++) {
    views[i] = new Uint8Array(all.slice(at, at + sizes[i]));
  }
  return JSON.parse(text, (k, v) =>
    (v !== null && typeof v === "object" && BYTES in v) ? views[v[BYTES]] : v);
}

return { run, open, revive };
"""
