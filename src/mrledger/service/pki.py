"""Hospital signing keys and trust configuration of a node (docs/signatures.md §10).

Why: ``mrledger.ledger.signing`` signs and verifies but does no I/O. A node has to find each hospital's current key
on disk, know whom it trusts, and notice new CRLs; the embedded default is its own CA (``mrledger.service.pki_dev``).

Files (keys 0600, created with ``O_EXCL`` so they are never readable by others, not even for a moment)::

    <signing keys dir>/<hospital_id>/<name>.key.pem    the private key (PKCS#8, encrypted with
                                                       MRL_SIGNING_KEY_PASSPHRASE when it is set)
    <signing keys dir>/<hospital_id>/<name>.crt.pem    its certificate, then the intermediates (no root)

Rotation is adding a pair: the valid certificate with the latest notBefore signs from the next batch on;
older batches keep verifying because validity is judged at each batch's ``sealed_at``. Key material is
never logged or put in an error message; paths and certificate serials are.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from mrledger.ledger import (
    BatchHead,
    BatchSignature,
    KeySigner,
    SignatureError,
    Signer,
    SigningError,
    TrustStore,
    load_certificate_chain,
    load_signing_key,
    sign_batch_with,
    verify_batch_signature,
)
from mrledger.ledger.records import HOSPITAL_ID_PATTERN
from mrledger.ledger.signing import HOSPITAL_URI_PREFIX, signs_batches
from mrledger.store.keyfiles import KeyFileError, read_private

log = logging.getLogger("mrledger.pki")

PKI_DIR = "pki"
HOSPITALS_DIR = "hospitals"
KEY_SUFFIX, CERT_SUFFIX = ".key.pem", ".crt.pem"
#: Seconds between looks at the CRL files' modification times.
CRL_RECHECK = 10.0
#: Buckets (seconds) of the signing-time histogram: an ES256 signature plus its self-check is ~0.3 ms.
SIGN_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class PkiError(SigningError):
    """A key, certificate or trust file that cannot be used; the message names the file, never its content."""


# -------------------------------------------------------------------------------- files


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` readable by its owner only from the first byte (no chmod window); never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_public(path: Path, data: bytes) -> None:
    """Write via a temporary file and a rename, so a reader (the sealer scanning for keys) never sees half."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_bytes(data)
    partial.replace(path)


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def read_key_file(path: Path, what: str) -> bytes:
    """A private key file: refused when group or others may read it (store/keyfiles.py)."""
    try:
        return read_private(path, what)
    except KeyFileError as exc:
        raise PkiError(str(exc)) from exc
    except OSError as exc:
        raise PkiError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def check_hospital_id(hospital_id: str) -> None:
    # The id becomes a directory name: the pattern (no '/', not starting with '.') keeps it inside the dir.
    if not re.fullmatch(HOSPITAL_ID_PATTERN, hospital_id):
        raise PkiError(f"{hospital_id!r} is not a hospital id (1-64 characters of A-Z a-z 0-9 . _ -)")


