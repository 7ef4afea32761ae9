"""Worker entry point (browser only): called once by ``web/worker.mjs`` after Pyodide boots.

Steps: import the worker modules (registering their handlers), wire Pyodide's interrupt
buffer to the runtime's SIGINT handler, and return the function that receives messages.
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import js

from ._jsconv import Batcher, envelope_from_js, from_wire
from ._platform import USER_MODULE_DIR, type_tag
from ._runtime import CONTROL_SLOTS, Runtime
from .shared import _Int32Cells

_batcher = Batcher(js.self)


def _post(message: dict[str, Any], transfer: Sequence[Any]) -> None:
    _batcher.send(message, list(transfer))


def _import_modules(builtin: Sequence[str], user: Sequence[str]) -> None:
    for name in builtin:
        importlib.import_module(f"workerbridge.workers.{name}")
    if user:
        sys.path.insert(0, USER_MODULE_DIR)
    for name in user:
        importlib.import_module(name)


def serve(control: Any, user_modules: Any, info: Any) -> Callable[[Any], None]:
    """Start the runtime; ``control`` is the interrupt SharedArrayBuffer or None."""
    from workerbridge.workers import BUILTIN

    user = [str(m) for m in user_modules] if user_modules is not None else []
    _import_modules(BUILTIN, user)
    # JS null arrives as pyodide's jsnull, not None: accept only a real SharedArrayBuffer.
    shared = control is not None and type_tag(control) == "[object SharedArrayBuffer]"
    cells = _Int32Cells(control, CONTROL_SLOTS) if shared else None
    runtime = Runtime(_post, control=cells, isolated=cells is not None,
                      convert_payload=lambda p: from_wire(p, buffers_to_bytes=False))
    signal.signal(signal.SIGINT, runtime.on_interrupt)
    ready_info = info.to_py() if hasattr(info, "to_py") else dict(info or {})
    runtime.ready(**ready_info)

    def on_message(data: Any) -> None:
        runtime.handle(envelope_from_js(data))

    return on_message
