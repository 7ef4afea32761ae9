// workerbridge preboot: start the default bridge's worker at navigation, while the page's
// own Python (PyScript) is still booting; `WorkerBridge` adopts it instead of starting one.
//
//   <script type="module" src="./dist/workerbridge/preboot.mjs"></script>       (py page)
//   <script type="module" src="./dist/workerbridge/preboot.mjs?host"></script>  (mpy page)
//
// Put it before PyScript's core.js. On a py page the worker boots exactly as the bridge
// would boot it (same script, same options: no user modules, snapshot on), and the
// messages it sends before it is adopted — READY above all — are kept and handed over
// with it (prestart.mjs). On an mpy page ("?host") it starts the host worker that holds
// the page's bridge (remote.mjs), which the page's `workerbridge` module takes; the host
// prestarts the default worker in turn.
import { prestart } from "./prestart.mjs";
import { Remote } from "./remote.mjs";

if (new URL(import.meta.url).searchParams.has("host")) {
  globalThis.workerbridgeRemote = Remote.start(new URL("../", import.meta.url).href);
} else {
  prestart(new URL("worker.mjs", import.meta.url).href);
}
