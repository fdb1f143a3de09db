"""The signed sealing time against the anchoring block's time (issue 14, finding 11; docs/signatures.md §4).

``sealed_at`` is the signer's own claim and the time its certificate chain is judged at; the anchoring block's
timestamp is the one independent clock. Against a real chain, through both verification paths (a patient's
receipt, a doctor's held record): sealed after the anchor → tampered; sealed long before a late anchor with a
certificate that expired meanwhile → unknown (a genuine batch anchored after a long outage looks exactly like
that); a late anchor whose certificate is still valid, or one within the bound → authentic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from mrledger.ledger import BatchHead, BatchSignature, SignatureError, TrustStore, sign_batch
from mrledger.ledger.signing import BATCH_SIGNING_EKU, SigningTimeError, check_signing_time
from tests.harness import Api
from tests.http.test_results import record, submit
from tests.http.test_verify import anchored_receipt, verify
from tests.pki import Pki

PKI = Pki("Signing time")
EKU = [(x509.ExtendedKeyUsage([BATCH_SIGNING_EKU]), False)]
DAY = timedelta(days=1)
#: Certificate validity relative to the test's now; None: 2020-2040.
ALWAYS = None


def _signed_and_anchored(api: Api, sealed_at: datetime, window: tuple[datetime, datetime]) -> dict[str, object]:
    chain = api.ledger.chain
    assert chain is not None
    leaf = PKI.hospital("gz-001", window=window, extra=EKU, key_label=f"st:{window[0]:%Y%m%d}:{window[1]:%Y%m%d}")
    api.rebuild(trust=PKI.trust())

    def sign(head: BatchHead) -> BatchSignature:
        return sign_batch(head, chain.chain_id, chain.contract, leaf.key, leaf.chain)  # type: ignore[arg-type]

    assert submit(api, record(1)).status_code == 202
    assert api.ledger.store.seal("gz-001", 100, now=sealed_at, sign=sign) is not None
    api.anchor_all()  # the anchoring block's time is now (anvil follows this machine's clock)
    return anchored_receipt(api)


@pytest.mark.anvil
@pytest.mark.parametrize(("sealed", "window", "verdict"), [
    (timedelta(hours=1), ALWAYS, "tampered"),  # "sealed" an hour after it was anchored
    (-30 * DAY, ALWAYS, "authentic"),  # anchored a month late (an outage); the certificate is still valid
    (-30 * DAY, (-60 * DAY, -10 * DAY), "unknown"),  # ... and it expired meanwhile: not corroborated
    (-3 * DAY, (-60 * DAY, -1 * DAY), "authentic"),  # expired meanwhile, but within the 7-day bound
], ids=["after-anchor", "late-anchor-valid-certificate", "late-anchor-expired-certificate", "within-bound"])
def test_the_signing_time_is_held_against_the_anchoring_block(chain_api: Api, sealed: timedelta,
                                                            window: tuple[timedelta, timedelta] | None,
                                                            verdict: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    span = ((datetime(2020, 1, 1, tzinfo=UTC), datetime(2040, 1, 1, tzinfo=UTC)) if window is None
            else (now + window[0], now + window[1]))
    receipt = _signed_and_anchored(chain_api, now + sealed, span)
    held = {"hospital_id": "gz-001", "result_id": "R1", "version": 1, "record": record(1)}
    for out in (verify(chain_api, {"receipt": receipt}), verify(chain_api, held, "doctor")):
        assert out["verdict"] == verdict, out
        if verdict == "authentic":
            assert out["signature"]["status"] == "valid"
            assert {c["name"] for c in out["checks"] if c["ok"]} >= {"signature-time"}
        else:
            assert out["failed_check"] == "signature-time" and out["signature"]["status"] == "signature-time", out
            detail = next(c["detail"] for c in out["checks"] if not c["ok"])
            assert detail.startswith("signature-time: ")
            assert out["verification_id"] is None  # nothing to decide on


def test_check_signing_time_rules() -> None:
    block = datetime(2025, 3, 1, tzinfo=UTC)
    trust: TrustStore = PKI.trust()
    # Valid when each batch below was sealed, expired by the block's time.
    leaf = PKI.hospital("gz-001", window=(datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 2, 27, tzinfo=UTC)),
                        extra=EKU, key_label="st:unit")

    def head(at: datetime) -> BatchHead:
        return BatchHead(hospital_id="gz-001", seq=1, size=1, root=bytes(32), sealed_at=at)

    def check(at: datetime, bound: timedelta = 7 * DAY) -> str | None:
        sig = sign_batch(head(at), 31337, "0x" + "ab" * 20, leaf.key, leaf.chain)  # type: ignore[arg-type]
        try:
            check_signing_time(head(at), sig, block, trust, bound)
        except SigningTimeError as exc:
            assert isinstance(exc, SignatureError) and exc.reason == "signature-time"
            return "after" if exc.after_anchor else "before"
        return None

    assert check(block + timedelta(minutes=4)) is None  # clock skew between sealer and block producer
    assert check(block + timedelta(minutes=6)) == "after"
    assert check(block - 6 * DAY) is None  # within the bound: the certificate's expiry does not matter
    assert check(block - 40 * DAY) == "before"  # beyond it, and the certificate expired before the block
    assert check(block - 40 * DAY, bound=60 * DAY) is None  # a longer configured bound
