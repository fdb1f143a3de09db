// Is this receipt's version still the current one? (docs/receipt.md §15, §17) The status-map proof, the key a
// receipt's holder derives, the verdict, and its binding to the doctor's own chain endpoint. Mirrors
// ledger/statusmap.py, ledger/status_check.py and service/status.py; the test suite runs
// tests/vectors/statusmap/*.json and the §17 verdicts through both. Pure functions but for the two fetches.
import {
  anchorProblem, anchoredLog, batchCommitment, batchOf, concat, DIRECT, hex, HUB_COUNT_SELECTOR, hospitalKey, isAnchored,
  isObject, lastSeq, rpc, sha256, te, unhex,
} from "./core.js";

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

export { LAST_SEQ_SELECTOR } from "./core.js";
// Selectors computed like core.js's, e.g. `python -c "from eth_utils import keccak; print(keccak(text='predecessor()')[:4].hex())"`.
export const PREDECESSOR_SELECTOR = "0xb719d032"; // predecessor(): the v1 registry a v2 one succeeded in place
export const PAUSED_SELECTOR = "0x5c975abb"; // paused()
export const HOSPITAL_OF_SELECTOR = "0x67543ed4"; // hospitalOf(bytes32) (v2: registered, nameHash, registeredBlock, …)
export const HAS_ROLE_SELECTOR = "0x91d14854"; // hasRole(bytes32,address)
// topic0 of HospitalRegistered(bytes32 indexed hospitalKey, bytes32 nameHash)
export const HOSPITAL_REGISTERED_TOPIC = "0x14553d19269a5513c06892f1424133a2f0e3a1c43dcde83db56c8008cb5c5a33";
export const STATUS_GRACE_SECONDS = 600;

const call = async (url, to, data) => (await rpc(url, "eth_call", [{ to, data }, "latest"])).slice(2);
const sameAddress = (x, y) => x.toLowerCase() === y.toLowerCase();

// The registry to bind the document in (anchoring/status.py status_registry): the receipt's, or the document's if
// it is a v2 registry naming the receipt's as its predecessor on chain (an in-place upgrade). null: any other.
async function statusRegistry(url, a, d) {
  if (d && d.chain_id !== a.chain_id) return null;
  if (!d || sameAddress(d.contract, a.contract)) return a.contract;
  const answer = (data) => call(url, d.contract, data).catch(() => "");
  if ((await answer(HUB_COUNT_SELECTOR)).length !== 64) return null; // not a v2 registry
  const before = await answer(PREDECESSOR_SELECTOR);
  return before.length === 64 && sameAddress("0x" + before.slice(24), a.contract) ? d.contract : null;
}

// Naming the receipt's registry as predecessor proves nothing by itself: anyone can deploy a contract that says so
// and register the hospital in it. The successor is the hospital's when the transaction that registered the
// hospital there went to it from an admin of the predecessor (anchoring/status.py, the same rule): the v1
// registry's administration, not a node's hot submitter key.
async function registeredByAdmin(url, predecessor, registry, key) {
  const info = await call(url, registry, HOSPITAL_OF_SELECTOR + key).catch(() => ""); // key: hex already
  if (info.length < 5 * 64 || BigInt("0x" + info.slice(0, 64)) === 0n) return false;
  const block = "0x" + BigInt("0x" + info.slice(128, 192)).toString(16);
  const logs = await rpc(url, "eth_getLogs", [{ address: registry, fromBlock: block, toBlock: block,
                                                topics: [HOSPITAL_REGISTERED_TOPIC, "0x" + key] }]).catch(() => []);
  if (!Array.isArray(logs) || logs.length !== 1) return false;
  const tx = await rpc(url, "eth_getTransactionByHash", [logs[0].transactionHash]).catch(() => null);
  if (!tx || !tx.to || !tx.from || !sameAddress(tx.to, registry)) return false;
  const data = HAS_ROLE_SELECTOR + "0".repeat(64) + tx.from.slice(2).toLowerCase().padStart(64, "0");
  return BigInt("0x" + ((await call(url, predecessor, data).catch(() => "")) || "0")) !== 0n;
}

