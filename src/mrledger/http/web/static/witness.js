// Witness checkpoints (mrl-witness/1) in the browser: the k-of-n rule of ledger/witness.py
// (verify_witness_checkpoints, ported line for line) and the fetch of each witness's published checkpoint as
// service/witnesses.py does it. Why in the page: the doctor's witnesses are hers, not the node's; a node that
// shows her a history nobody else sees (a split view) must not be able to vouch for itself.
// tests/http/web/test_witness_page.py runs the same documents through Python and this module.
import { concat, decodeUtf8Strict, hex, isObject, jcs, parseJsonStrict, te } from "./core.js";

export const WITNESS_FORMAT = "mrl-witness/1";
const FIELDS = ["format", "chain_id", "contract", "hospital_id", "from_seq", "seq", "root", "size", "commitment",
  "block", "time"];
const INTS = ["chain_id", "from_seq", "seq", "size", "block"];
const STRINGS = ["contract", "hospital_id", "root", "commitment", "time"];
const DOCUMENT = ["checkpoint", "alg", "key", "signature"];
export const MAX_CHECKPOINT_BYTES = 64 * 1024; // as service/witnesses.py: one checkpoint is a few hundred bytes
export const FETCH_TIMEOUT_MS = 5000;

const sameKeys = (obj, keys) => Object.keys(obj).sort().join() === [...keys].sort().join();

// ---- Python's base64.b64decode(s, validate=True) -----------------------------------------------------------
// Not atob: it skips whitespace and takes missing padding, which CPython 3.11's strict mode refuses; a witness
// key spelled so would count here and not in Python. Refused: a leading "=", a character outside the alphabet,
// data after the padding that ends a quad, and a length one more than a multiple of four; as there, "=" after
// a complete quad is skipped and the unused low bits of the last character are not checked.
const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
export function b64decodeStrict(s) {
  if (typeof s !== "string" || s[0] === "=") throw new Error("not base64");
  const out = [];
  let quad = 0, acc = 0, bits = 0, pads = 0, padding = false;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "=") {
      padding = true;
      if (quad >= 2 && quad + ++pads >= 4) {
        if (i + 1 < s.length) throw new Error("not base64: data after the padding");
        return Uint8Array.from(out);
      }
      continue;
    }
    const v = B64.indexOf(s[i]);
    if (v < 0 || padding) throw new Error("not base64");
    acc = ((acc << 6) | v) & 0xfff; bits += 6; quad = (quad + 1) % 4;
    if (bits >= 8) { bits -= 8; out.push((acc >> bits) & 0xff); }
  }
  if (quad !== 0) throw new Error("not base64: incorrect padding");
  return Uint8Array.from(out);
}

// ---- parsing a fetched checkpoint ----------------------------------------------------------------------
// Strictly, as parse_json: null when Python would not have the document either. Python also reads "7.0" as a
// float and 2^53 as an int that RFC 8785 cannot spell; every value of a witness document is a string or an
// integer below 2^53, so a document holding either is one Python ignores: null here too.
export function parseCheckpoint(bytes) {
  let exact = true;
  const onNumber = (token, n) => {
    if (/[.eE]/.test(token) || Math.abs(n) > Number.MAX_SAFE_INTEGER) exact = false;
    return n;
  };
  try {
    const document = parseJsonStrict(decodeUtf8Strict(bytes), onNumber);
    return exact ? document : null;
  } catch {
    return null;
  }
}

// ---- the k-of-n rule -------------------------------------------------------------------------------------
function shapeOk(c) {
  if (!isObject(c) || !sameKeys(c, FIELDS) || c.format !== WITNESS_FORMAT) return false;
  if (!INTS.every((f) => Number.isInteger(c[f]) && c[f] >= 0)) return false;
  return c.from_seq >= 1 && c.from_seq <= c.seq && STRINGS.every((f) => typeof c[f] === "string");
}

async function ed25519Verifies(key, signature, message) {
  try { // importKey refuses a key that is not 32 bytes (Python: ValueError), verify a wrong-length signature
    const k = await crypto.subtle.importKey("raw", key, { name: "Ed25519" }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "Ed25519" }, k, signature, message);
  } catch {
    return false;
  }
}

