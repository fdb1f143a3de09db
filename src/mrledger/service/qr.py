"""Patient receipts as QR codes: the compact ``mrl:/`` form (docs/receipt.md §14).

Why this shape: a receipt printed on a report must scan with an ordinary phone or webcam, so the QR is
capped at ``MAX_QR_VERSION`` with ECC level M (readable at ~0.4 mm per module, 5 cm wide, and survives a
crease or a stamp). The payload is ``MRL:/`` + base45(zlib(RFC 8785 JSON)): base45 (RFC 9285) keeps the
whole code in QR *alphanumeric* mode (5.5 bits per character), which with deflate beats base64url in
byte mode by about a fifth, and the browser inflates it with the built-in ``DecompressionStream`` — no
CBOR or zlib library in the page. CBOR was measured and not worth a second encoding: deflate already
packs hex hashes to ~4.1 bits per digit, close to their binary size.

Three forms, picked by ``qr_text`` in this order, the first whose QR fits:

* ``full`` — the ``mrl-receipt/1`` itself; verifiable fully offline.
* ``ref`` — ``mrl-qref/1`` with the record and salt but without the audit path and anchor; the page
  fetches those (public, content-free: hashes only) from ``GET …/results/{id}/proof`` and checks them.
* ``ref-min`` — ``mrl-qref/1`` without the record: the reader compares the printed record with it.

The reference never lets the node see or serve patient data to a QR holder: the proof route returns
hashes only, and needs the leaf hash (which only receipt holders, the hospital and auditors know).
"""

from __future__ import annotations

import io
import zlib
from typing import Any, Literal

import segno

from mrledger.ledger.canonical import canonicalize, parse_json
from mrledger.ledger.errors import EncodingError
from mrledger.ledger.receipt import RECEIPT_FORMAT, RECEIPT_FORMAT_V2

#: The scheme; written upper-case in the QR so every character is in the alphanumeric set.
PREFIX = "MRL:/"
REF_FORMAT = "mrl-qref/1"
#: Largest QR symbol we print (117×117 modules) and its error correction level (15 % recoverable).
MAX_QR_VERSION = 25
ERROR_LEVEL = "m"
#: Decoding bound: a version-40 alphanumeric QR holds at most 4,296 characters; inflating is capped too.
MAX_TEXT_CHARS = 4296
MAX_INFLATED_BYTES = 64 * 1024

_B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_B45_INDEX = {c: i for i, c in enumerate(_B45)}
Form = Literal["full", "ref", "ref-min"]
#: Receipt members carried by a reference; the rest (path, batch head, anchor) comes from the proof route.
_REF_KEYS = ("hospital_id", "result_id", "version", "leaf_hash", "batch_seq", "chain_id", "contract")


class QrPayloadError(EncodingError):
    """The text is not an ``mrl:/`` payload (wrong prefix, bad base45, bad deflate, not JSON)."""


def b45encode(data: bytes) -> str:
    """RFC 9285 base45: two bytes become three characters of the QR alphanumeric set."""
    out = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        n, c = divmod(n, 45)
        e, d = divmod(n, 45)
        out += [_B45[c], _B45[d], _B45[e]]
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += [_B45[c], _B45[d]]
    return "".join(out)


def b45decode(text: str) -> bytes:
    """Inverse of ``b45encode``; refuses characters outside the set and values that do not fit."""
    try:
        values = [_B45_INDEX[c] for c in text]
    except KeyError as exc:
        raise QrPayloadError(f"not base45: {exc.args[0]!r}") from exc
    if len(values) % 3 == 1:
        raise QrPayloadError("not base45: length")
    out = bytearray()
    for i in range(0, len(values), 3):
        chunk = values[i:i + 3]
        n = sum(v * 45**k for k, v in enumerate(chunk))
        if len(chunk) == 3:
            if n > 0xFFFF:
                raise QrPayloadError("not base45: triplet out of range")
            out += n.to_bytes(2, "big")
        else:
            if n > 0xFF:
                raise QrPayloadError("not base45: pair out of range")
            out.append(n)
    return bytes(out)


def encode(obj: Any) -> str:
    """``MRL:/`` + base45(zlib(JCS(obj))). Canonical JSON so one receipt always gives one QR."""
    return PREFIX + b45encode(zlib.compress(canonicalize(obj), 9))


