"""Measure the QR form of typical receipts (docs/receipt.md §14): JSON bytes, deflated bytes, payload
characters and QR version per form, for audit paths of 3 to 20 hashes (a 10,000-leaf batch needs 14).

Run: .venv/bin/python scripts/qr_sizes.py
"""

from __future__ import annotations

import copy
import hashlib
import json
import zlib
from pathlib import Path

from mrledger.ledger.canonical import canonicalize
from mrledger.service import qr

BASE = json.loads((Path(__file__).parents[1] / "tests/vectors/receipt/ok_anchored.json").read_text())["receipt"]


def _h(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _panel(n: int) -> dict:
    """A blood count of n observations (realistic units and ranges)."""
    r = copy.deepcopy(BASE)
    obs = r["record"]["content"]["observations"][0]
    r["record"]["content"]["observations"] = [
        {**obs, "code": {"code": f"{7000 + i}-{i % 10}", "system": "http://loinc.org"}, "value": 4.1 + i / 10}
        for i in range(n)]
    return r


def row(name: str, receipt: dict, path_len: int) -> str:
    r = copy.deepcopy(receipt)
    r["audit_path"] = [_h(i) for i in range(path_len)]
    r["anchor"] = {"block_hash": "0x" + _h(-1), "block_number": 1234567, "chain_id": 31337,
                   "contract": "0x" + _h(-2)[:40], "tx_hash": "0x" + _h(-3)}
    js = canonicalize(r)
    out = [name, str(path_len), str(len(js)), str(len(zlib.compress(js, 9)))]
    for obj in (r, qr.reference(r), qr.reference(r, with_record=False)):
        text = qr.encode(obj)
        out.append(f"{len(text)}/v{qr.make(text).version}")
    text, form = qr.qr_text(r)
    out.append(form)
    return " | ".join(out)


if __name__ == "__main__":
    print("receipt | path | JSON B | deflated B | full chars/ver | ref chars/ver | ref-min chars/ver | chosen")
    for name, r in (("glucose (1 obs)", BASE), ("panel 5 obs", _panel(5)), ("blood count 20 obs", _panel(20))):
        for n in (3, 10, 14, 17, 20):
            print(row(name, r, n))
    # base64url in byte mode, for comparison with base45 in alphanumeric mode
    import base64

    import segno
    r = copy.deepcopy(BASE)
    r["audit_path"] = [_h(i) for i in range(14)]
    z = zlib.compress(canonicalize(r), 9)
    b64 = "mrl:/" + base64.urlsafe_b64encode(z).decode().rstrip("=")
    print("base64url byte-mode, glucose, 14 hashes:", len(b64), "chars, version",
          segno.make(b64, error="m").version, "vs base45", qr.make(qr.encode(r)).version)
