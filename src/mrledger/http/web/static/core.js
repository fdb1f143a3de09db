// mrledger in the browser: RFC 8785 (JCS), the mrl-leaf/1 leaf, RFC 9162 inclusion, the mrl:/ QR payload
// and the on-chain root check. Pure functions, no DOM: the pages and the tests import this module.
// Mirrors ledger/ and service/qr.py; the test suite runs tests/vectors/receipt/*.json through both.

export const te = new TextEncoder();

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
export function concat(...parts) {
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

// ---- strict JSON (docs/receipt.md §1) ------------------------------------------------------------
// JSON.parse keeps the last of two equal keys, takes lone surrogate escapes, reads 1e400 as Infinity and
// 1e-400 as 0, and nests as deep as the stack goes. Receipt files and QR payloads are parsed here instead,
// refusing each, as the reference parser (ledger.canonical.parse_json) does.
export const MAX_JSON_DEPTH = 128, MAX_JSON_BYTES = 8 * 1024 * 1024;
const LONE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const J_WS = /[ \t\n\r]*/y, J_LIT = /true|false|null/y;
const J_STR = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const J_NUM = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

// UTF-8 without a byte order mark: fatal (invalid bytes are an error, not U+FFFD), ignoreBOM (a BOM is kept,
// so that the parser refuses it rather than the decoder dropping it unseen).
export function decodeUtf8Strict(bytes) {
  if (bytes.length > MAX_JSON_BYTES) throw new Error(`JSON document larger than ${MAX_JSON_BYTES} bytes`);
  return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
}

// onNumber(token, value) sees each number's spelling and returns the value to keep: witness.js tells the
// fractions and big integers Python reads as float, or as an int no double holds, from the integers.
export function parseJsonStrict(text, onNumber = (token, n) => n) {
  let i = 0;
  const fail = (why) => { throw new Error(`invalid JSON at character ${i}: ${why}`); };
  const take = (re) => { re.lastIndex = i; const m = re.exec(text); if (m) i = re.lastIndex; return m && m[0]; };
  const string = () => {
    const token = take(J_STR);
    if (token === null) fail("expected a string");
    const s = JSON.parse(token);
    if (LONE.test(s)) fail("lone surrogate escape");
    return s;
  };
  const value = (level) => { // level: arrays and objects around this value
    take(J_WS);
    const c = text[i];
    if (c === "{" || c === "[") {
      if (level >= MAX_JSON_DEPTH) fail(`nests deeper than ${MAX_JSON_DEPTH} levels`);
      i++;
      const close = c === "{" ? "}" : "]", out = c === "{" ? {} : [];
      take(J_WS);
      if (text[i] === close) { i++; return out; }
      for (;;) {
        if (c === "[") out.push(value(level + 1));
        else {
          take(J_WS);
          const key = string();
          if (Object.prototype.hasOwnProperty.call(out, key)) fail(`duplicate key ${JSON.stringify(key)}`);
          take(J_WS);
          if (text[i++] !== ":") fail("expected ':'");
          // defineProperty: a "__proto__" key is a member, as in JSON.parse, not the object's prototype
          Object.defineProperty(out, key, { value: value(level + 1), enumerable: true, writable: true, configurable: true });
        }
        take(J_WS);
        const sep = text[i++];
        if (sep === close) return out;
        if (sep !== ",") fail(`expected ',' or '${close}'`);
      }
    }
    if (c === '"') return string();
    const literal = take(J_LIT);
    if (literal !== null) return literal === "true" ? true : literal === "false" ? false : null;
    const number = take(J_NUM);
    if (number === null) fail("unexpected character");
    const n = Number(number);
    if (!Number.isFinite(n)) fail(`number ${number.slice(0, 32)} is beyond the range of a double`);
    if (n === 0 && /[1-9]/.test(number.split(/[eE]/)[0])) fail(`number ${number.slice(0, 32)} rounds to 0`);
    return onNumber(number, n);
  };
  const out = value(0);
  take(J_WS);
  if (i !== text.length) fail("trailing data");
  return out;
}

export const parseReceiptBytes = (bytes) => parseJsonStrict(decodeUtf8Strict(bytes));

// ---- offline receipt check (docs/receipt.md §10) -------------------------------------------------
const HEX64 = /^[0-9a-f]{64}$/, HEX32 = /^[0-9a-f]{32}$/, HOSPITAL_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const FIELDS = ["format", "record", "salt", "leaf", "audit_path", "batch", "anchor", "signature", "extensions",
  "critical"];
const MAX_INDEX = 1048575, MAX_SAFE = Number.MAX_SAFE_INTEGER, MAX_RESOURCE_DEPTH = 64;
const isInt = (v, min = 0, max = Infinity) => Number.isInteger(v) && v >= min && v <= max;
export const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const same = (obj, keys) => isObject(obj) && Object.keys(obj).sort().join() === [...keys].sort().join();
const levels = (v) => (v !== null && typeof v === "object"
  ? 1 + Object.values(v).reduce((m, x) => Math.max(m, levels(x)), 0) : 0);
const wellFormed = (v) => (typeof v === "string" ? !LONE.test(v) : v === null || typeof v !== "object" ||
  Object.entries(v).every(([k, x]) => !LONE.test(k) && wellFormed(x)));

// Times (§3): the one spelling, of a real instant: calendar dates of years 0001-9999, no hour 24, no :60.
const TIME = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d{0,5}[1-9])?Z$/;
function validTime(s) {
  const m = typeof s === "string" && TIME.exec(s);
  if (!m) return false;
  const [y, mo, d, h, mi, sec] = m.slice(1, 7).map(Number);
  const leap = y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][mo - 1];
  return y >= 1 && d >= 1 && d <= days && h <= 23 && mi <= 59 && sec <= 59;
}

