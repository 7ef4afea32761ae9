// workerbridge remote: a MicroPython page's connection to its host worker.
//
// The host is web/worker.mjs booted with {"host": true}: it holds the page's bridge
// (py/workerbridge/host.py) and answers "page.call" requests. This file only moves
// envelopes (wire format: py/workerbridge/core/envelope.py): requests out, each answer
// settling its promise, progress to its callback, CANCEL for a call given up, and every
// pending call failed with WorkerCrashedError if the host dies. web/mpy.py is the Python
// side. Values cross as [JSON text, JS objects]: JSON for what Python can rebuild as
// plain values, with {"$js": i} standing for the i-th JS object (a File, an ArrayBuffer).
// Where Web Workers cannot run (none in this browser, or the host fails to boot), the
// host runs on the page's thread instead: PageHost loads Pyodide from the bundle, once,
// with one warning.
const PROTOCOL_VERSION = 1;
const HOST_MODULE = "workerbridge.host";

/** Worker options of the host: the same as a default bridge worker's, with "host". */
export const HOST_OPTIONS = { modules: [], label: "workerbridge-host", snapshot: true, posted: false, host: true };

function failure(errorType, message, code) {
  return Object.assign(new Error(message), { error_type: errorType, code });
}

const plainObject = (v) => v !== null && typeof v === "object"
  && Object.getPrototypeOf(v) === Object.prototype;

/** A value from the host -> [JSON text, JS objects] (see the header). */
export function split(value) {
  const objects = [];
  const walk = (v) => {
    if (v === null || typeof v !== "object") return v;
    if (Array.isArray(v)) return v.map(walk);
    if (plainObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    objects.push(v);
    return { $js: objects.length - 1 };
  };
  return [JSON.stringify(walk(value) ?? null), objects];
}

/** [JSON text, JS objects] from Python -> the value to post. */
export function join(text, objects) {
  return JSON.parse(text, (key, v) => (plainObject(v) && typeof v.$js === "number"
    && Object.keys(v).length === 1 ? objects[v.$js] : v));
}

export class Remote {
  /** ``worker``: the host's Worker; ``dist``: the bundle's dist/ URL. */
  constructor(worker, dist) {
    this.worker = worker;
    this.dist = dist;
    this.pending = new Map();
    this.dead = null;
    this.ready = new Promise((resolve) => { this.readyNow = resolve; });
    this.booted = false;
    this.unbooted = [];  // [message, transfer] posted before READY: sent again on a fallback
    this.listener = (event) => this.receive(event);
    for (const type of ["message", "error", "messageerror"]) worker.addEventListener(type, this.listener);
  }

  /** A new host for the bundle at ``dist`` (its dist/ URL). */
  static start(dist) {
    const url = new URL("workerbridge/worker.mjs", dist).href;
    let worker;
    try {
      worker = new Worker(url, { type: "module", name: JSON.stringify(HOST_OPTIONS) });
    } catch (err) {  // no Worker here, or a policy that refuses it (CSP worker-src)
      worker = Remote.onPage(dist, `no Web Worker can start here (${err && err.name})`);
    }
    return new Remote(worker, dist);
  }

  static onPage(dist, why) {
    console.warn(`workerbridge: ${why}: the bridge and its handlers run on this page's `
      + "thread, in Pyodide loaded from the bundle; long calls will block the page");
    return new PageHost(dist);
  }

  receive(event) {
    if (event.type === "error") {
      event.preventDefault();
      this.crash(event.message || "the host worker failed to load");
      return;
    }
    if (event.type === "messageerror") {
      this.crash("a message from the host could not be deserialised");
      return;
    }
    let data = event.data;
    if (typeof data === "string") data = JSON.parse(data);
    for (const env of data && data.kind === "batch" ? data.messages : [data]) this.envelope(env);
  }

  envelope(env) {
    if (!env || env.v !== PROTOCOL_VERSION) return;
    if (env.kind === "ready") {
      this.booted = true;
      this.unbooted = [];
      this.readyNow(env.payload);
      return;
    }
    const call = this.pending.get(env.id);
    if (env.kind === "error" && (env.id === undefined || env.id === null)) {
      if (env.code === "crashed" || env.code === "missing_package" || env.code === "package") {
        this.crash(env.message, env.error_type || "WorkerCrashedError", env.code);
      }
      return;
    }
    if (!call) return;
    if (env.kind === "progress") {
      // As text: a MicroPython caller's FFI keeps only 32 bits of a number.
      if (call.onProgress) call.onProgress(String(env.done), String(env.total));
      return;
    }
    this.pending.delete(env.id);
    if (env.kind === "response") {
      const [text, objects] = split(env.payload);
      call.resolve(objects.length ? [text, objects] : text);
    }
    else if (env.kind === "error") call.reject(failure(env.error_type || "RemoteError", env.message, env.code));
  }

  crash(message, errorType = "WorkerCrashedError", code = "crashed") {
    if (!this.booted && code === "crashed" && !(this.worker instanceof PageHost)) {
      // The host never booted: no worker can run here. Serve from the page instead.
      for (const type of ["message", "error", "messageerror"]) this.worker.removeEventListener(type, this.listener);
      this.worker.terminate();
      this.worker = Remote.onPage(this.dist, `the host worker could not boot (${message})`);
      this.worker.addEventListener("message", this.listener);
      for (const [data, transfer] of this.unbooted) this.worker.postMessage(data, transfer);
      return;
    }
    this.dead = failure(errorType, message, code);
    for (const call of this.pending.values()) call.reject(this.dead);
    this.pending.clear();
    this.readyNow(null);
    this.close();
  }

  /** -> a Promise of the answer: its JSON text, or [JSON text, JS objects] when it holds
   * JS objects. ``id``: the caller's (1..2**31-1, unique among its pending calls);
   * ``objects`` and ``transfer``: JS arrays, or null for none; ``onProgress(done, total)``
   * or null. */
  call(id, op, text, objects, transfer, onProgress) {
    if (this.dead) return Promise.reject(this.dead);
    const promise = new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onProgress });
    });
    // Plain arguments go as JSON text, which the host reads several times faster than
    // an object converted field by field (py/workerbridge/core/jsconv.py).
    const head = `{"v":${PROTOCOL_VERSION},"kind":"request","id":${id},"channel":"page",`
      + `"op":${JSON.stringify(op)},"priority":1${onProgress ? ',"progress":true' : ""}`;
    const message = objects && objects.length
      ? { ...JSON.parse(`${head}}`), payload: join(text, objects) } : `${head},"payload":${text}}`;
    try {
      this.worker.postMessage(message, transfer || []);
      if (!this.booted) this.unbooted.push([message, transfer || []]);
    } catch (err) {
      this.pending.delete(id);
      return Promise.reject(failure("InvalidInputError",
        `an argument cannot be sent to the host (${err && err.name})`, "invalid_input"));
    }
    return promise;
  }

  /** Give up a call (its caller was cancelled): the host cancels its work. */
  cancel(id) {
    if (!this.pending.delete(id)) return;
    this.worker.postMessage({ v: PROTOCOL_VERSION, kind: "cancel", id });
  }

  /** Cancel a call through a token: it fails now with CancelledError, the host stops it. */
  cancelWith(id, message) {
    const call = this.pending.get(id);
    if (!call) return;
    this.cancel(id);
    call.reject(failure("CancelledError", message, "cancelled"));
  }

  close() {
    for (const type of ["message", "error", "messageerror"]) this.worker.removeEventListener(type, this.listener);
    this.worker.terminate();
  }
}

