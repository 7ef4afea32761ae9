"""Python <-> JS conversion of wire messages (browser only; imported lazily).

An envelope crosses in one of two encodings of the same schema. When it holds only
JSON-able values it is posted as JSON text: one string crosses the FFI each way, which
measured several times cheaper than building a JS object from a dict field by field.
When it holds binary data or JS objects it is posted as a structured-cloneable object.

Binary data never goes through Pyodide's generic conversion: ArrayBuffers, typed arrays,
Blobs and SharedArrayBuffers stay JS objects on the way in (handlers decide how to read
them), and Python bytes become fresh ArrayBuffers that are transferred, not cloned.
"""

from __future__ import annotations

import json
from json import encoder as _json_encoder
from typing import Any

import js
from pyodide.ffi import JsProxy, to_js

from workerbridge.core.envelope import MAX_JSON_DEPTH, PROTOCOL_VERSION, json_depth
from workerbridge.core.errors import InvalidInputError

_PLAIN = "[object Object]"
_ARRAY = "[object Array]"
_BUFFER = "[object ArrayBuffer]"

_to_string = js.Object.prototype.toString
_from_entries = js.Object.fromEntries


def _tag(value: JsProxy) -> str:
    return str(_to_string.call(value))


def bytes_to_js(data: bytes | bytearray | memoryview) -> Any:
    """Copy Python bytes into a new ArrayBuffer (the one copy the page cannot avoid)."""
    view = memoryview(data).cast("B")
    u8 = js.Uint8Array.new(view.nbytes)
    u8.assign(view)
    return u8.buffer


def to_wire(value: Any, transfer: list[Any]) -> Any:
    """Convert a message for postMessage; bytes become ArrayBuffers added to ``transfer``."""
    if isinstance(value, dict):
        return _from_entries(to_js([[k, to_wire(v, transfer)] for k, v in value.items()],
                                   create_pyproxies=False))
    if isinstance(value, list | tuple):
        return to_js([to_wire(v, transfer) for v in value], create_pyproxies=False)
    if isinstance(value, bytes | bytearray | memoryview):
        buf = bytes_to_js(value)
        transfer.append(buf)
        return buf
    return value


def _make_dumps() -> Any:
    # json.dumps builds a new encoder on every call; on the hot path build one once.
    # It raises TypeError for bytes and JS objects, ValueError for NaN.
    make = getattr(_json_encoder, "c_make_encoder", None)  # the C accelerator, if built
    plain = _json_encoder.JSONEncoder(separators=(",", ":"), allow_nan=False)
    if make is None:
        return plain.encode
    encoder = make(None, plain.default, _json_encoder.encode_basestring_ascii, None,
                   ":", ",", False, False, False)
    return lambda obj: "".join(encoder(obj, 0))


dumps = _make_dumps()


# The batching lives in JS so a send costs one FFI call and no Python callback: JSON
# envelopes posted during one JS task are held until a microtask at its end — after the
# running Python code returns, before the browser does anything else — and leave as one
# message: the envelope itself when alone, else one BATCH envelope (envelope.batch_text).
# A prompt envelope (for a side with nothing else in hand: nothing to batch it with) leaves
# at once when nothing is held, so the other side starts on it while this one ends its turn.
_BATCHER_JS = """
return (target) => {
  const HEAD = '{"v":VERSION,"kind":"batch","messages":[';
  let held = [];
  const flush = () => {
    const texts = held;
    if (!texts.length) return;
    held = [];
    target.postMessage(texts.length === 1 ? texts[0] : HEAD + texts.join(",") + "]}");
  };
  return {
    text(t, prompt) {
      if (!held.length) {
        if (prompt) return target.postMessage(t);
        queueMicrotask(flush);
      }
      held.push(t);
    },
    flush,
  };
};
""".replace("VERSION", str(PROTOCOL_VERSION))


class Batcher:
    """Posts envelopes to ``target`` (a Worker, or a worker's global scope): JSON ones via
    the JS batcher above, structured ones (binary data, JS objects) directly, after
    flushing what is held so the order is kept."""

    def __init__(self, target: Any) -> None:
        self._post = target.postMessage
        self._js = js.Function.new(_BATCHER_JS)()(target)
        self._text = self._js.text

    def send(self, message: dict[str, Any], transfer: list[Any], prompt: bool = False) -> None:
        """``prompt``: post now rather than at the end of this JS task, unless envelopes
        are held already (they go first, together, to keep the order)."""
        if not transfer:
            try:
                text = dumps(message)
            except (TypeError, ValueError):
                pass  # bytes, JsProxy values or NaN: fall back to structured clone
            except RecursionError:
                raise InvalidInputError("the payload refers to itself (a cycle)") from None
            else:
                self._text(text, prompt)
                return
        self._js.flush()
        wire = to_wire(message, transfer)
        if transfer:
            self._post(wire, to_js(transfer, create_pyproxies=False))
        else:
            self._post(wire)

    def close(self) -> None:
        self._js.flush()


def from_wire(value: Any, *, buffers_to_bytes: bool) -> Any:
    """Convert a received JS value to Python.

    Plain objects become dicts and arrays lists, recursively. ArrayBuffers become bytes
    when ``buffers_to_bytes`` (the page's view of results); otherwise they, typed arrays,
    Blobs and every other JS object stay JsProxy objects (the worker's view of payloads).
    """
    if not isinstance(value, JsProxy):
        return value
    tag = _tag(value)
    if tag == _PLAIN:
        return {str(k): from_wire(v, buffers_to_bytes=buffers_to_bytes)
                for k, v in js.Object.entries(value)}
    if tag == _ARRAY:
        return [from_wire(v, buffers_to_bytes=buffers_to_bytes) for v in value]
    if buffers_to_bytes and tag == _BUFFER:
        return value.to_bytes()
    return value


def envelope_from_js(data: Any) -> Any:
    """The top level of a received envelope as a dict (payloads converted separately).

    Anything that is neither JSON text nor a plain object is returned as it is, for
    ``decode()`` to refuse: a message may be anything, nested past any recursion limit.
    """
    if isinstance(data, str):
        if json_depth(data) <= MAX_JSON_DEPTH:
            try:
                return json.loads(data)
            except ValueError:
                return data  # not an envelope; decode() says so
        try:  # too deep for Python's parser: the top level from the browser's
            data = js.JSON.parse(data)
        except Exception:
            return None
    if isinstance(data, JsProxy) and _tag(data) == _PLAIN:
        raw = data.to_py(depth=1)
        members = raw.get("messages")
        if raw.get("kind") == "batch" and isinstance(members, JsProxy) \
                and _tag(members) == _ARRAY:  # a batch posted as an object: its members too
            raw["messages"] = [m.to_py(depth=1) if isinstance(m, JsProxy) and _tag(m) == _PLAIN
                               else m for m in members]
        return raw
    return data
