"""Verify an ``mrl-receipt/1`` step by step and print every intermediate value (docs/receipt.md's example).

Why a separate, deliberately naive implementation: docs/receipt.md promises that a receipt can be checked
with nothing but RFC 8785, SHA-256 and the RFC 9162 path algorithm. This script does exactly that — it
imports only ``rfc8785`` and ``hashlib`` for the computation — and then cross-checks its conclusion with
``mrledger.ledger.verify_receipt``, so the worked example in the docs is computed, not copied, and the spec and
the code are checked against each other every time it runs.

Run:  .venv/bin/python scripts/explain_receipt.py [tests/vectors/receipt/ok_unanchored.json]
      (a vector file — ``{"receipt": …}`` — or a bare receipt)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rfc8785

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT = ROOT / "tests" / "vectors" / "receipt" / "ok_unanchored.json"


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def inclusion_steps(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> tuple[bytes, list[str]]:
    """RFC 9162 §2.1.3.2, narrated: returns the computed root and one line per path entry."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} not below size {size}")
    fn, sn, r = index, size - 1, leaf
    lines: list[str] = []
    for step, p in enumerate(path):
        if sn == 0:
            raise ValueError("path longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = sha256(b"\x01" + p + r)
            lines.append(f"step {step}: fn={fn} sn={sn} -> sibling on the LEFT:  r = SHA-256(01 || {p.hex()} || r)")
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha256(b"\x01" + r + p)
            lines.append(f"step {step}: fn={fn} sn={sn} -> sibling on the RIGHT: r = SHA-256(01 || r || {p.hex()})")
        lines.append(f"        r = {r.hex()}")
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("path shorter than the tree is deep")
    return r, lines


def explain(receipt: dict[str, Any]) -> tuple[bool, list[str]]:
    out: list[str] = []
    record = receipt["record"]
    canonical = rfc8785.dumps(record)
    out.append(f"1. canonical record, RFC 8785 ({len(canonical)} bytes):")
    out.append(f"   {canonical.decode('utf-8')}")
    digest = sha256(canonical)
    out.append(f"2. content_digest = SHA-256(canonical record) = {digest.hex()}")
    leaf_obj = {
        "format": "mrl-leaf/1",
        "hospital_id": record["hospital_id"],
        "result_id": record["result_id"],
        "version": record["version"],
        "salt": receipt["salt"],
        "content_digest": digest.hex(),
    }
    leaf_data = rfc8785.dumps(leaf_obj)
    out.append(f"3. leaf_data = RFC 8785 of the mrl-leaf/1 object ({len(leaf_data)} bytes):")
    out.append(f"   {leaf_data.decode('utf-8')}")
    leaf = sha256(b"\x00" + leaf_data)
    leaf_ok = leaf.hex() == receipt["leaf"]["hash"]
    out.append(f"4. leaf hash = SHA-256(00 || leaf_data) = {leaf.hex()}")
    verdict = "match" if leaf_ok else "MISMATCH"
    out.append(f"   receipt leaf.hash                        {receipt['leaf']['hash']}  -> {verdict}")
    batch = receipt["batch"]
    same_hospital = batch["hospital_id"] == record["hospital_id"]
    out.append(f"5. batch.hospital_id == record.hospital_id ({batch['hospital_id']!r}) -> {same_hospital}")
    index, size = receipt["leaf"]["index"], batch["size"]
    path = [bytes.fromhex(p) for p in receipt["audit_path"]]
    out.append(f"6. inclusion (RFC 9162 §2.1.3.2): index={index} size={size}, r = leaf hash, fn = index, sn = size - 1")
    try:
        root, lines = inclusion_steps(index, size, leaf, path)
    except ValueError as exc:
        out.append(f"   proof does not fit a tree of this size: {exc}")
        return False, out
    out.extend(f"   {line}" for line in lines)
    root_ok = root.hex() == batch["root"]
    out.append(f"   computed root {root.hex()}")
    out.append(f"   batch.root    {batch['root']}  -> {'match' if root_ok else 'MISMATCH'}")
    key = sha256(batch["hospital_id"].encode("utf-8"))
    out.append(f"7. for the on-chain check: hospitalKey = SHA-256(utf8(hospital_id)) = 0x{key.hex()},"
               f" seq = {batch['seq']}")
    head = rfc8785.dumps(batch)
    out.append(f"   batch head, RFC 8785 ({len(head)} bytes): {head.decode('utf-8')}")
    return leaf_ok and same_hospital and root_ok, out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Explain an mrl-receipt/1 verification step by step.")
    ap.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--size", type=int, help="replace batch.size first: shows which sizes the same path fits")
    args = ap.parse_args(argv)
    obj = json.loads(args.file.read_text(encoding="utf-8"))
    receipt = obj["receipt"] if "receipt" in obj and "format" not in obj else obj
    if args.size is not None:
        receipt["batch"]["size"] = args.size
    ok, lines = explain(receipt)
    print("\n".join(lines))

    from mrledger.ledger import verify_receipt  # the reference verifier, for the cross-check only

    verdict = verify_receipt(json.dumps(receipt))
    print(f"naive verifier: {'ok' if ok else 'invalid'}; mrledger.ledger.verify_receipt: {verdict.status}"
          f" (failed check: {verdict.failed})")
    if ok != verdict.ok:
        print("DISAGREEMENT between this script and mrledger.ledger.verify_receipt", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
