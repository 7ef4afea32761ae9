"""Host unit tests of classification, filter refusal and sealed fields.

The cipher here is the `cryptography` package's AES-GCM behind the same async callables
the browser fills with SubtleCrypto, so the stored form is checked as standard AES-GCM.
"""

import json
import math

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import run
from workerbridge.core.errors import (
    IntegrityError,
    InvalidFilterError,
    InvalidInputError,
    InvalidTypeError,
)
from workerbridge.storage import fieldcrypt
from workerbridge.storage.fieldcrypt import (
    MAC_KEY_AAD,
    MAC_KEY_NONCE,
    Classification,
    Sealing,
    associated_data,
    bind_record,
    check_fields,
    check_filter,
    check_value,
    derive_mac_key,
    is_sealed,
    open_record,
    open_records,
    seal_patch,
    seal_record,
    seal_records,
)

KEY = bytes(range(32))
CLASSES = Classification({"ssn": "pii", "salary": "Sensitive", "team": "INTERNAL",
                          "name": "public"})
PROTECTED = CLASSES.protected_fields()
RECORD = {"id": "u-1", "name": "Ada", "team": "core", "ssn": "123-45-6789",
          "salary": {"base": 91000, "bonus": [1.5, None, True], "note": "Zoë €"}}


class Cipher:
    """AES-256-GCM through batch-shaped async callables; records every call and message."""

    def __init__(self, key=KEY):
        self.aead = AESGCM(key)
        self.calls = []  # one list of (op, field, nonce, aad) per call

    def _log(self, op, messages):
        self.calls.append([(op, json.loads(aad).get("field") if aad != MAC_KEY_AAD else "",
                            nonce, aad) for nonce, _, aad in messages])

    async def encrypt(self, messages):
        self._log("encrypt", messages)
        return [self.aead.encrypt(nonce, plaintext, aad) for nonce, plaintext, aad in messages]

    async def decrypt(self, messages):
        self._log("decrypt", messages)
        out = []
        for nonce, ciphertext, aad in messages:
            try:
                out.append(self.aead.decrypt(nonce, ciphertext, aad))
            except InvalidTag:
                out.append(None)
        return out


def seal(record, cipher=None, protected=PROTECTED, collection="users"):
    cipher = cipher or Cipher()
    return run(seal_record(record, protected, cipher.encrypt, collection=collection))


def unseal(record, cipher=None, protected=PROTECTED, collection="users"):
    cipher = cipher or Cipher()
    return run(open_record(record, protected, cipher.decrypt, collection=collection))


# --- classification ------------------------------------------------------------------------


def test_levels_are_case_insensitive_and_pii_sensitive_are_protected():
    assert CLASSES.levels == {"ssn": "PII", "salary": "SENSITIVE", "team": "INTERNAL",
                              "name": "PUBLIC"}
    assert {"ssn", "salary"} == PROTECTED
    assert CLASSES.level("team") == "INTERNAL" and CLASSES.level("other") is None
    assert Classification({"ssn": "PII"}) == Classification({"ssn": "pii"})
    assert Classification({}).protected_fields() == frozenset()


@pytest.mark.parametrize("levels,error", [
    ({"ssn": "SECRET"}, InvalidInputError), ({"ssn": ""}, InvalidInputError),
    ({"ssn": 1}, InvalidTypeError), ({1: "PII"}, InvalidTypeError),
    ({"": "PII"}, InvalidInputError), ({"a.b": "PII"}, InvalidInputError),
    ({"$or": "PII"}, InvalidInputError), ({"id": "pii"}, InvalidInputError),
    ([("ssn", "PII")], InvalidTypeError),
])
def test_bad_classifications_are_refused(levels, error):
    with pytest.raises(error):
        Classification(levels)


def test_the_key_field_may_be_public_and_is_configurable():
    assert Classification({"id": "PUBLIC"}).protected_fields() == frozenset()
    assert Classification({"id": "PII"}, id_field="key").protected_fields() == {"id"}
    with pytest.raises(InvalidInputError):
        Classification({"key": "SENSITIVE"}, id_field="key")