// The record's strings (§3): NFC everywhere; no control character in the typed fields; tab, LF and CR allowed
// in opaque JSON (content.resource, content.data), keys included, which nests at most 64 levels below its
// object. Numbers are finite with magnitude at most 2^53-1; null only inside opaque JSON.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/, CONTROL_OPAQUE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/;
function stringProblem(s, control) {
  if (s.normalize("NFC") !== s) return "a string is not NFC";
  if (control.test(s)) return "a string holds a control character";
  return null;
}
function recordValueProblem(v, opaque, depth) {
  if (opaque && depth > MAX_RESOURCE_DEPTH) return `opaque JSON nests deeper than ${MAX_RESOURCE_DEPTH} levels`;
  if (v === null) return opaque ? null : "record holds null (not normalised)";
  if (typeof v === "string") return stringProblem(v, opaque ? CONTROL_OPAQUE : CONTROL);
  if (typeof v === "number") return Number.isFinite(v) && Math.abs(v) <= MAX_SAFE ? null : "a number beyond 2^53-1";
  if (typeof v !== "object") return null;
  for (const [k, x] of Object.entries(v)) {
    const why = (opaque && stringProblem(k, CONTROL_OPAQUE)) || (!opaque && k.normalize("NFC") !== k && "a key is not NFC")
      || recordValueProblem(x, opaque, depth + 1);
    if (why) return why;
  }
  return null;
}
function recordProblem(rec) {
  const c = rec.content;
  const inner = isObject(c) ? (c.type === "fhir-resource" ? "resource" : c.type === "event" ? "data" : null) : null;
  const { [inner]: opaqueValue, ...typedContent } = inner ? c : {};
  const typed = inner ? { ...rec, content: typedContent } : rec;
  const why = recordValueProblem(typed, false, 0) || (inner && (!isObject(opaqueValue) ? `content.${inner} must be an object`
    : recordValueProblem(opaqueValue, true, 0)));
  if (why) return why;
  if (c.type === "fhir-resource" && (typeof c.resource_type !== "string" || !/^[A-Z][A-Za-z]{1,63}$/.test(c.resource_type)
      || c.resource.resourceType !== c.resource_type)) return "content.resource_type";
  if (c.type === "event" && (typeof c.event !== "string" || !/^[a-z][a-z0-9-]{0,63}$/.test(c.event))) return "content.event";
  return null;
}