def split_crls(data: bytes) -> list[bytes]:
    """The CRLs of one file: every PEM ``X509 CRL`` block, or the whole file as one DER CRL."""
    if b"-----BEGIN X509 CRL-----" not in data:
        return [data]
    blocks = re.findall(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", data, re.S)
    return [b + b"\n" for b in blocks]


def load_trust(anchors: Sequence[Path], crls: Sequence[Path] = (), intermediates: Sequence[Path] = ()) -> TrustStore:
    """A TrustStore from PEM files (anchors and intermediates may be bundles; a CRL file PEM or DER).
    Configuration errors — a missing file, a CRL no configured CA signed — are raised now, with the file."""
    if not anchors:
        raise PkiError("no trust anchors given")
    roots = [read_file(p, "trust anchor file") for p in anchors]
    inter = [read_file(p, "intermediate certificate file") for p in intermediates]
    crl_items = [item for p in crls for item in split_crls(read_file(p, "CRL file"))]
    try:
        return TrustStore.from_pem(roots, crl_items, inter)
    except SigningError as exc:
        files = ", ".join(str(p) for p in (*anchors, *intermediates, *crls))
        raise PkiError(f"trust configuration ({files}): {exc}") from exc


@dataclass
class TrustFiles:
    """The node's trust store, kept in step with its CRL files: an operator replaces a CRL file and the
    next verification a few seconds later uses it — no restart, and ``replace_crls`` drops every cached
    validation, so a certificate revoked a minute ago does not keep verifying from the cache."""

    anchors: tuple[Path, ...]
    crls: tuple[Path, ...] = ()
    intermediates: tuple[Path, ...] = ()
    store: TrustStore = field(init=False)
    _stamp: tuple[int, ...] = field(init=False, default=())
    _checked: float = field(init=False, default=0.0)
    _stale: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.store = load_trust(self.anchors, self.crls, self.intermediates)
        self._stamp = self._mtimes()

    def _mtimes(self) -> tuple[int, ...]:
        return tuple(p.stat().st_mtime_ns if p.exists() else -1 for p in self.crls)

    def refresh(self, now: datetime, *, force: bool = False) -> bool:
        """Reload the CRLs if a file changed (checked every ``CRL_RECHECK`` s); warn about stale ones.
        A CRL file that no longer loads keeps the previous CRLs in force and is logged: revocation must
        not silently switch off because a download was truncated."""
        if not force and time.monotonic() - self._checked < CRL_RECHECK:
            return False
        self._checked = time.monotonic()
        changed = False
        stamp = self._mtimes()
        if stamp != self._stamp:
            try:
                self.store.replace_crls([item for p in self.crls for item in split_crls(read_file(p, "CRL file"))])
            except SigningError as exc:
                log.error("CRL files changed but cannot be used; the previous CRLs stay in force: %s", exc)
            else:
                log.info("reloaded %d CRL file(s)", len(self.crls))
                changed = True
            self._stamp = stamp
        stale = self.store.stale_crls(now)
        if stale and stale != self._stale:
            log.warning("stale CRL(s) (nextUpdate passed) of %s: still applied; install fresh ones",
                        "; ".join(stale))
        self._stale = stale
        return changed


# -------------------------------------------------------------------------------- hospital keys


@dataclass(frozen=True)
class KeyInfo:
    """One installed key pair of a hospital, as ``mrledger pki list`` shows it (no key material)."""

    hospital_id: str
    name: str
    serial: str
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    signer: Signer | None = field(default=None, repr=False, compare=False)
    problem: str | None = None

    def valid_at(self, at: datetime) -> bool:
        return self.signer is not None and self.not_before <= at <= self.not_after

    @classmethod
    def of(cls, hospital_id: str, name: str, signer: Signer) -> KeyInfo:
        """The entry for any ``Signer`` (an HSM's, say), described from its leaf certificate."""
        leaf = x509.load_der_x509_certificate(signer.certificates[0])
        return cls(hospital_id, name, f"{leaf.serial_number:x}", leaf.subject.rfc4514_string(),
                   leaf.issuer.rfc4514_string(), leaf.not_valid_before_utc, leaf.not_valid_after_utc, signer)


class SigningKeys:
    """The hospitals' signing keys in one directory. A hospital's folder is read again whenever its
    listing changes, so a pair installed while the node runs (rotation, ``mrledger pki issue``) signs from
    the next batch on; otherwise a lookup is a ``stat`` and a ``listdir``."""

    def __init__(self, directory: Path, passphrase: bytes | None = None) -> None:
        self.directory = directory
        self._passphrase = passphrase
        self._cache: dict[str, tuple[tuple[int, tuple[str, ...]], list[KeyInfo]]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the passphrase
        return f"SigningKeys({str(self.directory)!r})"

    def keys(self, hospital_id: str) -> list[KeyInfo]:
        """Every pair in the hospital's folder, oldest notBefore first; unusable ones carry ``problem``."""
        check_hospital_id(hospital_id)
        folder = self.directory / hospital_id
        try:
            # The names as well as the mtime: a filesystem with coarse timestamps could otherwise hide a pair
            # added within the same tick as the last look. Listing a folder of a few files costs microseconds.
            stamp = (folder.stat().st_mtime_ns, tuple(sorted(os.listdir(folder))))
        except (FileNotFoundError, NotADirectoryError):
            return []
        with self._lock:
            cached = self._cache.get(hospital_id)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        found = sorted((self._load(hospital_id, c) for c in folder.glob("*" + CERT_SUFFIX)),
                       key=lambda k: (k.not_before, k.name))
        with self._lock:
            self._cache[hospital_id] = (stamp, found)
        return found

    def _load(self, hospital_id: str, cert_file: Path) -> KeyInfo:
        name = cert_file.name[:-len(CERT_SUFFIX)]
        try:
            chain = load_certificate_chain(read_file(cert_file, "certificate file"))
            leaf = x509.load_der_x509_certificate(chain[0])
        except (SigningError, ValueError, IndexError):
            log.error("signing certificate %s does not decode; ignored", cert_file)
            epoch = datetime.fromtimestamp(0, UTC)
            return KeyInfo(hospital_id, name, "", "", "", epoch, epoch, problem="certificate does not decode")
        info = KeyInfo(hospital_id, name, f"{leaf.serial_number:x}", leaf.subject.rfc4514_string(),
                       leaf.issuer.rfc4514_string(), leaf.not_valid_before_utc, leaf.not_valid_after_utc)
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            named = {u[len(HOSPITAL_URI_PREFIX):] for u in san.get_values_for_type(x509.UniformResourceIdentifier)
                     if u.startswith(HOSPITAL_URI_PREFIX)}
        except x509.ExtensionNotFound:
            named = set()
        problem = None
        if named != {hospital_id}:
            problem = f"the certificate names {sorted(named) or 'no hospital'}, not {hospital_id}"
        else:
            try:
                key = load_signing_key(read_key_file(cert_file.with_name(name + KEY_SUFFIX), "key file"),
                                       self._passphrase)
                return replace(info, signer=KeySigner(key, chain))
            except SigningError as exc:  # wrong passphrase, key of another certificate, missing key file
                problem = str(exc)
        log.error("signing key %s of %s is not usable: %s", name, hospital_id, problem)
        return replace(info, problem=problem)

    def current(self, hospital_id: str, at: datetime) -> KeyInfo | None:
        """The pair that signs a batch sealed at ``at``: among the usable certificates valid then, the one
        with the latest notBefore (ties: the latest file name) — the newest rotation wins."""
        valid = [k for k in self.keys(hospital_id) if k.valid_at(at)]
        return valid[-1] if valid else None


# -------------------------------------------------------------------------------- signing batches


class SignStats:
    """Time spent signing batches (signature and self-check), as a Prometheus histogram's cumulative
    buckets, sum and count. Kept in memory: it measures this node's sealer, not the ledger. ``memory``:
    shared cells (``mrledger.node.background.shared_sign_stats``), when the sealer runs in another process than
    the /metrics endpoint; ``cells`` of them, the bucket counts then the sum."""

    def __init__(self, buckets: Sequence[float] = SIGN_BUCKETS, memory: Any = None) -> None:
        self.buckets = tuple(buckets)
        self.memory = memory
        size = self.cells(self.buckets)
        if memory is None:
            self._cells: Any = [0.0] * size
            self._lock: Any = threading.Lock()
        else:
            if len(memory) != size:
                raise ValueError(f"shared sign stats need {size} cells, got {len(memory)}")
            self._cells, self._lock = memory, memory.get_lock()

    @staticmethod
    def cells(buckets: Sequence[float] = SIGN_BUCKETS) -> int:
        return len(buckets) + 2  # each bucket, +Inf, the sum

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._cells[bisect_left(self.buckets, seconds)] += 1
            self._cells[-1] += seconds

    def snapshot(self) -> tuple[list[tuple[str, int]], float, int]:
        """(cumulative (le, count) pairs ending with +Inf, sum, count)."""
        with self._lock:
            values = list(self._cells)
        counts, total = [int(v) for v in values[:-1]], values[-1]
        cumulative, running = [], 0
        for bound, n in zip((*[repr(b) for b in self.buckets], "+Inf"), counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return cumulative, total, running


class KeyIssuer(Protocol):
    """Issues a hospital a signing key and certificate on demand: the dev CA (``mrledger.service.pki_dev.DevCA``),
    named by what it does so that this module does not import the CA built on top of it."""

    def issue(self, hospital_id: str, keys_dir: Path, now: datetime, name: str | None = None) -> Path: ...


class NoSigningKeyError(PkiError):
    """No usable, valid signing certificate for the hospital: its batches wait (unsealed) until one is there."""


@dataclass
class BatchSigning:
    """What the sealer signs with: each hospital's current key, checked against the node's own trust.

    Every signature is verified with the trust store before the seal commits: a batch signed with an
    expired, revoked or untrusted certificate would be refused by every doctor, so it is better not sealed
    at all (the results stay pending and the log says why). ``dev``: issue a key for a hospital that has
    none (the embedded default), so hospitals registered while the node runs sign too."""

    keys: SigningKeys
    trust: TrustFiles
    dev: KeyIssuer | None = None
    stats: SignStats = field(default_factory=SignStats)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def ensure_key(self, hospital_id: str, at: datetime | None = None) -> KeyInfo | None:
        """The hospital's current pair; in dev mode one is issued when there is none, or when the current one
        predates the batch-signing extended key usage (docs/signatures.md §1): the old certificate keeps
        verifying the batches it signed, the new one signs from now on."""
        at = at or self.clock()
        current = self.keys.current(hospital_id, at)
        stale = (current is not None and current.signer is not None
                 and not signs_batches(x509.load_der_x509_certificate(current.signer.certificates[0])))
        if (current is None or stale) and self.dev is not None:
            path = self.dev.issue(hospital_id, self.keys.directory, min(at, self.clock()))
            log.info("dev PKI: issued a signing certificate for %s (%s)", hospital_id, path)
            current = self.keys.current(hospital_id, at)
        return current

    def sign(self, head: BatchHead, chain_id: int, contract: str) -> BatchSignature:
        current = self.ensure_key(head.hospital_id, head.sealed_at)
        if current is None or current.signer is None:
            raise NoSigningKeyError(
                f"no usable signing certificate of {head.hospital_id} valid at {head.sealed_at:%Y-%m-%dT%H:%M:%SZ} in "
                f"{self.keys.directory / head.hospital_id}/ (install <name>.key.pem and <name>.crt.pem there)")
        start = time.perf_counter()
        signature = sign_batch_with(head, chain_id, contract, current.signer)
        try:
            verify_batch_signature(head, signature, self.trust.store)
        except SignatureError as exc:
            raise PkiError(f"{head.hospital_id}'s certificate {current.name} (serial {current.serial}) makes "
                           f"signatures this node's trust configuration rejects: {exc}") from exc
        self.stats.observe(time.perf_counter() - start)
        return signature

    def for_chain(self, chain_id: int, contract: str) -> Callable[[BatchHead], BatchSignature]:
        """The callback ``Store.seal`` runs inside its transaction."""
        return lambda head: self.sign(head, chain_id, contract)


__all__ = [
    "BatchSigning",
    "KeyInfo",
    "KeyIssuer",
    "NoSigningKeyError",
    "PkiError",
    "SignStats",
    "SigningKeys",
    "TrustFiles",
    "load_trust",
    "split_crls",
    "write_private",
]
