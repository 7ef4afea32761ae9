"""Host unit tests of the storage filter language, ordering and the index planner.

The planner is checked against an in-memory model of IndexedDB's indexes (which records
an index holds under which keys, per the IndexedDB spec): for thousands of random records
and filters, the planned ranges must fetch every match, and fetch-then-residual must give
exactly what a full scan gives.
"""

from __future__ import annotations

import math
import random

import pytest

from workerbridge import InvalidFilterError, InvalidInputError, InvalidTypeError
from workerbridge.storage.plan import IndexSpec, KeyRange, check_indexed, in_range, plan
from workerbridge.storage.query import (
    EVERYTHING,
    MISSING,
    check_sort,
    clean_value,
    get_path,
    key_of,
    matches,
    sort_key,
    sort_records,
    unparse,
    validate_filter,
)


def match(flt, record):
    return matches(validate_filter(flt), record)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("flt, fragment", [
    ({"age": {"$regex": "x"}}, "unknown filter operator '$regex'"),
    ({"$where": "1"}, "unknown filter operator '$where'"),
    ({"age": {"$in": 5}}, "$in takes a list"),
    ({"age": {"$nin": "ab"}}, "$nin takes a list"),
    ({"$and": []}, "non-empty list"),
    ({"$or": {"a": 1}}, "non-empty list"),
    ({"$or": [5]}, "must be a dict"),
    ({"age": {"$gt": 1, "x": 2}}, "mixes operators"),
    ({"age": {"$exists": 1}}, "$exists takes True or False"),
    ({"age": {"$gt": None}}, "compares numbers, strings, bytes or lists"),
    ({"age": {"$lt": True}}, "compares numbers"),
    ({"age": {"$gte": {"a": 1}}}, "compares numbers"),
    ({"age": {"$lte": [1, None]}}, "compares numbers"),
    ({"age": float("nan")}, "NaN"),
    ({"age": {"$in": [float("inf")]}}, "infinity"),
    ({"age": {1, 2}}, "set"),
    ({"age": object()}, "not serialisable"),
    ({"age": 2**60}, "beyond 2**53"),
    ({"": 1}, "non-empty strings"),
    ({5: 1}, "non-empty strings"),
    ({"a..b": 1}, "empty part"),
    ({"a.": 1}, "empty part"),
    ([("a", 1)], "must be a dict"),
    ("age > 5", "must be a dict"),
])
def test_invalid_filters_are_refused_with_a_clear_error(flt, fragment):
    with pytest.raises(InvalidFilterError) as info:
        validate_filter(flt)
    assert fragment in str(info.value)
    assert isinstance(info.value, InvalidInputError)


def test_too_deep_a_filter_is_refused():
    flt: dict = {"a": 1}
    for _ in range(100):
        flt = {"$and": [flt]}
    with pytest.raises(InvalidFilterError, match="nested too deeply"):
        validate_filter(flt)


def test_empty_and_none_filters_match_everything():
    assert validate_filter(None) == EVERYTHING
    assert validate_filter({}) == EVERYTHING
    assert match({}, {"id": 1}) and match(None, {})


def test_unparse_round_trips():
    flt = {"$or": [{"a": {"$gt": 1}}, {"b": {"$in": [1, 2]}}]}
    node = validate_filter(flt)
    assert validate_filter(unparse(node)) == node


# --- values -------------------------------------------------------------------------------


def test_clean_value_normalises_and_refuses():
    assert clean_value({"t": (1, 2), "b": bytearray(b"x"), "m": memoryview(b"y")}) == \
        {"t": [1, 2], "b": b"x", "m": b"y"}
    assert clean_value(2**53 - 1) == 2**53 - 1
    for bad in ({1, 2}, {"f": lambda: 1}, float("nan"), float("-inf"), 2**53, {1: "x"},
                frozenset(), object(), complex(1, 2)):
        with pytest.raises(InvalidInputError):
            clean_value(bad)
    cyclic: list = []
    cyclic.append(cyclic)
    with pytest.raises(InvalidInputError, match="refers to itself"):
        clean_value(cyclic)


# --- matching -----------------------------------------------------------------------------

R = {"id": "r1", "age": 30, "name": "Ada", "tags": ["x", "y"], "flag": True,
     "nil": None, "addr": {"city": "Oslo", "zip": 150}, "score": 2.5, "b": b"\x01\x02",
     "pair": [1, 2], "nested": [[1, 2], 3]}


