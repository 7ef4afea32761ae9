"""The page side of one real Web Worker (browser only): the Transport a Connection uses."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import js
from pyodide.ffi import JsProxy, create_proxy, to_js

from workerbridge.core.envelope import Error, encode
from workerbridge.core.errors import InvalidInputError, ProtocolError
from workerbridge.core.jsconv import Batcher, envelope_from_js, from_wire
from workerbridge.core.platform import in_worker
from workerbridge.runtime.dispatch import INTERRUPT, TARGET_SLOT

log = logging.getLogger("workerbridge")

WORKER_SCRIPT = "workerbridge/worker.mjs"

# script URL -> the WebAssembly.Module a worker of that script compiled: later workers
# get it instead of compiling pyodide.asm.wasm again (web/worker.mjs, "compile once").
_compiled: dict[str, Any] = {}

# What a READY may carry for the workers booted after it (removed from ready_info).
_HANDED_ON = ("wasm_module", "snapshot_blob", "snapshot_key")

_pass_data: Any = js.Function.new("receive", "return (event) => receive(event.data);")


def _adopt(script_url: str, options: dict[str, Any]) -> tuple[Any, list[Any]] | None:
    """The worker ``preboot.mjs`` started at navigation, with the events it sent so far,
    if it is the one asked for (same script, same options); else None."""
    pre = getattr(js.globalThis, "workerbridgePreboot", None)
    if pre is None or str(pre.url) != script_url:
        return None
    try:
        started_with = json.loads(str(pre.options))
    except ValueError:
        return None
    if {k: started_with.get(k) for k in options} != options:
        return None
    taken = pre.take()
    return taken.worker, list(taken.held)


def bundle_base() -> str:
    """URL of the bundle's dist/ folder, found from where this page loaded Pyodide."""
    try:
        import pyodide_js

        index = str(pyodide_js._api.config.indexURL)
        if index.rstrip("/").endswith("/pyodide"):
            return index.rstrip("/")[: -len("pyodide")]
    except Exception:
        pass
    if in_worker():  # a MicroPython page's host (workerbridge.host): dist/workerbridge/
        return str(js.URL.new("../", js.location.href).href)
    script = js.document.querySelector('script[src$="pyscript/core.js"]')
    if script is not None:
        return str(script.src)[: -len("pyscript/core.js")]
    raise InvalidInputError(
        "cannot locate the workerbridge bundle; pass WorkerBridge(base_url='.../dist/')"
    )


def resolve(url: str, base: str | None = None) -> str:
    page = js.location.href if in_worker() else js.document.baseURI
    return str(js.URL.new(url, base or page).href)


