"""Envelopes over a WebSocket: JSON text frames, and binary frames for binary data.

An envelope with no bytes in it travels as one text frame of its JSON. One that holds
bytes travels as one binary frame::

    4 bytes   the header's length N (big-endian)
    N bytes   the envelope as JSON (UTF-8), each bytes value replaced by {"$b": [start, length]}
    the rest  the bytes values, one after another

A dict of the caller's whose only key is ``$b`` or ``$e`` is wrapped as ``{"$e": ...}`` so
it cannot be taken for a reference. The same module runs on the page (Pyodide), in the
gateway and in a CPython client; it imports only the standard library.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from workerbridge.core.envelope import MAX_JSON_DEPTH, DecodeError, json_depth

__all__ = ["decode_frame", "encode_frame"]

_LEN = struct.Struct(">I")
_MARKS = ("$b", "$e")


def encode_frame(message: Any) -> str | bytes:
    """A wire dict as a text frame, or as a binary frame if it holds bytes."""
    buffers: list[bytes] = []
    offset = [0]

    def walk(value: Any) -> Any:
        if isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
            ref = {"$b": [offset[0], len(data)]}
            buffers.append(data)
            offset[0] += len(data)
            return ref
        if isinstance(value, dict):
            out = {k: walk(v) for k, v in value.items()}
            if len(out) == 1 and next(iter(out)) in _MARKS:
                return {"$e": out}
            return out
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return value

    header = json.dumps(walk(message), separators=(",", ":"), allow_nan=False)
    if not buffers:
        return header
    head = header.encode()
    return b"".join([_LEN.pack(len(head)), head, *buffers])


def decode_frame(frame: str | bytes) -> Any:
    """The wire dict a frame carries; ``DecodeError`` for a malformed frame."""
    data = b""
    if isinstance(frame, str):
        text = frame
    else:
        if len(frame) < 4:
            raise DecodeError("a binary frame is shorter than its header")
        (size,) = _LEN.unpack_from(frame)
        if size > len(frame) - 4:
            raise DecodeError("a binary frame's header runs past its end")
        try:
            text = bytes(frame[4:4 + size]).decode()
        except UnicodeDecodeError:
            raise DecodeError("a binary frame's header is not UTF-8") from None
        data = bytes(frame[4 + size:])
    if json_depth(text) > MAX_JSON_DEPTH:
        raise DecodeError(f"a frame nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        raw = json.loads(text)
    except ValueError:
        raise DecodeError("a frame is not JSON") from None

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if len(value) == 1:
                if "$b" in value:
                    ref = value["$b"]
                    if not (isinstance(ref, list) and len(ref) == 2
                            and all(type(n) is int and n >= 0 for n in ref)
                            and ref[0] + ref[1] <= len(data)):
                        raise DecodeError("a binary reference points outside its frame")
                    return data[ref[0]:ref[0] + ref[1]]
                if "$e" in value and isinstance(value["$e"], dict):
                    return {k: walk(v) for k, v in value["$e"].items()}
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(raw)