def decode(text: str) -> Any:
    """The JSON object of an ``mrl:/`` text (scheme case-insensitive, surrounding blanks ignored)."""
    text = text.strip()
    if len(text) > MAX_TEXT_CHARS or text[:len(PREFIX)].upper() != PREFIX:
        raise QrPayloadError(f"not an {PREFIX.lower()} payload")
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(b45decode(text[len(PREFIX):]), MAX_INFLATED_BYTES)
    except zlib.error as exc:
        raise QrPayloadError(f"not deflated: {exc}") from exc
    if inflater.unconsumed_tail or not inflater.eof:
        raise QrPayloadError("deflated data truncated or larger than allowed")
    return parse_json(data)


def reference(receipt: dict[str, Any], *, with_record: bool = True) -> dict[str, Any]:
    """The ``mrl-qref/1`` of a receipt: who, which version, which leaf and batch, where anchored; with
    the record and salt (``ref``) or the salt only (``ref-min``: the reader holds the printed record)."""
    record, anchor = receipt["record"], receipt.get("anchor") or {}
    ref: dict[str, Any] = {
        "format": REF_FORMAT, "hospital_id": record["hospital_id"], "result_id": record["result_id"],
        "version": record["version"], "leaf_hash": receipt["leaf"]["hash"], "batch_seq": receipt["batch"]["seq"],
        "chain_id": anchor.get("chain_id"), "contract": anchor.get("contract"), "salt": receipt["salt"]}
    if with_record:
        ref["record"] = record
    return ref


def proof_of(receipt: dict[str, Any]) -> dict[str, Any]:
    """What the public proof route returns: the receipt without record and salt (hashes only)."""
    return {"leaf": receipt["leaf"], "audit_path": receipt["audit_path"], "batch": receipt["batch"],
            "anchor": receipt.get("anchor")}


def receipt_from_reference(ref: dict[str, Any], proof: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the ``mrl-receipt/1`` (``/2`` on a v2 registry) from a ``ref`` QR and the fetched proof. Nothing is
    trusted: the result still goes through the full verification (leaf from record+salt, path to the anchored
    root)."""
    if ref.get("format") != REF_FORMAT or "record" not in ref:
        raise QrPayloadError("only an mrl-qref/1 with a record can become a receipt")
    if proof["leaf"]["hash"] != ref["leaf_hash"] or proof["batch"]["seq"] != ref["batch_seq"]:
        raise QrPayloadError("the proof is for another leaf or batch than the QR names")
    anchor = proof.get("anchor")
    # A proof whose anchor names a v2 registry (map root, hub) rebuilds an mrl-receipt/2 (docs/receipt.md §18).
    fmt = RECEIPT_FORMAT_V2 if isinstance(anchor, dict) and "map_root" in anchor else RECEIPT_FORMAT
    return {"format": fmt, "record": ref["record"], "salt": ref["salt"], **proof}


def make(text: str) -> segno.QRCode:
    """The QR symbol of a payload, never larger than needed; boost_error raises ECC when it is free."""
    return segno.make(text, error=ERROR_LEVEL, micro=False, boost_error=True)


def qr_text(receipt: dict[str, Any], max_version: int = MAX_QR_VERSION) -> tuple[str, Form]:
    """The most self-contained payload whose QR stays within ``max_version``: full receipt, else a
    reference with the record, else a reference without it (always fits: ~200 bytes)."""
    candidates: list[tuple[Any, Form]] = [(receipt, "full"), (reference(receipt), "ref"),
                                          (reference(receipt, with_record=False), "ref-min")]
    for obj, form in candidates:
        text = encode(obj)
        if form == "ref-min" or make(text).version <= max_version:  # type: ignore[operator]
            return text, form
    raise AssertionError("unreachable")


def render(text: str, kind: Literal["png", "svg"], *, scale: int = 8, title: str = "") -> bytes:
    """PNG or SVG bytes with the standard 4-module quiet zone; SVG carries a title for screen readers."""
    buf = io.BytesIO()
    qr = make(text)
    if kind == "svg":
        qr.save(buf, kind="svg", scale=scale, border=4, title=title or None, xmldecl=False, svgns=True)
    else:
        qr.save(buf, kind="png", scale=scale, border=4)
    return buf.getvalue()
