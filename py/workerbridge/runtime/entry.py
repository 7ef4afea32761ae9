"""Worker entry point (browser only): called by ``web/worker.mjs`` after Pyodide boots.

Steps: ``prepare`` imports the worker modules (registering their handlers) — a memory
snapshot may be taken right after it, so it creates no JS object; after a snapshot boot
``after_snapshot`` gives this worker its own random state; ``serve`` wires Pyodide's
interrupt buffer to the runtime's SIGINT handler and returns the function that receives
messages.
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import js

from workerbridge.core.jsconv import Batcher, envelope_from_js, from_wire
from workerbridge.core.platform import USER_MODULE_DIR, type_tag
from workerbridge.core.shared import Int32Cells
from workerbridge.runtime.dispatch import CONTROL_SLOTS, Runtime


def _import_modules(builtin: Sequence[str], user: Sequence[str]) -> None:
    for name in builtin:
        importlib.import_module(f"workerbridge.workers.{name}")
    if user and USER_MODULE_DIR not in sys.path:
        sys.path.insert(0, USER_MODULE_DIR)
    for name in user:
        importlib.import_module(name)


def prepare(user_modules: Any) -> None:
    """Import the built-in and the user's worker modules (idempotent)."""
    from workerbridge.workers import BUILTIN

    _import_modules(BUILTIN, [str(m) for m in user_modules] if user_modules is not None else [])


def after_snapshot() -> None:
    """Make this worker's state its own after booting from a shared snapshot."""
    from workerbridge.runtime.snapshot import reseed

    reseed()


def serve(control: Any, user_modules: Any, info: Any,
          target: Any = None) -> Callable[[Any], None]:
    """Start the runtime; ``control`` is the interrupt SharedArrayBuffer or None;
    ``target``: what answers are posted to (the worker's global scope, or for a host on
    the page's thread, web/remote.mjs's PageHost)."""
    prepare(user_modules)
    # Made here, not at import: a JS object made before a memory snapshot cannot be saved.
    batcher = Batcher(js.globalThis if target is None else target)

    def post(message: dict[str, Any], transfer: Sequence[Any]) -> None:
        batcher.send(message, list(transfer))
    # JS null arrives as pyodide's jsnull, not None: accept only a real SharedArrayBuffer.
    shared = control is not None and type_tag(control) == "[object SharedArrayBuffer]"
    cells = Int32Cells(control, CONTROL_SLOTS) if shared else None
    runtime = Runtime(post, control=cells, isolated=cells is not None,
                      convert_payload=lambda p: from_wire(p, buffers_to_bytes=False))
    signal.signal(signal.SIGINT, runtime.on_interrupt)
    runtime.watch_unraisable()
    ready_info = info.to_py() if hasattr(info, "to_py") else dict(info or {})
    from workerbridge.runtime.packages import configure

    configure(ready_info.pop("packages_index", None))
    runtime.ready(**ready_info)

    def on_message(data: Any) -> None:
        runtime.handle(envelope_from_js(data))

    return on_message
