"""The bundle works when its folder is served under a sub-path, not only at /."""

from __future__ import annotations

from typing import Any

from conftest import Harness


def test_bundle_under_a_sub_path(browser: Any, server: str):
    context = browser.new_context()
    try:
        page = Harness(context.new_page(), server, "/sub/app/")
        digest = page.py("""
            from workerbridge import WorkerBridge
            await WorkerBridge.crypto.hash_file(b"abc")
        """)
        assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        paths = {u[len(server):] for u in page.requests}
        assert "/sub/app/dist/workerbridge/worker.mjs" in paths
        assert all(p.startswith("/sub/app/") for p in paths), sorted(paths)
    finally:
        context.close()
