"""service/qr.py: the mrl:/ payload round-trips, refuses malformed input, and picks the form by QR size."""

from __future__ import annotations

import copy
import hashlib
import json
import zlib
from pathlib import Path

import pytest

from mrledger.ledger import verify_receipt
from mrledger.service import qr

VECTORS = Path(__file__).parents[1] / "vectors" / "receipt"
OK = json.loads((VECTORS / "ok_anchored.json").read_text())["receipt"]


def test_base45_rfc9285_examples() -> None:
    # RFC 9285 §4.3: "AB" -> "BB8", "Hello!!" -> "%69 VD92EX0", "base-45" -> "UJCLQE7W581"
    assert qr.b45encode(b"AB") == "BB8"
    assert qr.b45encode(b"Hello!!") == "%69 VD92EX0"
    assert qr.b45encode(b"base-45") == "UJCLQE7W581"
    assert qr.b45decode("QED8WEX0") == b"ietf!"


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff\xff", bytes(range(256))])
def test_base45_round_trip(data: bytes) -> None:
    assert qr.b45decode(qr.b45encode(data)) == data


@pytest.mark.parametrize("bad", ["GGW", "A", "ab", "MRL:/"])
def test_base45_refuses(bad: str) -> None:
    with pytest.raises(qr.QrPayloadError):
        qr.b45decode(bad)


def test_payload_round_trip_is_alphanumeric_and_canonical() -> None:
    text = qr.encode(OK)
    assert text.startswith("MRL:/") and set(text) <= set(qr._B45)
    assert qr.decode(text) == OK
    assert qr.decode(" mrl:/" + text[5:] + "\n") == OK  # scheme case-insensitive, blanks ignored
    assert qr.encode(json.loads(json.dumps(OK, indent=1))) == text  # one receipt, one QR


@pytest.mark.parametrize("text", ["HC1:ABC", "MRL:/" + qr.b45encode(b"not zlib"),
                                  "MRL:/" + qr.b45encode(zlib.compress(b"{\"a\":1,\"a\":2}")),
                                  "MRL:/" + qr.b45encode(zlib.compress(b"{}" * 40_000, 9))])
def test_decode_refuses(text: str) -> None:
    with pytest.raises(qr.QrPayloadError.__mro__[1]):  # EncodingError: duplicate keys come from parse_json
        qr.decode(text)


def _with_path(n: int) -> dict:
    r = copy.deepcopy(OK)
    r["audit_path"] = [hashlib.sha256(bytes([i])).hexdigest() for i in range(n)]  # incompressible, like real ones
    return r


def test_form_follows_size() -> None:
    # Measured (scripts/qr_sizes.py): 3 hashes fit version 25 in full, a 14-hash path (10,000 leaves) does not.
    text, form = qr.qr_text(OK)
    assert form == "full" and qr.make(text).version <= qr.MAX_QR_VERSION
    text, form = qr.qr_text(_with_path(14))
    assert form == "ref" and qr.make(text).version <= 21
    ref = qr.decode(text)
    assert ref["format"] == qr.REF_FORMAT and ref["record"] == OK["record"] and "audit_path" not in ref
    text, form = qr.qr_text(_with_path(14), max_version=12)
    assert form == "ref-min" and "record" not in qr.decode(text)


def test_reference_plus_proof_is_the_receipt() -> None:
    ref = qr.decode(qr.encode(qr.reference(OK)))
    rebuilt = qr.receipt_from_reference(ref, qr.proof_of(OK))
    assert rebuilt == OK and verify_receipt(rebuilt).status == "valid"
    other = qr.proof_of(OK) | {"leaf": {"index": 3, "hash": "00" * 32}}
    with pytest.raises(qr.QrPayloadError):
        qr.receipt_from_reference(ref, other)


def test_reference_plus_a_v2_proof_is_an_mrl_receipt_2() -> None:
    v2 = json.loads((VECTORS / "v2_ok_hub.json").read_text())["receipt"]
    ref = qr.decode(qr.encode(qr.reference(v2)))
    rebuilt = qr.receipt_from_reference(ref, qr.proof_of(v2))
    assert rebuilt == v2 and rebuilt["format"] == "mrl-receipt/2" and verify_receipt(rebuilt).status == "valid"


def test_render_png_and_svg() -> None:
    text = qr.encode(OK)
    assert qr.render(text, "png").startswith(b"\x89PNG")
    svg = qr.render(text, "svg", title="receipt R1")
    assert svg.startswith(b"<svg") and b"<title>receipt R1</title>" in svg
