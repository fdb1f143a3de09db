"""A node's signing and trust configuration, from its settings (docs/signatures.md §10).

Why here and not in ``mrledger.service.pki``: this is the part that reads ``Settings`` and chooses between the
configured regional CA and the development CA, which is composition, the node's job. The service layer keeps the
mechanisms (key files, trust files, ``BatchSigning``) and imports neither the node nor the dev CA.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mrledger.node.settings import Settings
from mrledger.service.pki import HOSPITALS_DIR, PKI_DIR, BatchSigning, PkiError, SigningKeys, TrustFiles
from mrledger.service.pki_dev import DevCA

log = logging.getLogger("mrledger.pki")


@dataclass(frozen=True)
class NodePki:
    """What a node signs and verifies with, from its settings."""

    trust: TrustFiles | None
    signing: BatchSigning | None
    require_signatures: bool
    dev: DevCA | None = None

    def describe(self) -> str:
        """One line for the start-up banner."""
        signs = "batches signed" if self.signing else "batches not signed here"
        if self.dev is not None:
            return f"{signs} with the dev CA in {self.dev.directory}/ (not for production)"
        trust = ", ".join(str(p) for p in self.trust.anchors) if self.trust else "none (not checked)"
        return f"{signs}; trust {trust}" + ("; unsigned receipts fail" if self.require_signatures else "")

    def info(self) -> dict[str, Any]:
        """For ``serve.json``: certificate paths (public) so tools can verify against this node's trust."""
        return {"trust_anchors": [str(p.resolve()) for p in self.trust.anchors] if self.trust else [],
                "trust_intermediates": [str(p.resolve()) for p in self.trust.intermediates] if self.trust else [],
                "signs_batches": self.signing is not None, "require_signatures": self.require_signatures}


def passphrase(settings: Settings) -> bytes | None:
    secret = settings.signing_key_passphrase
    return secret.get_secret_value().encode("utf-8") if secret is not None else None


def dev_dir(settings: Settings) -> Path:
    return settings.data_dir / PKI_DIR


def _factory(spec: str) -> Callable[[Settings], SigningKeys]:
    """``MRL_SIGNER_FACTORY``: ``module:callable``, called with the settings, returning the key source."""
    module, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise PkiError(f"MRL_SIGNER_FACTORY {spec!r} does not name a callable (module:callable): {exc}") from exc
    if not callable(factory):
        raise PkiError(f"MRL_SIGNER_FACTORY {spec!r} is not callable")
    return factory  # type: ignore[no-any-return]


def configure(settings: Settings, *, seal: bool, now: datetime | None = None) -> NodePki:
    """The node's trust and signing from ``MRL_*``. No ``MRL_TRUST_ANCHORS``: the dev CA in
    ``<data_dir>/pki`` (created when batches are signed and it is missing), which also issues keys on
    demand. ``seal``: this process runs the sealer and so needs the keys. Refuses, with the setting to
    change, what would seal unsigned batches or verify with nothing to verify against."""
    now = now or datetime.now(UTC)
    secret = passphrase(settings)
    dev: DevCA | None = None
    trust: TrustFiles | None = None
    if settings.trust_anchors:
        trust = TrustFiles(tuple(settings.trust_anchors), tuple(settings.trust_crls),
                           tuple(settings.trust_intermediates))
    elif settings.trust_crls or settings.trust_intermediates:
        raise PkiError("MRL_TRUST_CRLS / MRL_TRUST_INTERMEDIATES need MRL_TRUST_ANCHORS")
    elif DevCA.exists(dev_dir(settings)) or settings.sign_batches:
        created = not DevCA.exists(dev_dir(settings))
        dev = DevCA.create(dev_dir(settings), now, secret) if created else DevCA.load(dev_dir(settings), secret)
        if created:
            log.info("created a development CA in %s (no MRL_TRUST_ANCHORS set)", dev.directory)
        trust = dev.trust()
    signing = None
    if settings.sign_batches and seal:
        assert trust is not None  # the dev CA when nothing was configured
        keys_dir = settings.signing_keys_dir or (dev_dir(settings) / HOSPITALS_DIR if dev is not None else None)
        if settings.signer_factory:  # an HSM's key source: the dev CA never issues into it
            signing = BatchSigning(_factory(settings.signer_factory)(settings), trust)
        elif keys_dir is None:
            raise PkiError("MRL_TRUST_ANCHORS is set but MRL_SIGNING_KEYS_DIR is not: say where the hospitals' "
                           "signing keys are, or set MRL_SIGN_BATCHES=false")
        else:
            signing = BatchSigning(SigningKeys(keys_dir, secret), trust, dev)
    require = settings.require_signatures
    if require is None:
        require = settings.sign_batches and trust is not None
    if require and trust is None:
        raise PkiError("MRL_REQUIRE_SIGNATURES needs trust anchors (MRL_TRUST_ANCHORS, or the dev CA)")
    return NodePki(trust, signing, require, dev)


__all__ = ["NodePki", "configure", "dev_dir", "passphrase"]