// The anchor (§8, §18): mrl-receipt/1 names a v1 registry (root and size per batch); mrl-receipt/2 a v2 one,
// whose one commitment word binds the map root too, stored alone (hub null) or in a hub (id, index, path).
export const RECEIPT_V1 = "mrl-receipt/1", RECEIPT_V2 = "mrl-receipt/2";
const ANCHOR_V1 = ["chain_id", "contract", "tx_hash", "block_number", "block_hash"];
const ANCHOR_V2 = [...ANCHOR_V1, "map_root", "hub"];
const MAX_U64 = 2 ** 64 - 1, MAX_HUB_INDEX = 4095, MAX_HUB_PATH = 12;
export function anchorProblem(a, v2) {
  if (a == null) return null;
  if (!same(a, v2 ? ANCHOR_V2 : ANCHOR_V1) || !isInt(a.chain_id, 1, MAX_SAFE) || !isInt(a.block_number) ||
      !/^0x[0-9a-fA-F]{40}$/.test(a.contract) || !/^0x[0-9a-fA-F]{64}$/.test(a.tx_hash) ||
      !/^0x[0-9a-fA-F]{64}$/.test(a.block_hash)) return "anchor";
  if (v2 && (typeof a.map_root !== "string" || !HEX64.test(a.map_root))) return "anchor.map_root";
  const h = a.hub;
  if (v2 && h !== null && (!same(h, ["id", "index", "path"]) || !isInt(h.id, 1, MAX_U64) ||
      !isInt(h.index, 0, MAX_HUB_INDEX) || !Array.isArray(h.path) || h.path.length > MAX_HUB_PATH ||
      !h.path.every((p) => typeof p === "string" && HEX64.test(p)))) return "anchor.hub";
  return null;
}

// The shape checks a browser can make; the server's parser is stricter on the record (its closed fields,
// code systems, bounds) and runs anyway when the page asks it.
function formatProblem(r) {
  if (!isObject(r)) return "not a JSON object";
  if (r.format !== RECEIPT_V1 && r.format !== RECEIPT_V2) {
    return `format is ${JSON.stringify(r.format)}, not ${RECEIPT_V1} or ${RECEIPT_V2}`;
  }
  // One spelling per receipt: a receipt not anchored yet is an mrl-receipt/1 whatever its registry.
  if (r.format === RECEIPT_V2 && r.anchor == null) return "an mrl-receipt/2 names its v2 anchor";
  const unknown = Object.keys(r).filter((k) => !FIELDS.includes(k));
  if (unknown.length) return `unknown fields: ${unknown.join(", ")}`;
  for (const k of ["record", "salt", "leaf", "audit_path", "batch"]) if (!(k in r)) return `missing ${k}`;
  if (levels(r) > MAX_JSON_DEPTH) return `nests deeper than ${MAX_JSON_DEPTH} levels`;
  if (!wellFormed(r)) return "lone surrogate";
  const rec = r.record;
  if (!isObject(rec)) return "record is not an object";
  if (!isInt(rec.version, 1, 2147483647)) return "record.version must be an integer in 1..2^31-1";
  if (typeof rec.hospital_id !== "string" || !HOSPITAL_ID.test(rec.hospital_id) || typeof rec.result_id !== "string") {
    return "record identity";
  }
  for (const t of ["issued", "effective"]) if (!validTime(rec[t])) return `record.${t} is not a UTC time`;
  const recordWhy = recordProblem(rec);
  if (recordWhy) return `record: ${recordWhy}`;
  if (typeof r.salt !== "string" || !HEX32.test(r.salt)) return "salt must be 32 lower-case hex digits";
  if (!same(r.leaf, ["index", "hash"]) || !isInt(r.leaf.index, 0, MAX_INDEX) || !HEX64.test(r.leaf.hash)) return "leaf";
  if (!Array.isArray(r.audit_path) || r.audit_path.length > 64 || !r.audit_path.every((p) => HEX64.test(p))) {
    return "audit_path";
  }
  const b = r.batch;
  if (!same(b, ["format", "hospital_id", "seq", "size", "root", "sealed_at"]) || b.format !== "mrl-batch/1" ||
      typeof b.hospital_id !== "string" || !HOSPITAL_ID.test(b.hospital_id) ||
      !isInt(b.seq, 1) || !isInt(b.size, 1, 1048576) || !HEX64.test(b.root) || !validTime(b.sealed_at)) return "batch head";
  const anchorWhy = anchorProblem(r.anchor, r.format === RECEIPT_V2);
  if (anchorWhy) return anchorWhy;
  // The hospital's signature (docs/signatures.md §3): only its shape here. X.509 paths and CRLs are the
  // node's job; the page shows the node's result, never its own opinion of a certificate.
  const s = r.signature;
  if ("signature" in r && (!same(s, ["alg", "chain_id", "contract", "value", "certificates"]) ||
      typeof s.alg !== "string" || !isInt(s.chain_id, 1, MAX_SAFE) || !/^0x[0-9a-f]{40}$/.test(s.contract) ||
      typeof s.value !== "string" || !Array.isArray(s.certificates) || s.certificates.length < 1 ||
      s.certificates.length > 4 || !s.certificates.every((c) => typeof c === "string"))) return "signature";
  // extensions and critical (§9): when present, an object and a list (never null); each critical name once.
  if ("extensions" in r && !isObject(r.extensions)) return "extensions must be an object";
  const ext = r.extensions || {}, crit = "critical" in r ? r.critical : [];
  if (!Array.isArray(crit) || !crit.every((c) => typeof c === "string" && Object.hasOwn(ext, c)) ||
      new Set(crit).size !== crit.length) return "critical";
  // the one extension this version defines (§17), parsed as ledger/receipt.py and the schema do
  if (Object.hasOwn(ext, "status_secret") && !(typeof ext.status_secret === "string" && HEX32.test(ext.status_secret))) {
    return "extensions.status_secret";
  }
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

// ---- mrl:/ QR payload (docs/receipt.md §14, service/qr.py) -------------------------------------------
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
  // zlib format (RFC 1950): Compression Streams "deflate". Bounded like service/qr.py MAX_INFLATED_BYTES.
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  const buf = new Uint8Array(await new Response(stream).arrayBuffer());
  if (buf.length > 65536) throw new Error("payload too large");
  return buf;
}