@pytest.mark.parametrize("flt, expected", [
    ({"age": 30}, True),
    ({"age": 30.0}, True),
    ({"age": "30"}, False),
    ({"age": {"$eq": 31}}, False),
    ({"age": {"$ne": 31}}, True),
    ({"age": {"$gt": 29, "$lt": 31}}, True),
    ({"age": {"$gte": 30, "$lte": 30}}, True),
    ({"age": {"$gt": 30}}, False),
    ({"age": {"$gt": "a"}}, False),          # numbers and strings never compare
    ({"name": {"$gt": "A"}}, True),
    ({"name": {"$lt": 5}}, False),
    ({"tags": "x"}, True),                   # any element
    ({"tags": ["x", "y"]}, True),            # the whole list
    ({"tags": ["y", "x"]}, False),
    ({"tags": {"$ne": "x"}}, False),
    ({"tags": {"$ne": "z"}}, True),
    ({"tags": {"$in": ["q", "y"]}}, True),
    ({"tags": {"$nin": ["q", "y"]}}, False),
    ({"tags": {"$gt": "x"}}, True),          # "y" > "x"
    ({"tags": {"$gt": "y"}}, False),
    ({"pair": {"$gt": [1, 1]}}, True),       # a list operand compares the whole list
    ({"pair": {"$lt": [1, 2, 0]}}, True),    # a prefix sorts first
    ({"nested": [1, 2]}, True),              # an element equal to the operand
    ({"nested": 1}, False),
    ({"flag": True}, True),
    ({"flag": 1}, False),                    # booleans are not numbers
    ({"age": True}, False),
    ({"flag": {"$gt": 0}}, False),
    ({"nil": None}, True),
    ({"missing": None}, True),               # null matches a missing field
    ({"missing": {"$ne": None}}, False),
    ({"nil": {"$ne": None}}, False),
    ({"age": {"$ne": None}}, True),
    ({"nil": {"$exists": True}}, True),
    ({"missing": {"$exists": True}}, False),
    ({"missing": {"$exists": False}}, True),
    ({"missing": {"$gt": 1}}, False),
    ({"missing": {"$nin": [1]}}, True),
    ({"addr.city": "Oslo"}, True),
    ({"addr.zip": {"$gte": 100}}, True),
    ({"addr.city.x": "Oslo"}, False),
    ({"addr": {"city": "Oslo", "zip": 150}}, True),
    ({"addr": {"city": "Oslo"}}, False),     # an object operand is compared whole
    ({"b": b"\x01\x02"}, True),
    ({"b": {"$gt": b"\x01"}}, True),
    ({"b": {"$gt": "\x01"}}, False),
    ({"score": {"$in": [2.5, 9]}}, True),
    ({"$or": [{"age": 1}, {"name": "Ada"}]}, True),
    ({"$or": [{"age": 1}, {"name": "Bob"}]}, False),
    ({"$and": [{"age": 30}, {"name": "Ada"}]}, True),
    ({"$and": [{"age": 30}, {"$or": [{"flag": False}, {"nil": 1}]}]}, False),
    ({"age": 30, "name": "Bob"}, False),
])
def test_matching(flt, expected):
    assert match(flt, R) is expected


def test_strings_compare_in_utf16_code_unit_order_like_indexeddb():
    # U+10000 is the surrogate pair D800 DC00 in UTF-16: it sorts below U+FFFF there,
    # though above it in code points.
    assert match({"s": {"$lt": "\uffff"}}, {"s": "\U00010000"})
    assert not match({"s": {"$gt": "\uffff"}}, {"s": "\U00010000"})
    assert sort_key("\U00010000") < sort_key("\U0001F600\uffff") < sort_key("\uffff")
    assert key_of("\ue000") > key_of("\U0010ffff")


# --- sorting ------------------------------------------------------------------------------


def test_check_sort_forms():
    assert check_sort(None) == ()
    assert check_sort("age") == ((("age",), False),)
    assert check_sort(("age", "desc")) == ((("age",), True),)
    assert check_sort(["a.b", ("c", "asc"), ["d", -1]]) == \
        ((("a", "b"), False), (("c",), False), (("d",), True))
    for bad in (5, [("a", "up")], [("a",)], [("$a", "asc")], [("a", True)]):
        with pytest.raises(InvalidInputError):
            check_sort(bad)
    with pytest.raises(InvalidTypeError):
        check_sort(5)


