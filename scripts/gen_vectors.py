"""Generate the test vectors in tests/vectors/ from known-good inputs, plus systematic mutations.

Known-good: the Certificate Transparency reference tree of 8 leaves (RFC 6962/9162 test data used by
transparency-dev/merkle and certificate-transparency-go), whose roots and proofs
tests/ledger/test_merkle.py pins as known answers, and a fixed receipt built with a fixed salt. Signed
receipts (tests/vectors/signature/) use tests/pki.py with fixed serials: its keys are derived from labels
and every signature is deterministic (RFC 6979 ECDSA, Ed25519), so regenerating changes no byte.
Mutations are the ways proofs get broken in practice: a flipped bit, index or size off by one, a
truncated or extended path, another tree's root.

Run:  .venv/bin/python scripts/gen_vectors.py   (idempotent; rewrites tests/vectors/)
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rfc8785

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from mrledger.ledger import MerkleTree, ResultRecord, build_batch, commit, leaf_hash, sign_batch
from mrledger.ledger.receipt import Receipt
from mrledger.ledger.signing import BATCH_SIGNING_EKU
from mrledger.ledger.statusmap import (
    StatusMap,
    StatusProof,
    StatusValue,
    batch_commitment_v2,
    hub_leaf_hash,
    status_key,
)
from tests.pki import HOSPITAL_URN, Leaf, Pki, der, root

OUT = Path(__file__).resolve().parents[1] / "tests" / "vectors"
CT_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
             bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]


def _flip(h: str, bit: int = 0) -> str:
    b = bytearray(bytes.fromhex(h))
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return b.hex()


def _write(folder: str, name: str, obj: dict[str, Any]) -> None:
    path = OUT / folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def inclusion_vectors() -> None:
    hashes = [leaf_hash(x) for x in CT_LEAVES]
    for size in range(1, 9):
        tree = MerkleTree(hashes[:size])
        root = tree.root.hex()
        other_root = MerkleTree(hashes[: size - 1] or hashes[1:2]).root.hex()
        for index in range(size):
            path = [p.hex() for p in tree.inclusion_proof(index)]
            base = {"index": index, "size": size, "leaf_hash": hashes[index].hex(), "path": path, "root": root}
            stem = f"s{size}_i{index}"
            _write("inclusion", f"{stem}_ok", {**base, "desc": f"{stem} valid", "want_error": None})
            if size < 4 and index not in (0, size - 1):
                continue
            muts: list[tuple[str, dict[str, Any], str]] = [
                ("leaf_flip", {"leaf_hash": _flip(base["leaf_hash"])}, "root-mismatch"),
                ("root_swapped", {"root": other_root}, "root-mismatch"),
                ("index_plus1", {"index": index + 1}, "proof" if index + 1 >= size else "any"),
                ("path_extended", {"path": [*path, hashes[0].hex()]}, "proof"),
            ]
            if index > 0:
                muts.append(("index_minus1", {"index": index - 1}, "any"))
            # A wrong size is only detectable from the proof when it changes the path's length; otherwise
            # (e.g. the leftmost leaf of 5 vs 6 leaves) the same path fits both sizes, which is why the
            # size is bound by the anchored batch head, not by the proof.
            for name, other in (("size_plus1", size + 1), ("size_minus1", size - 1)):
                if index >= other or len(MerkleTree(hashes[:other]).inclusion_proof(index)) != len(path):
                    muts.append((name, {"size": other}, "proof"))
            if path:
                muts.append(("path_flip", {"path": [_flip(path[0], 7), *path[1:]]}, "root-mismatch"))
                muts.append(("path_truncated", {"path": path[:-1]}, "proof"))
                muts.append(("path_bad_length", {"path": [path[0][:62], *path[1:]]}, "proof"))
            for name, change, err in muts:
                _write("inclusion", f"{stem}_{name}", {**base, **change, "desc": f"{stem} {name}", "want_error": err})


def consistency_vectors() -> None:
    hashes = [leaf_hash(x) for x in CT_LEAVES]
    for new in range(1, 9):
        tree = MerkleTree(hashes[:new])
        for old in range(1, new + 1):
            old_root = MerkleTree(hashes[:old]).root.hex()
            path = [p.hex() for p in tree.consistency_proof(old)]
            base = {"old_size": old, "new_size": new, "old_root": old_root, "new_root": tree.root.hex(), "path": path}
            stem = f"o{old}_n{new}"
            _write("consistency", f"{stem}_ok", {**base, "desc": f"{stem} valid", "want_error": None})
            if old == new or new < 5:
                continue
            muts: list[tuple[str, dict[str, Any]]] = [
                ("old_root_flip", {"old_root": _flip(old_root)}),
                ("new_root_flip", {"new_root": _flip(tree.root.hex())}),
                ("sizes_swapped", {"old_size": new, "new_size": old}),
            ]
            if path:
                muts.append(("path_flip", {"path": [*path[:-1], _flip(path[-1], 3)]}))
                muts.append(("path_truncated", {"path": path[:-1]}))
            for name, change in muts:
                vec = {**base, **change, "desc": f"{stem} {name}", "want_error": "any"}
                _write("consistency", f"{stem}_{name}", vec)


RECORD = {
    "hospital_id": "qd-municipal-01", "result_id": "LAB-2024-000042", "version": 1, "kind": "lab",
    "code": {"system": "http://loinc.org", "code": "2345-7", "display": "Glucose [Mass/volume] in Serum or Plasma"},
    "subject": {"system": "urn:oid:2.16.840.1.113883.2.4.6.3", "value": "P-738291"},
    "effective": "2024-05-01T08:30:00+08:00", "issued": "2024-05-01T10:02:00+08:00", "status": "final",
    "content": {"type": "observations", "observations": [
        {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": 5.4, "unit": "mmol/L",
         "reference_range": {"low": 3.9, "high": 6.1}}]},
}


def receipt_vectors() -> None:
    record = ResultRecord.from_obj(RECORD)
    salt = bytes(range(16))
    others = [commit(record.model_copy(update={"result_id": f"LAB-{i}"}), salt) for i in range(6)]
    leaves = [*others[:3], commit(record, salt), *others[3:]]
    head, tree = build_batch(record.hospital_id, 7, leaves, datetime(2024, 5, 1, 2, 5, tzinfo=UTC))
    good = Receipt(record, salt, 3, leaves[3], tuple(tree.inclusion_proof(3)), head).to_obj()
    _write("receipt", "ok_unanchored", {"desc": "valid unanchored receipt", "receipt": good, "want_error": None})
    anchored = {**good, "anchor": {"chain_id": 31337, "contract": "0x" + "ab" * 20, "tx_hash": "0x" + "cd" * 32,
                                   "block_number": 12, "block_hash": "0x" + "ef" * 32}}
    _write("receipt", "ok_anchored", {"desc": "valid anchored receipt", "receipt": anchored, "want_error": None})
    anchor_obj = anchored["anchor"]

    def mutate(name: str, err: str | None, fn: Any) -> None:
        r = json.loads(json.dumps(good))
        fn(r)
        _write("receipt", name, {"desc": name.replace("_", " "), "receipt": r, "want_error": err})

    mutate("value_altered", "leaf-hash", lambda r: r["record"]["content"]["observations"][0].update(value=5.5))
    mutate("subject_altered", "leaf-hash", lambda r: r["record"]["subject"].update(value="P-738292"))
    mutate("status_altered", "leaf-hash", lambda r: r["record"].update(status="preliminary"))
    mutate("salt_altered", "leaf-hash", lambda r: r.update(salt=_flip(r["salt"])))
    mutate("leaf_index_minus1", "inclusion", lambda r: r["leaf"].update(index=2))
    mutate("leaf_index_out_of_range", "inclusion", lambda r: r["leaf"].update(index=7))
    mutate("path_truncated", "inclusion", lambda r: r.update(audit_path=r["audit_path"][:-1]))
    mutate("path_flip", "inclusion", lambda r: r["audit_path"].__setitem__(0, _flip(r["audit_path"][0])))
    # (size 8 would fit the same path: the size is bound by the anchored head, checked on chain)
    mutate("batch_size_below_index", "inclusion", lambda r: r["batch"].update(size=3))
    mutate("batch_root_swapped", "inclusion", lambda r: r["batch"].update(root=leaves[0].hex()))
    mutate("batch_other_hospital", "batch-identity", lambda r: r["batch"].update(hospital_id="gz-002"))
    mutate("unknown_field", "format", lambda r: r.update(note="hi"))
    mutate("wrong_format_tag", "format", lambda r: r.update(format="mrl-receipt/2"))
    mutate("upper_case_hex", "format", lambda r: r.update(salt=r["salt"].upper()))
    mutate("record_invalid", "format", lambda r: r["record"].update(version=0))
    # Another spelling of the same record or head must not verify: the leaf commits to one spelling.
    mutate("record_time_not_utc", "format", lambda r: r["record"].update(effective="2024-05-01T08:30:00+08:00"))
    mutate("record_version_as_string", "format", lambda r: r["record"].update(version="1"))
    mutate("record_null_optional", "format", lambda r: r["record"].update(supersedes=None))
    mutate("sealed_at_basic_format", "format", lambda r: r["batch"].update(sealed_at="20240501T020500Z"))
    mutate("unknown_critical_extension", "critical-extensions",
           lambda r: r.update(extensions={"x-future": {}}, critical=["x-future"]))
    mutate("noncritical_extension_ok", None, lambda r: r.update(extensions={"x-note": {"a": 1}}))

    # Settled in docs/receipt.md (issue 14 #14); one vector per rule, each failing (or passing) for that rule
    # alone. Strings of the typed record: NFC, no control character (§3).
    mutate("record_text_nfd", "format", lambda r: r["record"]["code"].update(display="Gluco\u0301se"))
    mutate("record_text_control", "format", lambda r: r["record"]["code"].update(display="Glucose\u0007"))
    mutate("record_number_beyond_2_53", "format",
           lambda r: r["record"]["content"]["observations"][0].update(value=1e16))
    # Times: calendar dates of years 0001-9999, hours 00-23, no leap second, one spelling (§3).
    mutate("record_effective_feb_30", "format", lambda r: r["record"].update(effective="2024-02-30T00:30:00Z"))
    mutate("record_issued_year_0000", "format", lambda r: r["record"].update(issued="0000-05-01T02:02:00Z"))
    mutate("record_effective_hour_24", "format", lambda r: r["record"].update(effective="2024-05-01T24:00:00Z"))
    mutate("record_effective_zero_fraction", "format",
           lambda r: r["record"].update(effective="2024-05-01T00:30:00.000Z"))
    mutate("sealed_at_leap_second", "format", lambda r: r["batch"].update(sealed_at="2024-05-01T23:59:60Z"))
    mutate("sealed_at_feb_29_non_leap_year", "format", lambda r: r["batch"].update(sealed_at="2023-02-29T02:05:00Z"))
    # The batch names its hospital as the record does (§7): a malformed id is a format failure, not an identity one.
    mutate("batch_hospital_id_bad_pattern", "format", lambda r: r["batch"].update(hospital_id="qd municipal 01"))
    # Bounds (§2, §8): leaf.index below the largest batch; chain ids within the integers JSON holds exactly.
    mutate("leaf_index_beyond_max_batch", "format", lambda r: r["leaf"].update(index=1 << 20))
    mutate("anchor_chain_id_max_ok", None, lambda r: r.update(anchor={**anchor_obj, "chain_id": 2**53 - 1}))
    mutate("anchor_chain_id_beyond_2_53", "format", lambda r: r.update(anchor={**anchor_obj, "chain_id": 2**53}))
    # Chain values: any hex case after a lower-case 0x (EIP-55 addresses), §1.
    mutate("anchor_contract_checksummed_ok", None, lambda r: r.update(
        anchor={**anchor_obj, "contract": "0x5FbDB2315678afecb367f032d93F642f64180aa3"}))
    mutate("anchor_prefix_upper_case", "format", lambda r: r.update(
        anchor={**anchor_obj, "contract": "0X" + "ab" * 20}))
    # extensions / critical (§9): an object and a list when present (never null); each critical name once.
    mutate("extensions_null", "format", lambda r: r.update(extensions=None))
    mutate("critical_null", "format", lambda r: r.update(extensions={"x-a": {}}, critical=None))
    mutate("critical_repeated", "format", lambda r: r.update(extensions={"x-a": {}}, critical=["x-a", "x-a"]))
    # The whole document nests at most 128 levels, the receipt object being level 1 (§1).
    mutate("extensions_depth_128_ok", None, lambda r: r.update(extensions={"x-deep": _nested(126)}))
    mutate("extensions_depth_129", "format", lambda r: r.update(extensions={"x-deep": _nested(127)}))
    opaque_vectors(salt)


def receipt_v2_vectors() -> None:
    """mrl-receipt/2 (docs/receipt.md §18): the v1 receipt's body with a v2 registry's anchor — the map root its
    commitment binds and the hub position (null: stored alone). Shape only: the commitment is checked on chain."""
    good = json.loads((OUT / "receipt" / "ok_anchored.json").read_text())["receipt"]
    hub = {"id": 3, "index": 5, "path": ["a1" * 32, "a2" * 32, "a3" * 32]}
    v2 = {**good, "format": "mrl-receipt/2", "anchor": {**good["anchor"], "map_root": "5e" * 32, "hub": hub}}
    _write("receipt", "v2_ok_hub", {"desc": "valid mrl-receipt/2, anchored in a hub", "receipt": v2,
                                    "want_error": None})

    def mutate(name: str, err: str | None, fn: Any) -> None:
        r = json.loads(json.dumps(v2))
        fn(r)
        _write("receipt", name, {"desc": name.replace("_", " "), "receipt": r, "want_error": err})

    mutate("v2_ok_direct", None, lambda r: r["anchor"].update(hub=None))
    mutate("v2_unanchored", "format", lambda r: r.update(anchor=None))
    mutate("v2_anchor_without_map_root", "format", lambda r: r["anchor"].pop("map_root"))
    mutate("v2_anchor_without_hub", "format", lambda r: r["anchor"].pop("hub"))
    mutate("v1_with_v2_anchor", "format", lambda r: r.update(format="mrl-receipt/1"))
    mutate("v2_map_root_upper_case", "format", lambda r: r["anchor"].update(map_root="5E" * 32))
    mutate("v2_map_root_short", "format", lambda r: r["anchor"].update(map_root="5e" * 31))
    mutate("v2_hub_id_zero", "format", lambda r: r["anchor"]["hub"].update(id=0))
    mutate("v2_hub_index_4096", "format", lambda r: r["anchor"]["hub"].update(index=4096))
    mutate("v2_hub_index_4095_ok", None, lambda r: r["anchor"]["hub"].update(index=4095))
    mutate("v2_hub_path_13", "format", lambda r: r["anchor"]["hub"].update(path=["a1" * 32] * 13))
    mutate("v2_hub_path_12_ok", None, lambda r: r["anchor"]["hub"].update(path=["a1" * 32] * 12))
    mutate("v2_hub_unknown_key", "format", lambda r: r["anchor"]["hub"].update(root="a1" * 32))
    mutate("v2_value_altered", "leaf-hash", lambda r: r["record"]["content"]["observations"][0].update(value=5.5))


def _nested(levels: int) -> list[Any]:
    """``levels`` arrays, each the only element of the one around it: ``[[[]]]`` for 3."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def _raw_leaf(record: dict[str, Any], salt: bytes) -> bytes:
    """The leaf of a record as written, hashed with RFC 8785 alone (what a producer that skipped our rules, or a
    forger, would commit): so that a vector fails only for the rule it breaks, never at leaf-hash."""
    digest = hashlib.sha256(rfc8785.dumps(record)).hexdigest()
    return leaf_hash(rfc8785.dumps({"format": "mrl-leaf/1", "hospital_id": record["hospital_id"],
                                    "result_id": record["result_id"], "version": record["version"],
                                    "salt": salt.hex(), "content_digest": digest}))


