"""The browser's native engines, run where a cancel can really stop them (browser only).

SubtleCrypto's one-shot calls run on the calling thread here and cannot be interrupted: a
256 MB digest would hold a worker, cancel or not. Large one-shot calls therefore go to a
small helper worker (plain JS, no Pyodide), one per call, that gets the buffer by
transfer (or a Blob's handle, which it reads whole). Cancelling terminates the helper,
which stops the work for real; so does finishing, which frees what it held at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import js

from workerbridge.core.errors import InvalidInputError
from workerbridge.core.feed import UNREADABLE

_HELPERS_JS = """
const SRC = `self.onmessage = async (e) => {
  const { op, args } = e.data;
  try {
    const input = await Promise.all(args.map((a) => (a instanceof Blob ? a.arrayBuffer() : a)));
    const out = await crypto.subtle[op](...input);
    self.postMessage({ out }, out instanceof ArrayBuffer ? [out] : []);
  } catch (err) {
    self.postMessage({ error: (err && err.name) || "Error" });
  }
};`;
const url = URL.createObjectURL(new Blob([SRC], { type: "text/javascript" }));
return {
  run(op, args, move) {
    // One helper per call, ended with it: an idle worker never collects garbage, so a
    // kept helper would hold the last call's buffers (and Blobs) for as long as it idles.
    const worker = new Worker(url);
    const promise = new Promise((resolve, reject) => {
      worker.onmessage = (e) => {
        worker.terminate();
        if (e.data.error) reject(new Error(e.data.error)); else resolve(e.data.out);
      };
      worker.onerror = (e) => {
        e.preventDefault();
        worker.terminate();
        reject(new Error("EngineFailed"));
      };
    });
    worker.postMessage({ op, args }, move instanceof ArrayBuffer ? [move] : []);
    return { promise, stop: () => worker.terminate() };
  },
};
"""

_helpers: Any = None


def movable(data: Any) -> Any:
    """``data`` (an ArrayBuffer, a view of one, or a Blob) as something a helper may take:
    a view's bytes are copied into a buffer of their own; the helper reads a Blob whole."""
    if js.ArrayBuffer.isView(data):
        return data.slice().buffer
    return data


async def subtle_call(op: str, args: list[Any], move: Any = None) -> Any:
    """``await crypto.subtle[op](*args)`` in a helper worker; its result (an ArrayBuffer).

    Blobs among ``args`` are read whole there; ``move`` (an ArrayBuffer among ``args``)
    is transferred instead of copied. A cancelled caller terminates the helper. A refusal
    by the browser raises InvalidInputError with the DOMException's name.
    """
    global _helpers
    if _helpers is None:
        _helpers = js.Function.new(_HELPERS_JS)()
    from pyodide.ffi import JsException, to_js

    call = _helpers.run(op, to_js(args, create_pyproxies=False), move)
    try:
        return await call.promise
    except asyncio.CancelledError:
        call.stop()
        raise
    except JsException as exc:
        if exc.message == "NotReadableError":
            raise InvalidInputError(UNREADABLE) from None
        raise InvalidInputError(f"the browser's crypto refused the input ({exc.message})") \
            from None

