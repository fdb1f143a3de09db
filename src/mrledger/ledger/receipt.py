"""The patient-held receipt, ``mrl-receipt/1`` and ``mrl-receipt/2`` (documented in docs/receipt.md, schema in
docs/receipt.schema.json).

The two formats differ only in the anchor section. A v1 registry stores (root, size) per batch; a v2 registry
stores one word, ``SHA-256(0x04 || root || u64be(size) || map_root)`` (``statusmap.batch_commitment_v2``),
directly or inside a hub, so a receipt of a batch anchored there must carry the map root and, for a hub, the
hub's id and the RFC 9162 path of the batch's hub leaf: ``mrl-receipt/2`` is a receipt whose anchor names a
v2 registry (docs/receipt.md §18). A receipt with no anchor yet is always written as ``mrl-receipt/1``: there
is one spelling for it, and every ``mrl-receipt/1`` ever issued keeps its meaning.

Consensus-critical: receipts live for years in patients' hands, so the format is versioned and parsed
strictly. Unknown top-level fields are refused; forward-compatible additions go under ``extensions``,
and an extension a verifier must understand is listed in ``critical`` — a verifier that does not know a
critical extension refuses the receipt instead of silently ignoring it (the X.509 rule).

The optional ``signature`` section (``mrledger.ledger.signing.BatchSignature``) is the hospital's signature over
the batch head. It is a top-level field rather than an extension because its meaning is fixed by this
version; a receipt without it is exactly the receipt it always was.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mrledger.ledger.batch import MAX_BATCH_SIZE, MAX_CHAIN_ID, BatchHead
from mrledger.ledger.canonical import canonicalize, parse_hex, parse_json
from mrledger.ledger.errors import EncodingError, RecordError
from mrledger.ledger.leaf import SALT_BYTES
from mrledger.ledger.merkle import HASH_SIZE, MAX_PATH_LENGTH
from mrledger.ledger.records import ResultRecord
from mrledger.ledger.signing import BatchSignature

RECEIPT_FORMAT = "mrl-receipt/1"
#: A receipt whose batch is anchored on a v2 registry (one commitment word per batch, hubs).
RECEIPT_FORMAT_V2 = "mrl-receipt/2"
RECEIPT_FORMATS = (RECEIPT_FORMAT, RECEIPT_FORMAT_V2)
#: The non-critical extension that carries the salt of the result's first stored version (docs/receipt.md §17).
STATUS_SECRET_EXTENSION = "status_secret"
#: Critical extensions this version of the verifier understands.
KNOWN_CRITICAL: frozenset[str] = frozenset()
_FIELDS = {"format", "record", "salt", "leaf", "audit_path", "batch", "anchor", "signature", "extensions", "critical"}
_REQUIRED = _FIELDS - {"anchor", "signature", "extensions", "critical"}


def _chain_hex(value: Any, size: int, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise EncodingError(f"{what} must be 0x-prefixed hex")
    parse_hex(value[2:].lower(), size=size, what=what)
    return value


#: Ethereum block numbers are uint64 (the registry records the anchoring block as one too).
MAX_BLOCK_NUMBER = 2**64 - 1


def _int(value: Any, what: str, minimum: int = 0, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise EncodingError(f"{what} must be an integer >= {minimum}")
    if maximum is not None and value > maximum:
        raise EncodingError(f"{what} must be an integer <= {maximum}")
    return value


#: The v2 registry's ``MAX_HUB_ITEMS``: a hub path is at most ceil(log2(4096)) = 12 hashes long.
MAX_HUB_ITEMS = 4096
MAX_HUB_PATH = 12


@dataclass(frozen=True, slots=True)
class HubPosition:
    """Where a batch's commitment sits in a v2 registry hub (many hospitals' batches anchored in one
    transaction): the hub's id, the batch's index among the hub's items and the RFC 9162 inclusion path of its
    hub leaf (``statusmap.hub_leaf_hash``) under the hub root the registry stores."""

    hub_id: int
    index: int
    path: tuple[bytes, ...]

    def to_obj(self) -> dict[str, Any]:
        return {"id": self.hub_id, "index": self.index, "path": [p.hex() for p in self.path]}

    @classmethod
    def from_obj(cls, obj: Any) -> HubPosition:
        if not isinstance(obj, dict) or set(obj) != {"id", "index", "path"}:
            raise EncodingError("anchor.hub must have exactly id, index, path")
        path = obj["path"]
        if not isinstance(path, list) or len(path) > MAX_HUB_PATH:
            raise EncodingError(f"anchor.hub.path must be a list of at most {MAX_HUB_PATH} hashes")
        return cls(hub_id=_int(obj["id"], "anchor.hub.id", 1, MAX_BLOCK_NUMBER),
                   index=_int(obj["index"], "anchor.hub.index", maximum=MAX_HUB_ITEMS - 1),
                   path=tuple(parse_hex(p, size=HASH_SIZE, what="anchor.hub.path entry") for p in path))


_ANCHOR_V1 = {"chain_id", "contract", "tx_hash", "block_number", "block_hash"}
_ANCHOR_V2 = _ANCHOR_V1 | {"map_root", "hub"}


@dataclass(frozen=True, slots=True)
class Anchor:
    """Where the batch was anchored. Chain values keep Ethereum's 0x spelling; checking them needs a JSON-RPC
    endpoint (anchoring layer), so offline verification only checks their shape.

    ``map_root`` is set exactly when the registry is a v2 one (its commitment binds the hospital's status map
    root as of this batch); ``hub`` then says whether the commitment was stored alone (None) or in a hub."""

    chain_id: int
    contract: str
    tx_hash: str
    block_number: int
    block_hash: str
    map_root: bytes | None = None
    hub: HubPosition | None = None

    @property
    def registry_version(self) -> int:
        return 1 if self.map_root is None else 2

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "chain_id": self.chain_id,
            "contract": self.contract,
            "tx_hash": self.tx_hash,
            "block_number": self.block_number,
            "block_hash": self.block_hash,
        }
        if self.map_root is not None:
            obj["map_root"] = self.map_root.hex()
            obj["hub"] = None if self.hub is None else self.hub.to_obj()
        return obj

    @classmethod
    def from_obj(cls, obj: Any, version: int = 1) -> Anchor:
        fields = _ANCHOR_V1 if version == 1 else _ANCHOR_V2
        if not isinstance(obj, dict) or set(obj) != fields:
            raise EncodingError(f"anchor must have exactly {', '.join(sorted(fields))} (mrl-receipt/{version})")
        return cls(
            chain_id=_int(obj["chain_id"], "anchor.chain_id", 1, MAX_CHAIN_ID),
            contract=_chain_hex(obj["contract"], 20, "anchor.contract"),
            tx_hash=_chain_hex(obj["tx_hash"], 32, "anchor.tx_hash"),
            block_number=_int(obj["block_number"], "anchor.block_number", maximum=MAX_BLOCK_NUMBER),
            block_hash=_chain_hex(obj["block_hash"], 32, "anchor.block_hash"),
            map_root=None if version == 1 else parse_hex(obj["map_root"], size=HASH_SIZE, what="anchor.map_root"),
            hub=None if version == 1 or obj["hub"] is None else HubPosition.from_obj(obj["hub"]),
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    record: ResultRecord
    salt: bytes
    leaf_index: int
    leaf_hash: bytes
    audit_path: tuple[bytes, ...]
    batch: BatchHead
    anchor: Anchor | None = None
    extensions: dict[str, Any] = field(default_factory=dict)
    critical: tuple[str, ...] = ()
    signature: BatchSignature | None = None

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "format": self.format,
            "record": self.record.to_obj(),
            "salt": self.salt.hex(),
            "leaf": {"index": self.leaf_index, "hash": self.leaf_hash.hex()},
            "audit_path": [p.hex() for p in self.audit_path],
            "batch": self.batch.to_obj(),
            "anchor": self.anchor.to_obj() if self.anchor else None,
        }
        if self.signature is not None:  # omitted, never null: unsigned receipts keep their exact bytes
            obj["signature"] = self.signature.to_obj()
        if self.extensions:
            obj["extensions"] = self.extensions
        if self.critical:
            obj["critical"] = list(self.critical)
        return obj

    @property
    def format(self) -> str:
        return RECEIPT_FORMAT_V2 if self.anchor is not None and self.anchor.registry_version == 2 else RECEIPT_FORMAT

    def to_json(self) -> str:
        """Canonical JSON, so the same receipt always serialises to the same bytes."""
        return canonicalize(self.to_obj()).decode("utf-8")

    def with_anchor(self, anchor: Anchor | None) -> Receipt:
        return dataclasses.replace(self, anchor=anchor)

    def with_signature(self, signature: BatchSignature | None) -> Receipt:
        return dataclasses.replace(self, signature=signature)

    @classmethod
    def from_json(cls, data: bytes | str) -> Receipt:
        return cls.from_obj(parse_json(data))

    @classmethod
    def from_obj(cls, obj: Any) -> Receipt:
        """Strict parse. Raises EncodingError (shape) or RecordError (the embedded record)."""
        if not isinstance(obj, dict):
            raise EncodingError("a receipt must be a JSON object")
        if obj.get("format") not in RECEIPT_FORMATS:
            raise EncodingError(f"unsupported receipt format {obj.get('format')!r}, expected one of "
                                f"{', '.join(RECEIPT_FORMATS)}")
        version = 1 if obj["format"] == RECEIPT_FORMAT else 2
        if version == 2 and obj.get("anchor") is None:
            # One spelling per receipt: a receipt not anchored yet is an mrl-receipt/1 whatever its registry.
            raise EncodingError("an mrl-receipt/2 names its v2 anchor; a receipt with no anchor is mrl-receipt/1")
        unknown = set(obj) - _FIELDS
        if unknown:
            raise EncodingError(f"unknown receipt fields: {sorted(unknown)} (use 'extensions')")
        missing = _REQUIRED - set(obj)
        if missing:
            raise EncodingError(f"missing receipt fields: {sorted(missing)}")
        leaf = obj["leaf"]
        if not isinstance(leaf, dict) or set(leaf) != {"index", "hash"}:
            raise EncodingError("leaf must have exactly index and hash")
        path = obj["audit_path"]
        if not isinstance(path, list) or len(path) > MAX_PATH_LENGTH:
            raise EncodingError(f"audit_path must be a list of at most {MAX_PATH_LENGTH} hashes")
        extensions = obj.get("extensions", {})
        critical = obj.get("critical", [])
        if not isinstance(extensions, dict):
            raise EncodingError("extensions must be an object")
        if not isinstance(critical, list) or not all(isinstance(c, str) and c in extensions for c in critical):
            raise EncodingError("critical must list names of present extensions")
        if len(set(critical)) != len(critical):
            raise EncodingError("critical must name each extension once")
        if STATUS_SECRET_EXTENSION in extensions:
            # The one extension this version defines (docs/receipt.md §17): parsed here, so that a receipt every
            # verifier and the JSON Schema accept names its status key or has none.
            parse_hex(extensions[STATUS_SECRET_EXTENSION], size=SALT_BYTES,
                      what=f"extensions.{STATUS_SECRET_EXTENSION}")
        if not isinstance(obj["record"], dict):
            raise RecordError("record must be a JSON object")
        record = ResultRecord.from_obj(obj["record"])
        if canonicalize(obj["record"]) != record.canonical_bytes():
            # The leaf commits to the normalised record. Accepting another spelling here would let this
            # verifier pass receipts that a verifier hashing the record as written (RFC 8785 + SHA-256
            # only, as docs/receipt.md specifies) rejects: one leaf, many receipts, two verdicts.
            raise EncodingError("record is not in normalised form (UTC 'Z' times, NFC text, no nulls)")
        return cls(
            record=record,
            salt=parse_hex(obj["salt"], size=SALT_BYTES, what="salt"),
            # Past the largest batch no index can be in one (a format failure); below it but not below
            # batch.size is the inclusion check's first precondition (docs/receipt.md §6).
            leaf_index=_int(leaf["index"], "leaf.index", maximum=MAX_BATCH_SIZE - 1),
            leaf_hash=parse_hex(leaf["hash"], size=HASH_SIZE, what="leaf.hash"),
            audit_path=tuple(parse_hex(p, size=HASH_SIZE, what="audit_path entry") for p in path),
            batch=BatchHead.from_obj(obj["batch"]),
            anchor=None if obj.get("anchor") is None else Anchor.from_obj(obj["anchor"], version),
            extensions=extensions,
            critical=tuple(critical),
            # Absent means unsigned; ``null`` is refused (BatchSignature.from_obj) so there is one spelling.
            signature=None if "signature" not in obj else BatchSignature.from_obj(obj["signature"]),
        )
