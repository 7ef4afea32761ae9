"""Seeded hostile messages for both ends of the wire (test-only).

Loaded into a worker as a module (``fuzz.to_page`` posts junk to the page) and run on the
page from its source (to post junk straight to a worker), so both directions draw from
one generator. ``Junk(seed).message()`` gives ``(message, transfer, expect)``: ``expect``
is the id a worker must answer with an ERROR envelope, worked out here from the message
alone, or None when the message names no usable id (or is a well-formed CANCEL or BATCH,
which are not answered).
"""

import asyncio
import json
import random

import js
from pyodide.ffi import to_js

from workerbridge import Context, handler

MAX_ID = 2**31 - 1
KINDS = ["request", "response", "error", "progress", "cancel", "ready", "batch",
         "", "REQUEST", "bogus", "shout", 7, None, ["request"]]
BAD_IDS = [0, -1, MAX_ID + 1, 2**53, 1.5, "7", True, None, [], {"id": 1}]
# Names no worker registers: unknown channels, known channels with unknown ops, non-strings.
CHANNELS = ["nope", "", 42, None, "crypto", "system", "storage", "x" * 5000]
OPS = ["nope", "", 7, None, "hash_file ", "__init__", "echo\x00"]
FIELDS = ["priority", "timeout", "correlation", "progress", "cancel", "done", "total",
          "code", "message", "error_type", "payload", "messages"]


def usable(value):
    return type(value) is int and 0 < value <= MAX_ID


def js_object(value):
    return to_js(value, dict_converter=js.Object.fromEntries, create_pyproxies=False)


