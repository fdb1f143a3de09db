// Is this receipt's version still the current one? (docs/receipt.md §15, §17) The status-map proof, the key a
// receipt's holder derives, the verdict, and its binding to the doctor's own chain endpoint. Mirrors
// ledger/statusmap.py, ledger/status_check.py and service/status.py; the test suite runs
// tests/vectors/statusmap/*.json and the §17 verdicts through both. Pure functions but for the two fetches.
import { batchOf, concat, hex, rpc, sha256, te, unhex } from "./core.js";

const EMPTY = new Uint8Array(32);
const u16 = (n) => new Uint8Array([n >> 8, n & 0xff]);
const eqBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const bit = (key, d) => (key[d >> 3] >> (7 - (d & 7))) & 1;

export async function statusKey(hospitalId, resultId, secret) {
  const h = te.encode(hospitalId), r = te.encode(resultId);
  return sha256(concat(te.encode("mrl-smap/1 key"), u16(h.length), h, u16(r.length), r, secret));
}

// The key a receipt's holder derives: the status_secret extension, else its own salt when it is version 1.
export async function receiptStatusKey(receipt) {
  const ext = (receipt.extensions || {}).status_secret;
  const secret = typeof ext === "string" ? unhex(ext) : receipt.record.version === 1 ? unhex(receipt.salt) : null;
  if (!secret) return null;
  if (secret.length !== 16) throw new Error("status_secret must be 16 bytes");
  return statusKey(receipt.record.hospital_id, receipt.record.result_id, secret);
}

// Strict parse (one spelling per proof), as StatusProof.from_bytes.
export function parseStatusProof(b) {
  if (b.length < 3 || b[0] > 1) throw new Error("status proof must start with kind 0|1 and a u16 depth");
  const depth = (b[1] << 8) | b[2];
  if (depth > 256) throw new Error("status proof depth exceeds 256");
  const nb = (depth + 7) >> 3, bitmap = b.slice(3, 3 + nb);
  if (bitmap.length !== nb || ((depth & 7) && (bitmap[nb - 1] & (0xff >> (depth & 7))))) {
    throw new Error("status proof bitmap truncated or with non-zero padding");
  }
  let pos = 3 + nb;
  const siblings = [];
  for (let i = 0; i < depth; i++) {
    if (bitmap[i >> 3] & (0x80 >> (i & 7))) {
      const s = b.slice(pos, pos + 32);
      if (s.length !== 32 || eqBytes(s, EMPTY)) throw new Error("status proof sibling truncated or spelled as EMPTY");
      siblings.push(s); pos += 32;
    } else siblings.push(null);
  }
  let leaf = null;
  if (b[0] === 1) {
    const tail = b.slice(pos, pos + 69);
    if (tail.length !== 69) throw new Error("status proof leaf truncated");
    const version = ((tail[32] << 24) >>> 0) + (tail[33] << 16) + (tail[34] << 8) + tail[35], status = tail[36];
    if (version < 1 || version > 0x7fffffff || (status !== 1 && status !== 2)) throw new Error("status proof leaf: bad value");
    leaf = { key: tail.slice(0, 32), value: tail.slice(32), version, status: status === 1 ? "current" : "withdrawn",
             leafHash: tail.slice(37) };
    pos += 69;
  }
  if (pos !== b.length) throw new Error("status proof has trailing bytes");
  return { siblings, leaf };
}

// {kind: current|withdrawn|absent|invalid, version, leafHash, detail}, as verify_status_proof.
export async function verifyStatusProof(root, key, proofBytes) {
  try {
    const p = parseStatusProof(proofBytes), depth = p.siblings.length;
    if (depth && p.siblings[depth - 1] === null) throw new Error("status proof ends beside an empty sibling");
    let h = EMPTY;
    if (p.leaf) {
      for (let d = 0; d < depth; d++) if (bit(p.leaf.key, d) !== bit(key, d)) throw new Error("status proof leaf is not on the key's path");
      h = await sha256(concat(new Uint8Array([2]), p.leaf.key, p.leaf.value));
    }
    for (let d = depth - 1; d >= 0; d--) {
      const s = p.siblings[d] || EMPTY;
      h = await sha256(concat(new Uint8Array([3]), ...(bit(key, d) ? [s, h] : [h, s])));
    }
    if (!eqBytes(h, root)) return { kind: "invalid", detail: `root mismatch: expected ${hex(root)}, calculated ${hex(h)}` };
    if (!p.leaf || !eqBytes(p.leaf.key, key)) return { kind: "absent", detail: "no entry for this key" };
    return { kind: p.leaf.status, version: p.leaf.version, leafHash: p.leaf.leafHash, detail: `version ${p.leaf.version}` };
  } catch (e) {
    return { kind: "invalid", detail: e.message };
  }
}