// _open: {key (raw bytes), c} of a document whose signature verifies under the key it names, else null.
async function open(document) {
  if (!isObject(document) || !sameKeys(document, DOCUMENT) || document.alg !== "Ed25519") return null;
  const c = document.checkpoint;
  if (!shapeOk(c)) return null;
  let key, signature;
  try {
    key = b64decodeStrict(document.key); signature = b64decodeStrict(document.signature);
  } catch {
    return null;
  }
  return (await ed25519Verifies(key, signature, te.encode(jcs(c)))) ? { key, c } : null;
}

// Python's sorted() on str: code point order (JS sorts UTF-16 code units, which differs above U+FFFF).
function byCodePoint(a, b) {
  const x = Array.from(a, (ch) => ch.codePointAt(0)), y = Array.from(b, (ch) => ch.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

function setDefault(map, key, value) {
  if (!map.has(key)) map.set(key, value);
  return map.get(key);
}

const refused = (reason, detail, vouching = []) => ({ ok: false, vouching, reason, detail });

// verify_witness_checkpoints: do k of the trusted witnesses (Map or [name, raw key] pairs) vouch for batch seq
// (root: lower-case hex) of hospitalId on this deployment? {ok, vouching (sorted names), reason (null,
// "witness-quorum" or "witness-conflict"), detail (Python's message, without its "reason: " prefix)}.
// Documents from unknown keys, other hospitals or deployments, or that do not verify, are ignored: anyone can
// hand a verifier documents (a null is one that did not parse).
export async function verifyWitnessCheckpoints(documents, { hospitalId, seq, root, chainId, contract, witnesses, k }) {
  const trusted = new Map(witnesses);
  if (!(Number.isInteger(k) && k >= 1 && k <= trusted.size)) {
    throw new RangeError(`k must be in 1..${trusted.size} (the number of configured witnesses)`);
  }
  const names = new Map([...trusted].map(([name, key]) => [hex(key), name])); // one key twice: the last name
  const vouching = new Set(), roots = new Map(), chains = new Map();
  for (const document of documents) {
    const opened = await open(document);
    if (!opened) continue;
    const { key, c } = opened, name = names.get(hex(key));
    if (name === undefined || c.hospital_id !== hospitalId || c.chain_id !== chainId ||
        c.contract.toLowerCase() !== contract.toLowerCase()) continue;
    // Witnesses that started at different batches have different commitments; the same span must agree.
    const firsts = [[setDefault(roots, c.seq, [c.root, name]), c.root],
      [setDefault(chains, `${c.from_seq}/${c.seq}`, [c.commitment, name]), c.commitment]];
    for (const [[held, by], value] of firsts) {
      if (held !== value) {
        return refused("witness-conflict", `witnesses ${by} and ${name} signed different histories of ` +
                                           `${hospitalId} at seq ${c.seq}: a split view`);
      }
    }
    if (c.seq === seq && c.root !== root) {
      return refused("witness-conflict", `witness ${name} signed root ${c.root} for ${hospitalId} batch ${seq}, ` +
                                         `the receipt's batch has ${root}`);
    }
    if (c.from_seq <= seq && seq <= c.seq) vouching.add(name);
  }
  const sorted = [...vouching].sort(byCodePoint);
  if (sorted.length < k) {
    return refused("witness-quorum", `${sorted.length} of the ${k} required witnesses vouch for ${hospitalId} ` +
                                     `batch ${seq} (${sorted.join(", ") || "none"})`, sorted);
  }
  return { ok: true, vouching: sorted, reason: null,
           detail: `${sorted.join(", ")} vouch for batch ${seq} (${sorted.length} of ${k} required)` };
}

// ---- fetching --------------------------------------------------------------------------------------------
// A URL ending in "/" is a witness's directory as `mrledger monitor --witness-out` writes it: <hospital>.json,
// the id escaped as Python's quote(safe="") does (encodeURIComponent leaves !'()* alone).
export function checkpointUrl(url, hospitalId) {
  if (!url.endsWith("/")) return url;
  const escaped = encodeURIComponent(hospitalId).replace(/[!'()*]/g, (ch) => "%" + ch.charCodeAt(0).toString(16).toUpperCase());
  return `${url}${escaped}.json`;
}

async function boundedBody(res) {
  const reader = res.body.getReader(), parts = [];
  for (let n = 0; ;) {
    const { done, value } = await reader.read();
    if (done) return concat(...parts);
    n += value.length;
    if (n > MAX_CHECKPOINT_BYTES) {
      reader.cancel();
      throw new Error(`larger than ${MAX_CHECKPOINT_BYTES} bytes`);
    }
    parts.push(value);
  }
}

// {document (null: none), note (why none, or null)}. A witness on another origin must send
// Access-Control-Allow-Origin (e.g. "*"), or the browser hides its answer from the page: it then counts as down.
// A witness that is down counts for nothing; the k-of-n rule decides whether the others suffice.
export async function fetchCheckpoint(url, hospitalId, timeoutMs = FETCH_TIMEOUT_MS) {
  const target = checkpointUrl(url, hospitalId);
  const none = (why) => ({ document: null, note: `witness checkpoint ${target}: ${why}` });
  try {
    const res = await fetch(target, { signal: AbortSignal.timeout(timeoutMs), redirect: "manual", cache: "no-store",
                                      credentials: "omit", referrerPolicy: "no-referrer" });
    if (res.type === "opaqueredirect") return none("a redirect (not followed)");
    if (res.status !== 200) return none(`HTTP ${res.status}`);
    const document = parseCheckpoint(await boundedBody(res));
    return document === null ? none("not a strict JSON checkpoint") : { document, note: null };
  } catch (e) {
    return none(`${e.name}: ${e.message}`);
  }
}

// The receipt's batch against the doctor's witnesses ({witnesses: [{name, key, url}], k}): the checkpoints of
// all of them fetched in parallel, then verifyWitnessCheckpoints; notes say which gave none.
export async function checkWitnesses(receipt, { witnesses, k }, timeoutMs = FETCH_TIMEOUT_MS) {
  const b = receipt.batch, a = receipt.anchor;
  const fetched = await Promise.all(witnesses.map((w) => fetchCheckpoint(w.url, b.hospital_id, timeoutMs)));
  const result = await verifyWitnessCheckpoints(fetched.map((f) => f.document), {
    hospitalId: b.hospital_id, seq: b.seq, root: b.root, chainId: a.chain_id, contract: a.contract,
    witnesses: witnesses.map((w) => [w.name, w.key]), k });
  return { ...result, notes: fetched.map((f) => f.note).filter(Boolean) };
}

// ---- the doctor's settings -------------------------------------------------------------------------------
// One witness a line: its name (may hold spaces), its Ed25519 public key (base64 of the 32 raw bytes, the "key"
// of its documents) and its checkpoint URL; blank lines and "#" comments skipped. k empty: all of them.
// {witnesses, k}, null when none are listed; throws with the line at fault.
export function parseWitnessSettings(text, kText = "") {
  const witnesses = [];
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    witnesses.push(witnessLine(line, i + 1, witnesses));
  }
  if (!witnesses.length) return null;
  const k = String(kText).trim() === "" ? witnesses.length : Number(kText);
  if (!Number.isInteger(k) || k < 1 || k > witnesses.length) {
    throw new Error(`k must be a whole number in 1..${witnesses.length} (the number of witnesses)`);
  }
  return { witnesses, k };
}

function witnessLine(line, n, earlier) {
  const words = line.split(/\s+/);
  if (words.length < 3) throw new Error(`line ${n}: name, public key and checkpoint URL expected`);
  const url = words.at(-1), name = words.slice(0, -2).join(" ");
  let key;
  try { key = b64decodeStrict(words.at(-2)); } catch { key = null; }
  if (!key || key.length !== 32) throw new Error(`line ${n}: the public key is not base64 of 32 bytes`);
  if (!/^https?:\/\/./.test(url)) throw new Error(`line ${n}: the checkpoint URL must start with https:// or http://`);
  if (earlier.some((w) => w.name === name)) throw new Error(`line ${n}: witness ${name} is listed twice`);
  if (earlier.some((w) => hex(w.key) === hex(key))) throw new Error(`line ${n}: this key is listed twice`);
  return { name, key, url };
}
