"""Host unit tests of the wire schema."""

import pytest

from workerbridge.core.envelope import (
    PROTOCOL_VERSION,
    Cancel,
    DecodeError,
    Error,
    Priority,
    Progress,
    Ready,
    Request,
    Response,
    decode,
    encode,
)

ROUND_TRIP = [
    Request(1, "crypto", "hash_file", {"algorithm": "SHA-256"}),
    Request(7, "c", "o", None, Priority.HIGH, 2.5, "corr-1", True, None),
    Response(3, {"x": [1, 2]}),
    Response(4, None),
    Error(5, "invalid_input", "bad", "InvalidInputError"),
    Error(None, "crashed", "boot failed"),
    Progress(6, 10, 100),
    Cancel(8),
    Ready({"ops": ["a.b"]}),
]


@pytest.mark.parametrize("env", ROUND_TRIP, ids=lambda e: type(e).__name__)
def test_encode_decode_round_trip(env):
    wire = encode(env)
    assert wire["v"] == PROTOCOL_VERSION
    assert decode(wire) == env


def test_encode_leaves_out_none_fields():
    wire = encode(Request(1, "a", "b"))
    assert "payload" not in wire and "timeout" not in wire
    assert wire["priority"] == 1 and type(wire["priority"]) is int


@pytest.mark.parametrize(
    ("raw", "code", "rid"),
    [
        (None, "protocol", None),
        ("text", "protocol", None),
        ([1, 2], "protocol", None),
        ({}, "version", None),
        ({"v": 2, "kind": "request", "id": 9}, "version", 9),
        ({"v": "1", "kind": "request", "id": 9}, "version", 9),
        # Any message that names a usable id is answered under it, however malformed.
        ({"v": 1, "kind": "shout", "id": 1}, "protocol", 1),
        ({"v": 1, "kind": ["request"], "id": 1}, "protocol", 1),
        ({"v": 1, "kind": "batch", "messages": "x"}, "protocol", None),
        ({"v": 1, "kind": "batch", "messages": "x", "id": 8}, "protocol", 8),
        ({"v": True, "kind": "request", "id": 8, "channel": "a", "op": "b"}, "version", 8),
        ({"v": 1.0, "kind": "request", "id": 8.0, "channel": "a", "op": "b"}, "version", 8),
        ({"v": [1] * 10_000, "kind": "request", "id": 9}, "version", 9),
        ({"v": 1, "kind": "error", "id": 0, "code": "x"}, "protocol", None),
        ({"v": 1, "kind": "request", "id": 0, "channel": "a", "op": "b"}, "protocol", None),
        ({"v": 1, "kind": "request", "id": 2**31, "channel": "a", "op": "b"}, "protocol", None),
        ({"v": 1, "kind": "request", "id": True, "channel": "a", "op": "b"}, "protocol", None),
        ({"v": 1, "kind": "request", "id": 1.5, "channel": "a", "op": "b"}, "protocol", None),
        ({"v": 1, "kind": "request", "id": 3, "channel": "", "op": "b"}, "protocol", 3),
        ({"v": 1, "kind": "request", "id": 3, "channel": "a"}, "protocol", 3),
        ({"v": 1, "kind": "request", "id": 3, "channel": "a", "op": "b", "priority": 7},
         "protocol", 3),
        ({"v": 1, "kind": "request", "id": 3, "channel": "a", "op": "b", "timeout": -1},
         "protocol", 3),
        ({"v": 1, "kind": "progress", "id": 3, "done": -1, "total": 5}, "protocol", 3),
        ({"v": 1, "kind": "error", "id": 3}, "protocol", 3),
    ],
)
def test_decode_rejects_malformed(raw, code, rid):
    with pytest.raises(DecodeError) as info:
        decode(raw)
    assert info.value.code == code
    assert info.value.request_id == rid


def test_decode_accepts_integral_floats_from_js():
    env = decode({"v": 1, "kind": "progress", "id": 3.0, "done": 5.0, "total": 10.0})
    assert env == Progress(3, 5, 10)


@pytest.mark.parametrize("env", [e for e in ROUND_TRIP if isinstance(e, Request)])
def test_request_wire_matches_encode(env):
    from workerbridge.core.envelope import request_wire

    assert request_wire(env.id, env.channel, env.op, env.payload, env.priority, env.timeout,
                        env.correlation, env.progress, env.cancel) == encode(env)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ('{"v":1}', 0),  # few brackets: not counted at all
        ("[" * 600 + "]" * 600, 513),  # counted until past the limit
        ('{"a":"' + "[" * 600 + '"}', 1),  # brackets inside a string do not nest
        ('{"a":"\\"' + "{" * 600 + '"}', 1),  # nor after an escaped quote
        ('[{"k":[1]},' * 300 + "0" + "]" * 300, 302),
    ],
)
def test_json_depth(text, depth):
    from workerbridge.core.envelope import json_depth

    assert json_depth(text) == depth