// {status: current|superseded|withdrawn|stale|invalid|unknown, version, as_of_seq, detail}, as check_status.
export async function checkStatus(receipt, doc) {
  const key = await receiptStatusKey(receipt), seq = doc.batch.seq, mine = receipt.record.version;
  const v = (status, version, detail) => ({ status, version, as_of_seq: seq, detail });
  if (!key) return v("unknown", null, "this receipt cannot name its status key");
  if (doc.format !== "mrl-status-proof/1" || doc.hospital_id !== receipt.record.hospital_id || doc.key !== hex(key)) {
    return v("invalid", null, "the status proof is for another result");
  }
  if (seq < receipt.batch.seq) return v("stale", null, `the status is as of batch ${seq}, older than the receipt's batch ${receipt.batch.seq}`);
  const a = await verifyStatusProof(unhex(doc.map_root), key, unhex(doc.proof));
  if (a.kind === "invalid") return v("invalid", null, `the map proof does not check: ${a.detail}`);
  if (a.kind === "absent") return v("invalid", null, `the map after batch ${seq} has no entry for this result`);
  if (a.version < mine || (a.version === mine && hex(a.leafHash) !== receipt.leaf.hash)) {
    return v("invalid", a.version, `the map commits version ${a.version} with another leaf than this receipt's, or an older version`);
  }
  if (a.kind === "withdrawn") return v("withdrawn", a.version, `withdrawn (entered in error) by ${a.version === mine ? "this version" : "version " + a.version}`);
  if (a.version > mine) return v("superseded", a.version, `superseded by version ${a.version}`);
  return v("current", mine, `current as of batch ${seq}`);
}

// Selector of lastSeq(bytes32), computed like BATCH_OF_SELECTOR.
export const LAST_SEQ_SELECTOR = "0x50367b77";
export const STATUS_GRACE_SECONDS = 600;

// The document's batch against the registry the receipt names, and how long a newer batch has been on chain:
// the page's half of service/status.py. Returns the verdict with chain: {on_chain, latest_seq, map_root_bound}.
export async function checkStatusOnChain(url, receipt, doc, verdict, grace = STATUS_GRACE_SECONDS) {
  const a = receipt.anchor;
  if (doc.anchor && (doc.anchor.contract.toLowerCase() !== a.contract.toLowerCase() || doc.anchor.chain_id !== a.chain_id)) {
    return { ...verdict, status: "invalid", detail: "the status proof names another registry than the receipt's", chain: null };
  }
  const key = hex(await sha256(te.encode(doc.hospital_id)));
  const held = await batchOf(url, a.contract, doc.hospital_id, doc.batch.seq);
  const latest = parseInt((await rpc(url, "eth_call", [{ to: a.contract, data: LAST_SEQ_SELECTOR + key }, "latest"])).slice(2), 16);
  const chain = { on_chain: held.root === doc.batch.root && held.size === doc.batch.size,
                  latest_seq: latest, map_root_bound: false };
  if (!chain.on_chain) return { ...verdict, status: "invalid", detail: "the registry holds another batch than the node's (or none)", chain };
  const time = async (tag) => parseInt((await rpc(url, "eth_getBlockByNumber", [tag, false])).timestamp, 16);
  const now = await time("latest");
  const ageOf = async (entry) => now - (await time("0x" + entry.block.toString(16)));
  if (latest > doc.batch.seq) {
    const age = await ageOf(await batchOf(url, a.contract, doc.hospital_id, doc.batch.seq + 1));
    if (age > grace) {
      return { ...verdict, status: "stale", version: null, detail: `the node answers as of batch ${doc.batch.seq}, but batch ${doc.batch.seq + 1} has been on chain for ${age} s: it hides a newer status`, chain };
    }
  }
  if (verdict.status !== "current") return { ...verdict, chain };
  const later = latest > doc.batch.seq ? `batch ${latest} is on chain for less than ${grace} s` : "the chain holds no later batch";
  return { ...verdict, detail: `${verdict.detail}, anchored ${await ageOf(held)} s ago; ${later}`, chain };
}

// Ask the node for the receipt's status proof and check it; with a JSON-RPC url, against the chain too.
export async function currentStatus(receipt, url) {
  const key = await receiptStatusKey(receipt);
  if (!key) return { status: "unknown", version: null, detail: "this receipt cannot name its status key", chain: null };
  const r = receipt.record;
  const res = await fetch(`/v1/hospitals/${encodeURIComponent(r.hospital_id)}/results/${encodeURIComponent(r.result_id).replace(/\./g, "%2E")}/status-proof?key=${hex(key)}`);
  const doc = await res.json();
  if (!res.ok) return { status: "unknown", version: null, detail: `the node refused: ${doc.detail || doc.title || res.status}`, chain: null };
  const verdict = await checkStatus(receipt, doc);
  if (!url || !receipt.anchor || verdict.status === "invalid" || verdict.status === "unknown") return { ...verdict, chain: null };
  return checkStatusOnChain(url, receipt, doc, verdict);
}