// v1: the registry's (root, size) of the batch; the map root stays the node's word.
async function bindV1(url, registry, doc, key) {
  const held = await batchOf(url, registry, doc.hospital_id, doc.batch.seq);
  const latest = await lastSeq(url, registry, key);
  return { chain: { on_chain: held.root === doc.batch.root && held.size === doc.batch.size, latest_seq: latest,
                    map_root_bound: false, registry },
           block: held.block, what: "batch",
           // A paused v1 registry was succeeded: the verifier holding its address cannot see later batches.
           paused: async () => BigInt("0x" + ((await call(url, registry, PAUSED_SELECTOR)) || "0")) !== 0n,
           next: async () => (await batchOf(url, registry, doc.hospital_id, doc.batch.seq + 1)).block };
}

// v2: the one commitment word hashes the batch's root and size with the map root, so isAnchored binds all three;
// blocks come from the BatchAnchored logs (a v2 registry does not store them per batch).
async function bindV2(url, registry, doc, key) {
  const d = doc.anchor, seq = doc.batch.seq;
  const commitment = await batchCommitment(doc.batch.root, doc.batch.size, doc.map_root);
  const onChain = await isAnchored(url, registry, key, seq, commitment, d.hub || DIRECT);
  const latest = await lastSeq(url, registry, key);
  const held = onChain ? await anchoredLog(url, registry, key, seq, d.block_number) : null;
  return { chain: { on_chain: onChain, latest_seq: latest, map_root_bound: onChain, registry },
           block: held ? held.block : null, what: "commitment (batch root, size, map root)",
           paused: async () => false,
           next: async () => (await anchoredLog(url, registry, key, seq + 1, null, held ? held.block : 0))?.block ?? null };
}

// The document's batch against the registry the receipt names (or its v2 successor), and how long a newer batch
// has been on chain: the page's half of service/status.py. Returns the verdict with chain: {on_chain,
// latest_seq, map_root_bound, registry}.
export async function checkStatusOnChain(url, receipt, doc, verdict, grace = STATUS_GRACE_SECONDS) {
  const a = receipt.anchor, d = doc.anchor, v2 = isObject(d) && "map_root" in d;
  const invalid = (detail, chain = null) => ({ ...verdict, status: "invalid", detail, chain });
  if (v2 && (anchorProblem(d, true) || d.map_root !== doc.map_root)) {
    return invalid("the status proof's anchor is malformed or binds another map root than the document's");
  }
  const registry = await statusRegistry(url, a, d);
  if (!registry) return invalid("the status proof names another registry than the receipt's (or its v2 successor)");
  const key = await hospitalKey(doc.hospital_id);
  const bound = await (v2 ? bindV2 : bindV1)(url, registry, doc, key);
  const chain = bound.chain, seq = doc.batch.seq;
  if (!chain.on_chain) return invalid(`the registry holds another ${bound.what} than the node's (or none)`, chain);
  if (!sameAddress(registry, a.contract) && !(await registeredByAdmin(url, a.contract, registry, key))) {
    return invalid(`${doc.hospital_id} was not registered in ${registry} by an admin of ${a.contract}: not its ` +
                   "successor", { ...chain, on_chain: false });
  }
  if (verdict.status === "current" && await bound.paused()) {
    return { ...verdict, status: "stale", version: null, chain,
             detail: `the status is as of batch ${seq} in registry ${registry}, which is paused (succeeded by an upgrade): ask for the status in its successor` };
  }
  const time = async (tag) => parseInt((await rpc(url, "eth_getBlockByNumber", [tag, false])).timestamp, 16);
  const now = await time("latest");
  const ageOf = async (block) => now - (await time("0x" + block.toString(16)));
  if (chain.latest_seq > seq) {
    const next = await bound.next();
    const age = next === null ? 0 : await ageOf(next);
    if (age > grace) {
      return { ...verdict, status: "stale", version: null, detail: `the node answers as of batch ${seq}, but batch ${seq + 1} has been on chain for ${age} s: it hides a newer status`, chain };
    }
  }
  if (verdict.status !== "current") return { ...verdict, chain };
  const later = chain.latest_seq > seq ? `batch ${chain.latest_seq} is on chain for less than ${grace} s` : "the chain holds no later batch";
  const anchored = bound.block === null ? "" : `, anchored ${await ageOf(bound.block)} s ago`;
  return { ...verdict, detail: `${verdict.detail}${anchored}; ${later}`, chain };
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