def opaque_vectors(salt: bytes) -> None:
    """Receipts of ``fhir-resource`` and ``event`` records (§3): their ``resource``/``data`` are open objects
    under the rules of opaque JSON. One batch holds them all, each with its own inclusion proof."""
    base = {k: v for k, v in ResultRecord.from_obj(RECORD).to_obj().items() if k != "content"}
    fhir = {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "valueQuantity": {"value": 5.4, "unit": "mmol/L"}}

    def fhir_record(rid: str, resource: dict[str, Any], resource_type: str = "Observation") -> dict[str, Any]:
        return {**base, "result_id": rid, "content": {"type": "fhir-resource", "resource_type": resource_type,
                                                       "resource": resource}}

    def deep(levels: int) -> Any:  # a string at depth ``levels`` below the resource object (depth 0)
        value: Any = "deepest"
        for _ in range(levels - 1):
            value = [value]
        return value

    cases: list[tuple[str, str | None, dict[str, Any]]] = [
        # Open: members the typed record does not know; null, and tab, CR and LF in its strings and keys.
        ("fhir_resource_open_ok", None, fhir_record("FHIR-1", {
            **fhir, "x-vendor\tflag": True, "x-unset": None,
            "note": [{"text": "fasting sample\r\nsecond line\tend"}]})),
        ("event_data_ok", None, {**base, "kind": "other", "result_id": "decision:01JD3S4V6Q8E2N7W0X5K9C1B2A",
                                 "content": {"type": "event", "event": "recognition-decision",
                                             "data": {"decision": "recognised", "items": [{"code": "2345-7"}]}}}),
        ("fhir_resource_depth_64_ok", None, fhir_record("FHIR-2", {**fhir, "extension": deep(64)})),
        ("fhir_resource_depth_65", "format", fhir_record("FHIR-3", {**fhir, "extension": deep(65)})),
        ("fhir_resource_key_nfd", "format", fhir_record("FHIR-4", {**fhir, "Gluco\u0301se": 1})),
        ("fhir_resource_keys_nfc_twins", "format", fhir_record("FHIR-5", {**fhir, "\u00c5": 1, "A\u030a": 2})),
        ("fhir_resource_key_control", "format", fhir_record("FHIR-6", {**fhir, "a\u0001": 1})),
        ("fhir_resource_value_control", "format", fhir_record("FHIR-7", {**fhir, "status": "final\u0007"})),
        ("fhir_resource_type_pattern", "format",
         fhir_record("FHIR-8", {**fhir, "resourceType": "observation"}, "observation")),
    ]
    records = []
    for _name, want, obj in cases:
        if want is None:  # a valid one is what the reference builds: normalised, committed by ``commit``
            obj = ResultRecord.from_obj(obj).to_obj()
        records.append(obj)
    leaves = [_raw_leaf(r, salt) for r in records]
    head, tree = build_batch(base["hospital_id"], 8, leaves, datetime(2024, 5, 1, 3, 5, tzinfo=UTC))
    for i, ((name, want, _), record) in enumerate(zip(cases, records, strict=True)):
        if want is None:
            assert commit(ResultRecord.from_obj(record), salt) == leaves[i], name
        receipt = {"format": "mrl-receipt/1", "record": record, "salt": salt.hex(),
                   "leaf": {"index": i, "hash": leaves[i].hex()},
                   "audit_path": [p.hex() for p in tree.inclusion_proof(i)], "batch": head.to_obj(), "anchor": None}
        _write("receipt", name, {"desc": name.replace("_", " "), "receipt": receipt, "want_error": want})


