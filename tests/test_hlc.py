"""Host unit tests of the hybrid logical clock, vector clocks and conflict resolution."""

import random

import pytest

from workerbridge.core.errors import InvalidInputError, InvalidTypeError
from workerbridge.storage.hlc import (
    HLC,
    MAX_COUNTER,
    MAX_KEYS_ANNOUNCED,
    MergeRegistry,
    Timestamp,
    VectorClock,
    Versioned,
    announcement,
    channel_name,
    decide,
    parse_version,
    resolve,
    strategy_kind,
    version,
)

T0 = 1_700_000_000_000


class FakeClock:
    def __init__(self, ms=T0):
        self.ms = ms

    def __call__(self):
        return self.ms


def random_timestamps(rng, n):
    nodes = ["a", "b", "tab-1", "tab-10", "tab-2", "Z", "node.x:1", "_"]
    return [Timestamp(rng.choice([T0, T0 + 1, rng.randrange(0, 16**12)]),
                      rng.choice([0, 1, 15, 16, 255, 256, rng.randrange(MAX_COUNTER + 1)]),
                      rng.choice(nodes)) for _ in range(n)]


# --- Timestamp ---------------------------------------------------------------------------


def test_timestamp_encoding_is_fixed_width_hex_then_node():
    assert Timestamp(T0, 5, "tab-1").encode() == "018bcfe56800-0005-tab-1"
    assert Timestamp.decode("018bcfe56800-0005-tab-1") == Timestamp(T0, 5, "tab-1")


def test_encodings_sort_exactly_like_timestamps():
    rng = random.Random(1)
    stamps = random_timestamps(rng, 3000)
    by_order = sorted(stamps)
    by_text = sorted(stamps, key=Timestamp.encode)
    assert [t.encode() for t in by_order] == [t.encode() for t in by_text]
    for a, b in zip(stamps, reversed(stamps), strict=True):
        assert (a < b) == (a.encode() < b.encode())
        assert Timestamp.decode(a.encode()) == a


def test_order_is_wall_then_counter_then_node():
    assert Timestamp(T0, 9, "z") < Timestamp(T0 + 1, 0, "a")
    assert Timestamp(T0, 1, "z") < Timestamp(T0, 2, "a")
    assert Timestamp(T0, 1, "a") < Timestamp(T0, 1, "b")


@pytest.mark.parametrize("args,error", [
    ((-1, 0, "a"), InvalidInputError), ((16**12, 0, "a"), InvalidInputError),
    ((T0, MAX_COUNTER + 1, "a"), InvalidInputError), ((T0, -1, "a"), InvalidInputError),
    ((float(T0), 0, "a"), InvalidTypeError), ((True, 0, "a"), InvalidTypeError),
    ((T0, 0, ""), InvalidInputError), ((T0, 0, "tab 1"), InvalidInputError),
    ((T0, 0, "é"), InvalidInputError), ((T0, 0, "x" * 65), InvalidInputError),
    ((T0, 0, 7), InvalidTypeError),
])
def test_bad_timestamps_are_refused(args, error):
    with pytest.raises(error):
        Timestamp(*args)


@pytest.mark.parametrize("text", ["", "018bcfe56800-0005", "018BCFE56800-0005-a",
                                  "18bcfe56800-0005-a", "018bcfe56800-005-a",
                                  "018bcfe56800-0005-a b"])
def test_bad_encodings_are_refused(text):
    with pytest.raises(InvalidInputError):
        Timestamp.decode(text)
    with pytest.raises(InvalidTypeError):
        Timestamp.decode(b"018bcfe56800-0005-a")


# --- HLC ---------------------------------------------------------------------------------


def test_now_follows_physical_time_and_counts_within_a_millisecond():
    clock = FakeClock()
    hlc = HLC("a", clock)
    assert hlc.last is None
    assert hlc.now() == Timestamp(T0, 0, "a")
    assert hlc.now() == Timestamp(T0, 1, "a")
    clock.ms = T0 + 5.7
    assert hlc.now() == Timestamp(T0 + 5, 0, "a")
    assert hlc.last == Timestamp(T0 + 5, 0, "a")


