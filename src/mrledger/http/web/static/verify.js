// The /verify page: receipt (file, paste, QR image, camera), held record or held FHIR resource in; offline
// check first (receipts), then the ledger (POST /v1/verify), then optionally the doctor's own JSON-RPC endpoint.
// A FHIR resource has no proof to check offline: the ledger maps it as intake did and finds its version.
// With witnesses in the settings, a receipt reads AUTHENTIC only if k of them vouch for its batch (witness.js).
import {
  checkRootOnChain, decodeQrText, decodeUtf8Strict, isQrText, parseJsonStrict, receiptFromReference, verifyOffline,
} from "./core.js";
import { mountDecision, showDecision } from "./decision.js";
import { currentStatus } from "./status.js";
import { apply, mountSwitcher, t } from "./i18n.js";
import { checkWitnesses, parseWitnessSettings } from "./witness.js";

const $ = (id) => document.getElementById(id);
const store = { token: sessionStorage, rpc: localStorage, explorer: localStorage };
let last = null; // {offline, server, chain, status, witness} of the last check, re-rendered on a language change

for (const [id, where] of Object.entries(store)) {
  $(id).value = where.getItem("mrl." + id) || "";
  $(id).addEventListener("change", () => where.setItem("mrl." + id, $(id).value.trim()));
}

// The doctor's witnesses, set once (localStorage). A deep link (?witnesses=<lines>&k=<k>, percent-encoded as
// URLSearchParams writes it) fills them in only where none are saved, and is saved only once she edits them: a
// link must never replace her own list, or it could swap her witnesses for some that vouch for anything.
const WITNESS_FIELDS = ["witnesses", "witness-k"];
function loadWitnessSettings() {
  for (const id of WITNESS_FIELDS) $(id).value = localStorage.getItem("mrl." + id) || "";
  const q = new URLSearchParams(location.search);
  if (q.has("witnesses") && !$("witnesses").value.trim()) {
    $("witnesses").value = q.get("witnesses");
    $("witness-k").value = q.get("k") || "";
  }
  for (const id of WITNESS_FIELDS) {
    $(id).addEventListener("change", () => {
      for (const f of WITNESS_FIELDS) localStorage.setItem("mrl." + f, $(f).value.trim());
      showWitnessSettings();
    });
  }
  showWitnessSettings();
}

// {config} (null: no witnesses) or {error}, from the fields as they are now.
function witnessSettings() {
  try { return { config: parseWitnessSettings($("witnesses").value, $("witness-k").value) }; }
  catch (e) { return { error: e.message }; }
}

const fill = (template, values) => template.replace(/\{(\w+)\}/g, (m, key) => (key in values ? values[key] : m));

function showWitnessSettings() {
  const { config, error } = witnessSettings(), out = $("witness-settings");
  out.textContent = error ? `${t("wit.set.invalid")}: ${error}`
    : config ? fill(t("wit.set.ok"), { n: config.witnesses.length, k: config.k }) : "";
  out.className = error ? "alert" : "muted";
}

function setVerdict(kind, word, sub = "") {
  const box = $("verdict");
  box.className = "v-" + kind;
  box.dataset.verdict = kind;
  delete $("verdict-word").dataset.i18n; // from now on render() owns the text, also across language switches
  $("verdict-word").textContent = word;
  $("verdict-sub").textContent = sub;
}

function step(id, state, text) {
  $("step-" + id).className = "s-" + state;
  $(id + "-status").textContent = text;
}

function fact(dl, key, value, href) {
  if (value === null || value === undefined || value === "") return;
  const dt = document.createElement("dt"), dd = document.createElement("dd");
  dt.textContent = t(key);
  if (href) {
    const a = document.createElement("a");
    a.href = href; a.textContent = value; a.rel = "noreferrer noopener"; a.target = "_blank";
    dd.append(a);
  } else dd.textContent = value;
  dl.append(dt, dd);
}

// The hospital's signature as the node checked it (the page re-checks no X.509: it says so).
function signatureText(server, receipt) {
  const sig = server && server.signature, signed = receipt && receipt.signature;
  if (!sig) return signed ? t("sig.notasked") : null;
  if (sig.status === "valid" && sig.signer) {
    return `${t("sig.valid")} ${sig.signer.subject} (${sig.signer.hospital_id}) — ${t("sig.node")}`;
  }
  if (sig.status === "absent") return t("sig.absent");
  if (sig.status === "not-checked") return signed ? t("sig.notchecked") : null;
  const check = (server.checks || []).find((c) => c.name === "signature");
  return `${t("sig.fail")}: ${check && check.detail ? check.detail : sig.status} — ${t("sig.node")}`;
}

