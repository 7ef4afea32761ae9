// workerbridge prestart: start the default bridge's worker before the Python that will
// own it has booted, and keep what it sends until `WorkerBridge` adopts it
// (py/workerbridge/pool/webworker.py, `_adopt`). preboot.mjs does this on a py page, at
// navigation; a host worker (worker.mjs, {"host": true}) does it for an mpy page's bridge,
// while its own Pyodide boots.
export const DEFAULT_OPTIONS = { modules: [], label: "workerbridge", snapshot: true, posted: false };

/** Start worker.mjs at ``url`` with the default options, as globalThis.workerbridgePreboot. */
export function prestart(url) {
  const options = DEFAULT_OPTIONS;
  const worker = new Worker(url, { type: "module", name: JSON.stringify(options) });
  const held = [];
  const state = {
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
  const hold = (event) => {
    if (event.type === "error") event.preventDefault();  // the adopter reports it
    if (state.readyAt === null && event.type === "message") state.readyAt = performance.now();
    held.push(event);
  };
  for (const type of ["message", "error", "messageerror"]) worker.addEventListener(type, hold);
  globalThis.workerbridgePreboot = state;
  return state;
}
