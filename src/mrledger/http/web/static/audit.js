// The /audit page: a hospital's batches in seq order with gaps, a chart of batch sizes and anchoring
// delay, and the lineage of a result. The auditor token lives in sessionStorage (this tab only).
import { apply, mountSwitcher, t } from "./i18n.js";
import { el, mountKpis, renderKpis, svg } from "./kpi.js";

const $ = (id) => document.getElementById(id);
let state = null;

$("token").value = sessionStorage.getItem("mrl.auditToken") || "";
$("token").addEventListener("change", () => sessionStorage.setItem("mrl.auditToken", $("token").value.trim()));
$("rpc").value = localStorage.getItem("mrl.rpc") || "";
$("rpc").addEventListener("change", () => localStorage.setItem("mrl.rpc", $("rpc").value.trim()));

async function api(path) {
  const res = await fetch(path, { headers: { Authorization: "Bearer " + $("token").value.trim() } });
  const body = await res.json();
  if (!res.ok) throw new Error(`${res.status} ${body.title}${body.detail ? ": " + body.detail : ""}`);
  return body;
}

async function rpc(url, method, params) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
                                 body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }) });
  return (await res.json()).result;
}

async function load() {
  $("error").hidden = true;
  const hid = $("hospital").value.trim();
  try {
    let batches = [], page = null, after = 0;
    do { // every page: gaps are computed over the whole hospital by the server
      page = await api(`/v1/audit/hospitals/${encodeURIComponent(hid)}/batches?after_seq=${after}&limit=1000`);
      batches = batches.concat(page.batches);
      after = page.next_after_seq;
    } while (after !== null && batches.length < 20000);
    state = { hid, batches, gaps: page.gaps, delays: {} };
    render();
    await delays();
  } catch (e) {
    $("error").textContent = e.message; $("error").hidden = false;
  }
}

// Anchoring delay = anchoring block's timestamp − sealed_at. The audit API gives no anchoring time per
// batch, so the block number comes from GET …/batches/{seq} and the time from the auditor's own node.
async function delays() {
  const url = $("rpc").value.trim();
  if (!url) { $("delay-note").textContent = t("audit.delay.na"); return; }
  $("delay-note").textContent = "";
  for (const b of state.batches.slice(-60)) {
    if (!["included", "confirmed"].includes(b.anchor_status)) continue;
    const d = await api(`/v1/hospitals/${encodeURIComponent(state.hid)}/batches/${b.seq}`);
    if (d.anchor.block_number == null) continue;
    const block = await rpc(url, "eth_getBlockByNumber", ["0x" + d.anchor.block_number.toString(16), false]);
    // Block times have whole seconds, sealed_at has microseconds: clamp the sub-second negative to 0.
    if (block) state.delays[b.seq] = Math.max(0, parseInt(block.timestamp, 16) - Date.parse(b.sealed_at) / 1000);
  }
  renderChart();
}

function render() {
  if (!state) return;
  const { batches, gaps } = state;
  const missing = new Set(gaps.missing_seqs), late = new Set(gaps.anchoring);
  const box = $("gaps");
  box.replaceChildren();
  if (!missing.size && !late.size) box.append(el("p", { class: "good", id: "no-gaps" }, "✔ " + t("audit.nogaps")));
  if (missing.size) box.append(el("p", { class: "alert", id: "missing-seqs" }, `✘ ${t("audit.missing")}: ${[...missing].join(", ")}`));
  if (late.size) box.append(el("p", { class: "alert", id: "anchor-gaps" }, `✘ ${t("audit.anchorgap")}: ${[...late].join(", ")}`));
  $("gaps-box").hidden = false;

  const rows = [];
  const bySeq = new Map(batches.map((b) => [b.seq, b]));
  const last = batches.length ? batches.at(-1).seq : 0;
  for (let seq = batches.length ? batches[0].seq : 1; seq <= last; seq++) {
    const b = bySeq.get(seq);
    if (!b) { // a hole in the sequence gets its own row, so the table cannot hide it
      rows.push(el("tr", { class: "missing", "data-seq": seq }, el("td", {}, String(seq)),
                   el("td", { colspan: "4" }, "✘ " + t("audit.missingrow"))));
      continue;
    }
    rows.push(el("tr", { class: late.has(seq) ? "gap" : "", "data-seq": seq },
      el("td", {}, String(seq)), el("td", {}, String(b.size)),
      el("td", {}, new Date(b.sealed_at).toLocaleString(document.documentElement.lang)),
      el("td", {}, (late.has(seq) ? "✘ " : "") + b.anchor_status), el("td", { class: "hash" }, b.root.slice(0, 16) + "…")));
  }
  $("batches").tBodies[0].replaceChildren(...rows);
  $("batches-box").hidden = false;
  renderChart();
}

