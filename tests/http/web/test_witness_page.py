"""Issue 19 in the browser: the /verify page can require k of the doctor's n witnesses (``mrl-witness/1``
checkpoints) to vouch for a receipt's batch, checked in the page (static/witness.js ports
``ledger.witness.verify_witness_checkpoints``). The port answers as Python does on every document set below,
signed with ``sign_checkpoint``; end to end, with checkpoints served over HTTP from other origins, a receipt reads
AUTHENTIC only while both witnesses vouch, and otherwise says why. Real Chromium, real anvil."""

from __future__ import annotations

import base64
import copy
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Page

from mrledger.ledger.canonical import canonicalize, parse_json
from mrledger.ledger.errors import EncodingError
from mrledger.ledger.witness import (
    WITNESS_FORMAT,
    WitnessError,
    chain_hash,
    sign_checkpoint,
    verify_witness_checkpoints,
)
from tests.harness import CorsHandler, witness_site
from tests.http.web.conftest import Served
from tests.http.web.test_kpi_pages import _fresh_receipt
from tests.http.web.test_pages import HID, VERDICT, _axe, _receipt, _seed, _verdict

pytestmark = pytest.mark.anvil

CONTRACT = "0x" + "ab" * 20
ROOTS = {s: bytes([s]) * 32 for s in range(1, 6)}
KEYS = {name: Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i, name in enumerate(("a", "b", "c"), 1)}
PUBLIC = {name: k.public_key().public_bytes_raw() for name, k in KEYS.items()}
STRANGER = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
FORKED = {**ROOTS, 2: b"\xee" * 32}


def checkpoint(seq: int, *, from_seq: int = 1, roots: dict[int, bytes] = ROOTS, **over: Any) -> dict[str, Any]:
    commitment = bytes(32)
    for s in range(from_seq, seq + 1):
        commitment = chain_hash(commitment, s, roots[s], 2)
    c = {"format": WITNESS_FORMAT, "chain_id": 31337, "contract": CONTRACT, "hospital_id": HID,
         "from_seq": from_seq, "seq": seq, "root": roots[seq].hex(), "size": 2, "commitment": commitment.hex(),
         "block": 100 + seq, "time": "2026-12-02T19:00:00Z"}
    c.update(over)
    return c


def signed(seq: int, who: str | Ed25519PrivateKey = "a", **over: Any) -> dict[str, Any]:
    return sign_checkpoint(checkpoint(seq, **over), KEYS[who] if isinstance(who, str) else who)


def text(document: Any) -> bytes:
    return json.dumps(document).encode()