# --- filters -------------------------------------------------------------------------------


@pytest.mark.parametrize("where", [
    {"ssn": "123-45-6789"},
    {"ssn": {"$eq": "x"}},
    {"salary.base": {"$gt": 10}},
    {"name": "Ada", "salary": {"$in": [1, 2]}},
    {"$and": [{"name": "Ada"}, {"ssn": {"$ne": None}}]},
    {"$or": [{"name": "Ada"}, {"$and": [{"team": "x"}, {"salary": 1}]}]},
    {"$nor": [{"ssn": "x"}]},
    {"$not": {"ssn": "x"}},
    {"ssn": {"$exists": True, "$eq": "x"}},
    {"ssn": {}},
])
def test_filters_touching_a_protected_field_are_refused(where):
    with pytest.raises(InvalidFilterError, match="encrypted"):
        check_filter(where, CLASSES)
    with pytest.raises(InvalidFilterError):
        check_filter(where, PROTECTED)


@pytest.mark.parametrize("where", [
    None, {}, {"name": "Ada"}, {"team": {"$in": ["a", "b"]}, "name": {"$exists": True}},
    {"$or": [{"name": "Ada"}, {"ssn": {"$exists": False}}]},
    {"ssnx": 1}, {"name.ssn": 1}, {"$unknown": 5},
])
def test_filters_on_clear_fields_and_exists_pass(where):
    check_filter(where, CLASSES)


@pytest.mark.parametrize("where", [
    [{"ssn": 1}], {"$and": {"ssn": 1}}, {"$or": [1]}, {1: "x"}, {"$and": "name"},
])
def test_malformed_filters_are_refused(where):
    with pytest.raises(InvalidFilterError):
        check_filter(where, CLASSES)


def test_a_filter_nested_too_deeply_is_refused_not_crashed():
    where = {"name": 1}
    for _ in range(5000):
        where = {"$and": [where]}
    with pytest.raises(InvalidFilterError, match="nest"):
        check_filter(where, CLASSES)


def test_sort_and_index_fields_on_protected_fields_are_refused():
    check_fields(["name", "team"], CLASSES)
    with pytest.raises(InvalidFilterError, match=r"cannot sort by 'salary\.base'"):
        check_fields(["name", "salary.base"], CLASSES)
    with pytest.raises(InvalidFilterError, match="cannot index by"):
        check_fields(["ssn"], PROTECTED, purpose="index")
    with pytest.raises(InvalidTypeError):
        check_fields(["ssn"], "ssn")


# --- sealing -------------------------------------------------------------------------------


def test_seal_encrypts_only_protected_fields_and_open_restores_every_type():
    sealed = seal(RECORD)
    assert {k: sealed[k] for k in ("id", "name", "team")} == {"id": "u-1", "name": "Ada",
                                                               "team": "core"}
    assert is_sealed(sealed["ssn"]) and is_sealed(sealed["salary"])
    assert sealed["ssn"]["alg"] == "A256GCM" and len(sealed["ssn"]["nonce"]) == 12
    assert sealed["ssn"]["nonce"] != sealed["salary"]["nonce"]
    assert RECORD["ssn"] == "123-45-6789"  # the input is not changed
    assert unseal(sealed) == RECORD


@pytest.mark.parametrize("value", [
    "text", "", "Zoë 😀", 0, -7, 2**62, 3.25, 1e-300, True, False, None, [], [1, "a", None],
    {"nested": {"deep": [1, {"x": 2.5}]}}, b"\x00\xffraw", b"",
])
def test_values_of_every_json_type_and_bytes_round_trip(value):
    opened = unseal(seal({"id": 7, "ssn": value}))
    assert opened["ssn"] == value and type(opened["ssn"]) is type(value)


def test_nan_and_tuples_round_trip_as_json_does():
    opened = unseal(seal({"id": 1, "ssn": float("nan"), "salary": (1, 2)}))
    assert math.isnan(opened["ssn"]) and opened["salary"] == [1, 2]