def test_sort_mixed_kinds_and_stability():
    rows = [{"i": 0, "v": "b"}, {"i": 1, "v": 2}, {"i": 2}, {"i": 3, "v": None},
            {"i": 4, "v": [1]}, {"i": 5, "v": b"a"}, {"i": 6, "v": True}, {"i": 7, "v": 1.5},
            {"i": 8, "v": {"x": 1}}, {"i": 9, "v": "a"}, {"i": 10, "v": 2}]
    out = sort_records(list(rows), check_sort("v"))
    assert [r["i"] for r in out] == [2, 3, 6, 7, 1, 10, 9, 0, 5, 4, 8]
    out = sort_records(list(rows), check_sort(("v", "desc")))
    assert [r["i"] for r in out] == [8, 4, 5, 0, 9, 1, 10, 7, 6, 3, 2]  # ties keep order


def test_sort_by_several_keys():
    rows = [{"a": 1, "b": 2}, {"a": 0, "b": 2}, {"a": 1, "b": 1}, {"a": 0, "b": 1}]
    out = sort_records(list(rows), check_sort([("b", "desc"), "a"]))
    assert out == [{"a": 0, "b": 2}, {"a": 1, "b": 2}, {"a": 0, "b": 1}, {"a": 1, "b": 1}]


# --- planning: specific choices ---------------------------------------------------------------

IDX = [IndexSpec("age", ("age",)), IndexSpec("email", ("email",), unique=True),
       IndexSpec("tags", ("tags",), multi_entry=True), IndexSpec("name", ("last", "first"))]


def plan_of(flt):
    return plan(validate_filter(flt), "id", IDX)


def test_no_filter_scans_everything():
    p = plan_of({})
    assert p.index is None and p.ranges is None and p.residual is None


def test_primary_key_equality_is_exact():
    p = plan_of({"id": "k1"})
    assert p.index is None and p.ranges == (KeyRange.only("k1"),) and p.residual is None


def test_primary_key_in_gives_sorted_distinct_keys():
    p = plan_of({"id": {"$in": ["b", 3, "a", 3.0]}})
    assert p.ranges == (KeyRange.only(3), KeyRange.only("a"), KeyRange.only("b"))
    assert p.residual is None


def test_primary_key_wins_and_the_rest_is_residual():
    p = plan_of({"id": "k1", "age": 3})
    assert p.index is None and unparse(p.residual) == {"age": {"$eq": 3}}


def test_unique_index_beats_a_plain_one():
    p = plan_of({"age": 30, "email": "a@b"})
    assert p.index == "email" and p.ranges == (KeyRange.only("a@b"),)
    assert unparse(p.residual) == {"age": {"$eq": 30}}


def test_range_on_an_index_stays_within_the_kind():
    p = plan_of({"age": {"$gt": 18, "$lte": 65}})
    assert p.index == "age"
    assert p.ranges[0] == KeyRange(18, 65, True, False)
    p = plan_of({"age": {"$gte": 18}})
    assert p.ranges[0] == KeyRange(18, math.inf, False, False)
    assert p.ranges[0].to_wire() == {"lo": 18, "lo_open": False, "hi": {"$k": "inf"},
                                     "hi_open": False}
    p = plan_of({"age": {"$lt": "m"}})
    assert p.ranges[0] == KeyRange("", "m", False, True)
    p = plan_of({"age": {"$gt": "m"}})
    assert p.ranges[0].to_wire()["hi"] == {"$k": "bin"}


def test_contradictory_range_fetches_nothing():
    p = plan_of({"age": {"$gt": 5, "$lt": "a"}})
    assert p.index == "age" and p.ranges == () and p.residual is None
    p = plan_of({"age": {"$gt": 5, "$lt": 5}})
    assert p.ranges == ()
    assert plan_of({"id": {"$gte": 5, "$lt": 5}}).ranges == ()


def test_multi_entry_equality_is_exact_and_may_repeat():
    p = plan_of({"tags": {"$in": ["a", "b"]}, "age": {"$ne": 3}})
    assert p.index == "tags" and p.repeats
    assert p.ranges == (KeyRange.only("a"), KeyRange.only("b"))
    assert unparse(p.residual) == {"age": {"$ne": 3}}


def test_multi_entry_uses_one_bound_only():
    # [3, 8] matches $gt 5 (through 8) and $lt 7 (through 3): no single range holds it.
    p = plan_of({"tags": {"$gt": 5, "$lt": 7}})
    assert p.ranges == (KeyRange(5, math.inf, True, False),)
    assert unparse(p.residual) == {"tags": {"$lt": 7}}