def edited(document: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    out = copy.deepcopy(document)
    change(out)
    return out


def flip_signature(d: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(d["signature"]))
    raw[5] ^= 1
    d["signature"] = base64.b64encode(raw).decode()


def signed_anyway(c: dict[str, Any], who: str = "a") -> dict[str, Any]:
    """A document signed over exactly this checkpoint, bypassing sign_checkpoint's shape check (a witness that
    signs nonsense): what the verifiers must then refuse is the shape."""
    key = KEYS[who]
    return {"checkpoint": c, "alg": "Ed25519", "key": base64.b64encode(PUBLIC[who]).decode(),
            "signature": base64.b64encode(key.sign(canonicalize(c))).decode()}


def spelled(seq: int, field: str, spelling: str, who: str = "a") -> bytes:
    """A validly signed document with one integer field re-spelled in the JSON text (7 as 7.0, …): the bytes
    signed are those of the integer, so only a parser that reads the spelling as that integer accepts it."""
    doc = signed(seq, who)
    value = doc["checkpoint"][field]
    raw = text(doc)
    needle = f'"{field}": {value}'.encode()
    assert raw.count(needle) == 1
    return raw.replace(needle, f'"{field}": {spelling}'.encode())


def minus_zero(who: str = "b") -> bytes:
    """size 0 spelled -0: the integer 0 to Python, -0 to JavaScript; both sign and canonicalise it as 0."""
    raw = text(signed_anyway({**checkpoint(3), "size": 0}, who))
    assert raw.count(b'"size": 0,') == 1
    return raw.replace(b'"size": 0,', b'"size": -0,')


def unused_bits(key: str) -> str:
    """The same 32 bytes in base64 with the last character's unused low bit set (Python does not check it)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return key[:-2] + alphabet[alphabet.index(key[-2]) ^ 1] + "="


def big_int(who: str = "b") -> bytes:
    """block = 2^53 + 1, signed as the JCS of the double JavaScript rounds it to (2^53)."""
    c = checkpoint(3, block=2**53)
    jcs = json.dumps(c, sort_keys=True, separators=(",", ":")).encode()  # canonicalize refuses 2^53 itself
    doc = {"checkpoint": c, "alg": "Ed25519", "key": base64.b64encode(PUBLIC[who]).decode(),
           "signature": base64.b64encode(KEYS[who].sign(jcs)).decode()}
    return text(doc).replace(b'"block": 9007199254740992', b'"block": 9007199254740993')


def raw_document(key: bytes, signature: bytes, seq: int = 3) -> bytes:
    return text({"checkpoint": checkpoint(seq), "alg": "Ed25519", "key": base64.b64encode(key).decode(),
                 "signature": base64.b64encode(signature).decode()})


# Ed25519 edge cases where libraries may differ (OpenSSL behind Python, BoringSSL behind Chromium's WebCrypto): a
# small-order key (the identity point, which "signs" everything with R = identity, S = 0), the same point
# spelled non-canonically (y = p + 1), and a signature whose S is not reduced (S + L).
IDENTITY, ZERO_SIG = bytes([1]) + bytes(31), bytes([1]) + bytes(63)
NONCANONICAL = (2**255 - 19 + 1).to_bytes(32, "little")
ORDER = 2**252 + 27742317777372353535851937790883648493


def unreduced(document: dict[str, Any]) -> dict[str, Any]:
    raw = base64.b64decode(document["signature"])
    s = int.from_bytes(raw[32:], "little") + ORDER
    return {**document, "signature": base64.b64encode(raw[:32] + s.to_bytes(32, "little")).decode()}


# (id, document texts in order, receipt seq, k, witnesses by name). A witness that is down gave no text.
A4, B2, B3, C3 = signed(4, "a"), signed(2, "b"), signed(3, "b"), signed(3, "c")
CASES: list[tuple[str, list[bytes], int, int, dict[str, bytes]]] = [
    ("valid-2-of-2", [text(A4), text(B2)], 2, 2, PUBLIC),
    ("a-witness-counts-once", [text(A4), text(A4), text(B2)], 2, 2, PUBLIC),
    ("1-of-2-one-down", [text(signed(3, "a"))], 2, 1, {"a": PUBLIC["a"], "b": PUBLIC["b"]}),
    ("2-of-2-one-down", [text(signed(3, "a"))], 2, 2, {"a": PUBLIC["a"], "b": PUBLIC["b"]}),
    ("unknown-key-ignored", [text(signed(3, "a")), text(signed(3, STRANGER))], 2, 2, PUBLIC),
    ("unknown-key-ignored-k1", [text(signed(3, STRANGER)), text(signed(3, "a"))], 2, 1, PUBLIC),
    ("wrong-hospital", [text(signed(3, "a")), text(signed(3, "b", hospital_id="qd-002"))], 2, 2, PUBLIC),
    ("wrong-contract", [text(signed(3, "a")), text(signed(3, "b", contract="0x" + "cd" * 20))], 2, 2, PUBLIC),
    ("wrong-chain", [text(signed(3, "a")), text(signed(3, "b", chain_id=1))], 2, 2, PUBLIC),
    ("contract-case-ignored", [text(signed(3, "a", contract=CONTRACT.upper().replace("0X", "0x"))),
                               text(B3)], 2, 2, PUBLIC),
    ("tampered-signature", [text(signed(3, "a")), text(edited(B3, flip_signature))], 2, 2, PUBLIC),
    ("edited-checkpoint", [text(signed(3, "a")), text(edited(B3, lambda d: d["checkpoint"].update(seq=5)))],
     2, 2, PUBLIC),
    ("other-key-named", [text(signed(3, "a")), text(edited(B3, lambda d: d.update(key=A4["key"])))], 2, 2, PUBLIC),
    ("split-view", [text(signed(3, "a")), text(signed(3, "b", roots=FORKED))], 3, 2, PUBLIC),
    ("split-view-below-the-receipt", [text(signed(3, "a")), text(signed(3, "b", roots=FORKED))], 2, 1, PUBLIC),
    ("root-mismatch-at-receipt-seq", [text(signed(2, "c", roots=FORKED))], 2, 1, PUBLIC),
    ("root-mismatch-after-vouching", [text(A4), text(B2), text(signed(2, "c", roots=FORKED))], 2, 2, PUBLIC),
    ("other-starts-no-conflict", [text(signed(3, "a")), text(signed(3, "b", from_seq=2))], 2, 2, PUBLIC),
    ("started-after-the-batch", [text(A4), text(signed(4, "c", from_seq=3))], 2, 2, PUBLIC),
    ("older-than-the-batch", [text(signed(1, "a")), text(signed(1, "b"))], 2, 2, PUBLIC),
    ("older-than-the-batch-k1", [text(signed(1, "a")), text(B2)], 3, 1, PUBLIC),
    ("stranger-conflicts-ignored", [text(signed(3, "a")), text(signed(3, STRANGER, roots=FORKED))], 3, 1, PUBLIC),
    ("same-key-two-names", [text(signed(3, "a"))], 2, 2, {"x": PUBLIC["a"], "y": PUBLIC["a"]}),
    ("k-too-large", [text(A4)], 2, 4, PUBLIC),
    ("k-zero", [text(A4)], 2, 0, PUBLIC),
    ("names-in-code-point-order", [text(signed(3, "a")), text(B3)], 2, 2,
     {"\U0001f600 a": PUBLIC["a"], "\ufffd b": PUBLIC["b"]}),
    # Shape and spelling: what Python's parser and _check_shape refuse, the page must refuse too.
    ("extra-field", [text(A4), text(edited(B2, lambda d: d.update(extra=1)))], 2, 2, PUBLIC),
    ("missing-field", [text(A4), text(edited(B2, lambda d: d["checkpoint"].pop("time")))], 2, 2, PUBLIC),
    ("other-alg", [text(A4), text(edited(B2, lambda d: d.update(alg="ed25519")))], 2, 2, PUBLIC),
    ("not-an-object", [text(A4), b"[1, 2]", b"null", b'"x"'], 2, 1, PUBLIC),
    ("bool-size", [text(A4), text(signed_anyway({**checkpoint(3), "size": True}, "b"))], 2, 2, PUBLIC),
    ("negative-block", [text(A4), text(signed_anyway({**checkpoint(3), "block": -1}, "b"))], 2, 2, PUBLIC),
    ("from-seq-zero", [text(A4), text(signed_anyway({**checkpoint(3), "from_seq": 0}, "b"))], 2, 2, PUBLIC),
    ("from-seq-after-seq", [text(A4), text(signed_anyway({**checkpoint(3), "from_seq": 4}, "b"))], 2, 2, PUBLIC),
    ("wrong-format", [text(A4), text(signed_anyway({**checkpoint(3), "format": "mrl-witness/2"}, "b"))], 2, 2, PUBLIC),
    ("numeric-root", [text(A4), text(signed_anyway({**checkpoint(3), "root": 5}, "b"))], 2, 2, PUBLIC),
    ("seq-spelled-as-float", [text(A4), spelled(2, "seq", "2.0", "b")], 2, 2, PUBLIC),
    ("seq-spelled-with-exponent", [text(A4), spelled(2, "seq", "2e0", "b")], 2, 2, PUBLIC),
    ("size-spelled-minus-zero", [text(A4), minus_zero("b")], 2, 2, PUBLIC),
    ("block-beyond-a-double", [text(A4), big_int("b")], 2, 2, PUBLIC),
    ("duplicate-key", [text(A4), text(B2).replace(b'"alg": "Ed25519"', b'"alg": "Ed25519", "alg": "Ed25519"')],
     2, 2, PUBLIC),
    ("byte-order-mark", [text(A4), b"\xef\xbb\xbf" + text(B2)], 2, 2, PUBLIC),
    ("invalid-utf8", [text(A4), text(B2).replace(b'"time"', b'"t\xff": 1, "time"')], 2, 2, PUBLIC),
    ("key-padding-after-a-quad", [text(A4), text(edited(B2, lambda d: d.update(key=d["key"] + "=")))],
     2, 2, PUBLIC),
    ("key-without-padding", [text(A4), text(edited(B2, lambda d: d.update(key=d["key"].rstrip("="))))],
     2, 2, PUBLIC),
    ("key-with-a-space", [text(A4), text(edited(B2, lambda d: d.update(key=" " + d["key"])))], 2, 2, PUBLIC),
    ("key-unused-bits-set", [text(A4), text(edited(B2, lambda d: d.update(key=unused_bits(d["key"]))))],
     2, 2, PUBLIC),
    ("key-31-bytes", [text(A4), text(edited(B2, lambda d: d.update(
        key=base64.b64encode(PUBLIC["b"][:31]).decode())))], 2, 2, PUBLIC),
    ("signature-not-base64", [text(A4), text(edited(B2, lambda d: d.update(signature="!!")))], 2, 2, PUBLIC),
    ("small-order-key", [text(A4), raw_document(IDENTITY, ZERO_SIG)], 2, 2, {"a": PUBLIC["a"], "weak": IDENTITY}),
    ("non-canonical-key", [text(A4), raw_document(NONCANONICAL, ZERO_SIG)], 2, 2,
     {"a": PUBLIC["a"], "weak": NONCANONICAL}),
    ("unreduced-s", [text(A4), text(unreduced(B2))], 2, 2, PUBLIC),
]


def python_answer(texts: list[bytes], seq: int, k: int, witnesses: dict[str, bytes]) -> list[Any]:
    documents = []
    for raw in texts:  # as service/witnesses.fetch_checkpoints: a body that does not parse is no document
        try:
            documents.append(parse_json(raw))
        except EncodingError:
            continue
    try:
        names = verify_witness_checkpoints(documents, hospital_id=HID, seq=seq, root=ROOTS[seq], chain_id=31337,
                                           contract=CONTRACT, witnesses=witnesses, k=k)
    except WitnessError as exc:
        return [exc.reason, str(exc)]
    except ValueError:
        return ["error", "k"]
    return ["ok", names]


JS_ANSWER = """async (cases) => {
  const w = await import('/web/witness.js');
  const bytes = (b64) => Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
  const out = [];
  for (const c of cases) {
    const documents = c.texts.map((t) => w.parseCheckpoint(bytes(t)));
    try {
      const r = await w.verifyWitnessCheckpoints(documents, {hospitalId: c.hospital, seq: c.seq, root: c.root,
        chainId: 31337, contract: c.contract, witnesses: c.witnesses.map(([n, k]) => [n, bytes(k)]), k: c.k});
      out.push(r.ok ? ['ok', r.vouching] : [r.reason, `${r.reason}: ${r.detail}`]);
    } catch (e) {
      out.push([e instanceof RangeError ? 'error' : 'throw: ' + e, 'k']);
    }
  }
  return out;
}"""


def test_the_pages_k_of_n_rule_agrees_with_python(served: Served, page: Page) -> None:
    page.goto(f"{served.url}/verify")
    cases = [{"texts": [base64.b64encode(t).decode() for t in texts], "seq": seq, "k": k, "hospital": HID,
              "root": ROOTS[seq].hex(), "contract": CONTRACT,
              "witnesses": [[n, base64.b64encode(key).decode()] for n, key in witnesses.items()]}
             for _, texts, seq, k, witnesses in CASES]
    got = page.evaluate(JS_ANSWER, cases)
    want = [python_answer(texts, seq, k, witnesses) for _, texts, seq, k, witnesses in CASES]
    wrong = [f"{name}: page {g}, Python {w}" for (name, *_), g, w in zip(CASES, got, want, strict=True) if g != w]
    assert not wrong, "\n".join(wrong)
    # The set must exercise every outcome, or agreeing proves little.
    kinds = {w[0] for w in want}
    assert kinds == {"ok", "witness-quorum", "witness-conflict", "error"}, kinds
    assert ["ok", ["\ufffd b", "\U0001f600 a"]] in want  # Python's order, not UTF-16's


def test_the_pages_base64_is_pythons_strict_base64(served: Served, page: Page) -> None:
    """Witness keys and signatures are decoded as ``base64.b64decode(s, validate=True)`` does: every string of
    up to six characters over an alphabet that reaches each rule (padding, whitespace, non-ASCII)."""
    page.goto(f"{served.url}/verify")
    strings = ["".join(p) for n in range(7) for p in itertools.product("AQ/= é", repeat=n)]
    got = page.evaluate("""async (strings) => {
      const w = await import('/web/witness.js'), c = await import('/web/core.js');
      return strings.map((s) => { try { return c.hex(w.b64decodeStrict(s)); } catch { return null; } });
    }""", strings)
    want = []
    for s in strings:
        try:
            want.append(base64.b64decode(s, validate=True).hex())
        except ValueError:  # binascii.Error, and non-ASCII text
            want.append(None)
    wrong = [f"{s!r}: page {g}, Python {w}" for s, g, w in zip(strings, got, want, strict=True) if g != w]
    assert not wrong, f"{len(wrong)} of {len(strings)} differ:\n" + "\n".join(wrong[:20])


# ---- end to end ------------------------------------------------------------------------------------------------

class NoCorsHandler(CorsHandler):
    cors = False


def publish(directory: Path, receipts: list[dict[str, Any]], key: Ed25519PrivateKey) -> None:
    """The checkpoint a witness that checked these batches (seq 1, 2, …) writes for the hospital."""
    commitment = bytes(32)
    for r in receipts:
        commitment = chain_hash(commitment, r["batch"]["seq"], bytes.fromhex(r["batch"]["root"]), r["batch"]["size"])
    head, anchor = receipts[-1], receipts[-1]["anchor"]
    document = sign_checkpoint({
        "format": WITNESS_FORMAT, "chain_id": anchor["chain_id"], "contract": anchor["contract"].lower(),
        "hospital_id": HID, "from_seq": receipts[0]["batch"]["seq"], "seq": head["batch"]["seq"],
        "root": head["batch"]["root"], "size": head["batch"]["size"], "commitment": commitment.hex(),
        "block": anchor["block_number"], "time": "2026-12-02T19:00:00Z"}, key)
    (directory / f"{HID}.json").write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def line(name: str, key: Ed25519PrivateKey, url: str) -> str:
    return f"{name} {base64.b64encode(key.public_key().public_bytes_raw()).decode()} {url}"


def configure(page: Page, lines: list[str], k: str) -> None:
    page.evaluate("document.querySelector('details:has(#witnesses)').open = true")
    page.fill("#witnesses", "\n".join(lines))
    page.fill("#witness-k", k)
    page.dispatch_event("#witness-k", "change")


def check(page: Page, receipt: dict[str, Any]) -> None:
    page.fill("#paste", json.dumps(receipt))
    page.click("#go")


def test_a_receipt_is_authentic_only_while_k_of_n_witnesses_vouch(served: Served, page: Page, shots: Path,
                                                                  tmp_path: Path) -> None:
    receipt = _fresh_receipt(served)  # recognisable: the decision box would offer "recognise"
    assert receipt["batch"]["hospital_id"] == HID == "gz-001"
    keys = {n: Ed25519PrivateKey.generate() for n in ("commission", "association")}
    dirs = {n: tmp_path / n for n in keys}
    for n, key in keys.items():
        dirs[n].mkdir()
        publish(dirs[n], [receipt], key)
    token = served.api.ledger.access.create_token("doctor:qd-002", "doctor", served.api.ledger.clock())
    with witness_site(dirs["commission"]) as url1, witness_site(dirs["association"]) as url2:
        page.goto(f"{served.url}/verify")
        page.click("details:has(#token) summary")
        page.fill("#token", token)
        page.dispatch_event("#token", "change")
        configure(page, [line("commission", keys["commission"], url1),
                         line("association", keys["association"], url2)], "2")
        assert page.text_content("#witness-settings") == "2 witnesses configured, 2 must vouch."
        check(page, receipt)
        _verdict(page, "authentic")
        step = page.wait_for_selector("#step-witness[data-state=vouched]")
        assert step is not None and step.is_visible()
        assert page.get_attribute("#step-witness", "data-vouching") == "association,commission"
        assert page.text_content("#witness-status") == "association, commission vouch for batch 1 (2 of 2 required)."
        page.wait_for_selector("#dec-recognise:not([disabled])")
        page.screenshot(path=str(shots / "verify-witnesses-vouch-en.png"), full_page=True)
        serious = _axe(page)
        assert not serious, serious

        # The setting is the doctor's, kept across visits.
        page.reload()
        assert page.input_value("#witness-k") == "2" and "commission" in page.input_value("#witnesses")

        # One witness has not published a checkpoint for this hospital (yet): 1 of 2 is not enough.
        (dirs["association"] / f"{HID}.json").unlink()
        check(page, receipt)
        _verdict(page, "unknown")
        page.wait_for_selector("#step-witness[data-state=witness-quorum]")
        assert page.text_content("#verdict-word") == "UNKNOWN — cannot be confirmed"
        assert page.text_content("#verdict-sub") == "Not enough of your witnesses vouch for this result"
        said = page.text_content("#witness-status") or ""
        assert said.startswith("Only 1 of the 2 required witnesses vouch for batch 1 (commission).")
        assert f"Not reached: witness checkpoint {url2}{HID}.json: HTTP 404" in said
        assert page.get_attribute(VERDICT, "data-verdict") != "authentic"
        page.wait_for_selector("#decision-box:not([hidden])")
        assert page.is_disabled("#dec-recognise") and not page.is_disabled("#dec-reorder")
        assert "could not confirm" in (page.text_content("#decision-hint") or "")
        page.screenshot(path=str(shots / "verify-witnesses-quorum-en.png"), full_page=True)

        # k = 1 of the 2: the other suffices.
        configure(page, [line("commission", keys["commission"], url1),
                         line("association", keys["association"], url2)], "1")
        check(page, receipt)
        _verdict(page, "authentic")
        page.wait_for_selector("#step-witness[data-state=vouched]")

        page.select_option("#lang", "de")
        assert "commission bürgen für Stapel 1 (1 von 1 erforderlich)." in (page.text_content("#witness-status") or "")


def test_a_witness_without_cors_counts_as_down(served: Served, page: Page, tmp_path: Path) -> None:
    receipt = _fresh_receipt(served)
    keys = {n: Ed25519PrivateKey.generate() for n in ("commission", "association")}
    for n, key in keys.items():
        (tmp_path / n).mkdir()
        publish(tmp_path / n, [receipt], key)
    with witness_site(tmp_path / "commission") as url1, \
            witness_site(tmp_path / "association", NoCorsHandler) as url2:
        page.goto(f"{served.url}/verify")
        configure(page, [line("commission", keys["commission"], url1),
                         line("association", keys["association"], url2)], "")  # empty k: all of them
        check(page, receipt)
        _verdict(page, "unknown")
        page.wait_for_selector("#step-witness[data-state=witness-quorum]")
        assert f"witness checkpoint {url2}{HID}.json: TypeError" in (page.text_content("#witness-status") or "")


def test_a_split_view_and_a_deep_link(served: Served, page: Page, tmp_path: Path) -> None:
    """A witness that signed another root for the receipt's batch is a conflict, not a vote; the witnesses can
    come from a link when none are saved, and the link is not saved."""
    receipt = _fresh_receipt(served)
    key, liar = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    for name, k, root in (("commission", key, receipt["batch"]["root"]), ("liar", liar, "ee" * 32)):
        (tmp_path / name).mkdir()
        publish(tmp_path / name, [{**receipt, "batch": {**receipt["batch"], "root": root}}], k)
    with witness_site(tmp_path / "commission") as url1, witness_site(tmp_path / "liar") as url2:
        query = urlencode({"witnesses": "\n".join([line("commission", key, url1), line("liar", liar, url2)]),
                           "k": "1"})
        page.goto(f"{served.url}/verify?{query}")
        assert page.input_value("#witness-k") == "1"
        check(page, receipt)
        _verdict(page, "unknown")
        page.wait_for_selector("#step-witness[data-state=witness-conflict]")
        assert page.text_content("#verdict-sub") == "Your witnesses disagree about this hospital's history"
        assert "witnesses commission and liar signed different histories of gz-001 at seq 1: a split view" in \
            (page.text_content("#witness-status") or "")
        assert page.evaluate("localStorage.getItem('mrl.witnesses')") is None


def test_witness_settings_that_cannot_work_are_refused(served: Served, page: Page) -> None:
    page.goto(f"{served.url}/verify")
    configure(page, ["commission notbase64 https://w.example/"], "1")
    assert "line 1: the public key is not base64 of 32 bytes" in (page.text_content("#witness-settings") or "")
    configure(page, [line("a", KEYS["a"], "https://w.example/"), line("b", KEYS["b"], "https://v.example/")], "3")
    assert "k must be a whole number in 1..2" in (page.text_content("#witness-settings") or "")
    # A receipt checked with such settings is not AUTHENTIC: the requirement cannot be evaluated.
    _seed(served, 1)
    check(page, _receipt(served))
    _verdict(page, "unknown")
    page.wait_for_selector("#step-witness[data-state=error]")
    assert (page.text_content("#witness-status") or "").startswith("The witness settings are not valid: k must be")
    assert page.text_content("#verdict-sub") == "Your witnesses could not be checked"