def test_the_stored_form_is_standard_aes_gcm_bound_to_its_place():
    sealed = seal(RECORD)
    env = sealed["ssn"]
    aad = associated_data("users", "u-1", "ssn")
    assert json.loads(aad) == {"v": 1, "collection": "users", "id": "u-1", "field": "ssn"}
    plain = AESGCM(KEY).decrypt(env["nonce"], env["ct"], aad)
    assert plain == b'J"123-45-6789"'
    assert len(env["ct"]) == len(plain) + 16


def test_no_plaintext_of_protected_fields_appears_in_the_stored_record():
    sealed = seal(RECORD)
    blob = repr(sealed).encode() + b"".join(
        bytes(v[k]) for v in sealed.values() if is_sealed(v) for k in ("nonce", "ct"))
    for secret in (b"123-45-6789", b"91000", "Zoë €".encode(), b"bonus", b"base"):
        assert secret not in blob
    assert b"Ada" in blob  # the clear fields are there, so the search itself works


def test_a_ciphertext_moved_to_another_field_record_or_collection_fails_to_open():
    sealed = seal(RECORD)
    other = seal({**RECORD, "id": "u-2"})
    with pytest.raises(IntegrityError):
        unseal({**sealed, "salary": sealed["ssn"]})
    with pytest.raises(IntegrityError):
        unseal({**sealed, "ssn": other["ssn"]})
    with pytest.raises(IntegrityError):
        unseal(sealed, collection="admins")
    with pytest.raises(IntegrityError):
        unseal(sealed, cipher=Cipher(bytes(32)))


def test_a_modified_ciphertext_fails_to_open():
    sealed = seal(RECORD)
    ct = bytearray(sealed["ssn"]["ct"])
    ct[0] ^= 1
    with pytest.raises(IntegrityError):
        unseal({**sealed, "ssn": {**sealed["ssn"], "ct": bytes(ct)}})


@pytest.mark.parametrize("change", [
    {"alg": "A128GCM"}, {"nonce": b"short"}, {"ct": b"tiny"},
])
def test_an_envelope_with_bad_parameters_fails_to_open(change):
    sealed = seal(RECORD)
    with pytest.raises(IntegrityError):
        unseal({**sealed, "ssn": {**sealed["ssn"], **change}})


def test_a_protected_field_stored_in_the_clear_is_an_integrity_error():
    sealed = seal(RECORD)
    with pytest.raises(IntegrityError, match="clear"):
        unseal({**sealed, "ssn": "999-99-9999"})


def test_a_record_without_its_protected_fields_seals_and_opens():
    assert unseal(seal({"id": "x", "name": "n"})) == {"id": "x", "name": "n"}


def test_sealed_values_are_kept_so_a_partial_update_reencrypts_only_what_changed():
    cipher = Cipher()
    sealed = seal(RECORD, cipher)
    cipher.calls.clear()
    patched = seal({**sealed, "ssn": "000-00-0000"}, cipher)
    assert [[m[1] for m in call] for call in cipher.calls] == [["ssn"]]
    assert patched["salary"] is sealed["salary"]
    assert unseal(patched) == {**RECORD, "ssn": "000-00-0000"}


def test_a_field_reclassified_public_still_opens():
    sealed = seal(RECORD)
    opened = unseal(sealed, protected=Classification({"ssn": "PUBLIC", "salary": "PII"}))
    assert opened == RECORD


def test_stored_bytes_may_come_back_as_bytearray_or_memoryview():
    sealed = seal(RECORD)
    env = sealed["ssn"]
    back = {**sealed, "ssn": {**env, "nonce": bytearray(env["nonce"]),
                              "ct": memoryview(env["ct"])}}
    assert unseal(back) == RECORD


@pytest.mark.parametrize("value", [{1, 2}, {1: "a"}, object(), [b"nested bytes"],
                                   {"d": {"k": complex(1, 2)}}])
def test_values_that_would_not_round_trip_are_refused_before_any_encryption(value):
    cipher = Cipher()
    with pytest.raises(InvalidTypeError):
        seal({"id": 1, "ssn": "ok", "salary": value}, cipher)
    assert cipher.calls == []


