"""storage smoke"""
from conftest import Harness


def test_smoke(harness: Harness):
    out = harness.py("""
        import uuid
        from workerbridge import WorkerBridge
        S = WorkerBridge.storage
        db = "t-" + uuid.uuid4().hex
        info = await S.define(db, 1, {"users": {"indexes": {"age": "age", "tags": {"fields": "tags", "multi_entry": True}}}})
        r = await S.create("users", {"name": "a", "age": 3, "tags": ["x", "y"]})
        g = await S.get("users", r["id"])
        rows = await S.read("users", {"age": {"$gte": 1}})
        ex = await S.explain("users", {"tags": "x"})
        [info, r == g, len(rows), ex]
    """)
    print(out)
    assert 0
