"""The outbox section: durable events to a real local WebSocket server
(tests/outbox_server.py, a child process), beside plain JS sending the same batches over
a WebSocket from a plain Worker with nothing stored, same run."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from conftest import Harness
from outbox_server import ServerProcess

EVENTS = 5000
BATCH = 100

SETUP = """
import asyncio, js, time
from workerbridge import WorkerBridge
from workerbridge.jobs.engine import Jobs
B = WorkerBridge(workers=2, fallback="never")
await B.start()
await B.pool.wait_all_ready()
"""

# Plain JS: the same events in the same batches, one in flight, each acknowledged by id,
# from a plain Worker; nothing stored anywhere.
PLAIN_JS = """async ([url, n, batch]) => {
    const src = `self.onmessage = async (e) => {
        const { url, n, batch } = e.data;
        const ws = new WebSocket(url);
        await new Promise((ok) => { ws.onopen = ok; });
        let pending = null;
        ws.onmessage = (m) => { const a = JSON.parse(m.data).ack; pending(a); };
        const t0 = performance.now();
        for (let i = 0; i < n; i += batch) {
            const events = [];
            for (let j = i; j < Math.min(n, i + batch); j++) {
                events.push({ id: "plain-" + j, key: "k" + (j % 8), data: { n: j } });
            }
            await new Promise((ok) => {
                pending = ok;
                ws.send(JSON.stringify({ type: "events", events }));
            });
        }
        self.postMessage(performance.now() - t0);
        ws.close();
    };`;
    const w = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })));
    const ms = await new Promise((resolve) => {
        w.onmessage = (e) => resolve(e.data);
        w.postMessage({ url, n, batch });
    });
    w.terminate();
    return ms;
}"""


def bench_outbox(browser: Any, origin: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        remote = ServerProcess(Path(tmp) / "effects.jsonl")
        remote.start()
        context = browser.new_context()
        try:
            h = Harness(context.new_page(), origin)
            plain_ms = h.js(PLAIN_JS, [remote.ws_url, EVENTS, BATCH])
            h.py(SETUP)
            # Stored first (one transaction per add_many of BATCH), then sent: the time
            # from the first add to the last acknowledgement.
            seconds = h.py(f"""
                J = Jobs(B.pool, db="bench-outbox")
                box = await J.outbox("bench", url={remote.ws_url!r}, batch={BATCH})
                t0 = time.perf_counter()
                for i in range(0, {EVENTS}, {BATCH}):
                    await box.add_many([{{"n": j}} for j in range(i, i + {BATCH})],
                                       keys=[f"k{{j % 8}}" for j in range(i, i + {BATCH})])
                assert await box.flush(120)
                took = time.perf_counter() - t0
                await J.close(timeout=0)
                took
            """, timeout=600)
            state = remote.state()
            ours = [e for e in state["effects"] if not e[0].startswith("plain-")]
            return {"events": EVENTS, "batch": BATCH, "seconds": seconds,
                    "events_per_s": EVENTS / seconds,
                    "plain_events_per_s": EVENTS / (plain_ms / 1000),
                    "delivered": len(ours), "duplicates": state["duplicates"]}
        finally:
            context.close()
            remote.kill()


def outbox_rows(o: dict[str, Any]) -> list[str]:
    ok = o["events_per_s"] >= 1000 and o["delivered"] == o["events"]
    return [f"| outbox: {o['events']:,} events stored, then sent in batches of {o['batch']} "
            f"to a local WebSocket server, each acknowledged | {o['events_per_s']:,.0f} "
            f"events/s ({o['delivered']:,} delivered, {o['duplicates']} duplicates) | "
            f"plain JS, same batches, nothing stored: {o['plain_events_per_s']:,.0f} events/s "
            f"| {o['events_per_s'] / o['plain_events_per_s']:.2f}× | ≥ 1,000 events/s "
            f"{'✓' if ok else '— not met'} |"]
