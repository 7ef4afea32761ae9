// workerbridge worker bootstrap: a module worker that boots Pyodide and serves requests.
//
// Everything is resolved against this file's own URL, so the bundle works at any path.
// The page passes its options as JSON in the worker's name:
// {"modules": [url, ...], "packages": [name, ...], "packages_base_url": url,
//  "snapshot": true, "posted": false, "host": false}.
// "packages" are loaded from a Pyodide lock (the bundle's packages/pyodide-lock.json, or
// the one at "packages_base_url") with everything they depend on, before the modules are
// imported. Pure wheels are unpacked into site-packages and go into the memory snapshot
// (the files are unpacked again after a restore: the file system is not in it); a
// compiled one is loaded by Pyodide and turns snapshots off, since a restore cannot
// bring back its dynamic library.
// With "snapshot" (the default) the worker boots from a Pyodide memory snapshot when one
// matches this Pyodide build, this bundle and these modules (snapshot.mjs); with none it
// boots normally and makes one right after importing its modules, before it serves.
// With "posted" the page's first message, {workerbridge_boot: {wasm, snapshot, key}},
// carries what an earlier worker made: the compiled WebAssembly.Module and a Blob of the
// snapshot, so this worker neither compiles the wasm nor reads the cache.
// Wire format: see py/workerbridge/core/envelope.py; this file only ever builds the ERROR
// envelope that reports a failed boot.
import { loadPyodide } from "../pyodide/pyodide.mjs";
import { prestart } from "./prestart.mjs";
import { SnapshotStore, builtinDeserializer, builtinSerializer } from "./snapshot.mjs";

const PROTOCOL_VERSION = 1;
const USER_MODULE_DIR = "/home/pyodide/workerbridge_user";
// With {"host": true} a worker also holds a page's bridge, for a MicroPython page.
const HOST_MODULE = "workerbridge.host";

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

// A host starts its default bridge's worker now, so that it boots beside this one.
if (options().host) prestart(new URL("worker.mjs", import.meta.url).href);

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

// Set once the package plan is known: where Pyodide resolves packages (never a CDN).
let packageConfig = {};

