"""The writer stage of pipelines: ``storage.write_change``.

A change event (``model_created`` / ``model_updated`` with an RFC 6902 JSON Patch /
``model_deleted``) is applied to its record and marked applied in one transaction
(``storage.changes.write_change``), so a stage run again after a crash writes nothing
twice. The result is the change to publish to subscribers; the next stage gets it.

The patch is applied by the ``jsonpatch`` package, loaded from the bundle by
``WorkerBridge(packages=["jsonpatch"])``.
"""

from __future__ import annotations

import time
from typing import Any

from workerbridge.core.errors import StorageError
from workerbridge.runtime.dispatch import Context, handler
from workerbridge.storage.changes import SPEC, STORE, check_event, json_patch, write_change
from workerbridge.storage.txn import Hooks

from .storage import database, register_hooks, require_stores


class ChangeMarks(Hooks):
    """Only declares the ``_changes`` store, which define() creates with the others."""

    internal_stores = {STORE: SPEC}  # noqa: RUF012 - read-only


register_hooks(lambda database: ChangeMarks())


@handler("storage", "write_change")
async def write(ctx: Context, event: Any) -> dict[str, Any]:
    """Apply one change event; the change as published (the first run's on a re-run)."""
    change = check_event(event, None if ctx.job is None else f"job:{ctx.job.id}")
    apply = json_patch() if change.event == "model_updated" else _unused
    entry = database({"db": change.database, "v": change.version}, configured=False)
    if entry.encoder is not None:
        raise StorageError("the writer stage does not write to a database with field "
                           "encryption on: its patches would meet ciphertexts")
    db = await entry.connection()
    require_stores(db, [STORE], "write_change")
    reserved = entry.hooks.reserved
    now_ms = int(time.time() * 1000)
    value, _, _ = await entry.transact(
        [change.collection, STORE], True,
        lambda tx: write_change(tx, change, apply, reserved, now_ms), "write_change")
    return dict(value)


def _unused(record: dict[str, Any], patch: list[dict[str, Any]]) -> Any:
    raise AssertionError("only an update applies a patch")
