// mrledger in the browser: RFC 8785 (JCS), the mrl-leaf/1 leaf, RFC 9162 inclusion, the mrl:/ QR payload
// and the on-chain root check. Pure functions, no DOM: the pages and the tests import this module.
// Mirrors ledger/ and api/qr.py; the test suite runs tests/vectors/receipt/*.json through both.

const te = new TextEncoder();

// ---- RFC 8785 ------------------------------------------------------------------------------------
// ECMAScript's own JSON.stringify *is* the RFC's number and string serialisation (RFC 8785 §3.2.2.2-3);
// only key order needs doing: UTF-16 code units, which is what Array.prototype.sort compares.
export function jcs(v) {
  if (v === null || typeof v === "boolean" || typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new Error("JCS: non-finite number");
    return JSON.stringify(v);
  }
  if (Array.isArray(v)) return "[" + v.map(jcs).join(",") + "]";
  if (typeof v === "object") {
    return "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + jcs(v[k])).join(",") + "}";
  }
  throw new Error("JCS: not a JSON value");
}

// ---- bytes ---------------------------------------------------------------------------------------
export const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
export function unhex(s) {
  if (!/^([0-9a-f]{2})*$/.test(s)) throw new Error("not lower-case hex");
  return Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
}
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) { out.set(p, i); i += p.length; }
  return out;
}
export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

// ---- mrl-leaf/1 and RFC 9162 ---------------------------------------------------------------------
export async function leafHash(record, saltHex) {
  const digest = hex(await sha256(te.encode(jcs(record))));
  const data = jcs({ format: "mrl-leaf/1", hospital_id: record.hospital_id, result_id: record.result_id,
                     version: record.version, salt: saltHex, content_digest: digest });
  return sha256(concat(new Uint8Array([0]), te.encode(data)));
}

const node = (l, r) => sha256(concat(new Uint8Array([1]), l, r));

