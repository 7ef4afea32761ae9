// workerbridge preboot: start the default bridge's worker at navigation, while the page's
// own Python (PyScript) is still booting; `WorkerBridge` adopts it instead of starting one.
//
//   <script type="module" src="./dist/workerbridge/preboot.mjs"></script>
//
// Put it before PyScript's core.js. The worker boots exactly as the bridge would boot it
// (same script, same options: no user modules, snapshot on), and the messages it sends
// before it is adopted — READY above all — are kept and handed over with it.
const url = new URL("worker.mjs", import.meta.url).href;
const options = { modules: [], label: "workerbridge", snapshot: true, posted: false };
const worker = new Worker(url, { type: "module", name: JSON.stringify(options) });
const held = [];
const hold = (event) => {
  if (event.type === "error") event.preventDefault();  // the adopter reports it
  if (state.readyAt === null && event.type === "message") state.readyAt = performance.now();
  held.push(event);
};
for (const type of ["message", "error", "messageerror"]) worker.addEventListener(type, hold);

const state = globalThis.workerbridgePreboot = {
  url,
  options: JSON.stringify(options),
  started: performance.now(),
  readyAt: null,  // when its first message (READY) came, if before it was adopted
  // -> { worker, held }: the worker and the events it sent so far, once.
  take() {
    for (const type of ["message", "error", "messageerror"]) worker.removeEventListener(type, hold);
    delete globalThis.workerbridgePreboot;
    return { worker, held };
  },
};