async function bootPyodide(extra = {}) {
  return loadPyodide({
    indexURL: new URL("../pyodide/", import.meta.url).href, ...packageConfig, ...extra,
  });
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

// --- packages ---------------------------------------------------------------------------

/** A boot failure the page reports as a typed error, not as a crash to retry. */
class BootError extends Error {
  constructor(message, code, errorType) {
    super(message);
    this.code = code;
    this.errorType = errorType;
  }
}

function canonical(name) {
  return String(name).toLowerCase().replace(/[-_.]+/g, "-");
}

function hexToBase64(hex) {
  return btoa(String.fromCharCode(...hex.match(/../g).map((b) => parseInt(b, 16))));
}

async function packagePlan(opts) {
  // -> { base, lock, hash, entries (dependency order), compiled: [names] } for the
  // packages this worker was asked for; a BootError names one the lock does not hold.
  const base = new URL(opts.packages_base_url
    ? String(opts.packages_base_url).replace(/\/?$/, "/")
    : "../packages/", opts.packages_base_url ? self.location.href : import.meta.url).href;
  const wanted = Array.isArray(opts.packages) ? opts.packages.map(String) : [];
  const lockURL = new URL("pyodide-lock.json", base).href;
  let text;
  try {
    text = await (await fetchOk(lockURL, "the package lock")).text();
  } catch (err) {
    if (!wanted.length) return { base, lock: null, hash: "", entries: [], compiled: [] };
    throw new BootError(`packages ${wanted.join(", ")} were asked for, but ${lockURL} cannot `
      + `be read (${message(err)}); build the bundle with: python -m workerbridge bundle OUT `
      + wanted.map((w) => `--package ${w}`).join(" "), "missing_package", "PackageNotFoundError");
  }
  const lock = JSON.parse(text);
  const packages = new Map(Object.values(lock.packages || {}).map((e) => [canonical(e.name), e]));
  const entries = [];
  const seen = new Set();
  const visit = (name, neededBy) => {
    const key = canonical(name);
    const entry = packages.get(key);
    if (!entry) {
      throw new BootError(`package "${name}"${neededBy ? ` (needed by ${neededBy})` : ""} is `
        + `not in this bundle's lock (${lockURL}); add it with: python -m workerbridge bundle `
        + `OUT --package ${name}`, "missing_package", "PackageNotFoundError");
    }
    if (seen.has(key)) return;
    seen.add(key);
    for (const dep of entry.depends || []) visit(dep, key);
    entries.push(entry);
  };
  for (const name of wanted) visit(name.split(/[<>=!~ ;[]/)[0], "");
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  const hash = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0"))
    .join("").slice(0, 16);
  const compiled = entries.filter((e) => !/-none-any\.whl$/.test(e.file_name)).map((e) => e.name);
  return { base, lock, hash, entries, compiled };
}

async function fetchWheels(plan) {
  // The pure wheels' bytes, each checked against the lock's sha256 by the browser.
  if (plan.compiled.length) return [];
  return Promise.all(plan.entries.map(async (entry) => {
    const url = new URL(entry.file_name, plan.base);
    const response = await fetch(url, { integrity: `sha256-${hexToBase64(entry.sha256)}` })
      .catch((err) => {
        throw new BootError(`package ${entry.name}: ${url} failed to load or does not match `
          + `the lock's sha256 (${message(err)})`, "package", "PackageError");
      });
    if (!response.ok) {
      throw new BootError(`package ${entry.name}: ${url}: HTTP ${response.status}`, "package",
        "PackageError");
    }
    return response.arrayBuffer();
  }));
}

async function installWheels(pyodide, plan, wheels) {
  if (!plan.entries.length) return;
  if (plan.compiled.length) {
    // Pyodide loads them (and their dependencies) by the lock, checking each sha256; a
    // failure is only reported to errorCallback, so it is collected and raised here.
    const errors = [];
    await pyodide.loadPackage(plan.entries.map((e) => e.name), {
      checkIntegrity: true, messageCallback: () => {}, errorCallback: (m) => errors.push(m),
    });
    const missing = plan.entries.filter((e) => !(e.name in pyodide.loadedPackages));
    if (errors.length || missing.length) {
      throw new BootError(`packages failed to load: ${errors.join("; ") || missing.map((e) => e.name).join(", ")}`,
        "package", "PackageError");
    }
    return;
  }
  const sitePackages = pyodide.runPython("import site; site.getsitepackages()[0]");
  for (const bytes of wheels) pyodide.unpackArchive(bytes, "zip", { extractDir: sitePackages });
}

function installUserModules(pyodide, sources, opts) {
  // -> the modules to import: the user's, and with "host" the page's bridge (host.py).
  pyodide.FS.mkdirTree(USER_MODULE_DIR);
  for (const { name, text } of sources) pyodide.FS.writeFile(`${USER_MODULE_DIR}/${name}.py`, text);
  return pyodide.toPy([...sources.map((s) => s.name), ...(opts.host ? [HOST_MODULE] : [])]);
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
  const [bundle, sources, plan] = await Promise.all([
    bundleInfo(), fetchUserModules(opts.modules || []), packagePlan(opts)]);
  const wheels = await fetchWheels(plan);
  packageConfig = plan.lock ? { lockFileContents: plan.lock, packageBaseUrl: plan.base }
    : { packageBaseUrl: plan.base };
  // A host's snapshot holds the bridge it imports too: its key names it.
  const keyed = opts.host ? [...sources, { name: HOST_MODULE, text: "" }] : sources;
  const store = await SnapshotStore.open(opts, bundle, keyed, import.meta.url, plan);
  const snapshots = store instanceof SnapshotStore;
  mark("fetch_ms");
  let { pyodide, reason } = snapshots ? await bootFromSnapshot(store, posted) : store;
  let snapshot = pyodide ? "loaded" : "off";
  pyodide ??= await bootPyodide(snapshots ? { _makeSnapshot: true } : {});
  mark("pyodide_ms");
  await installPackage(pyodide);
  await installWheels(pyodide, plan, wheels);
  let userModules = installUserModules(pyodide, sources, opts);
  mark("install_ms");
  let worker = pyodide.pyimport("workerbridge.runtime.entry");
  const info = {
    snapshot, boot_stages: stages, wasm: posted.wasm ? "shared" : "compiled",
    packages: plan.entries.map((e) => `${e.name} ${e.version}`),
    packages_index: plan.lock ? new URL("simple", plan.base).href : null,
  };
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
        await installWheels(pyodide, plan, wheels);
        userModules = installUserModules(pyodide, sources, opts);
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
  // A BootError (a package the bundle lacks) is the page's to fix, not a crash to retry.
  const typed = err instanceof BootError;
  self.postMessage({
    v: PROTOCOL_VERSION,
    kind: "error",
    code: typed ? err.code : "crashed",
    message: typed ? message(err) : `worker failed to boot: ${message(err)}`,
    error_type: typed ? err.errorType : "WorkerCrashedError",
  });
  closeWorker();
});
