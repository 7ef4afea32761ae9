"""Host unit tests of the hash-chained audit log (pure logic, no browser)."""

import dataclasses
import hashlib
import itertools
import json
import time

import pytest

from workerbridge.core.errors import InvalidFilterError, InvalidInputError, InvalidTypeError
from workerbridge.storage.audit import (
    GENESIS,
    AuditHead,
    AuditRecord,
    canonical_bytes,
    next_record,
    query,
    verify_chain,
)

N = 8
T0 = 1_700_000_000_000


def chain(n=N, start=None):
    out, prev = [], start
    for i in range(n):
        prev = next_record(prev, ("create", "update", "delete")[i % 3], "users", f"id-{i}",
                           T0 + 1000 * i, actor="alice" if i % 2 else None)
        out.append(prev)
    return out


def digest_of(rec):
    return hashlib.sha256(canonical_bytes(rec.seq, rec.operation, rec.collection,
                                          rec.record_id, rec.timestamp, rec.actor,
                                          rec.prev_hash)).hexdigest()


def rehash(rec, **changes):
    """A forged record: changed fields and a hash recomputed to match them."""
    forged = dataclasses.replace(rec, **changes)
    return dataclasses.replace(forged, hash=digest_of(forged))


def test_first_record_hash_is_sha256_of_the_documented_canonical_json():
    rec = next_record(None, "create", "users", "a", T0, actor="Zoë")
    text = ('{"actor":"Zoë","collection":"users","operation":"create","prev_hash":"'
            + "0" * 64 + '","record_id":"a","seq":1,"timestamp":1700000000000,"v":1}')
    assert rec.seq == 1 and rec.prev_hash == GENESIS
    assert rec.hash == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_each_record_links_to_the_previous_hash_and_counts_up():
    records = chain()
    assert [r.seq for r in records] == list(range(1, N + 1))
    for before, after in itertools.pairwise(records):
        assert after.prev_hash == before.hash
    assert len({r.hash for r in records}) == N


def test_stored_dicts_round_trip_through_json_and_verify():
    records = chain()
    stored = [json.loads(json.dumps(r.to_dict())) for r in records]
    assert [AuditRecord.from_dict(d) for d in stored] == records
    result = verify_chain(stored)
    assert result.ok and result.checked == N and result.first_bad_seq is None


def test_intact_and_empty_chains_verify():
    assert verify_chain(chain()).ok
    empty = verify_chain([])
    assert empty.ok and empty.checked == 0 and empty.reason == "empty chain"


@pytest.mark.parametrize("k", range(1, N + 1))
@pytest.mark.parametrize("field,value", [
    ("operation", "read"), ("collection", "admins"), ("record_id", "other"),
    ("timestamp", T0 - 1), ("actor", "mallory"), ("record_id", 7),
])
def test_a_modified_record_is_found_at_its_seq(k, field, value):
    records = chain()
    records[k - 1] = dataclasses.replace(records[k - 1], **{field: value})
    result = verify_chain(records)
    assert not result.ok and result.first_bad_seq == k and "altered" in result.reason


@pytest.mark.parametrize("k", range(1, N + 1))
def test_a_modified_stored_dict_is_found_at_its_seq(k):
    stored = [r.to_dict() for r in chain()]
    stored[k - 1]["operation"] = "read"
    result = verify_chain(stored)
    assert (result.ok, result.first_bad_seq) == (False, k)


@pytest.mark.parametrize("k", range(1, N))
def test_a_record_rewritten_with_a_fresh_hash_is_found_at_its_seq(k):
    records = chain()
    records[k - 1] = rehash(records[k - 1], actor="mallory")
    assert records[k - 1].hash != chain()[k - 1].hash
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, k)
    assert "does not link" in result.reason


@pytest.mark.parametrize("k", range(1, N))
def test_a_deleted_record_is_found_at_its_seq(k):
    records = chain()
    del records[k - 1]
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, k) and "missing" in result.reason


def test_several_deleted_records_report_the_first():
    records = chain()
    del records[5]
    del records[2]
    assert verify_chain(records).first_bad_seq == 3


@pytest.mark.parametrize("k", range(1, N + 1))
def test_a_well_formed_inserted_record_is_found_at_its_seq(k):
    # The forgery takes seq k and links to record k-1; the genuine k then shows twice.
    records = chain()
    prev = records[k - 2] if k > 1 else None
    records.insert(k - 1, next_record(prev, "delete", "users", "forged", T0))
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, k) and "again" in result.reason


