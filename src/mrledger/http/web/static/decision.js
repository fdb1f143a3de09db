// The doctor's decision after a verification (POST /v1/decisions, docs/kpis.md): recognise, or reorder with a
// reason from the catalogue's list. Only with a doctor token (role doctor:<hospital>) typed into the settings;
// without one the page verifies as before and says how to record a decision.
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
let reasons = null; // [{code, name, detail}] from GET /v1/catalogue, fetched once
let current = null; // the verification the buttons act on
let unconfirmedNow = false; // showDecision's flag for current, kept for the re-renders below
const done = new Map(); // verification_id -> the recorded decision (re-rendered on language change)

async function loadReasons() {
  if (reasons) return reasons;
  try { reasons = (await (await fetch("/v1/catalogue")).json()).reorder_reasons || []; } catch { reasons = []; }
  return reasons;
}

function fillReasons() {
  const select = $("reason"), keep = select.value;
  const none = new Option(t("dec.noreason"), "");
  select.replaceChildren(none, ...(reasons || []).map((r) => {
    const label = t("reason." + r.code);
    return new Option(label === "reason." + r.code ? r.name : label, r.code);
  }));
  select.value = keep;
}

function status(text, bad = false) {
  const p = $("decision-status");
  p.textContent = text;
  p.className = bad ? "alert" : "muted";
}

// Called by the verify page after each render: show the box for a server verdict with a verification id.
// unconfirmed: the page's own checks did not establish what the node says (e.g. too few of the doctor's
// witnesses vouch), so "recognise" is not offered even when the programme's rules would.
export async function showDecision(server, unconfirmed = false) {
  const box = $("decision-box");
  if (!server || !server.verification_id) { box.hidden = true; current = null; return; }
  current = server; unconfirmedNow = unconfirmed;
  box.hidden = false;
  await loadReasons();
  fillReasons();
  const token = $("token").value.trim();
  const recognisable = !unconfirmed && server.recognition && server.recognition.decision === "recognise";
  const recorded = done.get(server.verification_id);
  const hint = unconfirmed ? "dec.help.unconfirmed" : recognisable ? "dec.help" : "dec.help.reorder";
  $("decision-hint").textContent = token ? t(hint) : t("dec.needtoken");
  $("dec-recognise").disabled = !token || !recognisable || !!recorded;
  $("dec-reorder").disabled = !token || !!recorded;
  $("reason").disabled = $("reason-detail").disabled = !token || !!recorded;
  if (recorded) status(`${t("dec.recorded")}: ${t("dec." + recorded.decision)}${recorded.reason ? " (" + recorded.reason + ")" : ""}`);
  else status("");
}

async function post(decision) {
  if (!current) return;
  const body = { verification_id: current.verification_id, decision };
  if (decision === "reordered") {
    if ($("reason").value) body.reason = $("reason").value;
    if ($("reason-detail").value.trim()) body.detail = $("reason-detail").value.trim();
  }
  const res = await fetch("/v1/decisions", {
    method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + $("token").value.trim() },
  });
  const out = await res.json();
  if (!res.ok) { status(`${t("dec.refused")}: ${out.detail || out.title}`, true); return; }
  done.set(current.verification_id, out);
  await showDecision(current, unconfirmedNow);
  $("decision-status").focus();
}

export function mountDecision() {
  $("dec-recognise").addEventListener("click", () => post("recognised"));
  $("dec-reorder").addEventListener("click", () => post("reordered"));
  $("token").addEventListener("change", () => showDecision(current, unconfirmedNow));
}