def receipt_text_vectors() -> None:
    """Receipts as bytes (``receipt_base64``), for what a parsed object cannot show: the byte order mark,
    invalid UTF-8, duplicate keys, trailing data, lone surrogate escapes, numbers no double holds, NaN (§1)."""
    good = json.loads((OUT / "receipt" / "ok_unanchored.json").read_text())["receipt"]
    text = json.dumps(good, indent=2).encode()

    def with_extension(value: bytes) -> bytes:
        return b'{"extensions": {"x-note": ' + value + b"}, " + text.lstrip()[1:]

    cases: list[tuple[str, bytes, str | None]] = [
        ("ok_pretty_printed", text, None),
        ("ok_reordered_compact", json.dumps(dict(reversed(list(good.items()))), separators=(",", ":")).encode(), None),
        ("ok_paired_surrogate_escape", with_extension(b'"\\ud83d\\ude00 \\u00e9"'), None),
        ("byte_order_mark", b"\xef\xbb\xbf" + text, "format"),
        ("invalid_utf8", with_extension(b'"\xff\xfe"'), "format"),
        ("overlong_utf8", with_extension(b'"\xc0\xaf"'), "format"),
        ("duplicate_key_top_level", b'{"salt": "' + good["salt"].encode() + b'", ' + text.lstrip()[1:], "format"),
        ("duplicate_key_in_record", text.replace(b'"kind": "lab"', b'"kind": "lab", "kind": "lab"'), "format"),
        ("trailing_data", text + b"\n{}", "format"),
        ("lone_surrogate_escape", with_extension(b'"\\ud800"'), "format"),
        ("lone_low_surrogate_key", with_extension(b'{"\\udc00": 1}'), "format"),
        ("number_beyond_double", with_extension(b"1e400"), "format"),
        ("number_rounding_to_zero", with_extension(b"1e-400"), "format"),
        ("nan", with_extension(b"NaN"), "format"),
        ("depth_129", with_extension(b"[" * 127 + b"]" * 127), "format"),
        ("depth_128_ok", with_extension(b"[" * 126 + b"]" * 126), None),
    ]
    for name, data, want in cases:
        _write("receipt-text", name, {"desc": name.replace("_", " "), "receipt_base64": base64.b64encode(data).decode(),
                                      "want_error": want})