const local = (iso) => (iso ? new Date(iso).toLocaleString(document.documentElement.lang) + ` (${iso})` : null);

function render() {
  if (!last) return;
  const { offline, server, chain, receipt, error } = last;
  $("steps").hidden = false;
  // 1. offline
  if (!offline) step("offline", "skip", t("srv.skip"));
  else if (offline.status === "invalid") step("offline", "fail", `${t("off.fail")}: ${offline.failed} — ${offline.checks.at(-1).detail}`);
  else step("offline", "ok", t(offline.status === "valid" ? "off.ok" : "off.unanchored"));
  $("step-offline").dataset.state = offline ? offline.status : "skipped";
  // 2. server
  if (server) step("server", server.verdict === "tampered" ? "fail" : server.verdict === "authentic" ? "ok" : "skip",
                   `${server.verdict}${server.failed_check ? " (" + server.failed_check + ")" : ""}`);
  else step("server", error ? "fail" : "skip", error ? `${t("srv.error")}: ${error}` : t("srv.skip"));
  // 3. chain
  if (chain) step("chain", chain.ok ? "ok" : "fail", chain.ok ? `${t("chain.ok")} (${t("d.conf")}: ${chain.confirmations})`
                                                         : `${t("chain.fail")}: ${chain.detail}`);
  else step("chain", "skip", t("chain.skip"));
  // 4. current status (status map, docs/receipt.md §17)
  const st = last.status;
  if (st) {
    // On a v2 registry the commitment binds the map root: the answer is the chain's, not the node's word.
    const where = st.chain ? `${t("st.chain")}; ${t(st.chain.map_root_bound ? "st.v2" : "st.v1")}` : t("st.node");
    step("status", st.status === "current" ? "ok" : st.status === "unknown" ? "skip" : "fail", `${st.status}: ${st.detail} — ${where}`);
  } else step("status", "skip", t("st.skip"));
  $("step-status").dataset.state = st ? st.status : "skipped";
  if (st && st.chain) $("step-status").dataset.mapRootBound = String(st.chain.map_root_bound);
  else delete $("step-status").dataset.mapRootBound;
  // 5. the doctor's witnesses (shown only when she has configured some)
  const w = last.witness;
  renderWitnessStep(w);
  // Too few of them vouching (or a split view, or no way to ask) is what the verdict must not read past.
  const unwitnessed = w && !["vouched", "skipped"].includes(w.state);

  // The verdict: a failed offline check is final (tampered) whatever a server says.
  let kind, word, sub = "";
  if (offline && offline.status === "invalid") { kind = "tampered"; word = t("v.tampered"); }
  else if (last.waiting) { kind = "working"; word = t("v.working"); sub = t("off.title"); }
  // The doctor's own node outranks the ledger: another root on chain is tampering; no root there (or a
  // wrong or unreachable endpoint) means this receipt cannot be confirmed independently.
  else if (chain && chain.conflict) { kind = "tampered"; word = t("v.tampered"); sub = t("chain.fail"); }
  else if (chain && !chain.ok) { kind = "unknown"; word = t("v.unknown"); sub = `${t("chain.fail")}: ${chain.detail}`; }
  else if (server) {
    kind = server.verdict;
    if (kind === "authentic" && server.superseded_by) kind = "superseded";
    // The status map checked on the doctor's own chain endpoint outranks what the node's database says.
    if ((kind === "authentic" || kind === "superseded") && st && st.chain) {
      if (st.status === "superseded") kind = "superseded";
      else if (st.status === "withdrawn") kind = "revoked";
      else if (st.status !== "current") { kind = "unknown"; sub = `${t("st.unverified")}: ${st.detail}`; }
    }
    // The doctor's witnesses outrank the node too: the chain holds the batch, but only they can say the node
    // shows everyone that history. A revocation needs no vouching to be heeded.
    if ((kind === "authentic" || kind === "superseded") && unwitnessed) { kind = "unknown"; sub = witnessVerdict(w); }
    word = t("v." + kind);
    if (server.recognition && !sub) sub = t("rec." + server.recognition.decision);
    if (st && st.chain && (st.status === "superseded" || st.status === "withdrawn")) sub = st.detail;
    if (kind === "cannot-match") sub = (server.checks.find((c) => c.name === server.failed_check) || {}).detail || sub;
    if (server.failed_check === "signature") sub = `${t("sig.fail")}: ${server.signature ? server.signature.status : ""}`;
  } else if (offline) { kind = offline.status === "valid" ? "unknown" : "pending"; word = t("v." + kind); sub = t("v.offline-only"); }
  else { kind = "unknown"; word = t("v.unknown"); sub = error ? `${t("srv.error")}: ${error}` : ""; }
  setVerdict(kind, word, sub);

  const dl = $("facts");
  dl.replaceChildren();
  const s = server || {}, rec = receipt ? receipt.record : {}, a = (receipt && receipt.anchor) || {};
  fact(dl, "d.hospital", s.hospital_name ? `${s.hospital_name} (${s.hospital_id})` : s.hospital_id || rec.hospital_id);
  fact(dl, "d.result", s.result_id || rec.result_id);
  fact(dl, "d.version", s.version ?? rec.version);
  fact(dl, "d.issued", local(s.issued || rec.issued));
  if (receipt) fact(dl, "d.batch", `${receipt.batch.seq} (${receipt.leaf.index + 1} / ${receipt.batch.size})`);
  if (receipt) fact(dl, "d.sealed", local(receipt.batch.sealed_at));
  fact(dl, "d.anchored", local(s.anchored_at));
  fact(dl, "d.block", s.block_number ?? a.block_number);
  fact(dl, "d.conf", s.confirmations ?? (chain && chain.ok ? chain.confirmations : null));
  fact(dl, "d.signature", signatureText(server, receipt));
  const tx = s.tx_hash || a.tx_hash, tpl = $("explorer").value.trim();
  fact(dl, "d.tx", tx, tx && tpl.includes("{tx}") ? tpl.replace("{tx}", tx) : null);
  if (s.superseded_by) fact(dl, "d.superseded", `${s.superseded_by.version} (${s.superseded_by.status}, ${s.superseded_by.issued})`);
  if (s.revoked_by) fact(dl, "d.superseded", `${s.revoked_by.version} (${s.revoked_by.status}, ${s.revoked_by.issued})`);
  if (s.recognition && s.recognition.reasons.length) fact(dl, "d.reasons", s.recognition.reasons.map((r) => r.detail).join("; "));
  const checks = (s.checks || (offline && offline.checks) || []).map((c) => `${c.ok ? "✔" : "✘"} ${c.name}`).join("  ");
  fact(dl, "d.checks", checks);
  $("details").hidden = false;
  showDecision(server, !!(receipt && unwitnessed)); // recognise / reorder buttons, with a doctor token (decision.js)
}