class Junk:
    def __init__(self, seed, avoid=()):
        self.rng = random.Random(seed)
        self.avoid = set(avoid)  # ids of calls pending on the page: never well-formed answers
        self.used = []
        self.buffers = []  # ArrayBuffers moved already: detached

    def id(self):
        r = self.rng.random()
        if r < 0.55:
            rid = self.rng.randrange(10_000_000, MAX_ID)
            self.used.append(rid)
            return rid
        if r < 0.65 and self.used:  # an id used before: reused
            return self.rng.choice(self.used)
        if r < 0.75 and self.avoid:  # the id of a pending call
            return self.rng.choice(sorted(self.avoid))
        return self.rng.choice(BAD_IDS)

    def value(self, depth=0):
        r = self.rng.random()
        if depth > 3 or r < 0.3:
            return self.rng.choice([None, True, False, 0, -7, 3.25, 2**40, "", "x", "é\u2028"])
        if r < 0.4:
            return "s" * self.rng.choice([1, 100, 70_000])
        if r < 0.55:
            return [self.value(depth + 1) for _ in range(self.rng.randrange(4))]
        if r < 0.7:
            return {self.rng.choice([*FIELDS, "k", ""]): self.value(depth + 1)
                    for _ in range(self.rng.randrange(4))}
        return self.rng.choice([{"v": 1}, [[[]]], {"__proto__": 1}, {"then": "x"}])

    def envelope(self):
        """A dict shaped like an envelope, with one or more fields broken."""
        d = {}
        r = self.rng.random()
        d["v"] = 1 if r < 0.8 else self.rng.choice([0, 2, "1", None, True, 1.5, [1]])
        if self.rng.random() < 0.95:
            d["kind"] = self.rng.choice(KINDS)
        if self.rng.random() < 0.9:
            d["id"] = self.id()
        if d.get("kind") == "request" or self.rng.random() < 0.3:
            d["channel"] = self.rng.choice(CHANNELS)
            d["op"] = self.rng.choice(OPS)
        for _ in range(self.rng.randrange(4)):
            d[self.rng.choice(FIELDS)] = self.value()
        if d.get("kind") == "batch" and self.rng.random() < 0.7:
            d["messages"] = [self.envelope_member() for _ in range(self.rng.randrange(5))]
        return d

    def envelope_member(self):
        return self.envelope() if self.rng.random() < 0.85 else self.value()

    def expect(self, d, top=True):
        """The ids a worker must answer ``d`` with, one per message it carries."""
        if not isinstance(d, dict):
            return []
        v, kind, rid = d.get("v"), d.get("kind"), d.get("id")
        well_formed_v = type(v) is int and v == 1
        if top and well_formed_v and kind == "batch" and isinstance(d.get("messages"), list):
            return [i for m in d["messages"] for i in self.expect(m, top=False)]
        if not usable(rid):
            return []
        if well_formed_v and kind == "cancel":
            return []  # a cancel of a request the worker does not run: nothing to answer
        return [rid]

    def well_formed_answer(self, d):
        """Whether ``d`` would be a real answer (or progress) to a pending call."""
        v, kind = d.get("v"), d.get("kind")
        return type(v) is int and v == 1 and kind in ("response", "error", "progress") \
            and usable(d.get("id")) and d.get("id") in self.avoid

    def deep(self, rid):
        depth = self.rng.choice([2_000, 5_000])
        nested = "[" * depth + "]" * depth
        return f'{{"v":1,"kind":"request","id":{rid},"channel":"nope","op":"x","payload":{nested}}}'

    def message(self):
        """(message, transfer list, expected ids)."""
        r = self.rng.random()
        if r < 0.05:  # not an envelope at all
            m = self.value()
            return (js_object(m) if isinstance(m, (dict, list)) else m), [], []
        if r < 0.08:  # JSON text nested past Python's recursion limit
            rid = self.rng.randrange(10_000_000, MAX_ID)
            return self.deep(rid), [], [rid]
        if r < 0.1:  # text that is not JSON, or JSON that is not an object
            return self.rng.choice(['{"v":1,', "[1,2]", "null", "\x00", '"text"', "{}"]), [], []
        d = self.envelope()
        while isinstance(d.get("messages"), list) and \
                any(isinstance(m, dict) and self.well_formed_answer(m) for m in d["messages"]):
            d["messages"] = [m for m in d["messages"]
                             if not (isinstance(m, dict) and self.well_formed_answer(m))]
        if self.well_formed_answer(d) or (d.get("kind") == "error" and d.get("id") is None
                                          and d.get("code") == "crashed"):
            d["v"] = 2  # a real answer to a pending call, or a crash notice: not junk
        expect = self.expect(d)
        transfer = []
        r = self.rng.random()
        if r < 0.45:  # JSON text, the usual encoding
            try:
                return json.dumps(d), [], expect
            except (TypeError, ValueError):
                pass
        obj = js_object(d)
        if r > 0.9:  # binary data moved with it, or a buffer moved already (detached)
            if self.buffers and self.rng.random() < 0.5:
                transfer = [self.rng.choice(self.buffers)]
            else:
                buf = js.ArrayBuffer.new(self.rng.choice([0, 16, 4096]))
                obj.payload = buf
                transfer = [buf]
                self.buffers.append(buf)
        return obj, transfer, expect


def post_all(target, junk, count):
    """Post ``count`` messages to ``target``; (ids expected back, posts the browser refused)."""
    expected, refused = [], 0
    for _ in range(count):
        message, transfer, expect = junk.message()
        try:
            if transfer:
                target.postMessage(message, to_js(transfer))
            else:
                target.postMessage(message)
        except Exception:  # DataCloneError: a detached buffer in the transfer list
            refused += 1
            continue
        expected += expect
    return expected, refused


_released = None


@handler("fuzz", "to_page")
async def to_page(ctx: Context, payload: dict) -> list:
    """Post ``count`` junk messages from this worker to the page; [posted, refused]."""
    junk = Junk(payload["seed"], payload.get("avoid", []))
    _, refused = post_all(js, junk, payload["count"])
    return [payload["count"] - refused, refused]


@handler("fuzz", "hold")
async def hold(ctx: Context, payload: dict):
    """Answer with ``tag`` once ``fuzz.release`` is called."""
    global _released
    if _released is None:
        _released = asyncio.Event()
    await _released.wait()
    return payload["tag"]


@handler("fuzz", "release")
async def release(ctx: Context, payload: dict) -> bool:
    global _released
    if _released is None:
        _released = asyncio.Event()
    _released.set()
    return True