def signature_vectors() -> None:
    """The worked-example receipt, signed, with the trust configuration to check it against; one vector per
    failure reason plus the ways a signature section gets mangled. ``want_error`` is the failing check,
    ``want_signature`` the verdict's signature status (docs/signatures.md §4-§5)."""
    base = json.loads((OUT / "receipt" / "ok_unanchored.json").read_text())["receipt"]
    anchor = json.loads((OUT / "receipt" / "ok_anchored.json").read_text())["receipt"]["anchor"]
    receipt = Receipt.from_obj(base)
    chain_id, contract = anchor["chain_id"], anchor["contract"]
    pki = Pki("Vectors", serials=(0x1001, 0x1002))
    ed = Pki("Vectors Ed25519", kind="ed25519", serials=(0x2001, 0x2002))
    other = Pki("Vectors Other", serials=(0x3001, 0x3002))
    hid = receipt.batch.hospital_id
    good = pki.hospital(hid, serial=0x1101)

    def signed(leaf: Leaf = good, cid: int = chain_id) -> dict[str, Any]:
        sig = sign_batch(receipt.batch, cid, contract, leaf.key, leaf.chain)  # type: ignore[arg-type]
        return receipt.with_signature(sig).to_obj()

    def trust(p: Pki = pki, crls: tuple[bytes, ...] = ()) -> dict[str, list[str]]:
        return {"roots": [p.root.pem.decode()], "intermediates": [p.intermediate.pem.decode()],
                "crls": [c.decode() for c in crls]}

    def write(name: str, obj: dict[str, Any], err: str | None, status: str, *, t: dict[str, list[str]] | None = None,
              require: bool = False, mutate: Any = None) -> None:
        obj = json.loads(json.dumps(obj))
        if mutate:
            mutate(obj)
        _write("signature", name, {"desc": name.replace("_", " "), "receipt": obj, "trust": t or trust(),
                                   "require_signature": require, "want_error": err, "want_signature": status})

    def window(a: int, b: int) -> tuple[datetime, datetime]:
        return datetime(a, 1, 1, tzinfo=UTC), datetime(b, 1, 1, tzinfo=UTC)

    ok = signed()
    write("ok_es256_unanchored", ok, None, "valid")
    write("ok_es256_anchored", {**ok, "anchor": anchor}, None, "valid", require=True)
    write("ok_ed25519", signed(ed.hospital(hid, kind="ed25519", serial=0x2101)), None, "valid", t=trust(ed))
    root_b64 = base64.b64encode(der(pki.root.cert)).decode()
    write("ok_chain_with_root", ok, None, "valid", mutate=lambda r: r["signature"]["certificates"].append(root_b64))
    write("unsigned_but_required", base, "signature", "signature-missing", require=True)
    def flip_value(r: dict[str, Any]) -> None:  # one base64 digit inside r: still DER, no longer valid
        v = r["signature"]["value"]
        r["signature"]["value"] = v[:20] + ("A" if v[20] != "A" else "B") + v[21:]

    write("value_flipped", ok, "signature", "signature-invalid", mutate=flip_value)
    write("chain_id_altered", ok, "signature", "signature-invalid", mutate=lambda r: r["signature"].update(chain_id=1))
    # seq and size are not bound by the inclusion proof (size 8 fits the same path); the signature binds them.
    write("batch_seq_altered", ok, "signature", "signature-invalid", mutate=lambda r: r["batch"].update(seq=8))
    write("batch_size_altered", ok, "signature", "signature-invalid", mutate=lambda r: r["batch"].update(size=8))
    write("anchor_other_chain", {**signed(cid=1), "anchor": anchor}, "signature", "signature-anchor-mismatch")
    write("other_hospital_certificate", signed(pki.hospital("gz-002", serial=0x1102)), "signature",
          "certificate-hospital-mismatch")
    write("untrusted_root", signed(other.hospital(hid, serial=0x3101)), "signature", "certificate-untrusted")
    expired = pki.hospital(hid, key_label="expired", serial=0x1103, window=window(2022, 2024))
    write("expired_at_sealing", signed(expired), "signature", "certificate-expired")
    write("not_yet_valid_at_sealing",
          signed(pki.hospital(hid, key_label="later", serial=0x1104, window=(datetime(2024, 6, 1, tzinfo=UTC),
                                                                             datetime(2030, 1, 1, tzinfo=UTC)))),
          "signature", "certificate-expired")
    write("revoked", ok, "signature", "certificate-revoked", t=trust(crls=(pki.intermediate.crl([0x1101]),)))
    write("not_revoked", ok, None, "valid", t=trust(crls=(pki.intermediate.crl([0x1199]),)))
    write("no_digital_signature",
          signed(pki.hospital(hid, key_label="ku", serial=0x1105, usage={"key_encipherment": True})),
          "signature", "certificate-key-usage")
    # Extended key usage and name constraints (docs/signatures.md §1): a certificate for another purpose signs
    # nothing; a CA constrained to other hospitals' URNs certifies none of this one's.
    batch_eku = (x509.ExtendedKeyUsage([BATCH_SIGNING_EKU]), False)
    write("ok_batch_signing_eku", signed(pki.hospital(hid, key_label="eku", serial=0x1106, extra=[batch_eku])), None,
          "valid")
    server_only = (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    write("eku_server_auth_only", signed(pki.hospital(hid, key_label="tls", serial=0x1107, extra=[server_only])),
          "signature", "certificate-key-usage")
    for name, prefix, err, status in (("ok_name_constraint_permits", "qd-", None, "valid"),
                                      ("name_constraint_excludes", "gz-", "signature", "certificate-untrusted")):
        nc = x509.NameConstraints(permitted_subtrees=[x509.UniformResourceIdentifier(HOSPITAL_URN + prefix)],
                                  excluded_subtrees=None)
        serial = 0x4000 + (0x100 if err else 0)
        top = root(f"Vectors NC {prefix} Root", key_label=f"nc-{prefix}:root", serial=serial + 1)
        issuing = top.issue_ca(f"Vectors NC {prefix} Issuing CA", key_label=f"nc-{prefix}:ca", serial=serial + 2,
                               extra=[(nc, True)])
        leaf = issuing.hospital(hid, key_label=f"nc-{prefix}", serial=serial + 3, extra=[batch_eku])
        write(name, signed(leaf), err, status, t={"roots": [top.pem.decode()], "intermediates": [issuing.pem.decode()],
                                                  "crls": []})
    write("unknown_alg", ok, "signature", "signature-algorithm", mutate=lambda r: r["signature"].update(alg="ES384"))
    write("certificate_garbage", ok, "signature", "signature-malformed",
          mutate=lambda r: r["signature"].update(certificates=["AAAA"]))
    write("signature_unknown_field", ok, "format", "not-checked", mutate=lambda r: r["signature"].update(note="x"))
    write("signature_null", ok, "format", "not-checked", mutate=lambda r: r.update(signature=None))
    write("signature_contract_upper_case", ok, "format", "not-checked",
          mutate=lambda r: r["signature"].update(contract=r["signature"]["contract"].upper().replace("0X", "0x")))
    write("signature_chain_id_beyond_2_53", ok, "format", "not-checked",
          mutate=lambda r: r["signature"].update(chain_id=2**53))


def statusmap_vectors() -> None:
    """mrl-smap/1 (docs/receipt.md, "Status map"): a map of 12 results of one hospital, keys from fixed salts,
    after two batches (version 2 of LAB-1 corrects it, version 2 of LAB-2 withdraws it). Each vector gives the
    root, the key and the proof (hex) and the answer a verifier must give; ``entries`` lets another
    implementation rebuild the root from scratch."""
    hid = "qd-municipal-01"

    def key(i: int) -> bytes:
        return status_key(hid, f"LAB-{i}", i.to_bytes(16, "big"))

    def leaf(i: int, version: int) -> bytes:
        return leaf_hash(f"LAB-{i} v{version}".encode())

    m = StatusMap()
    empty_root = m.root
    m.apply({key(i): StatusValue(1, "current", leaf(i, 1)) for i in range(12)})
    stale_root, stale_proof = m.root, m.prove(key(1)).to_bytes()
    m.apply({key(1): StatusValue(2, "current", leaf(1, 2)), key(2): StatusValue(2, "withdrawn", leaf(2, 2))})
    root = m.root
    entries = [{"key": key(i).hex(), "value": m.get(key(i)).to_bytes().hex()} for i in range(12)]  # type: ignore[union-attr]
    _write("statusmap", "root_from_entries", {
        "desc": "root of the map rebuilt from its entries", "entries": entries, "root": root.hex(),
        "stale_root": stale_root.hex(), "empty_root": empty_root.hex(),
        "key_inputs": {"hospital_id": hid, "result_id": "LAB-3", "secret": (3).to_bytes(16, "big").hex(),
                       "key": key(3).hex()},
        "want_error": None})
    commitment = batch_commitment_v2(bytes(range(32)), 7, root)
    _write("statusmap", "commitment_v2", {
        "desc": "v2 batch commitment SHA-256(0x04 || root || u64be(size) || map_root)",
        "batch_root": bytes(range(32)).hex(), "size": 7, "map_root": root.hex(), "commitment": commitment.hex(),
        "want_error": None})
    items = [(hashlib.sha256(f"hospital-{i}".encode()).digest(), i + 1, leaf_hash(f"commitment-{i}".encode()))
             for i in range(3)]
    hub_leaves = [hub_leaf_hash(*it) for it in items]
    hub_tree = MerkleTree(hub_leaves)
    _write("statusmap", "hub_v2", {
        "desc": "v2 hub: leaves SHA-256(0x05 || hospitalKey || u64be(seq) || commitment), RFC 9162 root and paths",
        "items": [{"hospital_key": hk.hex(), "seq": seq, "commitment": c.hex()} for hk, seq, c in items],
        "leaves": [x.hex() for x in hub_leaves], "root": hub_tree.root.hex(),
        "paths": [[p.hex() for p in hub_tree.inclusion_proof(i)] for i in range(3)], "want_error": None})

    def write(name: str, desc: str, k: bytes, proof: bytes, want: str, *, at: bytes = root,
              version: int | None = None, leaf_h: bytes | None = None) -> None:
        _write("statusmap", name, {
            "desc": desc, "root": at.hex(), "key": k.hex(), "proof": proof.hex(), "want": want,
            "want_version": version, "want_leaf_hash": leaf_h.hex() if leaf_h else None,
            "want_error": None if want != "invalid" else "invalid"})

    good = m.prove(key(5)).to_bytes()
    write("member_current", "version 1 still current", key(5), good, "current", version=1, leaf_h=leaf(5, 1))
    write("member_superseded", "a version-1 holder learns version 2 is current", key(1), m.prove(key(1)).to_bytes(),
          "current", version=2, leaf_h=leaf(1, 2))
    write("member_withdrawn", "withdrawn by version 2 (entered-in-error)", key(2), m.prove(key(2)).to_bytes(),
          "withdrawn", version=2, leaf_h=leaf(2, 2))
    absent = {"empty": None, "leaf": None}
    for i in range(100, 400):
        p = m.prove(key(i))
        kind = "empty" if p.leaf is None else "leaf"
        if absent[kind] is None:
            absent[kind] = key(i)
    for kind, k in absent.items():
        assert k is not None
        where = "an empty subtree" if kind == "empty" else "another key's leaf"
        write(f"absent_{kind}", f"absent: the key's path ends at {where}", k, m.prove(k).to_bytes(), "absent")
    write("absent_empty_map", "absent from the empty map", key(5), StatusProof((), None).to_bytes(), "absent",
          at=empty_root)
    write("stale_root_old_proof", "the old map's proof against the current root", key(1), stale_proof, "invalid")
    write("stale_root_ok_at_old", "the same proof is valid at the old root", key(1), stale_proof, "current",
          at=stale_root, version=1, leaf_h=leaf(1, 1))
    write("wrong_key", "key 5's proof offered for key 6", key(6), good, "invalid")
    member = m.prove(key(5))
    first = next(i for i, s in enumerate(member.siblings) if s is not None)
    flipped = list(member.siblings)
    flipped[first] = bytes([flipped[first][0] ^ 1]) + flipped[first][1:]  # type: ignore[index]
    write("tampered_sibling", "one sibling bit flipped", key(5), StatusProof(tuple(flipped), member.leaf).to_bytes(),
          "invalid")
    assert member.leaf is not None
    forged = StatusProof(member.siblings, (member.leaf[0], StatusValue(1, "withdrawn", member.leaf[1].leaf_hash)))
    write("tampered_status", "status byte changed to withdrawn", key(5), forged.to_bytes(), "invalid")
    write("tampered_version", "version raised", key(5), StatusProof(member.siblings, (
        member.leaf[0], StatusValue(9, "current", member.leaf[1].leaf_hash))).to_bytes(), "invalid")
    write("trailing_byte", "a byte after the proof", key(5), good + b"\x00", "invalid")
    write("truncated", "last byte missing", key(5), good[:-1], "invalid")
    write("bad_kind", "kind byte 2", key(5), b"\x02" + good[1:], "invalid")
    write("sibling_dropped", "deepest sibling removed (depth and bitmap adjusted)", key(5),
          StatusProof(member.siblings[:-1], member.leaf).to_bytes(), "invalid")
    write("empty_last_sibling", "non-canonical: the deepest sibling is EMPTY", key(5),
          StatusProof((*member.siblings, None), member.leaf).to_bytes(), "invalid")


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    inclusion_vectors()
    consistency_vectors()
    receipt_vectors()
    receipt_v2_vectors()
    receipt_text_vectors()
    signature_vectors()
    statusmap_vectors()
    for folder in sorted(OUT.iterdir()):
        print(f"{folder.name}: {len(list(folder.glob('*.json')))} vectors")


if __name__ == "__main__":
    main()