// data-state: none (no witnesses configured), checking, skipped, vouched, witness-quorum, witness-conflict,
// no-anchor or error (settings not valid, or the check itself failed).
function renderWitnessStep(w) {
  const li = $("step-witness");
  li.hidden = !w;
  li.dataset.state = w ? w.state : "none";
  if (w && w.vouching) li.dataset.vouching = w.vouching.join(",");
  else delete li.dataset.vouching;
  if (!w) return;
  const names = w.vouching && w.vouching.length ? w.vouching.join(", ") : t("wit.none");
  const values = { names, n: w.vouching ? w.vouching.length : 0, k: w.k, seq: w.seq };
  const text = {
    checking: () => t("wit.checking"), skipped: () => t(w.why), "no-anchor": () => t("wit.noanchor"),
    error: () => `${t(w.why || "wit.error")}: ${w.detail}`, vouched: () => fill(t("wit.ok"), values),
    "witness-quorum": () => fill(t("wit.quorum"), values), "witness-conflict": () => `${t("wit.conflict")}: ${w.detail}`,
  }[w.state]();
  const notes = w.notes && w.notes.length ? ` ${t("wit.notes")}: ${w.notes.join("; ")}` : "";
  step("witness", w.state === "vouched" ? "ok" : ["checking", "skipped"].includes(w.state) ? "skip" : "fail", text + notes);
}

function witnessVerdict(w) {
  if (w.state === "witness-conflict") return t("wit.v.conflict");
  return t(w.state === "witness-quorum" || w.state === "no-anchor" ? "wit.v.quorum" : "wit.v.error");
}

// The witness step of a receipt check before any network request: null without witnesses; skipped when the
// receipt failed in the browser; not checkable without an anchor (which deployment would they vouch for?).
function witnessStart(receipt, offline) {
  const { config, error } = witnessSettings();
  if (error) return { state: "error", why: "wit.set.invalid", detail: error };
  if (!config) return null;
  if (offline.status === "invalid") return { state: "skipped", why: "srv.skip" };
  if (!receipt.anchor) return { state: "no-anchor" };
  return { state: "checking", config };
}