def test_seal_and_open_check_their_arguments():
    with pytest.raises(InvalidInputError, match="'id'"):
        seal({"ssn": "x"})
    with pytest.raises(InvalidInputError, match="'id'"):
        unseal({"ssn": "x"})
    with pytest.raises(InvalidInputError, match="key field"):
        seal(RECORD, protected={"id", "ssn"})
    with pytest.raises(InvalidTypeError):
        seal([("id", 1)])
    with pytest.raises(InvalidInputError):
        seal({"id": object(), "ssn": "x"})
    with pytest.raises(InvalidInputError):
        seal({"id": 1, "ssn": "\ud800"})


def test_a_cipher_returning_the_wrong_type_is_caught():
    async def bad_encrypt(messages):
        return ["not bytes"] * len(messages)

    async def short_encrypt(messages):
        return []

    async def bad_decrypt(messages):
        return [42] * len(messages)

    async def short_decrypt(messages):
        return [b"J1"]

    async def junk_decrypt(messages):
        return [b"Xjunk"] * len(messages)

    with pytest.raises(InvalidTypeError):
        run(seal_record(RECORD, PROTECTED, bad_encrypt, collection="users"))
    with pytest.raises(InvalidTypeError, match="one ciphertext per message"):
        run(seal_record(RECORD, PROTECTED, short_encrypt, collection="users"))
    sealed = seal(RECORD)
    with pytest.raises(InvalidTypeError):
        run(open_record(sealed, PROTECTED, bad_decrypt, collection="users"))
    with pytest.raises(InvalidTypeError, match="per message"):
        run(open_record(sealed, PROTECTED, short_decrypt, collection="users"))
    with pytest.raises(IntegrityError, match="format 1"):
        run(open_record(sealed, PROTECTED, junk_decrypt, collection="users"))


def test_is_sealed_recognises_only_the_exact_shape():
    env = {"$enc": 1, "alg": "A256GCM", "nonce": b"n" * 12, "ct": b"c" * 20}
    assert is_sealed(env)
    assert not is_sealed({**env, "$enc": True})
    assert not is_sealed({**env, "$enc": 2})
    assert not is_sealed({**env, "extra": 1})
    assert not is_sealed({**env, "ct": "text"})
    assert not is_sealed({k: v for k, v in env.items() if k != "alg"})
    assert not is_sealed("x") and not is_sealed(None)


# --- updates by filter: sealed before the ids are known, bound by a mac ----------------------


def patch_and_bind(patch, record_id, cipher=None, collection="users"):
    cipher = cipher or Cipher()
    mac_key = run(derive_mac_key(cipher.encrypt))
    sealed = run(seal_patch(patch, PROTECTED, cipher.encrypt, collection=collection))
    return bind_record({"id": record_id, **sealed}, mac_key, collection=collection), mac_key


def unseal_bound(record, mac_key, cipher=None, collection="users"):
    cipher = cipher or Cipher()
    return run(open_record(record, PROTECTED, cipher.decrypt, collection=collection,
                           mac_key=mac_key))


def test_the_mac_key_is_the_aes_keystream_under_the_reserved_nonce():
    mac_key = run(derive_mac_key(Cipher().encrypt))
    stream = AESGCM(KEY).encrypt(MAC_KEY_NONCE, bytes(32), MAC_KEY_AAD)[:32]
    assert mac_key == stream and len(set(mac_key)) > 8
    assert run(derive_mac_key(Cipher(bytes(32)).encrypt)) != mac_key


def test_a_patch_is_sealed_under_a_null_id_and_bound_to_each_record_it_updates():
    record, mac_key = patch_and_bind({"ssn": "1-2-3", "name": "x"}, "u-9")
    env = record["ssn"]
    assert set(env) == {"$enc", "alg", "nonce", "ct", "mac"} and len(env["mac"]) == 32
    assert record["name"] == "x"
    plain = AESGCM(KEY).decrypt(env["nonce"], env["ct"], associated_data("users", None, "ssn"))
    assert plain == b'J"1-2-3"'
    assert unseal_bound(record, mac_key) == {"id": "u-9", "ssn": "1-2-3", "name": "x"}


