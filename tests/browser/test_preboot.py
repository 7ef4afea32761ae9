"""preboot.mjs: the default bridge's worker starts at navigation and the bridge adopts it."""

from __future__ import annotations

import hashlib
from typing import Any

from conftest import Harness


def test_the_bridge_adopts_the_worker_started_at_navigation(browser: Any, server: str):
    context = browser.new_context()
    try:
        page = Harness(context.new_page(), server, "/?preboot")
        out = page.py("""
            import js
            from workerbridge import WorkerBridge
            pre = js.globalThis.workerbridgePreboot
            started, page_ready = pre.started, js.performance.now()
            # Another kind of bridge (other options) leaves it alone...
            other = await WorkerBridge(snapshot=False).start()
            still_there = hasattr(js.globalThis, "workerbridgePreboot")
            other_info = other.pool.ready_info()[0]
            await other.close()
            # ...the default one takes it, READY included.
            B = await WorkerBridge.default().start()
            info = B.pool.ready_info()[0]
            {"started": started, "page_ready": page_ready, "still_there": still_there,
             "other": other_info.get("prebooted", False), "prebooted": info.get("prebooted"),
             "gone": not hasattr(js.globalThis, "workerbridgePreboot"),
             "digest": await B.crypto.hash_file(b"abc"),
             "boot_ms": info["boot_ms"]}
        """)
        workers = len(page.page.workers)
    finally:
        context.close()
    assert out["started"] < out["page_ready"], "the worker did not start before the page's Python"
    assert out["still_there"] and out["other"] is False
    assert out["prebooted"] is True and out["gone"]
    assert out["digest"] == hashlib.sha256(b"abc").hexdigest()
    assert workers == 1, "the default bridge started a worker of its own besides the adopted one"
