"""Blob reads on a thread of their own (browser only).

A worker that hashes (or compresses …) a chunk cannot read the next one meanwhile: a
Blob's data reaches JS through the thread that asked for it, so reading and hashing on
one thread take turns. ``open_feed()`` reads the Blob's stream in a small helper worker (plain
JS, no Pyodide) that fills a few chunk-sized buffers ahead and hands each over by
transfer; the consumer copies a chunk into its own heap and hands the buffer back. The
reading runs beside the consumer's work, memory stays at ``DEPTH`` buffers whatever the
size, and stopping early terminates the helper, which stops the reading for real.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from workerbridge.core.errors import InvalidInputError
from workerbridge.core.platform import js_global

UNREADABLE = ("the Blob/File could not be read: its file changed or went away, or the "
              "browser ran out of room for Blob data")
DEPTH = 3  # buffers in flight: one being copied, two being filled

_FEED_JS = r"""
const SRC = `
let free = [], waiting = null;
const take = () => free.length ? Promise.resolve(free.pop())
                               : new Promise((ok) => { waiting = ok; });
self.onmessage = async (e) => {
  if (e.data.give) {
    if (waiting) { const w = waiting; waiting = null; w(e.data.give); } else free.push(e.data.give);
    return;
  }
  free = e.data.buffers;
  const chunk = free[0].byteLength;
  let reader;
  try {
    reader = e.data.blob.stream().getReader({ mode: "byob" });
  } catch {  // no byte stream here: the consumer reads on its own thread
    self.postMessage({ error: "HelperFailed" });
    return;
  }
  try {
    for (;;) {
      let buf = await take(), fill = 0, done = false;
      while (fill < chunk) {
        const got = await reader.read(new Uint8Array(buf, fill, chunk - fill));
        buf = got.value ? got.value.buffer : buf;
        if (got.done) { done = true; break; }
        fill += got.value.byteLength;
      }
      if (fill) self.postMessage({ buf, n: fill }, [buf]);
      if (done) { self.postMessage({ end: true }); return; }
    }
  } catch (err) {
    self.postMessage({ error: (err && err.name) || "Error" });
  }
};`;
const url = URL.createObjectURL(new Blob([SRC], { type: "text/javascript" }));
return (blob, chunk, depth) => {
  let worker;
  try { worker = new Worker(url); } catch { return undefined; }  // no workers may start here
  const got = [];
  let wake = null;
  const arrive = (m) => { got.push(m); if (wake) { const w = wake; wake = null; w(); } };
  worker.onmessage = (e) => arrive(e.data);
  worker.onerror = (e) => { e.preventDefault(); arrive({ error: "HelperFailed" }); };
  const buffers = Array.from({ length: depth }, () => new ArrayBuffer(chunk));
  worker.postMessage({ blob, buffers }, buffers);
  return {
    async next() {
      while (!got.length) await new Promise((ok) => { wake = ok; });
      const m = got.shift();
      if (m.error) { worker.terminate(); throw new Error(m.error); }
      if (m.end) { worker.terminate(); return undefined; }
      return m;
    },
    give(buf) { worker.postMessage({ give: buf }, [buf]); },
    stop() { worker.terminate(); },
  };
};
"""


class HelperFailed(Exception):
    """The helper worker could not start or died: read on this thread instead."""


@cache
def _make() -> Any:
    return js_global().Function.new(_FEED_JS)()


def open_feed(blob: Any, chunk_size: int, depth: int = DEPTH) -> Any | None:
    """A helper reading ``blob`` ahead in ``chunk_size`` buffers; None where no worker
    may start (the consumer then reads on its own thread)."""
    return _make()(blob, chunk_size, depth)


async def next_chunk(feed: Any, scratch: memoryview) -> int | None:
    """Copy the feed's next chunk into ``scratch`` and hand its buffer back: its size,
    or None at the end. The caller stops the feed (``feed.stop()``) however it stops."""
    from pyodide.ffi import JsException

    try:
        got = await feed.next()
    except JsException as exc:
        if exc.message == "HelperFailed":
            raise HelperFailed from None
        raise InvalidInputError(UNREADABLE) from None
    if got is None:
        return None
    n = int(got.n)
    js_global().Uint8Array.new(got.buf, 0, n).assign_to(scratch[:n])
    feed.give(got.buf)
    return n