async function witnessCheck(run) {
  const { config } = run.witness, seq = run.receipt.batch.seq;
  try {
    const r = await checkWitnesses(run.receipt, config);
    run.witness = { ...r, state: r.ok ? "vouched" : r.reason, k: config.k, seq };
  } catch (e) {
    run.witness = { state: "error", detail: e.message };
  }
}

async function postVerify(body, auth) {
  const headers = { "Content-Type": "application/json" };
  const token = $("token").value.trim();
  if (auth && token) headers.Authorization = "Bearer " + token;
  const res = await fetch("/v1/verify", { method: "POST", headers, body: JSON.stringify(body) });
  const out = await res.json();
  if (!res.ok) throw new Error(out.detail || out.title || res.status);
  return out;
}

async function checkReceipt(receipt) {
  setVerdict("working", t("v.working"));
  last = { receipt, offline: await verifyOffline(receipt), server: null, chain: null, status: null, waiting: true };
  last.witness = witnessStart(receipt, last.offline);
  const run = last;
  render(); // the offline result is on screen before any network request
  if (last.offline.status === "invalid") return;
  const rpc = $("rpc").value.trim();
  // The ledger and the doctor's own chain endpoint are asked in parallel; neither waits for the other.
  await Promise.all([
    postVerify({ receipt }, false).then((v) => { last.server = v; }, (e) => { last.error = e.message; }),
    rpc && receipt.anchor ? checkRootOnChain(rpc, receipt).then((c) => { last.chain = c; },
                                                                 (e) => { last.chain = { ok: false, conflict: false, detail: e.message }; })
      : null,
    last.offline.status === "valid" ? currentStatus(receipt, rpc).then((s) => { last.status = s; },
                                                                       (e) => { last.status = { status: "unknown", detail: e.message, chain: null }; })
      : null,
    run.witness && run.witness.state === "checking" ? witnessCheck(run) : null,
  ]);
  last.waiting = false;
  render();
}

// Strictly, as the node parses (docs/receipt.md §1): JSON.parse would keep the last of two equal keys, and
// trim() would drop a byte order mark the node refuses.
function strictJson(text) {
  try { return parseJsonStrict(text); } catch (e) { throw new Error(`${t("err.json")} (${e.message})`); }
}

async function fromText(text) {
  if (isQrText(text.trim())) return fromPayload(await decodeQrText(text.trim()));
  const obj = strictJson(text);
  if (obj && typeof obj.resourceType === "string") return toFhirBox(obj, "");
  if (obj && obj.receipt && !obj.format) obj = obj.receipt;
  return fromPayload(obj);
}

async function fromPayload(obj) {
  if (obj.format !== "mrl-qref/1") return checkReceipt(obj);
  if (!obj.record) { // ref-min: the reader supplies the printed record
    $("qr-status").textContent = t("qr.refmin");
    $("hid").value = obj.hospital_id; $("rid").value = obj.result_id; $("ver").value = obj.version;
    $("record-box").open = true;
    return;
  }
  const q = new URLSearchParams({ leaf_hash: obj.leaf_hash, version: obj.version });
  const res = await fetch(`/v1/hospitals/${encodeURIComponent(obj.hospital_id)}/results/${encodeURIComponent(obj.result_id).replace(/\./g, "%2E")}/proof?${q}`);
  const proof = await res.json();
  if (!res.ok) throw new Error(proof.detail || proof.title);
  $("qr-status").textContent = t("qr.ref");
  return checkReceipt(receiptFromReference(obj, proof));
}

let jsQRLoaded = null;
function loadJsQR() { // 130 kB, so only fetched when a QR is actually decoded
  jsQRLoaded ||= new Promise((ok, fail) => {
    const s = document.createElement("script");
    s.src = "/web/vendor/jsQR.min.js"; s.onload = () => ok(window.jsQR); s.onerror = fail;
    document.head.append(s);
  });
  return jsQRLoaded;
}

async function qrFromImage(source, w, h) {
  const jsQR = await loadJsQR();
  const canvas = document.createElement("canvas");
  const scale = Math.min(1, 1600 / Math.max(w, h));
  canvas.width = Math.round(w * scale); canvas.height = Math.round(h * scale);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
  const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const code = jsQR(img.data, img.width, img.height, { inversionAttempts: "attemptBoth" });
  return code ? code.data : null;
}