def test_a_bound_patch_ciphertext_moved_stripped_or_unbound_fails_to_open():
    record, mac_key = patch_and_bind({"ssn": "1-2-3", "salary": 5}, "u-9")
    env = record["ssn"]
    for bad in ({**record, "id": "u-8"},                      # another record
                {**record, "salary": env},                    # another field
                {**record, "ssn": {k: v for k, v in env.items() if k != "mac"}},  # stripped
                {**record, "ssn": {**env, "mac": None}},      # never bound
                {**record, "ssn": {**env, "mac": bytes(32)}}):
        with pytest.raises(IntegrityError):
            unseal_bound(bad, mac_key)
    with pytest.raises(IntegrityError):
        unseal_bound(record, mac_key, collection="admins")
    with pytest.raises(IntegrityError):
        unseal_bound(record, None)
    with pytest.raises(IntegrityError):  # a wrong key derives a wrong mac key
        unseal_bound(record, run(derive_mac_key(Cipher(bytes(32)).encrypt)),
                     Cipher(bytes(32)))


def test_bind_leaves_envelopes_bound_by_id_alone():
    sealed = seal(RECORD)
    assert bind_record(sealed, b"k" * 32, collection="users") == sealed


def test_no_field_is_ever_sealed_under_the_reserved_nonce(monkeypatch):
    draws = iter([MAC_KEY_NONCE, MAC_KEY_NONCE, b"\x01" * 12])
    monkeypatch.setattr(fieldcrypt.secrets, "token_bytes", lambda n: next(draws))
    sealed = seal({"id": 1, "ssn": "x"})
    assert sealed["ssn"]["nonce"] == b"\x01" * 12


def test_sealing_anew_ignores_envelope_shaped_input():
    sealed = seal(RECORD)
    cipher = Cipher()
    with pytest.raises(InvalidTypeError):  # an envelope holds bytes inside a dict
        run(seal_record(sealed, PROTECTED, cipher.encrypt, collection="users",
                        keep_sealed=False))


def test_check_value_refuses_what_would_not_round_trip():
    check_value("f", {"a": [1, None, "x"]})
    check_value("f", b"raw")
    with pytest.raises(InvalidTypeError):
        check_value("f", {"a": b"nested"})
    with pytest.raises(InvalidTypeError):
        check_value("f", {1: "x"})


def test_later_hooks_merge_the_patch_as_earlier_hooks_settled_it():
    # Field encryption binds an update's ciphertexts to each record in merge(); a later
    # feature's merge must not put the unbound patch back.
    from workerbridge.storage.txn import HookChain, Hooks

    class Binder(Hooks):
        def merge(self, collection, stored, patch):
            return {**stored, **patch, "ssn": f"{patch['ssn']}@{stored['id']}"}

    class Plain(Hooks):  # the default merge: {**stored, **patch}
        pass

    chain = HookChain([Binder(), Plain()])
    merged = chain.merge("users", {"id": "u1", "ssn": "old", "name": "n"}, {"ssn": "new"})
    assert merged == {"id": "u1", "ssn": "new@u1", "name": "n"}


# --- batches: every field of many records in one call of the cipher ---------------------------


def many(n):
    return [{"id": f"u-{i}", "name": f"n{i}", "ssn": f"{i:09d}", "salary": i * 10}
            for i in range(n)]


def test_a_batch_seals_and_opens_in_one_cipher_call_each():
    cipher = Cipher()
    records = many(50)
    sealed = run(seal_records(records, PROTECTED, cipher.encrypt, collection="users"))
    assert len(cipher.calls) == 1 and len(cipher.calls[0]) == 100
    nonces = {r[f]["nonce"] for r in sealed for f in ("ssn", "salary")}
    assert len(nonces) == 100
    for record, back in zip(records, sealed, strict=True):  # each bound to its own place
        env = back["salary"]
        aad = associated_data("users", record["id"], "salary")
        assert AESGCM(KEY).decrypt(env["nonce"], env["ct"], aad) == b"J%d" % record["salary"]
    opened = run(open_records(sealed, PROTECTED, cipher.decrypt, collection="users"))
    assert opened == records and len(cipher.calls) == 2


