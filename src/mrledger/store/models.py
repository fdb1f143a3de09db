"""SQLAlchemy 2 models. Schema changes go through Alembic (store/migrations); a test proves the
migrations and these models agree.

Record versions are append-only: accepting a result inserts a row and never updates it, so the row a
receipt was made from is the row an auditor reads. Sealing moves a version from ``pending_leaves`` (a
small outbox, so finding unsealed work never scans the history) into ``batch_leaves``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: 64-bit ids on PostgreSQL; SQLite only auto-increments a column declared INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite would otherwise hand back naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime written to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        result: datetime = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return result


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Hospital(Base):
    __tablename__ = "hospitals"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: Accounts the registration asked to anchor for it, comma-separated ('': the leader's own account). The
    #: leader puts them on chain (migration 0012 says why).
    submitters: Mapped[str] = mapped_column(String(2048), default="", server_default="")


class RecordVersion(Base):
    __tablename__ = "record_versions"
    __table_args__ = (UniqueConstraint("hospital_id", "result_hmac", "version"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    hospital_id: Mapped[str] = mapped_column(ForeignKey("hospitals.id"))
    #: HMAC-SHA256 (first 16 bytes) of the result id under the database's index key (``Keyring.index``): result
    #: ids can embed patient identifiers, so the clear id lives only inside ``record_enc``. Query with
    #: ``Store.result_key``.
    result_hmac: Mapped[bytes] = mapped_column(LargeBinary(16))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    supersedes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: AES-256-GCM of the RFC 8785 JSON of the normalised record (the exact bytes whose digest is committed),
    #: bound to this row and column (``mrledger.store.crypto``; docs/encryption.md).
    record_enc: Mapped[bytes] = mapped_column(LargeBinary)
    content_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    #: AES-256-GCM of the 16-byte salt, bound like ``record_enc``.
    salt_enc: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: The result's status-map key (``mrledger.ledger.statusmap.status_key``: a salted hash, no id in it), the
    #: same on every version of one result. Null only on rows an earlier version wrote, until the store is
    #: unlocked (``store/statusmaps.py``).
    status_key: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)


class ResultAlias(Base):
    """Another name under which a result can be asked for: an Observation committed *inside* a report (a
    Bundle's DiagnosticReport folds its Observations, docs/formats.md) is findable by the Observation's own
    result id, so a doctor holding that Observation alone can verify it (service/verification.py). Both ids are
    stored as keyed hashes (``Keyring.index``), like ``record_versions.result_hmac``: ids can embed patient
    identifiers. Written in the transaction that stores the result; one alias may name several results."""

    __tablename__ = "result_aliases"
    __table_args__ = (UniqueConstraint("hospital_id", "alias_hmac", "result_hmac"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    hospital_id: Mapped[str] = mapped_column(ForeignKey("hospitals.id"))
    alias_hmac: Mapped[bytes] = mapped_column(LargeBinary(16))
    result_hmac: Mapped[bytes] = mapped_column(LargeBinary(16))


class PendingLeaf(Base):
    """Accepted but not yet sealed. Rows leave this table in the transaction that seals them."""

    __tablename__ = "pending_leaves"
    __table_args__ = (Index(None, "hospital_id", "record_version_id"),)

    record_version_id: Mapped[int] = mapped_column(ForeignKey("record_versions.id"), primary_key=True,
                                                   autoincrement=False)
    hospital_id: Mapped[str] = mapped_column(ForeignKey("hospitals.id"))
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Batch(Base):
    __tablename__ = "batches"

    hospital_id: Mapped[str] = mapped_column(ForeignKey("hospitals.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(Integer)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    sealed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: The hospital's ``mrl-batch-sig/1`` signature of the head (docs/signatures.md): the RFC 8785 JSON of
    #: ``BatchSignature.to_obj()``, exactly the receipt's ``signature`` section. Null for a batch sealed by a
    #: node that does not sign. Written in the sealing transaction, never afterwards.
    signature: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The hospital's status-map root after this batch (docs/receipt.md §15); null for batches sealed before
    #: migration 0013. Written in the sealing transaction, never afterwards.
    map_root: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)


class BatchLeaf(Base):
    __tablename__ = "batch_leaves"
    __table_args__ = (
        ForeignKeyConstraint(["hospital_id", "seq"], ["batches.hospital_id", "batches.seq"]),
        UniqueConstraint("record_version_id"),
    )

    hospital_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    record_version_id: Mapped[int] = mapped_column(ForeignKey("record_versions.id"))


class Anchor(Base):
    """The anchoring state of one batch (the outbox of the anchoring worker).

    No row: SEALED. ``submitted``: a signed transaction carrying the batch exists (``tx_id``).
    ``included``: the registry holds the root, in ``block_number``/``block_hash``. ``confirmed``: that
    block is ``MRL_CONFIRMATIONS`` deep. A reorg moves ``included`` back to ``submitted``; a lost or
    failed transaction removes the row (back to SEALED), and so does a chain that lost a recorded anchor
    (a reorg deeper than the confirmations, a chain reset: ``anchor_alarms``). Receipts carry the anchor
    once confirmed.
    """

    __tablename__ = "anchors"
    __table_args__ = (
        ForeignKeyConstraint(["hospital_id", "seq"], ["batches.hospital_id", "batches.seq"]),
        Index(None, "status"),
        Index(None, "block_number"),  # reconciliation: the anchors mined since its last round (migration 0017)
    )

    hospital_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(16))
    chain_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    contract: Mapped[str | None] = mapped_column(String(42), nullable=True)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    block_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    tx_id: Mapped[int | None] = mapped_column(ForeignKey("anchor_txs.id"), nullable=True)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: Null or 1: a v1 registry (root and size per batch); 2: one commitment word, maybe in a hub (migration 0014).
    registry_version: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    hub_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    hub_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hub_path: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class AnchorAlarm(Base):
    """Something the anchoring worker found wrong on chain and is repairing, kept for operators (``/readyz``,
    ``/metrics``, the log) and for verification: anchors of ``hospital_id`` seqs ``first_seq..last_seq`` the
    chain lost (``anchors-lost``: a reorg deeper than ``MRL_CONFIRMATIONS``, a chain reset or restored state)
    or moved to another block (``anchors-moved``). Open (``resolved_at`` null) until every batch it names is
    confirmed again. A row per hospital and event, written in the transaction that moved the batches back."""

    __tablename__ = "anchor_alarms"
    __table_args__ = (Index(None, "resolved_at"), Index(None, "hospital_id", "first_seq"))

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    hospital_id: Mapped[str] = mapped_column(String(64))
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    detail: Mapped[str] = mapped_column(Text)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SharedConfig(Base):
    """Settings the nodes of one ledger share through its database rather than through each node's files:
    e.g. the development CA's certificates (public), so a second node on the same database verifies the
    batches the first one signs instead of creating a CA of its own (docs/anchoring.md, "Two nodes")."""

    __tablename__ = "shared_config"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AnchorTx(Base):
    """A signed anchoring transaction, written *before* it is broadcast, so a crash at any point leaves
    either nothing sent or a transaction the worker can find again and rebroadcast byte for byte.
    Replacements (same nonce, higher fee) are new rows; ``status`` is pending | mined | replaced | lost."""

    __tablename__ = "anchor_txs"
    __table_args__ = (Index(None, "signer", "status"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    contract: Mapped[str] = mapped_column(String(42))
    signer: Mapped[str] = mapped_column(String(42))
    nonce: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66), unique=True)
    raw_tx: Mapped[bytes] = mapped_column(LargeBinary)
    max_fee_per_gas: Mapped[int] = mapped_column(BigInteger)
    max_priority_fee_per_gas: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Deployment(Base):
    """Where the registry lives: recorded by ``mrledger chain deploy`` so every node and receipt agrees."""

    __tablename__ = "deployments"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    contract: Mapped[str] = mapped_column(String(42), primary_key=True)
    deployed_block: Mapped[int] = mapped_column(BigInteger)
    admin: Mapped[str] = mapped_column(String(42))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    registry_version: Mapped[int] = mapped_column(SmallInteger, default=1, server_default="1")


class ApiToken(Base):
    """A bearer token. Only its SHA-256 is stored: a database dump yields no usable token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    role: Mapped[str] = mapped_column(String(80))
    label: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: The token is refused from this instant on (None: it does not expire). Migration 0008.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AccessLog(Base):
    """Who verified or audited what, when, with which verdict. Identifiers only, never patient data; the
    result id (which may embed one) is stored like ``RecordVersion``'s: keyed hash plus ciphertext."""

    __tablename__ = "access_log"
    __table_args__ = (Index(None, "at"), Index(None, "hospital_id", "result_hmac"))

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"), nullable=True)
    role: Mapped[str | None] = mapped_column(String(80), nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    hospital_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: ``Keyring.index`` of (hospital_id, result id): auditors filter by it.
    result_hmac: Mapped[bytes | None] = mapped_column(LargeBinary(16), nullable=True)
    #: The result id, AES-256-GCM bound to ``hospital_id`` and ``result_hmac``: shown to auditors.
    result_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    verdict: Mapped[str | None] = mapped_column(String(32), nullable=True)


class HospitalEligibility(Base):
    """A hospital's eligibility for one mutual-recognition category (e.g. it passed external quality
    assessment), as granted by the authority. Rows are never deleted: a revocation or a new grant closes the
    open row (``revoked_at``), so "was it eligible when that result was recognised?" stays answerable."""

    __tablename__ = "hospital_eligibility"
    __table_args__ = (Index(None, "hospital_id", "category"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    hospital_id: Mapped[str] = mapped_column(ForeignKey("hospitals.id"))
    category: Mapped[str] = mapped_column(String(64))
    #: What the grant rests on, e.g. an EQA certificate id.
    reference: Mapped[str] = mapped_column(String(256))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Verification(Base):
    """What one verification told its caller, kept so that a doctor's decision can name it
    (``verification_id`` in the answer of ``POST /v1/verify``). The id is made when the verification is
    answered; the row is written like the access log (buffered under ``mrledger serve``). Identifiers,
    verdicts and catalogue items only, never record content."""

    __tablename__ = "verifications"
    __table_args__ = (Index(None, "at"),)

    #: A ULID: time-ordered, 128 bits, 80 of them random (unguessable: holding it is what lets a doctor decide).
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"), nullable=True)
    role: Mapped[str | None] = mapped_column(String(80), nullable=True)
    #: The verified result (no foreign key: a receipt of a hospital this node never registered verifies too),
    #: its result id only as a keyed hash (``result_ref``, docs/kpis.md): result ids can embed patient ids.
    hospital_id: Mapped[str] = mapped_column(String(64))
    result_ref: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(16))
    recognition: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: Reason codes of the recognition verdict, comma-separated in the verdict's order.
    reasons: Mapped[str] = mapped_column(String(256))
    category: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: Matched catalogue items, RFC 8785 JSON ``[{"system", "code", "category"}]``.
    items: Mapped[str] = mapped_column(Text)


class Decision(Base):
    """The KPI index of a doctor's recognition decision. The decision itself is a record in the event stream
    of the doctor's hospital (``<hid>.events``), committed, sealed and anchored like a result; this row holds
    every field of that record, so the record (and its leaf) can be rebuilt from it: the audit check does
    exactly that to prove the KPI tables say what was anchored (docs/kpis.md)."""

    __tablename__ = "decisions"
    __table_args__ = (Index(None, "decided_at"), Index(None, "hospital_id", "decided_at"))

    verification_id: Mapped[str] = mapped_column(ForeignKey("verifications.id"), primary_key=True)
    #: The doctor's hospital (``doctor:<hid>`` token): whose recognition this counts for.
    hospital_id: Mapped[str] = mapped_column(ForeignKey("hospitals.id"))
    stream: Mapped[str] = mapped_column(ForeignKey("hospitals.id"))
    record_version_id: Mapped[int] = mapped_column(ForeignKey("record_versions.id"), unique=True)
    token_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())
    result_hospital_id: Mapped[str] = mapped_column(String(64))
    result_ref: Mapped[str] = mapped_column(String(64))
    result_version: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(16))
    recognition: Mapped[str] = mapped_column(String(16))
    rule_reasons: Mapped[str] = mapped_column(String(256))
    category: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: RFC 8785 JSON ``[{"system", "code", "category", "price_minor"?}]``: prices as in force when decided.
    items: Mapped[str] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(String(3))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class Encounter(Base):
    """The KPI index of a reported encounter (a doctor saw a patient for whom recognisable results existed,
    and retrieved them or not): the denominator of the retrieval rate. Like ``Decision``, a record in the
    hospital's event stream holds the same fields. The patient appears only as a keyed hash."""

    __tablename__ = "encounters"
    __table_args__ = (Index(None, "seen_at"), Index(None, "hospital_id", "seen_at"))

    hospital_id: Mapped[str] = mapped_column(ForeignKey("hospitals.id"), primary_key=True)
    #: Keyed hash of the hospital's encounter id (visit numbers can embed patient identifiers too).
    encounter_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream: Mapped[str] = mapped_column(ForeignKey("hospitals.id"))
    record_version_id: Mapped[int] = mapped_column(ForeignKey("record_versions.id"), unique=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: hex HMAC-SHA256 of the patient identifier under the regional key (docs/kpis.md).
    patient_hash: Mapped[str] = mapped_column(String(64))
    retrieved: Mapped[bool] = mapped_column(Boolean)
    #: Categories of the recognisable results, comma-separated and sorted (empty: not given).
    categories: Mapped[str] = mapped_column(String(1024))


class DataKey(Base):
    """A key of the encryption at rest (docs/encryption.md), wrapped by the master key, which is never stored
    here. ``purpose`` is ``index`` (the one HMAC key of the result-id index) or ``data`` (AES-256-GCM; the
    highest id encrypts new rows, every one decrypts the rows that name it). ``master_key_id`` is the
    fingerprint of the wrapping master key, so a wrong master key is told apart from a damaged row."""

    __tablename__ = "data_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    purpose: Mapped[str] = mapped_column(String(16))
    #: nonce || AES-256-GCM(master key, key), bound to purpose and id.
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EncryptionBacklog(Base):
    """Rows written in clear by a version before encryption at rest, still to be converted: ids
    ``next_id..last_id`` of ``table_name``. Migration 0007 fills it; the first open with a master key
    converts the rows in chunks, advancing ``next_id`` in each chunk's transaction (so the conversion is
    resumable and never converts a row twice), and deletes the entry at the end."""

    __tablename__ = "encryption_backlog"

    table_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_id: Mapped[int] = mapped_column(BigInteger)
    last_id: Mapped[int] = mapped_column(BigInteger)


class KpiCount(Base):
    """Counts of one sealed batch of an event stream, by 15-minute bucket and by every dimension a KPI report
    groups or filters on (``mrledger.store.kpi_rollup``). A sealed batch never changes, so its counts are computed
    once; a report then sums a few rows per batch instead of reading every decision and encounter."""

    __tablename__ = "kpi_rollup"
    __table_args__ = (Index(None, "bucket"), Index(None, "stream", "seq"))

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    stream: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    hospital_id: Mapped[str] = mapped_column(String(64))
    #: Start of the 15-minute UTC bucket of ``decided_at`` / ``seen_at`` (every time zone's midnight is one).
    bucket: Mapped[datetime] = mapped_column(UTCDateTime())
    #: ``d`` decision, ``e`` encounter.
    kind: Mapped[str] = mapped_column(String(1))
    #: A decision's category, an encounter's categories as indexed (comma-separated); empty when none.
    categories: Mapped[str] = mapped_column(String(1024))
    decision: Mapped[str] = mapped_column(String(16))
    recognition: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    n: Mapped[int] = mapped_column(BigInteger)
    retrieved: Mapped[int] = mapped_column(BigInteger)
    tests: Mapped[int] = mapped_column(BigInteger)
    amount_minor: Mapped[int] = mapped_column(BigInteger)


class KpiRolled(Base):
    """A batch whose counts are in ``kpi_rollup`` (one row even when it counted nothing): the marker is written in
    the transaction that writes the counts, so a batch is rolled up completely or not at all."""

    __tablename__ = "kpi_rolled"

    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)


class KpiSum(Base):
    """Counts of every counted batch together, by UTC day (``level`` ``d``) or UTC month (``m``) and by the
    dimensions of ``kpi_rollup`` (migration 0015, ``mrledger.store.kpi_levels``): a report over a year reads a dozen
    month rows per combination instead of a row per batch. Added to in the transaction that counts a batch."""

    __tablename__ = "kpi_sums"

    level: Mapped[str] = mapped_column(String(1), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    hospital_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(1), primary_key=True)
    categories: Mapped[str] = mapped_column(String(1024), primary_key=True)
    decision: Mapped[str] = mapped_column(String(16), primary_key=True)
    recognition: Mapped[str] = mapped_column(String(16), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)
    retrieved: Mapped[int] = mapped_column(BigInteger)
    tests: Mapped[int] = mapped_column(BigInteger)
    amount_minor: Mapped[int] = mapped_column(BigInteger)


class KpiRun(Base):
    """The counted batches of a stream holding records of one UTC day or month, as runs of consecutive seqs
    (``category`` ``*``: all records; otherwise those reported under that category): what a report names as its
    sources without a row per batch."""

    __tablename__ = "kpi_runs"

    level: Mapped[str] = mapped_column(String(1), primary_key=True)
    #: Before ``bucket`` in the key: a report reads one category's runs (``*`` without a filter) over a range of
    #: buckets, and a category's runs are many more than ``*``'s (its batches are rarely consecutive).
    category: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class KpiRev(Base):
    """A revision of one UTC month (``YYYY-MM``) of the KPI counts, changed by triggers in the transaction of every
    write to ``kpi_rollup``, ``kpi_sums`` or ``kpi_runs`` in that month (migration 0016): what a process checks
    before it uses a month's sums it summed before (``mrledger.store.kpi_cache``)."""

    __tablename__ = "kpi_revs"

    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    rev: Mapped[int] = mapped_column(BigInteger)


class AnchorTodo(Base):
    """A sealed batch with no anchoring state (no ``anchors`` row): the anchoring worker's queue. Kept by triggers
    on ``batches`` and ``anchors`` (migration 0017) whoever writes them, so finding what to send does not read
    every batch the ledger ever sealed."""

    __tablename__ = "anchor_todo"

    hospital_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)


class KpiTodo(Base):
    """A sealed event batch not counted yet. Written by a trigger on ``batches`` (migration 0015), deleted when the
    batch is counted: finding what to count does not scan every batch."""

    __tablename__ = "kpi_todo"

    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)


class KpiOpen(Base):
    """An event batch whose anchor is not confirmed (no ``anchors`` row, or one not ``confirmed``), kept by triggers
    on ``batches`` and ``anchors`` (migration 0015) whoever writes them: a report subtracts these few batches for
    ``anchored_only`` and names their status without reading the anchor of every batch."""

    __tablename__ = "kpi_open"

    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
