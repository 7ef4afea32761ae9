"""The chunked AES-GCM format's record loop, run in JS (browser only).

The format itself is specified in ``aead``. Driving SubtleCrypto record by record from
Python cost an await and a copy per record and a final concatenation, about half the
speed of one ``crypto.subtle.encrypt`` call; this loop writes each record into the output
as soon as it is made, while it is still in the CPU's cache. Under isolation it checks
for a cancel after each record (through the progress callback); without, it yields to
the worker's event loop every ``YIELD_EVERY`` seconds so a CANCEL message gets in.
"""

from __future__ import annotations

import asyncio
from typing import Any

import js
from pyodide.ffi import JsException, create_proxy

from workerbridge.core.errors import IntegrityError, InvalidInputError
from workerbridge.core.feed import UNREADABLE
from workerbridge.core.jsconv import bytes_to_js
from workerbridge.runtime.dispatch import YIELD_DELAY, YIELD_EVERY, Context

_LOOP_JS = """
return (op, key, nonce, head, data, chunkSize, total, outSize, onProgress, yieldEvery) => {
  const isBlob = data instanceof Blob;
  const view = isBlob ? null : ArrayBuffer.isView(data)
    ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data);
  const start = op === "encrypt" ? 0 : head.length;
  const step = op === "encrypt" ? chunkSize : chunkSize + 16;
  const count = Math.max(1, Math.ceil((total - start) / step));
  const quiet = (p) => { if (p) p.catch(() => {}); return p; };
  const read = (off) => {
    const end = Math.min(off + step, total);
    if (!isBlob) return Promise.resolve(view.subarray(off, end));
    return quiet(data.slice(off, end).arrayBuffer().then((b) => new Uint8Array(b)));
  };
  let stopped = false;
  const promise = quiet((async () => {
    const out = new Uint8Array(outSize);
    let w = 0;
    if (op === "encrypt") { out.set(head, 0); w = head.length; }
    let next = read(start);
    let lastYield = performance.now();
    for (let i = 0; i < count; i++) {
      const piece = await next;
      if (stopped) throw new Error("Stopped");
      if (yieldEvery && performance.now() - lastYield > yieldEvery) {
        // Let queued messages (a CANCEL) in: SubtleCrypto's promises settle as microtasks
        // here, so without this the whole loop would run in one turn.
        await new Promise((resolve) => setTimeout(resolve, YIELD_MS));
        lastYield = performance.now();
        if (stopped) throw new Error("Stopped");
      }
      next = i + 1 < count ? read(start + (i + 1) * step) : null;
      const iv = nonce.slice();  // nonce XOR i, i as a 96-bit big-endian integer
      let c = BigInt(i);
      for (let k = 11; c > 0n; k--, c >>= 8n) iv[k] ^= Number(c & 255n);
      const aad = new Uint8Array(head.length + 9);  // header || i (u64 BE) || final
      aad.set(head);
      new DataView(aad.buffer).setBigUint64(head.length, BigInt(i));
      aad[head.length + 8] = i === count - 1 ? 1 : 0;
      let record;
      try {
        record = await crypto.subtle[op]({ name: "AES-GCM", iv, additionalData: aad }, key, piece);
      } catch (err) {
        throw new Error(op === "decrypt" && err.name === "OperationError"
          ? `Record ${i} ${count}` : (err.name || "Error"));
      }
      out.set(new Uint8Array(record), w);
      w += record.byteLength;
      if (!onProgress(Math.min(start + (i + 1) * step, total))) throw new Error("Stopped");
    }
    return out.buffer;
  })());
  return { promise, stop: () => { stopped = true; } };
};
""".replace("YIELD_MS", str(round(YIELD_DELAY * 1000)))

_loop: Any = None


async def gcm_records(ctx: Context, op: str, key: Any, nonce: bytes, head: bytes, data: Any,
                      chunk_size: int, total: int, out_size: int) -> Any:
    """Encrypt ``data`` into the chunked format, or decrypt such a file's records; the
    output (``out_size`` bytes) as one ArrayBuffer. Progress in input bytes."""
    global _loop
    if _loop is None:
        _loop = js.Function.new(_LOOP_JS)()
    def on_progress(done: int) -> bool:
        """Report, and say whether to go on: under isolation this is where a cancel is
        seen (the loop never yields to the event loop there)."""
        ctx.progress(int(done))
        return not ctx.cancelled

    proxy = create_proxy(on_progress)
    yield_every = 0 if ctx.isolated else round(YIELD_EVERY * 1000)
    run = _loop(op, key, js.Uint8Array.new(bytes_to_js(nonce)),
                js.Uint8Array.new(bytes_to_js(head)), data, chunk_size, total, out_size,
                proxy, yield_every)
    try:
        return await run.promise
    except asyncio.CancelledError:
        run.stop()
        raise
    except JsException as exc:
        message = str(exc.message)
        if message.startswith("Record "):
            index, count = (int(n) for n in message.split()[1:])
            raise IntegrityError(
                f"record {index} of {count} failed authentication: the data was modified, "
                "truncated or reordered, or the key or nonce is wrong") from None
        if message == "Stopped":
            raise asyncio.CancelledError() from None
        if message == "NotReadableError":
            raise InvalidInputError(UNREADABLE) from None
        raise InvalidInputError(f"the browser refused the {op} ({message})") from None
    finally:
        proxy.destroy()