class WorkerTransport:
    """Owns one ``Worker``; forwards its messages and reports its death."""

    def __init__(
        self,
        script_url: str,
        *,
        on_message: Callable[[dict[str, Any]], None],
        on_crash: Callable[[str], None],
        modules: Sequence[str] = (),
        name: str = "workerbridge",
        snapshot: bool = True,
        shared: dict[str, Any] | None = None,
        packages: Sequence[str] = (),
        packages_base_url: str | None = None,
    ) -> None:
        """``snapshot``: boot from a memory snapshot (web/snapshot.mjs); ``shared``: a
        dict this pool's transports share, to hand a snapshot on to later workers;
        ``packages``: loaded at boot from the bundle's lock, or the one at
        ``packages_base_url`` (web/worker.mjs)."""
        self._on_message = on_message
        self._on_crash = on_crash
        self.control: Any = None
        self.alive = True
        self._ready = False
        opts = js.Object.new()
        opts.type = "module"
        self._script = script_url
        self._shared = shared if shared is not None else {}
        kit = {"wasm": _compiled.get(script_url)}
        if snapshot and "snapshot_blob" in self._shared:
            kit["snapshot"] = self._shared["snapshot_blob"]
            kit["key"] = self._shared["snapshot_key"]
        options: dict[str, Any] = {"modules": list(modules), "label": name,
                                   "snapshot": snapshot}
        if packages:
            options["packages"] = list(packages)
        if packages_base_url:
            options["packages_base_url"] = packages_base_url
        adopted = _adopt(script_url, options)  # it has booted without the kit: no need
        self.prebooted = adopted is not None
        posted = not self.prebooted and any(v is not None for v in kit.values())
        if adopted is not None:
            self.worker, held = adopted
            asyncio.get_event_loop().call_soon(self._replay, held)
        else:
            opts.name = json.dumps({**options, "posted": posted})
            self.worker = js.Worker.new(script_url, opts)
        if posted:
            self.worker.postMessage(to_js({"workerbridge_boot": kit},
                                          dict_converter=js.Object.fromEntries))
        self._batcher = Batcher(self.worker)
        self._proxies = [create_proxy(f)
                         for f in (self._message, self._error, self._messageerror)]
        on_data, on_error, on_messageerror = self._proxies
        self._listeners = [
            # The message's data, not the event, crosses into Python: one object less.
            ("message", _pass_data(on_data)),
            ("error", on_error),
            ("messageerror", on_messageerror),
        ]
        for event, proxy in self._listeners:
            self.worker.addEventListener(event, proxy)

    @property
    def isolated(self) -> bool:
        return self.control is not None

    def set_control(self, buffer: Any) -> None:
        self.control = js.Int32Array.new(buffer) if buffer is not None else None

    def send(self, message: dict[str, Any], transfer: Sequence[Any], prompt: bool = False) -> None:
        self._batcher.send(message, list(transfer), prompt)

    def interrupt(self, request_id: int) -> None:
        if self.control is not None:
            js.Atomics.store(self.control, TARGET_SLOT, request_id)
            js.Atomics.store(self.control, 0, INTERRUPT)

    def _message(self, data: Any) -> None:
        """A message from the worker. Whatever it holds, nothing raises into the page: a
        response whose payload cannot be converted settles its call with ProtocolError;
        any other such message is dropped, with a warning."""
        raw = envelope_from_js(data)
        # JSON text is plain Python already (unless it nested too deep for Python's parser);
        # structured messages hold JS values.
        if isinstance(raw, dict) and raw.get("kind") in ("response", "ready") \
                and (not isinstance(data, str) or isinstance(raw.get("payload"), JsProxy)):
            try:
                raw["payload"] = from_wire(raw.get("payload"), buffers_to_bytes=True)
            except Exception as exc:  # nested past the recursion limit, out of memory …
                rid = raw.get("id")
                if raw["kind"] != "response" or type(rid) is not int:
                    log.warning("dropping a message from the worker: its payload could not "
                                "be read (%s)", type(exc).__name__)
                    return
                # The call still settles: an answer the page cannot take is an error.
                raw = encode(Error(rid, ProtocolError.code, "the worker's answer could not be "
                                   f"read on the page ({type(exc).__name__})"))
            if raw["kind"] == "ready" and isinstance(raw["payload"], dict) and not self._ready:
                self._ready = True  # only the worker's first READY hands anything on
                self._keep(raw["payload"])
                if self.prebooted:
                    raw["payload"]["prebooted"] = True
        self._on_message(raw)

    def _replay(self, held: list[Any]) -> None:
        """What a prebooted worker sent before it was adopted (its READY, most likely)."""
        handlers = {"message": lambda event: self._message(event.data), "error": self._error,
                    "messageerror": self._messageerror}
        for event in held:
            if not self.alive:
                return
            handlers[str(event.type)](event)

    def _keep(self, info: dict[str, Any]) -> None:
        handed = {key: info.pop(key) for key in _HANDED_ON if key in info}
        if "wasm_module" in handed:
            _compiled.setdefault(self._script, handed["wasm_module"])
        if "snapshot_blob" in handed:
            self._shared["snapshot_blob"] = handed["snapshot_blob"]
            self._shared["snapshot_key"] = handed.get("snapshot_key")

    def _error(self, event: Any) -> None:
        # An uncaught error in the worker, or its script failing to load (404, syntax).
        event.preventDefault()
        message = getattr(event, "message", None) or "the worker script failed to load"
        self._on_crash(str(message))

    def _messageerror(self, event: Any) -> None:
        self._on_crash("a message from the worker could not be deserialised")

    def terminate(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self._batcher.close()
        self.worker.terminate()
        for event, listener in self._listeners:
            self.worker.removeEventListener(event, listener)
        for proxy in self._proxies:
            proxy.destroy()
        self._listeners = self._proxies = []
