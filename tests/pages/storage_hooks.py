"""Test-only storage hooks, loaded into a worker by URL: the seams an audit log and
field encryption plug into, reduced to their simplest (no real cryptography here)."""

from workerbridge.workers.storage import _databases, register_hooks

from workerbridge import Context, InvalidInputError, handler
from workerbridge.storage.idb import run
from workerbridge.storage.query import All, AnyOf, Cond
from workerbridge.storage.txn import Final, Hooks


def _fields(node):
    if isinstance(node, Cond):
        return {node.field}
    return set().union(*(_fields(n) for n in node.items)) if isinstance(node, All | AnyOf) \
        else set()


class Probe(Hooks):
    def __init__(self):
        self.internal_stores = {"_audit": {"key": "seq", "indexes": {}}}
        self.seq = 0
        self.settings = {}

    def configure(self, settings):
        self.settings = settings

    @property
    def active(self):
        return not self.settings.get("probe", {}).get("off")

    def scope(self, collections):
        return ["_audit"]

    def begin(self):
        return [["last", "_audit", None, None]]  # the chain's head, inside the transaction

    def started(self, results):
        self.seq = results[0]["seq"] if results[0] else 0

    def on_write(self, change):
        self.seq += 1
        return [["add", "_audit", {"seq": self.seq, "op": change.op,
                                   "collection": change.collection, "key": change.key}]]

    def check_filter(self, collection, node):
        if "secret" in _fields(node):
            raise InvalidInputError("'secret' is stored encrypted: it cannot be filtered on")

    async def encode(self, collection, fields):
        if isinstance(fields.get("secret"), str):  # stands in for AES-GCM: bytes at rest
            fields = {**fields, "secret": bytes(reversed(fields["secret"].encode()))}
        return fields

    async def decode(self, collection, record):
        if isinstance(record.get("secret"), bytes):
            record = {**record, "secret": bytes(reversed(record["secret"])).decode()}
        return record


register_hooks(lambda database: Probe())


@handler("probe", "audit")
async def audit(ctx: Context, payload: dict) -> list:
    """The raw _audit store of a database."""
    db = await _databases[payload["db"]].connection()

    def program():
        return (yield Final([["all", "_audit", None, None, None]]))[0]

    value, _ = await run(db, ["_audit"], "readonly", program())
    return value


@handler("probe", "settings")
async def settings(ctx: Context, payload: dict) -> dict:
    """The settings a database's hooks were given."""
    return _databases[payload["db"]].hooks.hooks[-1].settings