// RFC 9162 §2.1.3.2; returns the computed root or throws.
export async function rootFromInclusion(index, size, leaf, path) {
  if (index >= size) throw new Error("leaf index beyond the tree size");
  let fn = index, sn = size - 1, r = leaf;
  for (const p of path) {
    if (sn === 0) throw new Error("path too long");
    if (fn % 2 === 1 || fn === sn) {
      r = await node(p, r);
      if (fn % 2 === 0) while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = await node(r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Error("path too short");
  return r;
}

// ---- offline receipt check (docs/receipt.md §10) -------------------------------------------------
const HEX64 = /^[0-9a-f]{64}$/, HEX32 = /^[0-9a-f]{32}$/, UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;
const FIELDS = ["format", "record", "salt", "leaf", "audit_path", "batch", "anchor", "signature", "extensions",
  "critical"];
const isInt = (v, min = 0) => Number.isInteger(v) && v >= min;
const same = (obj, keys) => obj && typeof obj === "object" && !Array.isArray(obj) &&
  Object.keys(obj).sort().join() === [...keys].sort().join();
const hasNull = (v) => v === null || (typeof v === "object" && Object.values(v).some(hasNull));

// The shape checks a browser can make; the server's parser is stricter on the record (code systems,
// NFC, bounds) and runs anyway when the page asks it.
function formatProblem(r) {
  if (!r || typeof r !== "object" || Array.isArray(r)) return "not a JSON object";
  if (r.format !== "mrl-receipt/1") return `format is ${JSON.stringify(r.format)}, not mrl-receipt/1`;
  const unknown = Object.keys(r).filter((k) => !FIELDS.includes(k));
  if (unknown.length) return `unknown fields: ${unknown.join(", ")}`;
  for (const k of ["record", "salt", "leaf", "audit_path", "batch"]) if (!(k in r)) return `missing ${k}`;
  const rec = r.record;
  if (!rec || typeof rec !== "object" || Array.isArray(rec)) return "record is not an object";
  if (hasNull(rec)) return "record holds null (not normalised)";
  if (!isInt(rec.version, 1)) return "record.version must be an integer >= 1";
  if (typeof rec.hospital_id !== "string" || typeof rec.result_id !== "string") return "record identity";
  for (const t of ["issued", "effective"]) if (t in rec && !UTC.test(rec[t])) return `record.${t} not UTC 'Z'`;
  if (typeof r.salt !== "string" || !HEX32.test(r.salt)) return "salt must be 32 lower-case hex digits";
  if (!same(r.leaf, ["index", "hash"]) || !isInt(r.leaf.index) || !HEX64.test(r.leaf.hash)) return "leaf";
  if (!Array.isArray(r.audit_path) || r.audit_path.length > 64 || !r.audit_path.every((p) => HEX64.test(p))) {
    return "audit_path";
  }
  const b = r.batch;
  if (!same(b, ["format", "hospital_id", "seq", "size", "root", "sealed_at"]) || b.format !== "mrl-batch/1" ||
      !isInt(b.seq, 1) || !isInt(b.size, 1) || b.size > 1048576 || !HEX64.test(b.root) ||
      typeof b.sealed_at !== "string" || !UTC.test(b.sealed_at)) return "batch head";
  const a = r.anchor;
  if (a != null && (!same(a, ["chain_id", "contract", "tx_hash", "block_number", "block_hash"]) ||
      !isInt(a.chain_id, 1) || !isInt(a.block_number) || !/^0x[0-9a-fA-F]{40}$/.test(a.contract) ||
      !/^0x[0-9a-fA-F]{64}$/.test(a.tx_hash) || !/^0x[0-9a-fA-F]{64}$/.test(a.block_hash))) return "anchor";
  // The hospital's signature (docs/signatures.md §3): only its shape here. X.509 paths and CRLs are the
  // node's job; the page shows the node's result, never its own opinion of a certificate.
  const s = r.signature;
  if ("signature" in r && (!same(s, ["alg", "chain_id", "contract", "value", "certificates"]) ||
      typeof s.alg !== "string" || !isInt(s.chain_id, 1) || !/^0x[0-9a-f]{40}$/.test(s.contract) ||
      typeof s.value !== "string" || !Array.isArray(s.certificates) || s.certificates.length < 1 ||
      s.certificates.length > 4 || !s.certificates.every((c) => typeof c === "string"))) return "signature";
  const ext = r.extensions ?? {}, crit = r.critical ?? [];
  if (typeof ext !== "object" || Array.isArray(ext)) return "extensions must be an object";
  if (!Array.isArray(crit) || !crit.every((c) => typeof c === "string" && c in ext)) return "critical";
  return null;
}

// {status: valid|unanchored|invalid, failed, checks:[{name, ok, detail}], root}
export async function verifyOffline(r) {
  const checks = [];
  const done = (failed) => ({ status: failed ? "invalid" : r.anchor ? "valid" : "unanchored", failed, checks });
  const step = (name, ok, detail = "") => { checks.push({ name, ok, detail }); return ok; };
  const problem = formatProblem(r);
  if (!step("format", !problem, problem || "")) return done("format");
  if (!step("critical-extensions", (r.critical ?? []).length === 0, (r.critical ?? []).join(", "))) {
    return done("critical-extensions");
  }
  const leaf = await leafHash(r.record, r.salt);
  if (!step("leaf-hash", hex(leaf) === r.leaf.hash, hex(leaf))) return done("leaf-hash");
  if (!step("batch-identity", r.batch.hospital_id === r.record.hospital_id)) return done("batch-identity");
  try {
    const root = hex(await rootFromInclusion(r.leaf.index, r.batch.size, leaf, r.audit_path.map(unhex)));
    if (!step("inclusion", root === r.batch.root, root)) return done("inclusion");
  } catch (e) {
    step("inclusion", false, e.message);
    return done("inclusion");
  }
  step("anchor", true, r.anchor ? "anchor present (not yet checked on chain)" : "not anchored");
  return done(null);
}

// ---- mrl:/ QR payload (docs/receipt.md §14, api/qr.py) -------------------------------------------
const B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
export function b45decode(s) {
  const v = Array.from(s, (c) => {
    const i = B45.indexOf(c);
    if (i < 0) throw new Error("not base45");
    return i;
  });
  if (v.length % 3 === 1) throw new Error("not base45: length");
  const out = [];
  for (let i = 0; i < v.length; i += 3) {
    const n = v[i] + v[i + 1] * 45 + (i + 2 < v.length ? v[i + 2] * 2025 : 0);
    if (i + 2 < v.length) {
      if (n > 0xffff) throw new Error("not base45");
      out.push(n >> 8, n & 0xff);
    } else {
      if (n > 0xff) throw new Error("not base45");
      out.push(n);
    }
  }
  return new Uint8Array(out);
}

async function inflate(bytes) {
  // zlib format (RFC 1950): Compression Streams "deflate". Bounded like api/qr.py MAX_INFLATED_BYTES.
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  const buf = new Uint8Array(await new Response(stream).arrayBuffer());
  if (buf.length > 65536) throw new Error("payload too large");
  return buf;
}

export const isQrText = (s) => typeof s === "string" && s.trim().slice(0, 5).toUpperCase() === "MRL:/";

export async function decodeQrText(s) {
  s = s.trim();
  if (!isQrText(s) || s.length > 4296) throw new Error("not an mrl:/ payload");
  return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(await inflate(b45decode(s.slice(5)))));
}

// An mrl-qref/1 with its record plus the public proof -> the full receipt (checked like any other).
export function receiptFromReference(ref, proof) {
  if (ref.format !== "mrl-qref/1" || !ref.record) throw new Error("reference without record");
  if (proof.leaf.hash !== ref.leaf_hash || proof.batch.seq !== ref.batch_seq) throw new Error("proof mismatch");
  return { format: "mrl-receipt/1", record: ref.record, salt: ref.salt, leaf: proof.leaf,
           audit_path: proof.audit_path, batch: proof.batch, anchor: proof.anchor };
}

// ---- on-chain root (docs/receipt.md §8) ----------------------------------------------------------
// Selector of batchOf(bytes32,uint64) = first 4 bytes of keccak256("batchOf(bytes32,uint64)"), computed with
// `python -c "from eth_utils import keccak; print(keccak(text='batchOf(bytes32,uint64)')[:4].hex())"`.
export const BATCH_OF_SELECTOR = "0x6f74911f";

async function rpc(url, method, params) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
                                 body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }) });
  const body = await res.json();
  if (body.error) throw new Error(body.error.message || "JSON-RPC error");
  return body.result;
}