export const isQrText = (s) => typeof s === "string" && s.trim().slice(0, 5).toUpperCase() === "MRL:/";

export async function decodeQrText(s) {
  s = s.trim();
  if (!isQrText(s) || s.length > 4296) throw new Error("not an mrl:/ payload");
  return parseReceiptBytes(await inflate(b45decode(s.slice(5))));
}

// An mrl-qref/1 with its record plus the public proof -> the full receipt (checked like any other).
export function receiptFromReference(ref, proof) {
  if (ref.format !== "mrl-qref/1" || !ref.record) throw new Error("reference without record");
  if (proof.leaf.hash !== ref.leaf_hash || proof.batch.seq !== ref.batch_seq) throw new Error("proof mismatch");
  // One spelling per receipt: an anchor with a map root is a v2 registry's, so the receipt is mrl-receipt/2.
  const format = proof.anchor && "map_root" in proof.anchor ? RECEIPT_V2 : RECEIPT_V1;
  return { format, record: ref.record, salt: ref.salt, leaf: proof.leaf,
           audit_path: proof.audit_path, batch: proof.batch, anchor: proof.anchor };
}

// ---- on-chain root (docs/receipt.md §8) ----------------------------------------------------------
// Selector of batchOf(bytes32,uint64) = first 4 bytes of keccak256("batchOf(bytes32,uint64)"), computed with
// `python -c "from eth_utils import keccak; print(keccak(text='batchOf(bytes32,uint64)')[:4].hex())"`.
export const BATCH_OF_SELECTOR = "0x6f74911f";

export async function rpc(url, method, params) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
                                 body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }) });
  const body = await res.json();
  if (body.error) throw new Error(body.error.message || "JSON-RPC error");
  return body.result;
}

// The registry's batchOf(SHA-256(hospital id), seq): {root (hex), size, block}; root all zeros when not anchored.
export async function batchOf(url, contract, hospitalId, seq) {
  const key = hex(await sha256(te.encode(hospitalId)));
  const data = BATCH_OF_SELECTOR + key + seq.toString(16).padStart(64, "0");
  const out = (await rpc(url, "eth_call", [{ to: contract, data }, "latest"])).slice(2);
  return { root: out.slice(0, 64), size: parseInt(out.slice(64, 128), 16), block: parseInt(out.slice(128, 192), 16) };
}

// {ok, conflict, detail, anchoredBlock, confirmations} and root, size (v1) or commitment (v2): the registry
// vs the receipt. conflict: the registry provably holds something else for (hospital, seq).
export async function checkRootOnChain(url, receipt) {
  const a = receipt.anchor;
  if (!a) return { ok: false, detail: "no anchor" };
  const chainId = parseInt(await rpc(url, "eth_chainId", []), 16);
  if (chainId !== a.chain_id) {
    return { ok: false, conflict: false, detail: `endpoint is chain ${chainId}, receipt says ${a.chain_id}` };
  }
  return receipt.format === RECEIPT_V2 ? checkCommitmentOnChain(url, receipt) : checkBatchOnChain(url, receipt);
}