def test_now_is_strictly_monotonic_when_the_physical_clock_jumps_back():
    rng = random.Random(2)
    clock = FakeClock()
    hlc = HLC("a", clock)
    last = hlc.now()
    for _ in range(20_000):
        clock.ms = max(1, clock.ms + rng.choice([-5000, -1, 0, 0, 0, 1, 3, 1000]))
        stamp = hlc.now()
        assert stamp > last
        last = stamp


def test_update_is_later_than_the_remote_and_every_earlier_reading():
    rng = random.Random(3)
    clocks = {n: FakeClock(T0 + rng.randrange(-3000, 3000)) for n in "abc"}
    hlcs = {n: HLC(n, clocks[n]) for n in "abc"}
    last = {n: hlcs[n].now() for n in "abc"}
    sent = list(last.values())
    for _ in range(20_000):
        for c in clocks.values():
            c.ms += rng.choice([0, 0, 1, 2, -1])
        node = rng.choice("abc")
        if rng.random() < 0.5:
            remote = rng.choice(sent)
            stamp = hlcs[node].update(remote)
            assert stamp > remote
        else:
            stamp = hlcs[node].now()
        assert stamp > last[node]
        # Kulkarni's bound: the logical wall stays within the clocks' spread of physical.
        assert stamp.wall_ms - clocks[node].ms <= 6000 + 1
        last[node] = stamp
        sent.append(stamp)


def test_update_takes_the_remote_counter_when_walls_tie():
    clock = FakeClock()
    hlc = HLC("b", clock)
    hlc.now()
    assert hlc.update(Timestamp(T0, 7, "a")) == Timestamp(T0, 8, "b")
    assert hlc.update(Timestamp(T0 + 10, 3, "a")) == Timestamp(T0 + 10, 4, "b")
    assert hlc.update(Timestamp(T0 - 50, 99, "a")) == Timestamp(T0 + 10, 5, "b")
    clock.ms = T0 + 20
    assert hlc.update(Timestamp(T0, 0, "a")) == Timestamp(T0 + 20, 0, "b")
    assert hlc.update("018bcfe56800-0005-a") == Timestamp(T0 + 20, 1, "b")


def test_a_remote_too_far_ahead_is_refused_and_leaves_the_clock_alone():
    clock = FakeClock()
    hlc = HLC("a", clock)
    before = hlc.now()
    with pytest.raises(InvalidInputError, match="60001 ms ahead"):
        hlc.update(Timestamp(T0 + 60_001, 0, "b"))
    assert hlc.last == before
    assert hlc.update(Timestamp(T0 + 60_000, 0, "b")) == Timestamp(T0 + 60_000, 1, "a")
    strict = HLC("a", clock, max_drift_ms=10)
    with pytest.raises(InvalidInputError):
        strict.update(Timestamp(T0 + 11, 0, "b"))


def test_counter_overflow_moves_the_logical_wall_on():
    hlc = HLC("a", FakeClock())
    hlc.update(Timestamp(T0, MAX_COUNTER - 1, "b"))
    assert hlc.last == Timestamp(T0, MAX_COUNTER, "a")
    nxt = hlc.now()
    assert nxt == Timestamp(T0 + 1, 0, "a") and nxt > Timestamp(T0, MAX_COUNTER, "b")


@pytest.mark.parametrize("reading", [float("nan"), float("inf"), 0, -5, "now", None, True])
def test_an_unusable_physical_clock_is_refused(reading):
    with pytest.raises(InvalidInputError):
        HLC("a", lambda: reading).now()


def test_hlc_arguments_are_checked():
    with pytest.raises(InvalidInputError):
        HLC("bad node")
    with pytest.raises(InvalidTypeError):
        HLC("a", now_ms=5)
    with pytest.raises(InvalidTypeError):
        HLC("a").update(12345)
    with pytest.raises(InvalidInputError):
        HLC("a", max_drift_ms=-1)


def test_the_default_clock_is_wall_time():
    import time
    stamp = HLC("a").now()
    assert abs(stamp.wall_ms - time.time() * 1000) < 5000


