"""The anchors' main script, the same on a py page and an mpy page: 2,000 calls to
PyScript's named worker "anchor", one at a time, after 200 to warm up."""

import js
from pyscript import workers

worker = await workers["anchor"]
for i in range(200):
    await worker.echo(i)
times = []
for i in range(2000):
    t = js.performance.now()
    await worker.echo(i)
    times.append(js.performance.now() - t)
js.window.anchorTimes = js.JSON.parse(str(times))