// v1: batchOf(hospitalKey, seq) holds the receipt's root and size.
async function checkBatchOnChain(url, receipt) {
  const a = receipt.anchor;
  const { root, size, block } = await batchOf(url, a.contract, receipt.batch.hospital_id, receipt.batch.seq);
  const head = parseInt(await rpc(url, "eth_blockNumber", []), 16);
  const ok = root === receipt.batch.root && size === receipt.batch.size, absent = /^0+$/.test(root);
  // conflict: the registry holds *another* root for this batch — the receipt contradicts the chain.
  return { ok, conflict: !ok && !absent, root, size, anchoredBlock: block, confirmations: ok ? head - block + 1 : 0,
           detail: ok ? "root and size match the registry" : absent ? "batch not in the registry"
             : "the registry holds another root or size" };
}

// ---- on-chain commitment, v2 registry (docs/receipt.md §18) --------------------------------------------------
// Selectors and the event topic computed like BATCH_OF_SELECTOR, e.g.
// `python -c "from eth_utils import keccak; print(keccak(text='isAnchored(bytes32,uint64,bytes32,(uint64,uint256,bytes32[]))')[:4].hex())"`;
// the topic is the whole keccak of 'BatchAnchored(bytes32,uint64,bytes32)'.
export const IS_ANCHORED_SELECTOR = "0x7ac1c8d6"; // isAnchored(bytes32,uint64,bytes32,(uint64,uint256,bytes32[]))
export const COMMITMENT_OF_SELECTOR = "0x46e596e4"; // commitmentOf(bytes32,uint64)
export const HUB_OF_SELECTOR = "0x061d4f84"; // hubOf(uint64)
export const HUB_COUNT_SELECTOR = "0x7985bc44"; // hubCount(): only a v2 registry answers it
export const LAST_SEQ_SELECTOR = "0x50367b77"; // lastSeq(bytes32), the same on both registries
export const BATCH_ANCHORED_TOPIC = "0x1273a4026b115b326b4daf6d9b6f57ae6ff713f4acb6b891e38b8e550e2ae17c";
export const DIRECT = { id: 0, index: 0, path: [] }; // isAnchored's "stored alone" position

const word = (n) => BigInt(n).toString(16).padStart(64, "0");
const call = async (url, to, data) => (await rpc(url, "eth_call", [{ to, data }, "latest"])).slice(2);
export const hospitalKey = async (hospitalId) => hex(await sha256(te.encode(hospitalId)));

// statusmap.batch_commitment_v2: SHA-256(0x04 || root || u64be(size) || map_root), hex.
export async function batchCommitment(rootHex, size, mapRootHex) {
  const u64 = new Uint8Array(8);
  new DataView(u64.buffer).setBigUint64(0, BigInt(size));
  return hex(await sha256(concat(new Uint8Array([4]), unhex(rootHex), u64, unhex(mapRootHex))));
}

// The ABI call data of isAnchored: the HubProof tuple holds a dynamic array, so the tuple is itself dynamic —
// the head carries its offset (4 words), the tuple's own head the array's offset within the tuple (3 words).
export function isAnchoredData(key, seq, commitment, hub) {
  return IS_ANCHORED_SELECTOR + key + word(seq) + commitment + word(4 * 32) +
    word(hub.id) + word(hub.index) + word(3 * 32) + word(hub.path.length) + hub.path.join("");
}

export async function isAnchored(url, contract, key, seq, commitment, hub = DIRECT) {
  return BigInt("0x" + ((await call(url, contract, isAnchoredData(key, seq, commitment, hub))) || "0")) === 1n;
}

export async function lastSeq(url, contract, key) {
  return parseInt(await call(url, contract, LAST_SEQ_SELECTOR + key), 16);
}

// The BatchAnchored log of (hospital, seq) in a v2 registry: {commitment, block, tx}, or null. The block the
// receipt or document names is read first (one small range); a public endpoint may refuse a scan from block 0.
export async function anchoredLog(url, contract, key, seq, near = null, from = 0) {
  const ranges = [...(near === null ? [] : [[near, near]]), [from, "latest"]];
  for (const [lo, hi] of ranges) {
    const logs = await rpc(url, "eth_getLogs", [{ address: contract, topics: [BATCH_ANCHORED_TOPIC, "0x" + key],
      fromBlock: "0x" + lo.toString(16), toBlock: hi === "latest" ? hi : "0x" + hi.toString(16) }]);
    const mine = logs.filter((l) => !l.removed && parseInt(l.data.slice(2, 66), 16) === seq);
    if (mine.length) {
      const l = mine.at(-1);
      return { commitment: l.data.slice(66, 130).toLowerCase(), block: parseInt(l.blockNumber, 16), tx: l.transactionHash };
    }
  }
  return null;
}