def test_compound_needs_every_field():
    assert plan_of({"last": "Lovelace"}).index is None
    p = plan_of({"last": "Lovelace", "first": "Ada"})
    assert p.index == "name"
    assert p.ranges[0] == KeyRange.only(["Lovelace", "Ada"])
    assert p.residual is None
    p = plan_of({"last": "Lovelace", "first": {"$gte": "A"}, "age": {"$ne": 1}})
    assert p.ranges[0].to_wire() == {"lo": ["Lovelace", "A"], "lo_open": False,
                                     "hi": ["Lovelace", {"$k": "bin"}], "hi_open": True}
    assert unparse(p.residual) == {"age": {"$ne": 1}}
    p = plan_of({"last": "Lovelace", "first": {"$in": ["B", "A"]}})
    assert p.ranges == (KeyRange.only(["Lovelace", "A"]), KeyRange.only(["Lovelace", "B"]))


def test_check_indexed_refuses_lists_in_plain_indexed_fields():
    check_indexed({"tags": [1, 2], "age": 3, "last": "x"}, IDX)
    check_indexed({"age": {"n": [1]}}, IDX)
    for bad in ({"age": [1]}, {"first": ["a"]}, {"email": []}):
        with pytest.raises(InvalidInputError, match="not multi-entry"):
            check_indexed(bad, IDX)
    with pytest.raises(InvalidInputError):
        check_indexed({"c": {"d": [1]}}, [IndexSpec("cd", ("c.d",))])


@pytest.mark.parametrize("flt", [
    {"age": None}, {"age": True}, {"age": {"$ne": 3}}, {"age": {"$nin": [3]}},
    {"age": {"$exists": True}}, {"$or": [{"age": 1}, {"age": 2}]}, {"age": [1, 2]},
    {"age": {"$in": [1, None]}}, {"age": {"a": 1}}, {"other": 1},
])
def test_conditions_no_index_can_serve(flt):
    p = plan_of(flt)
    assert p.index is None and p.ranges is None
    assert p.residual == validate_filter(flt)


# --- planning: soundness against a model of IndexedDB's indexes --------------------------------


def index_keys(record, spec):
    """The keys a record is held under in an index, per the IndexedDB spec."""
    paths = [f.split(".") for f in spec.fields]
    if len(paths) == 1:
        value = get_path(record, paths[0])
        if spec.multi_entry and isinstance(value, list):
            found = {key_of(v): v for v in value if key_of(v) is not None}
            return list(found.values())
        return [value] if key_of(value) is not None else []
    values = [get_path(record, p) for p in paths]
    return [values] if key_of(values) is not None else []


def fetch(records, p, indexes):
    """What the planned ranges would return (before the residual), as a list of ids."""
    if p.ranges is None:
        return [r["id"] for r in records]
    out = []
    spec = next((s for s in indexes if s.name == p.index), None)
    for rng in p.ranges:
        for r in records:
            keys = [r["id"]] if spec is None else index_keys(r, spec)
            out.extend(r["id"] for k in keys if in_range(k, rng))
    return out


SCALARS = [0, 1, 2, 2.5, -3, 7, 10**6, "", "a", "b", "ab", "\uffff", "\U00010000", "é",
           b"", b"\x00", b"\x01", None, True, False]


def random_value(rng, lists=True, depth=0):
    roll = rng.random()
    if roll < 0.6 or depth > 1:
        return rng.choice(SCALARS)
    if roll < 0.9 and lists:
        return [random_value(rng, lists, depth + 1) for _ in range(rng.randint(0, 3))]
    return {"d": rng.choice(SCALARS)}


FIELDS = ["a", "b", "t", "u", "c.d"]


def random_record(rng, i):
    rec = {"id": rng.choice([i, f"k{i}", i + 0.5])}
    for f in ("a", "b", "t", "u"):
        if rng.random() < 0.85:
            rec[f] = random_value(rng, lists=f in "tu")  # plain indexed fields hold no lists
    if rng.random() < 0.5:
        rec["c"] = {"d": random_value(rng, False)} if rng.random() < 0.8 \
            else rng.choice([*SCALARS, [1, 2]])
    check_indexed(rec, MODEL_INDEXES)
    return rec