// {ok, detail, root, size, anchoredBlock, head}: the registry's batchOf(hospitalKey, seq) vs the receipt.
export async function checkRootOnChain(url, receipt) {
  const a = receipt.anchor;
  if (!a) return { ok: false, detail: "no anchor" };
  const chainId = parseInt(await rpc(url, "eth_chainId", []), 16);
  if (chainId !== a.chain_id) {
    return { ok: false, conflict: false, detail: `endpoint is chain ${chainId}, receipt says ${a.chain_id}` };
  }
  const key = hex(await sha256(te.encode(receipt.batch.hospital_id)));
  const data = BATCH_OF_SELECTOR + key + receipt.batch.seq.toString(16).padStart(64, "0");
  const out = (await rpc(url, "eth_call", [{ to: a.contract, data }, "latest"])).slice(2);
  const root = out.slice(0, 64), size = parseInt(out.slice(64, 128), 16), block = parseInt(out.slice(128, 192), 16);
  const head = parseInt(await rpc(url, "eth_blockNumber", []), 16);
  const ok = root === receipt.batch.root && size === receipt.batch.size, absent = /^0+$/.test(root);
  // conflict: the registry holds *another* root for this batch — the receipt contradicts the chain.
  return { ok, conflict: !ok && !absent, root, size, anchoredBlock: block, confirmations: ok ? head - block + 1 : 0,
           detail: ok ? "root and size match the registry" : absent ? "batch not in the registry"
             : "the registry holds another root or size" };
}