// Is the contract a v1 registry? Positively: it answers batchOf and not hubCount. Any other answer (an error of
// the endpoint, no code there) proves nothing, so it is never read as a contradiction.
async function isV1Registry(url, contract) {
  const answer = (data) => call(url, contract, data).then((out) => out.length, () => -1);
  return (await answer(HUB_COUNT_SELECTOR)) === -1 && (await answer(BATCH_OF_SELECTOR + word(0) + word(1))) === 192;
}

// The block that anchored the receipt's commitment, as the receipt names it: a hub's own record (hubOf), or
// for a commitment stored alone the receipt's transaction, mined in that block with its BatchAnchored log.
async function anchoringBlock(url, a, key, seq, commitment) {
  if (a.hub) return parseInt((await call(url, a.contract, HUB_OF_SELECTOR + word(a.hub.id))).slice(128, 192), 16);
  const tx = await rpc(url, "eth_getTransactionReceipt", [a.tx_hash]);
  if (!tx) return null;
  const data = "0x" + word(seq) + commitment, mine = (l) => l.address.toLowerCase() === a.contract.toLowerCase() &&
    l.topics[0] === BATCH_ANCHORED_TOPIC && l.topics[1] === "0x" + key && l.data.toLowerCase() === data;
  return tx.logs.some(mine) ? parseInt(tx.blockNumber, 16) : null;
}

// v2: the commitment of (root, size, map root) is anchored for (hospital, seq) at the receipt's place, in the
// receipt's block. Not anchored there is a conflict only when the registry holds another commitment for it.
async function checkCommitmentOnChain(url, receipt) {
  const a = receipt.anchor, b = receipt.batch, key = await hospitalKey(b.hospital_id);
  const commitment = await batchCommitment(b.root, b.size, a.map_root);
  const fail = (conflict, detail) => ({ ok: false, conflict, commitment, anchoredBlock: null, confirmations: 0, detail });
  let held;
  try {
    held = await isAnchored(url, a.contract, key, b.seq, commitment, a.hub || DIRECT);
  } catch (e) {
    // As verify_on_chain: an mrl-receipt/2 names a commitment a v1 registry does not store.
    if (await isV1Registry(url, a.contract)) return fail(true, `the receipt is mrl-receipt/2 but registry ${a.contract} is a v1 registry`);
    throw e;
  }
  if (!held) return notAnchoredThere(url, a, key, b.seq, commitment, fail);
  const block = await anchoringBlock(url, a, key, b.seq, commitment);
  if (block !== a.block_number) {
    return fail(false, `the registry holds this commitment, but not as anchored in block ${a.block_number} ` +
                       "(a chain reorganisation?): ask the hospital for a fresh receipt");
  }
  const head = parseInt(await rpc(url, "eth_blockNumber", []), 16);
  return { ok: true, conflict: false, commitment, anchoredBlock: block, confirmations: head - block + 1,
           detail: `the registry holds this batch's commitment (root, size, map root)${a.hub ? ` in hub ${a.hub.id}` : ""}` };
}

// Why isAnchored said no: not anchored (yet), anchored with this commitment elsewhere (a reorg moved it), or
// another commitment anchored for (hospital, seq) — the only case that contradicts the receipt.
async function notAnchoredThere(url, a, key, seq, commitment, fail) {
  if (!((await lastSeq(url, a.contract, key)) >= seq)) return fail(false, "batch not in the registry");
  const direct = await call(url, a.contract, COMMITMENT_OF_SELECTOR + key + word(seq));
  const other = /^0*$/.test(direct) ? (await anchoredLog(url, a.contract, key, seq, a.block_number))?.commitment : direct;
  if (other === undefined) return fail(false, "the registry's log of this batch could not be found");
  if (other !== commitment) return fail(true, "the registry holds another commitment (root, size or map root) for this batch");
  return fail(false, "the registry holds this commitment, but not at the place the receipt names: ask the hospital for a fresh receipt");
}