async function fromFile(file) {
  if (file.type.startsWith("image/")) {
    $("qr-status").textContent = t("qr.reading");
    const bmp = await createImageBitmap(file);
    const text = await qrFromImage(bmp, bmp.width, bmp.height);
    if (!text) { $("qr-status").textContent = t("qr.none"); return; }
    $("qr-status").textContent = "";
    return fromText(text);
  }
  let text;
  try { text = decodeUtf8Strict(new Uint8Array(await file.arrayBuffer())); } catch (e) { throw new Error(`${t("err.json")} (${e.message})`); }
  return fromText(text);
}

let stream = null;
async function camera() {
  if (stream) { stream.getTracks().forEach((tr) => tr.stop()); stream = null; $("video").hidden = true; $("cam").textContent = t("in.camera"); return; }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) { $("qr-status").textContent = t("cam.unavailable"); return; }
  try { stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } }); }
  catch { $("qr-status").textContent = t("cam.unavailable"); return; }
  const video = $("video");
  video.srcObject = stream; video.hidden = false; await video.play();
  $("cam").textContent = t("in.camera.stop");
  const tick = async () => {
    if (!stream) return;
    if (video.videoWidth) {
      const text = await qrFromImage(video, video.videoWidth, video.videoHeight);
      if (text && isQrText(text)) { await camera(); return guard(() => fromText(text)); }
    }
    setTimeout(tick, 250);
  };
  tick();
}

async function checkRecord() {
  const record = strictJson($("record").value);
  if (record && typeof record.resourceType === "string") return toFhirBox(record, $("hid").value.trim());
  const body = { hospital_id: $("hid").value.trim(), result_id: $("rid").value.trim(), record };
  if ($("ver").value) body.version = Number($("ver").value);
  setVerdict("working", t("v.working"));
  last = { receipt: null, offline: null, server: null, chain: null, witness: witnessWithoutReceipt() };
  try { last.server = await postVerify(body, true); } catch (e) { last.error = e.message; }
  render();
}

// A FHIR resource pasted or opened where a receipt or record was expected: move it to the FHIR form.
// With a hospital id it is checked at once; without one the doctor is asked for it (focus stays there).
async function toFhirBox(resource, hid) {
  $("fhir").value = JSON.stringify(resource, null, 2);
  if (hid) $("fhir-hid").value = hid;
  $("fhir-box").open = true;
  $("qr-status").textContent = t("in.fhir.moved");
  if ($("fhir-hid").value.trim()) return checkFhir();
  $("fhir-status").textContent = t("err.hid");
  $("fhir-hid").focus();
  return KEEP_FOCUS;
}

async function checkFhir() {
  const fhir = strictJson($("fhir").value);
  const hid = $("fhir-hid").value.trim();
  if (!hid) { $("fhir-status").textContent = t("err.hid"); $("fhir-hid").focus(); return KEEP_FOCUS; }
  $("fhir-status").textContent = "";
  const body = { hospital_id: hid, fhir };
  if ($("fhir-tz").value.trim()) body.tz = $("fhir-tz").value.trim();
  setVerdict("working", t("v.working"));
  last = { receipt: null, offline: null, server: null, chain: null, witness: witnessWithoutReceipt() };
  try { last.server = await postVerify(body, true); } catch (e) { last.error = e.message; }
  render();
}

// A record or FHIR resource names no batch root to hold the witnesses' checkpoints against: the step says so.
function witnessWithoutReceipt() {
  const { config, error } = witnessSettings();
  return error || config ? { state: "skipped", why: "wit.record" } : null;
}

const KEEP_FOCUS = Symbol("keep focus"); // returned when the page asked for input and focused that field

async function guard(fn) {
  try {
    if ((await fn()) === KEEP_FOCUS) return;
  } catch (e) {
    setVerdict("unknown", t("v.unknown"), e.message);
  }
  $("verdict").focus();
}

$("go").addEventListener("click", () => guard(() => fromText($("paste").value)));
$("file").addEventListener("change", (e) => e.target.files[0] && guard(() => fromFile(e.target.files[0])));
$("cam").addEventListener("click", () => guard(camera));
$("go-record").addEventListener("click", () => guard(checkRecord));
$("go-fhir").addEventListener("click", () => guard(checkFhir));
mountDecision();
loadWitnessSettings();
mountSwitcher($("lang"), () => { apply(); showWitnessSettings(); render(); });
document.body.dataset.ready = "1";
