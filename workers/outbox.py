"""The ``outbox`` channel: sending an outbox's batch to its server, from a worker.

``send`` posts one batch and returns the ids the server acknowledged. Over WebSocket the
connection stays open between batches (one per URL); the batch goes as one message,
``{"type": "events", "events": [{"id", "key", "data"}, ...]}``, and the server answers
with one or more ``{"ack": [ids]}`` messages. Browsers cannot set a WebSocket's headers:
``headers`` go in a first ``{"type": "hello", "headers": {...}}`` message on each new
connection. Over HTTP the batch is a POST of ``{"events": [...]}`` with the headers,
and a 2xx answer's JSON body ``{"ack": [ids]}`` acknowledges.

The sockets' events are handled in JS, which settles one promise per batch: Python is
woken once per batch, not per message. Errors name what failed (``connection closed``,
``timeout``, ``HTTP 503``), never a body or a header.

Its page half: ``workerbridge.jobs.outbox``.
"""

from __future__ import annotations

import json
from typing import Any

from workerbridge.core.futures import call_js
from workerbridge.jobs.outbox import check_url
from workerbridge.runtime.dispatch import Context, handler

_SENDER_JS = """
const conns = new Map();
const later = (ms, value) => new Promise((resolve) => setTimeout(() => resolve(value), ms));

function connect(url, hello) {
  const known = conns.get(url);
  if (known && known.ws.readyState <= 1) return known;
  const ws = new WebSocket(url);
  const c = { ws, pending: null, why: null };
  c.ready = new Promise((resolve) => {
    ws.onopen = () => { if (hello) ws.send(hello); resolve(null); };
    ws.onclose = () => {
      if (conns.get(url) === c) conns.delete(url);
      resolve("connection closed");
      if (c.pending) c.pending.fail("connection closed");
    };
  });
  ws.onmessage = (e) => { if (c.pending) c.pending.message(e.data); };
  conns.set(url, c);
  return c;
}

async function sendWs(url, hello, body, ids, ms) {
  const c = connect(url, hello);
  const why = await Promise.race([c.ready, later(ms, "timeout")]);
  if (why) {
    if (why === "timeout") c.ws.close();
    return JSON.stringify({ acked: [], error: why });
  }
  return await new Promise((resolve) => {
    const want = new Set(ids);
    const acked = [];
    const finish = (error) => {
      clearTimeout(timer);
      if (c.pending === pending) c.pending = null;
      resolve(JSON.stringify({ acked, error: error || (want.size ? "timeout" : null) }));
    };
    const timer = setTimeout(() => finish(null), ms);
    const pending = {
      message(data) {
        let m;
        try { m = JSON.parse(data); } catch { return; }
        for (const id of (m && Array.isArray(m.ack)) ? m.ack : []) {
          if (want.delete(id)) acked.push(id);
        }
        if (!want.size) finish(null);
      },
      fail: finish,
    };
    c.pending = pending;
    try { c.ws.send(body); } catch { finish("connection closed"); }
  });
}

async function sendHttp(url, headers, body, ids, ms) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), ms);
  try {
    const r = await fetch(url, { method: "POST", body, signal: ctl.signal, cache: "no-store",
                                 headers: { "content-type": "application/json",
                                            ...JSON.parse(headers) } });
    if (!r.ok) return JSON.stringify({ acked: [], error: `HTTP ${r.status}` });
    let m;
    try { m = await r.json(); } catch { m = null; }
    const want = new Set(ids);
    const acked = ((m && Array.isArray(m.ack)) ? m.ack : []).filter((id) => want.delete(id));
    return JSON.stringify({ acked, error: want.size ? "not acknowledged" : null });
  } catch {
    return JSON.stringify({ acked: [], error: ctl.signal.aborted ? "timeout" : "network error" });
  } finally {
    clearTimeout(timer);
  }
}

function closeAll() {
  for (const c of conns.values()) c.ws.close();
  conns.clear();
}
return { sendWs, sendHttp, closeAll };
"""
_sender: Any = None


def _js() -> Any:
    global _sender
    if _sender is None:
        import js

        _sender = js.Function.new(_SENDER_JS)()
    return _sender


@handler("outbox", "send")
async def send(ctx: Context, payload: dict[str, Any]) -> dict[str, Any]:
    """Send one batch: ``{"url", "headers", "events": [{"id", "key", "data"}],
    "timeout"}`` -> ``{"acked": [ids], "error": None or what failed}``."""
    from pyodide.ffi import to_js

    url = check_url(payload.get("url"))
    events = payload.get("events") or []
    headers = payload.get("headers") or {}
    ids = [e["id"] for e in events]
    ms = int(float(payload.get("timeout") or 10.0) * 1000)
    sender = _js()
    if url.startswith(("ws:", "wss:")):
        hello = json.dumps({"type": "hello", "headers": headers}) if headers else None
        body = json.dumps({"type": "events", "events": events})
        out = await call_js(sender.sendWs, url, hello, body, to_js(ids), ms)
    else:
        out = await call_js(sender.sendHttp, url, json.dumps(headers),
                            json.dumps({"events": events}), to_js(ids), ms)
    result: dict[str, Any] = json.loads(str(out))
    return result