# --- VectorClock -------------------------------------------------------------------------


def test_vector_clock_increment_merge_compare():
    zero = VectorClock()
    a1 = zero.increment("a")
    b1 = zero.increment("b")
    assert zero.compare(a1) == "before" and a1.compare(zero) == "after"
    assert a1.compare(b1) == "concurrent" == b1.compare(a1)
    both = a1.merge(b1)
    assert both.to_dict() == {"a": 1, "b": 1}
    assert a1.compare(both) == "before" and both.compare(b1) == "after"
    assert both.compare(VectorClock({"b": 1, "a": 1})) == "equal"
    assert both.increment("a").compare(both.increment("b")) == "concurrent"
    assert zero.to_dict() == {} and a1.get("zz") == 0


def test_vector_clocks_are_immutable_values_and_ignore_zeros():
    a = VectorClock({"a": 2, "b": 0})
    assert a == VectorClock({"a": 2}) and hash(a) == hash(VectorClock({"a": 2}))
    a.increment("a")
    assert a.to_dict() == {"a": 2}
    assert a != {"a": 2}
    assert "a" in repr(a)


def test_merge_is_commutative_associative_idempotent():
    rng = random.Random(4)
    for _ in range(300):
        x, y, z = (VectorClock({n: rng.randrange(4) for n in "abcd"}) for _ in range(3))
        assert x.merge(y) == y.merge(x)
        assert x.merge(y).merge(z) == x.merge(y.merge(z))
        assert x.merge(x) == x
        assert x.compare(x.merge(y)) in ("before", "equal")
        order, reverse = x.compare(y), y.compare(x)
        assert (order, reverse) in {("before", "after"), ("after", "before"),
                                    ("equal", "equal"), ("concurrent", "concurrent")}


@pytest.mark.parametrize("counts,error", [
    ([("a", 1)], InvalidTypeError), ({"a": -1}, InvalidInputError),
    ({"a": 1.0}, InvalidTypeError), ({"": 1}, InvalidInputError), ({3: 1}, InvalidTypeError),
])
def test_bad_vector_clocks_are_refused(counts, error):
    with pytest.raises(error):
        VectorClock(counts)
    with pytest.raises(InvalidTypeError):
        VectorClock().compare({"a": 1})


# --- resolve -----------------------------------------------------------------------------


def v(value, wall, counter=0, node="a", vector=None):
    return Versioned(value, Timestamp(wall, counter, node),
                     None if vector is None else VectorClock(vector))


def test_lww_the_later_hlc_wins_and_node_breaks_ties():
    old, new = v({"x": 1}, T0), v({"x": 2}, T0 + 1)
    r = resolve(old, new)
    assert (r.value, r.kind, r.hlc) == ({"x": 2}, "remote", new.hlc)
    assert resolve(new, old).kind == "local"
    tie_a, tie_b = v({"x": "a"}, T0, 3, "tab-a"), v({"x": "b"}, T0, 3, "tab-b")
    assert resolve(tie_a, tie_b).value == {"x": "b"} == resolve(tie_b, tie_a).value
    same = resolve(old, v({"x": 1}, T0))
    assert (same.kind, same.reason) == ("local", "same version")


def test_lww_equal_timestamps_with_different_values_still_agree():
    a, b = v({"x": 1}, T0), v({"x": 2}, T0)
    assert resolve(a, b).value == resolve(b, a).value


def test_vector_causally_later_wins_even_with_an_earlier_hlc():
    # A tab with a slow clock edits after seeing the other tab's edit.
    seen = v({"x": 1}, T0 + 500, vector={"a": 1})
    later = v({"x": 2}, T0, vector={"a": 1, "b": 1})
    assert resolve(seen, later, "lww").value == {"x": 1}
    r = resolve(seen, later, "vector")
    assert (r.value, r.kind) == ({"x": 2}, "remote") and "causally" in r.reason
    assert r.vector == VectorClock({"a": 1, "b": 1})
    assert resolve(later, seen, "vector").kind == "local"


