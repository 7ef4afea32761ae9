// workerbridge worker bootstrap: a module worker that boots Pyodide and serves requests.
//
// Everything is resolved against this file's own URL, so the bundle works at any path.
// The page passes its options as JSON in the worker's name: {"modules": [url, ...]}.
// Wire format: see py/workerbridge/_envelope.py; this file only ever builds the ERROR
// envelope that reports a failed boot.
import { loadPyodide } from "../pyodide/pyodide.mjs";

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

async function bootPyodide() {
  return loadPyodide({ indexURL: new URL("../pyodide/", import.meta.url).href });
}

async function installPackage(pyodide) {
  const response = await fetch(new URL("workerbridge.zip", import.meta.url));
  if (!response.ok) throw new Error(`workerbridge.zip: HTTP ${response.status}`);
  const sitePackages = pyodide.runPython("import site; site.getsitepackages()[0]");
  pyodide.unpackArchive(await response.arrayBuffer(), "zip", { extractDir: sitePackages });
}

async function installUserModules(pyodide, urls) {
  pyodide.FS.mkdirTree(USER_MODULE_DIR);
  const names = [];
  for (const url of urls) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`worker module ${url}: HTTP ${response.status}`);
    const name = new URL(url).pathname.split("/").pop().replace(/\.py$/, "");
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`bad module name: ${name}`);
    pyodide.FS.writeFile(`${USER_MODULE_DIR}/${name}.py`, await response.text());
    names.push(name);
  }
  return names;
}

function interruptBuffer(pyodide) {
  // Under cross-origin isolation the page can stop running Python by writing 2 into
  // slot 0 (Pyodide's interrupt word); slot 1 names the request to stop.
  if (!self.crossOriginIsolated) return undefined;
  const control = new SharedArrayBuffer(8);
  pyodide.setInterruptBuffer(new Int32Array(control, 0, 1));
  return control;
}

async function boot() {
  const started = performance.now();
  const opts = options();
  const pyodide = await bootPyodide();
  await installPackage(pyodide);
  const userModules = await installUserModules(pyodide, opts.modules || []);
  const control = interruptBuffer(pyodide);
  const serve = pyodide.pyimport("workerbridge._worker").serve;
  const info = pyodide.toPy({ boot_ms: performance.now() - started });
  const onMessage = serve(control, pyodide.toPy(userModules), info);
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
