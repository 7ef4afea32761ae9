// workerbridge worker bootstrap: a module worker that boots Pyodide and serves requests.
//
// Everything is resolved against this file's own URL, so the bundle works at any path.
// The page passes its options as JSON in the worker's name:
// {"modules": [url, ...], "snapshot": true, "posted": false}.
// With "snapshot" (the default) the worker boots from a Pyodide memory snapshot when one
// matches this Pyodide build, this bundle and these modules (snapshot.mjs); with none it
// boots normally and makes one right after importing its modules, before it serves.
// With "posted" the page's first message, {workerbridge_boot: {wasm, snapshot, key}},
// carries what an earlier worker made: the compiled WebAssembly.Module and a Blob of the
// snapshot, so this worker neither compiles the wasm nor reads the cache.
// Wire format: see py/workerbridge/core/envelope.py; this file only ever builds the ERROR
// envelope that reports a failed boot.
import { loadPyodide } from "../pyodide/pyodide.mjs";
import { SnapshotStore, builtinDeserializer, builtinSerializer } from "./snapshot.mjs";

const PROTOCOL_VERSION = 1;
const USER_MODULE_DIR = "/home/pyodide/workerbridge_user";

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

// Step 0: hold messages that arrive while Python boots; keep the page's boot message.
const early = [];
let deliver = (data) => early.push(data);
let receiveBoot;
const postedBoot = new Promise((resolve) => { receiveBoot = resolve; });
self.addEventListener("message", (event) => {
  const data = event.data;
  if (data && typeof data === "object" && data.workerbridge_boot) receiveBoot(data.workerbridge_boot);
  else deliver(data);
});

function options() {
  try {
    return JSON.parse(self.name || "{}");
  } catch {
    return {};
  }
}

// Compile once per page: Pyodide compiles pyodide.asm.wasm (10 MB) in every worker. The
// first worker hands the page the WebAssembly.Module it compiled; later workers
// instantiate that Module (it can be posted within the page's agent cluster, and its
// compiled code is shared) and skip fetching the wasm at all.
let compiledModule;

function compileOnce(module) {
  const instantiateStreaming = WebAssembly.instantiateStreaming.bind(WebAssembly);
  WebAssembly.instantiateStreaming = async (source, imports) => {
    if (!module) {
      const result = await instantiateStreaming(source, imports);
      compiledModule = result.module;
      return result;
    }
    return { module, instance: await WebAssembly.instantiate(module, imports) };
  };
  if (!module) return;
  const fetch = self.fetch.bind(self);
  self.fetch = (input, init) => (String(input).endsWith("/pyodide.asm.wasm")
    ? Promise.resolve(new Response(new Uint8Array(0)))
    : fetch(input, init));
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

function message(err) {
  return err && err.message ? err.message : String(err);
}

async function bootFromSnapshot(store, posted) {
  // -> { pyodide } booted from a snapshot, or { reason } why a stored one was not used.
  let found;
  if (posted.snapshot instanceof Blob && posted.key === store.key) {
    found = { bytes: new Uint8Array(await posted.snapshot.arrayBuffer()) };
  } else {
    found = await store.read();
  }
  if (found.bytes) {
    try {
      return {
        pyodide: await bootPyodide({
          _loadSnapshot: found.bytes, _snapshotDeserializer: builtinDeserializer,
        }),
      };
    } catch (err) {
      found.reason = `Pyodide could not restore it: ${message(err)}`;
    }
  }
  if (!found.reason) return {};
  await store.remove();
  return { reason: `the cached snapshot was not used: ${found.reason}; booted normally` };
}

function makeSnapshot(pyodide, store, info) {
  // The snapshot is taken before anything is served; the cache write goes on while this
  // worker serves, and the page hands the Blob to the workers it boots next.
  try {
    const bytes = pyodide.makeMemorySnapshot({ serializer: builtinSerializer() });
    info.snapshot_blob = new Blob([bytes]);
    info.snapshot_key = store.key;
    info.boot_stages.snapshot_mb = bytes.byteLength / 1048576;
    store.write(bytes).catch((err) => console.warn(`workerbridge: snapshot not cached: ${message(err)}`));
    return { snapshot: "made", bytes };
  } catch (err) {
    return { snapshot: "off", reason: `no snapshot was made: ${message(err)}` };
  }
}

async function boot() {
  const started = performance.now();
  const stages = {};
  let t = started;
  const mark = (name) => { const now = performance.now(); stages[name] = now - t; t = now; };
  const opts = options();
  const posted = opts.posted ? await postedBoot : {};
  compileOnce(posted.wasm instanceof WebAssembly.Module ? posted.wasm : undefined);
  const [bundle, sources] = await Promise.all([bundleInfo(), fetchUserModules(opts.modules || [])]);
  const store = await SnapshotStore.open(opts, bundle, sources, import.meta.url);
  const snapshots = store instanceof SnapshotStore;
  mark("fetch_ms");
  let { pyodide, reason } = snapshots ? await bootFromSnapshot(store, posted) : store;
  let snapshot = pyodide ? "loaded" : "off";
  pyodide ??= await bootPyodide(snapshots ? { _makeSnapshot: true } : {});
  mark("pyodide_ms");
  await installPackage(pyodide);
  let userModules = pyodide.toPy(installUserModules(pyodide, sources));
  mark("install_ms");
  let worker = pyodide.pyimport("workerbridge.runtime.entry");
  const info = { snapshot, boot_stages: stages, wasm: posted.wasm ? "shared" : "compiled" };
  if (snapshot === "loaded") {
    worker.after_snapshot();
  } else {
    worker.prepare(userModules);
    mark("import_ms");
    if (snapshots) {
      const made = makeSnapshot(pyodide, store, info);
      snapshot = info.snapshot = made.snapshot;
      reason = [reason, made.reason].filter(Boolean).join("; ");
      mark("snapshot_ms");
      if (made.bytes) {
        // The instance that made the snapshot sees the JS globals through Pyodide's
        // recording proxy, which breaks getters of platform objects (`crypto.subtle`
        // throws "Illegal invocation"). Serve from one booted from the snapshot instead.
        pyodide = await bootPyodide({
          _loadSnapshot: made.bytes, _snapshotDeserializer: builtinDeserializer,
        });
        await installPackage(pyodide);
        userModules = pyodide.toPy(installUserModules(pyodide, sources));
        worker = pyodide.pyimport("workerbridge.runtime.entry");
        worker.after_snapshot();
        mark("reboot_ms");
      }
    }
  }
  if (reason) {
    info.snapshot_reason = reason;
    console.warn(`workerbridge: ${reason}`);
  }
  if (compiledModule && !posted.wasm) info.wasm_module = compiledModule;
  const control = interruptBuffer(pyodide);
  info.boot_ms = performance.now() - started;
  const onMessage = worker.serve(control, userModules, pyodide.toPy(info));
  deliver = (data) => onMessage(data);
  for (const data of early.splice(0)) onMessage(data);
}

boot().catch((err) => {
  self.postMessage({
    v: PROTOCOL_VERSION,
    kind: "error",
    code: "crashed",
    message: `worker failed to boot: ${message(err)}`,
    error_type: "WorkerCrashedError",
  });
  closeWorker();
});