def test_vector_concurrent_falls_back_to_lww():
    a = v({"x": 1}, T0, vector={"a": 1})
    b = v({"x": 2}, T0 + 1, node="b", vector={"b": 1})
    r = resolve(a, b, "vector")
    assert (r.value, r.kind) == ({"x": 2}, "remote")
    assert r.reason.startswith("vector clocks concurrent")
    assert r.vector == VectorClock({"a": 1, "b": 1})


def union_tags(older, newer):
    return {**older, **newer, "tags": sorted(set(older["tags"]) | set(newer["tags"]))}


def test_a_registered_merge_function_merges_concurrent_versions_in_hlc_order():
    calls = []

    def merge(older, newer):
        calls.append((older["n"], newer["n"]))
        return {"n": older["n"] + newer["n"]}

    reg = MergeRegistry()
    reg.register("sum", merge)
    a = v({"n": 1}, T0, vector={"a": 1})
    b = v({"n": 2}, T0 + 1, node="b", vector={"b": 1})
    r1, r2 = resolve(a, b, "sum", registry=reg), resolve(b, a, "sum", registry=reg)
    assert calls == [(1, 2), (1, 2)]
    assert r1.kind == r2.kind == "merged" and r1.value == r2.value == {"n": 3}
    assert r1.hlc == r2.hlc == b.hlc and r1.vector == r2.vector
    # Causally ordered versions are not merged: the later one wins.
    c = v({"n": 5}, T0 + 2, vector={"a": 1, "b": 1})
    assert resolve(b, c, "sum", registry=reg).value == {"n": 5}
    assert len(calls) == 2


def test_merge_registry_checks_its_input():
    reg = MergeRegistry()
    with pytest.raises(InvalidTypeError):
        reg.register("x", "not callable")
    with pytest.raises(InvalidTypeError):
        reg.register(3, union_tags)
    for name in ("", "lww", "vector"):
        with pytest.raises(InvalidInputError):
            reg.register(name, union_tags)

    async def merge_async(a, b):
        return a

    with pytest.raises(InvalidTypeError):
        reg.register("async", merge_async)
    with pytest.raises(InvalidInputError, match="no merge function"):
        reg.get("missing")
    reg.register("tags", union_tags)
    assert "tags" in reg and reg.names() == ["tags"] and reg.get("tags") is union_tags
    reg.register("tags", dict)  # replaced
    assert reg.get("tags") is dict


def test_resolve_refuses_bad_strategies_and_missing_clocks():
    a = v({"x": 1}, T0, vector={"a": 1})
    plain = v({"x": 2}, T0 + 1)
    with pytest.raises(InvalidInputError, match="unknown strategy"):
        resolve(a, plain, "newest")
    with pytest.raises(InvalidInputError, match="no merge function"):
        resolve(a, plain, "newest", registry=MergeRegistry())
    with pytest.raises(InvalidInputError, match="vector clocks"):
        resolve(a, plain, "vector")
    with pytest.raises(InvalidTypeError):
        resolve(a, {"x": 1})
    with pytest.raises(InvalidTypeError):
        resolve(a, a, strategy=None)
    reg = MergeRegistry()
    reg.register("bad", lambda x, y: [x, y])
    b = v({"x": 2}, T0, node="b", vector={"b": 1})
    with pytest.raises(InvalidTypeError, match="must return a dict"):
        resolve(a, b, "bad", registry=reg)


def test_versioned_checks_and_round_trips():
    ver = v({"x": 1}, T0, 2, "tab-1", {"tab-1": 3})
    assert Versioned.from_dict(ver.to_dict()) == ver
    assert ver.to_dict()["hlc"] == "018bcfe56800-0002-tab-1"
    plain = v({"x": 1}, T0)
    assert Versioned.from_dict(plain.to_dict()) == plain
    with pytest.raises(InvalidTypeError):
        Versioned([1], Timestamp(T0, 0, "a"))
    with pytest.raises(InvalidTypeError):
        Versioned({}, "018bcfe56800-0002-tab-1")
    with pytest.raises(InvalidTypeError):
        Versioned({}, Timestamp(T0, 0, "a"), {"a": 1})
    with pytest.raises(InvalidInputError):
        Versioned.from_dict({"value": {}})


