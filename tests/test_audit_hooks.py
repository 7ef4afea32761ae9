"""Host tests of the audit log's storage hooks, run on the in-memory IndexedDB model."""

from __future__ import annotations

import pytest
from workerbridge.workers.storage_audit import AuditHooks

from test_storage_programs import SCHEMA, Memory, tx
from workerbridge import ConstraintError, IntegrityError
from workerbridge.storage.audit import verify_chain
from workerbridge.storage.query import validate_filter
from workerbridge.storage.txn import create, delete, hooked, run_ops, update

SCOPE = ["users", "_audit"]


def write(mem, hooks, build):
    t = tx(hooks)
    out = mem.run(SCOPE, hooked(t, build(t)))
    if t.changes:
        hooks.committed("db", t.changes)
    return out


def test_off_until_configured_then_every_write_is_chained():
    mem, hooks = Memory(SCHEMA), AuditHooks()
    assert not hooks.active
    hooks.configure({"audit": {"actor": "ann"}, "other": 1})
    assert hooks.active
    write(mem, hooks, lambda t: create(t, [("users", {"id": i, "age": i}) for i in range(3)]))
    write(mem, hooks, lambda t: update(t, "users", validate_filter({"age": {"$gte": 1}}),
                                       {"x": 1}))
    hooks.configure({"audit": {"actor": None}})
    write(mem, hooks, lambda t: delete(t, "users", validate_filter({"id": 0})))
    records = list(mem.data["_audit"].values())
    assert [(r["operation"], r["record_id"], r["actor"]) for r in records] == [
        ("create", 0, "ann"), ("create", 1, "ann"), ("create", 2, "ann"),
        ("update", 1, "ann"), ("update", 2, "ann"), ("delete", 0, None)]
    assert verify_chain(records, expected_head=hooks.head).ok and hooks.head.seq == 6
    hooks.configure({"audit": None})
    assert not hooks.active


def test_an_aborted_transaction_neither_stores_records_nor_moves_the_head():
    mem, hooks = Memory(SCHEMA), AuditHooks()
    hooks.configure({"audit": {}})
    write(mem, hooks, lambda t: create(t, [("users", {"id": 1})]))
    head = hooks.head
    with pytest.raises(ConstraintError):
        write(mem, hooks, lambda t: run_ops(t, [
            {"op": "create", "collection": "users", "data": {"id": 2}},
            {"op": "create", "collection": "users", "data": {"id": 1}}]))
    assert hooks.head == head and len(mem.data["_audit"]) == 1
    write(mem, hooks, lambda t: create(t, [("users", {"id": 3})]))
    assert verify_chain(mem.data["_audit"].values()).ok and hooks.head.seq == 2


def test_a_malformed_newest_record_refuses_the_write():
    mem, hooks = Memory(SCHEMA), AuditHooks()
    hooks.configure({"audit": {}})
    write(mem, hooks, lambda t: create(t, [("users", {"id": 1})]))
    (pk,) = mem.data["_audit"]
    mem.data["_audit"][pk] = {"seq": 1, "junk": True}
    with pytest.raises(IntegrityError, match="malformed"):
        write(mem, hooks, lambda t: create(t, [("users", {"id": 2})]))
    assert len(mem.data["users"]) == 1