def random_condition(rng):
    field = rng.choice([*FIELDS, "id"])
    op = rng.choice(["$eq", "$eq", "$in", "$gt", "$gte", "$lt", "$lte", "$ne", "$nin",
                     "$exists", "implicit"])
    keyish = [v for v in SCALARS if key_of(v) is not None]
    if op == "$exists":
        return {field: {op: rng.random() < 0.5}}
    if op in ("$in", "$nin"):
        return {field: {op: [rng.choice(SCALARS) for _ in range(rng.randint(1, 3))]}}
    if op in ("$gt", "$gte", "$lt", "$lte"):
        value = rng.choice([*keyish, [1], [1, "a"]])
        extra = {}
        if rng.random() < 0.4:
            other = rng.choice(["$lt", "$lte"] if op in ("$gt", "$gte") else ["$gt", "$gte"])
            extra[other] = rng.choice(keyish)
        return {field: {op: value, **extra}}
    value = rng.choice([*SCALARS, [1, 2], ["a"]])
    return {field: value} if op == "implicit" else {field: {op: value}}


def random_filter(rng, depth=0):
    roll = rng.random()
    if depth < 2 and roll < 0.1:
        return {"$or": [random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    if depth < 2 and roll < 0.2:
        return {"$and": [random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    flt: dict = {}
    if rng.random() < 0.3:  # aim at one index: a condition on each of its fields
        spec = rng.choice(MODEL_INDEXES)
        keyish = [v for v in SCALARS if key_of(v) is not None]
        for name in spec.fields:
            flt[name] = rng.choice(keyish)
        if rng.random() < 0.5:
            flt[spec.fields[-1]] = {rng.choice(["$gt", "$lte", "$in"]): rng.choice(keyish)}
            if "$in" in flt[spec.fields[-1]]:
                flt[spec.fields[-1]]["$in"] = [rng.choice(keyish), rng.choice(keyish)]
    for _ in range(rng.randint(0 if flt else 1, 3)):
        for k, v in random_condition(rng).items():
            if isinstance(flt.get(k), dict) and isinstance(v, dict) \
                    and all(x.startswith("$") for x in (*flt[k], *v)):
                flt[k] = {**flt[k], **v}
            else:
                flt[k] = v
    return flt


MODEL_INDEXES = [
    IndexSpec("a", ("a",)),
    IndexSpec("t", ("t",), multi_entry=True),
    IndexSpec("ab", ("a", "b")),
    IndexSpec("cd", ("c.d",), unique=True),
    IndexSpec("abc", ("a", "b", "c.d"), unique=True),
]


def test_planned_ranges_fetch_every_match_and_residual_makes_it_exact():
    rng = random.Random(20261122)
    used = set()
    for trial in range(400):
        records = [random_record(rng, i) for i in range(60)]
        seen = set()
        records = [r for r in records if not (r["id"] in seen or seen.add(r["id"]))]
        for _ in range(10):
            flt = random_filter(rng)
            node = validate_filter(flt)
            expected = sorted(str(r["id"]) for r in records if matches(node, r))
            p = plan(node, "id", MODEL_INDEXES)
            used.add(p.index)
            fetched_ids = fetch(records, p, MODEL_INDEXES)
            if not p.repeats:
                assert len(fetched_ids) == len(set(fetched_ids)), (flt, p)
            by_id = {r["id"]: r for r in records}
            candidates = [by_id[i] for i in dict.fromkeys(fetched_ids)]
            assert set(expected) <= {str(r["id"]) for r in candidates}, (trial, flt, p)
            got = sorted(str(r["id"]) for r in candidates
                         if p.residual is None or matches(p.residual, r))
            assert got == expected, (trial, flt, p)
    assert used >= {None, "a", "t", "ab", "cd", "abc"}  # every kind was exercised


def test_an_indexed_filter_fetches_fewer_records():
    records = [{"id": i, "a": i % 50, "t": [i % 7, "x"]} for i in range(1000)]
    assert len(fetch(records, plan(EVERYTHING, "id", MODEL_INDEXES), MODEL_INDEXES)) == 1000
    for flt, most in (({"a": 7}, 20), ({"t": 3}, 143), ({"a": {"$gte": 48}}, 40)):
        p = plan(validate_filter(flt), "id", MODEL_INDEXES)
        assert p.index is not None
        assert len(fetch(records, p, MODEL_INDEXES)) <= most


def test_missing_sentinel_is_distinct():
    assert get_path({"a": None}, ["a"]) is None
    assert get_path({}, ["a"]) is MISSING
    assert get_path({"a": 5}, ["a", "b"]) is MISSING
