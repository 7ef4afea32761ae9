"""The bridge benchmark's page script, the same on an mpy page (mpy-bridge.html) and a py
page (py-bridge.html): navigation -> the first line, `workerbridge` imported, the first
hash_file result; then, with ?measure, round trips and a pool of 4's throughput."""

import js

first_line = js.performance.now()
import asyncio
import json

from workerbridge import WorkerBridge

imported = js.performance.now()
B = WorkerBridge.default()
digest = await B.crypto.hash_file(b"abc")
first_hash = js.performance.now()
out = {"first_line_ms": first_line, "imported_ms": imported, "first_hash_ms": first_hash,
       "digest": digest}
if "measure" in str(js.location.search):
    for i in range(200):
        await B.request("system", "echo", {"x": i})
    times = []
    for i in range(2000):
        t = js.performance.now()
        await B.request("system", "echo", {"x": i})
        times.append(js.performance.now() - t)
    out["echo_ms"] = times
    P = WorkerBridge(workers=4, max_queue=20000)
    n = 20000
    await P.pool.map("system", "echo", list(range(2000)))
    t = js.performance.now()
    await P.pool.map("system", "echo", list(range(n)))
    out["pool_map_per_s"] = n / ((js.performance.now() - t) / 1000)
    t = js.performance.now()
    await asyncio.gather(*[P.request("system", "echo", {"x": i}) for i in range(2000)])
    out["gather_per_s"] = 2000 / ((js.performance.now() - t) / 1000)
    await P.close()
js.window.benchResult = json.dumps(out)