@pytest.mark.parametrize("k", range(1, N + 1))
def test_an_inserted_record_with_a_bad_hash_is_found_at_its_seq(k):
    records = chain()
    forged = dataclasses.replace(records[k - 1], record_id="forged")
    records.insert(k - 1, forged)
    assert verify_chain(records).first_bad_seq == k


@pytest.mark.parametrize("k", range(2, N + 1))
def test_an_inserted_record_that_does_not_link_reports_the_record_before_it(k):
    # Locally this looks like record k-1 rewritten: neither can be trusted (documented).
    records = chain()
    stray = rehash(next_record(None, "delete", "users", "forged", T0), seq=k,
                   prev_hash="f" * 64)
    records.insert(k - 1, stray)
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, k - 1)


def test_a_forged_first_record_that_does_not_start_at_genesis_is_found():
    records = chain()
    records[0] = rehash(records[0], prev_hash="a" * 64)
    assert verify_chain(records).first_bad_seq == 1


@pytest.mark.parametrize("k", range(1, N))
def test_two_swapped_records_are_found_at_the_first(k):
    records = chain()
    records[k - 1], records[k] = records[k], records[k - 1]
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, k)


def test_a_record_moved_to_the_end_is_found_where_it_left():
    records = chain()
    records.append(records.pop(2))
    assert verify_chain(records).first_bad_seq == 3


def test_a_replayed_record_at_the_end_is_found():
    records = chain()
    records.append(records[0])
    result = verify_chain(records)
    assert (result.ok, result.first_bad_seq) == (False, 1)


def test_a_malformed_stored_record_is_found_at_its_position():
    stored = [r.to_dict() for r in chain()]
    del stored[3]["prev_hash"]
    result = verify_chain(stored)
    assert (result.ok, result.first_bad_seq) == (False, 4) and "malformed" in result.reason
    stored = [r.to_dict() for r in chain()]
    stored[5]["seq"] = "6"
    assert verify_chain(stored).first_bad_seq == 6


def test_a_truncated_tail_passes_without_an_anchor_and_fails_with_one():
    records = chain()
    head = records[-1].head
    truncated = records[:-3]
    assert verify_chain(truncated).ok  # the documented limit of a bare chain
    result = verify_chain(truncated, expected_head=head)
    assert (result.ok, result.first_bad_seq) == (False, N - 2)
    assert "truncated" in result.reason
    assert verify_chain([], expected_head=head).first_bad_seq == 1


def test_a_chain_rewritten_from_some_point_on_is_found_only_with_an_anchor():
    records = chain()
    head = records[-1].head
    forged = records[:3]
    prev = forged[-1]
    for rec in records[3:]:
        prev = next_record(prev, rec.operation, rec.collection, rec.record_id,
                           rec.timestamp, "mallory")
        forged.append(prev)
    assert verify_chain(forged).ok
    result = verify_chain(forged, expected_head=head)
    # Where the rewrite began cannot be told: nothing up to the head is trusted.
    assert (result.ok, result.first_bad_seq) == (False, 1) and "rewritten" in result.reason


def test_records_after_the_anchor_verify_by_their_links_and_are_named():
    records = chain()
    head = records[4].head  # an older head, e.g. before another tab wrote
    result = verify_chain(records, expected_head=head)
    assert result.ok and "6..8 came after the anchored head" in result.reason
    assert verify_chain(records, expected_head=records[-1]).reason == "intact"


def test_expected_head_of_the_wrong_type_is_refused():
    with pytest.raises(InvalidTypeError):
        verify_chain(chain(), expected_head=(8, "x"))


def test_verify_accepts_a_one_pass_iterator():
    result = verify_chain(r.to_dict() for r in chain())
    assert result.ok and result.checked == N


@pytest.mark.parametrize("args,error", [
    (("", "users", "a", T0), InvalidInputError),
    (("create", "", "a", T0), InvalidInputError),
    (("create", "users", float("nan"), T0), InvalidInputError),
    (("create", "users", [1], T0), InvalidTypeError),
    (("create", "users", True, T0), InvalidTypeError),
    (("create", "users", "a", -1), InvalidInputError),
    (("create", "users", "a", 1.5), InvalidInputError),
    (("create", "users", "a", "1700000000000"), InvalidInputError),
    (("create", "users", "\ud800", T0), InvalidInputError),
])
def test_next_record_refuses_bad_fields(args, error):
    with pytest.raises(error):
        next_record(None, *args)