// Inline SVG, no chart library: bars = batch size at its sealing time, line = anchoring delay.
function renderChart() {
  const bs = state.batches;
  if (!bs.length) return;
  const W = 800, H = 260, L = 50, R = 50, T = 10, B = 40;
  const times = bs.map((b) => Date.parse(b.sealed_at));
  const t0 = Math.min(...times), t1 = Math.max(...times, t0 + 1);
  const maxSize = Math.max(...bs.map((b) => b.size));
  const ds = Object.values(state.delays), maxDelay = Math.max(1, ...ds);
  const bw = Math.max(2, Math.min(20, (W - L - R) / bs.length - 2));
  const x = (ts) => L + bw + ((ts - t0) / (t1 - t0)) * (W - L - R - 2 * bw); // bars stay inside the axes
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-labelledby": "chart-title" });
  g.append(svg("title", { id: "chart-title" }, `${t("audit.size")} / ${t("audit.delay")}: ${bs.length}`));
  g.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#111" }));
  g.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#111" }));
  g.append(svg("text", { x: 4, y: T + 10 }, String(maxSize)), svg("text", { x: 4, y: H - B }, "0"));
  g.append(svg("text", { x: W - R + 4, y: T + 10 }, `${Math.round(maxDelay)} s`));
  g.append(svg("text", { x: L, y: H - 12 }, new Date(t0).toLocaleString()));
  g.append(svg("text", { x: W - R, y: H - 12, "text-anchor": "end" }, new Date(t1).toLocaleString()));
  bs.forEach((b, i) => {
    const h = (b.size / maxSize) * (H - T - B);
    const rect = svg("rect", { x: x(times[i]) - bw / 2, y: H - B - h, width: bw, height: h, fill: "#1a5fb4" });
    rect.append(svg("title", {}, `#${b.seq}: ${b.size}`));
    g.append(rect);
  });
  const pts = bs.filter((b) => b.seq in state.delays)
    .map((b) => [b, x(Date.parse(b.sealed_at)), H - B - (state.delays[b.seq] / maxDelay) * (H - T - B)]);
  if (pts.length) g.append(svg("polyline", { points: pts.map(([, px, py]) => `${px},${py}`).join(" "), fill: "none",
                                             stroke: "#a4161a", "stroke-width": 3 }));
  for (const [b, px, py] of pts) { // a marker per batch, so a single or flat series is still visible
    const dot = svg("circle", { cx: px, cy: py, r: 5, fill: "#a4161a", class: "delay" });
    dot.append(svg("title", {}, `#${b.seq}: ${Math.round(state.delays[b.seq])} s`));
    g.append(dot);
  }
  $("chart").replaceChildren(g);
  $("chart-box").hidden = false;
}

async function lineage() {
  const out = $("lineage");
  try {
    const l = await api(`/v1/audit/hospitals/${encodeURIComponent($("hospital").value.trim())}/results/${encodeURIComponent($("rid").value.trim()).replace(/\./g, "%2E")}/lineage`);
    const head = el("tr", {}, ...["d.version", "audit.vstatus", "audit.supersedes", "audit.seq", "audit.status"].map((k) => el("th", { scope: "col" }, t(k))));
    const rows = l.versions.map((v) => el("tr", {}, el("td", {}, String(v.version)), el("td", {}, v.status),
      el("td", {}, v.supersedes == null ? "—" : String(v.supersedes)), el("td", {}, v.batch_seq == null ? "—" : String(v.batch_seq)),
      el("td", {}, v.anchor ? `${v.anchor.status}${v.anchor.block_number != null ? " @ " + v.anchor.block_number : ""}` : "—")));
    out.replaceChildren(el("p", { class: l.chain_intact ? "good" : "alert" },
                           (l.chain_intact ? "✔ " + t("audit.intact") : "✘ " + t("audit.broken") + ": " + l.breaks.join("; "))),
                        el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows))));
  } catch (e) {
    out.replaceChildren(el("p", { class: "alert", role: "alert" }, e.message));
  }
}

async function hospitals() {
  try {
    const list = await api("/v1/hospitals");
    const items = Array.isArray(list) ? list : list.hospitals || [];
    $("hospitals").replaceChildren(...items.map((h) => el("option", { value: h.id || h.hospital_id }, h.name || "")));
  } catch { /* no token yet */ }
}

$("load").addEventListener("click", load);
$("lineage-go").addEventListener("click", lineage);
$("token").addEventListener("change", hospitals);
mountKpis();
mountSwitcher($("lang"), () => { apply(); render(); renderKpis(); });
if ($("token").value) hospitals();
document.body.dataset.ready = "1";
