"""The demo's Python: the same file runs on the MicroPython page (index.html) and on the
Pyodide page (py.html), as the same calls work from both."""

import asyncio

import js

page_ready = js.performance.now()  # performance.now() counts from navigation
from pyscript.ffi import create_proxy

from workerbridge import WorkerBridge, WorkerBridgeError, value

el = js.document.getElementById
state = {"task": None, "started": 0.0}


def show(text):
    el("status").textContent = text


def on_progress(p):
    el("progress").value = p.percent
    elapsed = (js.performance.now() - state["started"]) / 1000
    rate = p.done / 1e6 / elapsed if elapsed > 0 else 0.0
    show(f"{p.percent:.1f} %  ·  {p.done / 1e6:.1f} of {p.total / 1e6:.1f} MB  ·  "
         f"{elapsed:.2f} s  ·  {rate:.0f} MB/s")


async def run_hash():
    files = el("file").files
    if not files.length:
        show("Choose a file first.")
        return
    f = files.item(0)
    el("digest").textContent = ""
    el("cancel").disabled = False
    el("hash").disabled = True
    state["started"] = js.performance.now()
    try:
        digest = await WorkerBridge.crypto.hash_file(f, el("algorithm").value,
                                                     on_progress=on_progress)
        el("digest").textContent = digest
    except asyncio.CancelledError:
        show("Cancelled — the worker stopped and is ready for the next file.")
    except WorkerBridgeError as exc:
        show(f"{type(exc).__name__}: {exc}")
    finally:
        el("cancel").disabled = True
        el("hash").disabled = False


def start(event):
    state["task"] = asyncio.create_task(run_hash())


def cancel(event):
    if state["task"] is not None:
        state["task"].cancel()


el("hash").addEventListener("click", create_proxy(start))
el("cancel").addEventListener("click", create_proxy(cancel))
el("isolation").textContent = (
    "Cross-origin isolated: progress and cancel use SharedArrayBuffer."
    if js.crossOriginIsolated else
    "Not cross-origin isolated: progress and cancel travel as messages.")
bridge = WorkerBridge.default()
await bridge.start()
info = await value(bridge.ready_info)
show(f"Ready {js.performance.now() / 1000:.2f} s after navigation (this page's Python at "
     f"{page_ready / 1000:.2f} s; the worker booted in {info.get('boot_ms', 0) / 1000:.2f} s).")
el("hash").disabled = False