@pytest.mark.parametrize("strategy", ["lww", "vector", "tags"])
def test_resolve_is_symmetric_for_random_pairs(strategy):
    rng = random.Random(5)
    reg = MergeRegistry()
    reg.register("tags", union_tags)
    for _ in range(2000):
        a, b = (v({"tags": sorted(rng.sample("pqrs", rng.randrange(3)))},
                  T0 + rng.randrange(3), rng.randrange(2), rng.choice("ab"),
                  {n: rng.randrange(3) for n in "ab"}) for _ in range(2))
        r1, r2 = resolve(a, b, strategy, registry=reg), resolve(b, a, strategy, registry=reg)
        assert (r1.value, r1.hlc, r1.vector) == (r2.value, r2.hlc, r2.vector)
        swapped = {"local": "remote", "remote": "local", "merged": "merged"}
        if (a.hlc, a.value) != (b.hlc, b.value) and a.vector != b.vector:
            assert swapped[r1.kind] == r2.kind


# --- two simulated tabs --------------------------------------------------------------------


class Tab:
    """One tab's copy of one record, its clocks, and what it sends to the other tab."""

    def __init__(self, node, clock, strategy, registry, start):
        self.node, self.strategy, self.registry = node, strategy, registry
        self.hlc = HLC(node, clock)
        self.state = start
        self.outbox = []

    def edit(self, change):
        stamp = self.hlc.now()
        vector = self.state.vector.increment(self.node)
        self.state = Versioned(change(self.state.value), stamp, vector)
        self.outbox.append(self.state)

    def receive(self, remote):
        self.hlc.update(remote.hlc)
        self.state = resolve(self.state, remote, self.strategy, registry=self.registry).version


def start_version():
    return Versioned({"tags": [], "title": "start"}, Timestamp(T0 - 10, 0, "seed"),
                     VectorClock())


@pytest.mark.parametrize("strategy", ["lww", "vector", "tags"])
def test_two_tabs_editing_concurrently_converge_whatever_the_arrival_order(strategy):
    reg = MergeRegistry()
    reg.register("tags", union_tags)
    for skew in (-2000, 0, 7, 2000):
        for a_first in (True, False):
            clock_a, clock_b = FakeClock(T0), FakeClock(T0 + skew)
            a = Tab("tab-a", clock_a, strategy, reg, start_version())
            b = Tab("tab-b", clock_b, strategy, reg, start_version())
            a.edit(lambda val: {**val, "title": "from a", "tags": val["tags"] + ["a"]})
            b.edit(lambda val: {**val, "title": "from b", "tags": val["tags"] + ["b"]})
            pairs = [(a, b), (b, a)] if a_first else [(b, a), (a, b)]
            for sender, receiver in pairs:
                receiver.receive(sender.outbox[-1])
            assert a.state == b.state
            if strategy == "tags":
                assert a.state.value["tags"] == ["a", "b"]
            else:
                # The later HLC wins; with tab-b's clock ahead that is tab-b's edit.
                winner = "from b" if skew >= 0 else "from a"
                assert a.state.value["title"] == winner


@pytest.mark.parametrize("strategy", ["lww", "vector", "tags"])
def test_many_random_edits_from_two_tabs_converge(strategy):
    reg = MergeRegistry()
    reg.register("tags", union_tags)
    rng = random.Random(6)
    for _ in range(50):
        clock_a, clock_b = FakeClock(T0), FakeClock(T0 + rng.randrange(-3000, 3000))
        tabs = [Tab("tab-a", clock_a, strategy, reg, start_version()),
                Tab("tab-b", clock_b, strategy, reg, start_version())]
        pending = {0: [], 1: []}  # messages on their way to tab i, delivered in any order
        for step in range(40):
            clock_a.ms += rng.randrange(3)
            clock_b.ms += rng.randrange(3)
            i = rng.randrange(2)
            if rng.random() < 0.6:
                tag = f"t{step}"
                tabs[i].edit(lambda val, tag=tag: {**val, "tags": sorted({*val["tags"], tag})})
                pending[1 - i].append(tabs[i].state)
            elif pending[i]:
                tabs[i].receive(pending[i].pop(rng.randrange(len(pending[i]))))
        for i in (0, 1):
            rng.shuffle(pending[i])
            for msg in pending[i]:
                tabs[i].receive(msg)
        assert tabs[0].state == tabs[1].state