/**
 * The host on the page's own thread, for a browser where Web Workers cannot run: Pyodide
 * loaded from the bundle, serving the same "page.call" requests (workerbridge.host)
 * through the same envelopes. It looks like a Worker to Remote. Its bridge's pool then
 * runs the handlers on this thread too (fallback "auto"), so long work blocks the page.
 */
export class PageHost {
  constructor(dist) {
    this.listeners = new Set();
    this.early = [];
    this.serve = null;
    this.booted = this.boot(dist).catch((err) => this.emit({
      v: PROTOCOL_VERSION, kind: "error", code: "crashed", error_type: "WorkerCrashedError",
      message: `the page could not load Pyodide to run the bridge: ${err && err.message ? err.message : err}`,
    }));
  }

  async boot(dist) {
    const { loadPyodide } = await import(new URL("pyodide/pyodide.mjs", dist).href);
    const pyodide = await loadPyodide({ indexURL: new URL("pyodide/", dist).href });
    const zip = await fetch(new URL("workerbridge/workerbridge.zip", dist));
    if (!zip.ok) throw new Error(`workerbridge.zip: HTTP ${zip.status}`);
    const sitePackages = pyodide.runPython("import site; site.getsitepackages()[0]");
    pyodide.unpackArchive(await zip.arrayBuffer(), "zip", { extractDir: sitePackages });
    const entry = pyodide.pyimport("workerbridge.runtime.entry");
    const target = { postMessage: (data) => queueMicrotask(() => this.emit(data)) };
    this.serve = entry.serve(null, pyodide.toPy([HOST_MODULE]), pyodide.toPy({ on_page: true }),
                             target);
    for (const data of this.early.splice(0)) this.serve(data);
  }

  emit(data) {
    for (const listener of this.listeners) listener({ type: "message", data });
  }

  postMessage(data) {
    if (this.serve) this.serve(data);
    else this.early.push(data);
  }

  addEventListener(type, listener) {
    if (type === "message") this.listeners.add(listener);
  }

  removeEventListener(type, listener) {
    this.listeners.delete(listener);
  }

  terminate() {
    this.listeners.clear();
  }
}
