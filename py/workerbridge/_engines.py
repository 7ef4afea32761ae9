"""The browser's native engines, run where a cancel can really stop them (browser only).

SubtleCrypto's one-shot calls run on the calling thread here and cannot be interrupted: a
256 MB digest would hold a worker, cancel or not. Large one-shot calls therefore go to a
small helper worker (plain JS, no Pyodide), one per call, that gets the buffer by
transfer (or a Blob's handle, which it reads whole). Cancelling terminates the helper,
which stops the work for real. Idle helpers are kept for the next call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import js

from ._errors import InvalidInputError

_HELPERS_JS = """
const SRC = `self.onmessage = async (e) => {
  const { op, args, data } = e.data;
  try {
    const input = data instanceof Blob ? await data.arrayBuffer() : data;
    const out = await crypto.subtle[op](...args, input);
    self.postMessage({ out }, [out]);
  } catch (err) {
    self.postMessage({ error: (err && err.name) || "Error" });
  }
};`;
const url = URL.createObjectURL(new Blob([SRC], { type: "text/javascript" }));
const idle = [];
return {
  run(op, args, data) {
    const worker = idle.pop() || new Worker(url);
    const buffer = ArrayBuffer.isView(data)
      ? data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)
      : data;  // an ArrayBuffer (moved) or a Blob (a handle: read there)
    const promise = new Promise((resolve, reject) => {
      worker.onmessage = (e) => {
        idle.push(worker);
        if (e.data.error) reject(new Error(e.data.error)); else resolve(e.data.out);
      };
      worker.onerror = (e) => { e.preventDefault(); reject(new Error("engine worker failed")); };
    });
    worker.postMessage({ op, args, data: buffer }, buffer instanceof Blob ? [] : [buffer]);
    return { promise, stop: () => worker.terminate() };
  },
};
"""

_helpers: Any = None


async def subtle_call(op: str, args: list[Any], data: Any) -> Any:
    """``await crypto.subtle[op](*args, data)`` in a helper worker; returns the ArrayBuffer.

    ``data`` (an ArrayBuffer, moved to the helper, or a Blob) is the last argument. A
    cancelled caller terminates the helper.
    """
    global _helpers
    if _helpers is None:
        _helpers = js.Function.new(_HELPERS_JS)()
    from pyodide.ffi import JsException, to_js

    call = _helpers.run(op, to_js(args), data)
    try:
        return await call.promise
    except asyncio.CancelledError:
        call.stop()
        raise
    except JsException as exc:
        raise InvalidInputError(f"the browser's crypto refused the input ({exc})") from None