def test_next_record_refuses_a_bad_actor_or_prev():
    with pytest.raises(InvalidTypeError):
        next_record(None, "create", "users", "a", T0, actor=5)
    with pytest.raises(InvalidInputError, match="lacks"):
        next_record({"seq": 1}, "create", "users", "a", T0)
    with pytest.raises(InvalidTypeError):
        next_record("head", "create", "users", "a", T0)


def test_next_record_accepts_the_stored_dict_of_the_previous_record():
    first = next_record(None, "create", "users", "a", T0)
    assert next_record(first.to_dict(), "update", "users", "a", T0 + 1) == \
        next_record(first, "update", "users", "a", T0 + 1)


def test_a_whole_number_float_timestamp_is_accepted_as_int():
    rec = next_record(None, "create", "users", "a", float(T0))
    assert rec.timestamp == T0 and isinstance(rec.timestamp, int)
    assert rec.hash == next_record(None, "create", "users", "a", T0).hash


def test_a_number_key_is_kept_and_a_whole_float_key_hashes_as_its_int():
    assert next_record(None, "create", "users", 1.5, T0).record_id == 1.5
    rec = next_record(None, "create", "users", 2.0, T0)
    assert rec.record_id == 2 and isinstance(rec.record_id, int)
    assert rec.hash == next_record(None, "create", "users", 2, T0).hash
    assert verify_chain([next_record(None, "delete", "users", 1.5, T0)]).ok


def test_from_dict_refuses_bad_shapes():
    good = chain(1)[0].to_dict()
    with pytest.raises(InvalidTypeError):
        AuditRecord.from_dict([1, 2])
    with pytest.raises(InvalidInputError, match="lacks"):
        AuditRecord.from_dict({k: v for k, v in good.items() if k != "hash"})
    with pytest.raises(InvalidInputError, match="hex digest"):
        AuditRecord.from_dict({**good, "hash": "XYZ"})


def test_a_long_chain_builds_and_verifies_fast():
    n = 100_000
    t = time.perf_counter()
    records = chain(n)
    built = time.perf_counter() - t
    stored = [r.to_dict() for r in records]
    t = time.perf_counter()
    result = verify_chain(stored)
    checked = time.perf_counter() - t
    print(f"\n{n} records: built in {built:.2f} s, verified (from dicts) in {checked:.2f} s")
    assert result.ok and result.checked == n
    assert checked < 30  # about 0.5 s here; generous for a loaded machine


def test_query_by_mapping_callable_and_time_range():
    records = chain()
    updates = query(records, {"operation": "update"})
    assert [r.seq for r in updates] == [2, 5, 8]
    by_alice = query(records, lambda r: r.actor == "alice")
    assert [r.seq for r in by_alice] == [2, 4, 6, 8]
    # Both ends included, like IDBKeyRange.bound.
    window = query(records, time_range=(T0 + 1000, T0 + 3000))
    assert [r.seq for r in window] == [2, 3, 4]
    assert [r.seq for r in query(records, time_range=(None, T0 + 1000))] == [1, 2]
    assert [r.seq for r in query(records, time_range=(T0 + 6000, None))] == [7, 8]
    both = query([r.to_dict() for r in records], {"actor": "alice"}, (T0, T0 + 3000))
    assert [r.seq for r in both] == [2, 4]
    assert query(records) == records


def test_query_refuses_bad_filters_and_ranges():
    with pytest.raises(InvalidFilterError):
        query(chain(), {"user": "alice"})
    with pytest.raises(InvalidTypeError):
        query(chain(), "operation == 'update'")
    with pytest.raises(InvalidInputError):
        query(chain(), time_range=(T0 + 10, T0))
    with pytest.raises(InvalidTypeError):
        query(chain(), time_range=(T0,))
    with pytest.raises(InvalidTypeError):
        query(chain(), time_range=("a", None))


def test_audit_head_is_seq_and_hash():
    rec = chain()[-1]
    assert rec.head == AuditHead(N, rec.hash)