# --- versions of stored records and what an update may do --------------------------------


def stored(wall, node="b", vector=None):
    return version(Timestamp(wall, 0, node), VectorClock(vector or {}))


def test_parse_version_reads_what_version_writes_and_ignores_junk():
    v = version(Timestamp(T0, 3, "a"), VectorClock({"a": 2}))
    assert v == {"h": "018bcfe56800-0003-a", "vc": {"a": 2}}
    assert parse_version(v) == (Timestamp(T0, 3, "a"), VectorClock({"a": 2}))
    for junk in (None, 5, "x", {"h": "nope"}, {"vc": {"a": -1}}, {"h": None}):
        assert parse_version(junk) == (None, VectorClock())


def test_lww_applies_only_a_later_stamp():
    later = decide("lww", Timestamp(T0 + 1, 0, "a"), "a", None, stored(T0))
    assert (later.action, later.conflict) == ("apply", False)
    assert later.version == {"h": Timestamp(T0 + 1, 0, "a").encode(), "vc": {"a": 1}}
    earlier = decide("lww", Timestamp(T0 - 1, 0, "a"), "a", None, stored(T0))
    assert (earlier.action, earlier.conflict, earlier.version) == ("keep", True, None)
    first = decide("lww", Timestamp(T0, 0, "a"), "a", None, None)  # never versioned
    assert first.action == "apply" and not first.conflict


def test_vector_applies_what_has_seen_the_stored_version_and_else_falls_back_to_lww():
    old = stored(T0, vector={"b": 2})
    seen = decide("vector", Timestamp(T0 - 50, 0, "a"), "a", VectorClock({"b": 2}), old)
    # Causally after the stored version: applied even with an earlier HLC (a slow clock).
    assert (seen.action, seen.conflict) == ("apply", False)
    assert seen.version["vc"] == {"a": 1, "b": 2}
    unseen_late = decide("vector", Timestamp(T0 + 1, 0, "a"), "a", VectorClock({"b": 1}), old)
    assert (unseen_late.action, unseen_late.conflict) == ("apply", True)
    assert unseen_late.reason.startswith("concurrent")
    unseen_early = decide("vector", Timestamp(T0 - 1, 0, "a"), "a", None, old)
    assert (unseen_early.action, unseen_early.conflict) == ("keep", True)


def test_a_merge_strategy_hands_concurrent_records_to_the_page():
    old = stored(T0, vector={"b": 1})
    assert decide("tags", Timestamp(T0 + 9, 0, "a"), "a", None, old).action == "conflict"
    ok = decide("tags", Timestamp(T0 + 9, 0, "a"), "a", VectorClock({"b": 1, "a": 4}), old)
    assert ok.action == "apply" and ok.version["vc"] == {"a": 5, "b": 1}
    assert [strategy_kind(s) for s in ("lww", "vector", "tags")] == ["lww", "vector", "merge"]


def test_announcements_carry_keys_and_versions_but_never_values():
    v = stored(T0)
    msg = announcement([("docs", "update", "k1", v), ("docs", "delete", 2, None),
                        ("other", "create", "k3", None)])
    assert msg == {"changes": [{"c": "docs", "op": "update", "k": "k1", "v": v},
                               {"c": "docs", "op": "delete", "k": 2, "v": None},
                               {"c": "other", "op": "create", "k": "k3", "v": None}],
                   "collections": {"docs": 2, "other": 1}}
    many = announcement([("docs", "create", i, None) for i in range(MAX_KEYS_ANNOUNCED + 1)])
    assert many == {"changes": [], "collections": {"docs": MAX_KEYS_ANNOUNCED + 1}}
    assert channel_name("shop") == "workerbridge.storage:shop"
