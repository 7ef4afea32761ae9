"""The host's pure parts (workerbridge.host: what a MicroPython page's calls may reach and
how results come back) and the mpy layer's exceptions (web/mpy.py), read from its source."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path
from typing import NamedTuple

import pytest

import workerbridge
from workerbridge import host
from workerbridge.core import errors

MPY = Path(__file__).resolve().parent.parent / "py" / "workerbridge" / "web" / "mpy.py"


def _mpy_classes() -> dict[str, tuple[str, str]]:
    """name -> (first base, code) of every exception class web/mpy.py defines."""
    out = {}
    for node in ast.parse(MPY.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.bases:
            codes = [s.value.value for s in node.body if isinstance(s, ast.Assign)
                     and [getattr(t, "id", "") for t in s.targets] == ["code"]
                     and isinstance(s.value, ast.Constant)]
            if codes:
                out[node.name] = (ast.unparse(node.bases[0]), codes[0])
    return out


def test_the_mpy_layer_has_every_exception_with_its_code_and_workerbridge_base():
    ours = {name: cls for name, cls in vars(errors).items() if inspect.isclass(cls)
            and issubclass(cls, errors.WorkerBridgeError)}
    theirs = _mpy_classes()
    assert set(theirs) == set(ours)
    for name, cls in ours.items():
        base = next((b.__name__ for b in cls.__bases__
                     if issubclass(b, errors.WorkerBridgeError)), "Exception")
        assert theirs[name] == (base, cls.code), name
    assert set(errors.known_codes()) == {code for _, code in theirs.values()}


class Pair(NamedTuple):
    ciphertext: bytes
    nonce: bytes


@dataclasses.dataclass
class Report:
    name: str
    sizes: list[int]
    _hidden: int = 0


class Thing:
    def __init__(self) -> None:
        self.id = "t-1"
        self.count = 3
        self._secret = "x"
        self.child = object()


def test_results_cross_as_plain_values_records_bytes_and_handles():
    assert host.answer({"a": [1, "b", None, 2.5]}) == {"a": [1, "b", None, 2.5]}
    assert host.answer(b"\x00\xff") == {"$bytes": b"\x00\xff"}
    assert host.answer(Pair(b"c", b"n")) == {"$obj": "Pair", "fields": {
        "ciphertext": {"$bytes": b"c"}, "nonce": {"$bytes": b"n"}}}
    assert host.answer(Report("r", [1, 2], 9)) == {"$obj": "Report", "fields": {
        "name": "r", "sizes": [1, 2]}}
    thing = Thing()
    handle = host.answer(thing)
    assert handle["type"] == "Thing" and handle["attrs"] == {"id": "t-1", "count": 3}
    assert host._objects[handle["$ref"]] is thing


def test_arguments_rebuild_bytes_refs_and_public_classes():
    thing = Thing()
    ref = host.answer(thing)["$ref"]
    got = host._arguments([{"$ref": ref}, {"$new": "Backoff", "args": [],
                                          "kwargs": {"base": 0.5, "jitter": False}}], None)
    assert got[0] is thing
    assert got[1] == workerbridge.Backoff(base=0.5, jitter=False)
    with pytest.raises(errors.InvalidInputError):
        host._arguments({"$new": "_private"}, None)
    with pytest.raises(errors.InvalidInputError):
        host._arguments({"$new": "handler"}, None)  # public, but no class
    with pytest.raises(errors.InvalidInputError):
        host._arguments({"$ref": 10**9}, None)  # never returned, or released
    with pytest.raises(errors.InvalidInputError):
        host._arguments({"$progress": True}, None)  # only a call's own callback
    with pytest.raises(errors.InvalidInputError):  # checked where it is built, as on a page
        host._arguments({"$new": "Backoff", "kwargs": {"factor": 0.5}}, None)


@pytest.mark.parametrize("payload", [
    {"path": "_REGISTRY"},                      # private names are never reached
    {"path": "bridge.WorkerBridge"},            # a module is not one of the public names
    {"path": "os.system", "call": True},
    {"path": "WorkerBridge.__init__"},
    {"path": "WorkerBridge._default"},
    {"target": 10**9, "path": "id"},            # an object that was never returned
])
def test_a_call_reaches_public_api_only(payload):
    with pytest.raises(errors.InvalidInputError):
        host._root(payload)


def test_a_root_of_public_names_walks_from_the_package():
    root, path = host._root({"path": "Backoff.delay"})
    assert root is workerbridge.Backoff and path == ["delay"]


def _mpy_methods(name: str) -> set[str]:
    for node in ast.parse(MPY.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return {f.name for f in node.body if isinstance(f, ast.FunctionDef)
                    and not f.name.startswith("_")}
    raise AssertionError(f"web/mpy.py has no class {name}")


@pytest.mark.parametrize("name", ["SharedProgress", "SharedCancellation", "SharedCounter",
                                  "SharedFlag"])
def test_the_mpy_layers_shared_state_offers_the_same_methods(name):
    ours = getattr(workerbridge, name)
    theirs = _mpy_methods(name) | _mpy_methods("_Shared")
    public = {n for n, v in vars(ours).items() if callable(v) and not n.startswith("_")}
    public |= {"buffer", "is_shared", "from_buffer"}  # from the base class
    assert public <= theirs, public - theirs