def test_in_a_batch_the_first_record_that_fails_raises_its_own_error():
    sealed = run(seal_records(many(4), PROTECTED, Cipher().encrypt, collection="users"))
    moved = {**sealed[1], "salary": sealed[2]["salary"]}        # fails to decrypt
    clear = {**sealed[3], "ssn": "in the clear"}                # fails before decrypting
    with pytest.raises(IntegrityError, match="'salary' failed to open"):
        unseal_all([sealed[0], moved, sealed[2], clear])
    with pytest.raises(IntegrityError, match="clear"):
        unseal_all([sealed[0], clear, moved])
    assert unseal_all([sealed[0], sealed[2]]) == [many(4)[0], many(4)[2]]
    assert unseal_all([]) == []


def unseal_all(records, mac_key=None):
    return run(open_records(records, PROTECTED, Cipher().decrypt, collection="users",
                            mac_key=mac_key))


def test_records_and_patches_seal_together_and_open_as_singly_sealed_ones_do():
    cipher = Cipher()
    mac_key = run(derive_mac_key(cipher.encrypt))
    sealing = Sealing(PROTECTED, collection="users")
    sealing.record({"id": "a", "ssn": "1"})
    sealing.patch({"salary": 5, "name": "x"})
    sealing.record({"id": "b", "name": "no protected field"})
    record, patch, plain = run(sealing.run(cipher.encrypt))
    assert len(cipher.calls) == 2 and len(cipher.calls[1]) == 2
    assert patch["salary"]["mac"] is None and "mac" not in record["ssn"]
    bound = bind_record({"id": "c", **patch}, mac_key, collection="users")
    assert unseal_all([record, bound, plain], mac_key) == [
        {"id": "a", "ssn": "1"}, {"id": "c", "salary": 5, "name": "x"},
        {"id": "b", "name": "no protected field"}]


def test_a_bad_value_anywhere_in_a_batch_is_refused_before_any_encryption():
    cipher = Cipher()
    with pytest.raises(InvalidTypeError):
        run(seal_records([*many(3), {"id": "z", "ssn": {1: 2}}], PROTECTED, cipher.encrypt,
                         collection="users"))
    assert cipher.calls == []


@pytest.mark.parametrize("record_id", ["u-1", "", "Zoë \u20ac\U0001f600", 0, -7, 2**70, 2.5,
                                       1e-300, True, None, float("nan"), ["a", 1]])
@pytest.mark.parametrize("place", [("users", "ssn"), ("Zoë", "f\"q"), ("c", "\u2028")])
def test_the_associated_data_of_a_batch_is_associated_data_byte_for_byte(record_id, place):
    collection, field = place
    fast = fieldcrypt._Place(collection, record_id).aad(field)
    assert fast == associated_data(collection, record_id, field)


def test_an_id_that_cannot_be_associated_data_is_refused():
    for bad in (object(), "\ud800", b"bytes"):
        with pytest.raises(InvalidInputError, match="record id"):
            seal({"id": bad, "ssn": "x"})


def test_a_batch_never_draws_the_reserved_nonce(monkeypatch):
    redraws = [bytes([i]) * 12 for i in (1, 2, 3)]
    draws = iter([MAC_KEY_NONCE * 3, *redraws])
    monkeypatch.setattr(fieldcrypt.secrets, "token_bytes", lambda n: next(draws))
    sealed = run(seal_records([{"id": 1, "ssn": "x", "salary": 2}, {"id": 2, "ssn": "y"}],
                              PROTECTED, Cipher().encrypt, collection="users"))
    used = [r[f]["nonce"] for r in sealed for f in ("ssn", "salary") if f in r]
    assert sorted(used) == redraws
