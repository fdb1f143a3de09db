// The auditor page's recognition KPIs (GET /v1/kpis, docs/kpis.md): both rates per month and hospital as inline
// SVG (no chart library, like the batch chart), hospitals ranked by growth, and the CSV export.
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
const NS = "http://www.w3.org/2000/svg";
// Dark enough for 3:1 against white (WCAG 1.4.11); every line also has its hospital in the legend and in titles.
const COLOURS = ["#1a5fb4", "#a4161a", "#0b6b2b", "#5a189a", "#7a4100", "#00607a", "#8a1c7c", "#3d3d3d"];
let report = null;

// Shared with audit.js (it imports these rather than keeping copies).
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

export function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

const pct = (rate) => (rate.value === null ? "—" : `${(rate.value * 100).toFixed(1)} %`);
const change = (c, points) => (c.value === null ? "—"
  : points ? `${c.value >= 0 ? "+" : ""}${(c.value * 100).toFixed(1)} pt` : `${c.value >= 0 ? "+" : ""}${(c.value * 100).toFixed(1)} %`);

function headers() { return { Authorization: "Bearer " + $("token").value.trim() }; }

function query() {
  const q = new URLSearchParams();
  if ($("kpi-from").value) q.set("from", $("kpi-from").value);
  if ($("kpi-to").value) q.set("to", $("kpi-to").value);
  if ($("kpi-tz").value.trim()) q.set("tz", $("kpi-tz").value.trim());
  return q;
}

export async function loadKpis() {
  $("kpi-error").hidden = true;
  try {
    const res = await fetch("/v1/kpis?" + query(), { headers: headers() });
    const body = await res.json();
    if (!res.ok) throw new Error(`${res.status} ${body.title}${body.detail ? ": " + body.detail : ""}`);
    report = body;
    renderKpis();
  } catch (e) {
    $("kpi-error").textContent = e.message; $("kpi-error").hidden = false;
  }
}

async function downloadCsv() {
  const res = await fetch("/v1/kpis.csv?" + query(), { headers: headers() });
  if (!res.ok) { $("kpi-error").textContent = `${res.status}`; $("kpi-error").hidden = false; return; }
  const a = el("a", { href: URL.createObjectURL(await res.blob()), download: `mrledger-kpis-${query().get("from") || ""}.csv` });
  document.body.append(a); a.click(); a.remove();
}

// One chart per rate: months on x (0..100 % on y), a line and a marker per hospital.
function chart(key, title, months, hospitals) {
  const W = 800, H = 240, L = 50, R = 20, T = 10, B = 40;
  const x = (i) => L + (months.length > 1 ? (i / (months.length - 1)) * (W - L - R) : (W - L - R) / 2);
  const y = (v) => H - B - v * (H - T - B);
  const id = `kpi-chart-${key}`;
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-labelledby": id + "-t", id });
  g.append(svg("title", { id: id + "-t" }, `${title}: ${hospitals.length} × ${months.length}`));
  g.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#111" }));
  g.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#111" }));
  g.append(svg("text", { x: 4, y: T + 10 }, "100 %"), svg("text", { x: 4, y: H - B }, "0 %"));
  const every = Math.ceil(months.length / 8); // at most ~8 labels; the last month always labelled
  months.forEach((m, i) => {
    if (i % every && i !== months.length - 1) return;
    const anchor = months.length > 1 && i === months.length - 1 ? "end" : i === 0 && months.length > 1 ? "start" : "middle";
    g.append(svg("text", { x: x(i), y: H - 12, "text-anchor": anchor }, m));
  });
  hospitals.forEach((hid, n) => {
    const colour = COLOURS[n % COLOURS.length];
    const pts = months.map((m, i) => [m, i, report.by_hospital_month.find((r) => r.hospital_id === hid && r.month === m)])
      .filter(([, , r]) => r && r.figures[key].value !== null)
      .map(([m, i, r]) => [m, x(i), y(r.figures[key].value), r.figures[key]]);
    if (pts.length > 1) g.append(svg("polyline", { points: pts.map(([, px, py]) => `${px},${py}`).join(" "), fill: "none", stroke: colour, "stroke-width": 3 }));
    for (const [m, px, py, rate] of pts) {
      const dot = svg("circle", { cx: px, cy: py, r: 5, fill: colour, class: "kpi-point", "data-hospital": hid });
      dot.append(svg("title", {}, `${hid} ${m}: ${pct(rate)} (${rate.numerator}/${rate.denominator})`));
      g.append(dot);
    }
  });
  return g;
}

export function renderKpis() {
  if (!report) return;
  const months = report.by_month.map((m) => m.month);
  const hospitals = report.by_hospital.map((h) => h.hospital_id);
  // Swatches as SVG (presentation attributes): the page's CSP allows no inline style attributes.
  const swatch = (colour) => {
    const s = svg("svg", { class: "sw", viewBox: "0 0 10 10", "aria-hidden": "true" });
    s.append(svg("rect", { width: 10, height: 10, fill: colour }));
    return s;
  };
  const legend = el("p", { class: "legend" }, ...hospitals.map((hid, n) => el("span", {},
    swatch(COLOURS[n % COLOURS.length]), hid)));
  const charts = $("kpi-charts");
  charts.replaceChildren(legend,
    el("h3", {}, t("kpi.retrieval")), chart("retrieval_rate", t("kpi.retrieval"), months, hospitals),
    el("h3", {}, t("kpi.recognition")), chart("recognition_rate", t("kpi.recognition"), months, hospitals));
  const cur = report.totals.current, p = report.period;
  $("kpi-summary").textContent = `${p.from} – ${p.to}: ${t("kpi.retrieval")} ${pct(cur.retrieval_rate)}, ` +
    `${t("kpi.recognition")} ${pct(cur.recognition_rate)}, ${t("kpi.tests")} ${cur.tests_avoided}, ` +
    `${t("kpi.money")} ${cur.money_saved.toFixed(2)} ${report.currency}`;
  const rows = report.by_hospital.map((h) => el("tr", { "data-hospital": h.hospital_id },
    el("td", {}, String(h.rank)), el("th", { scope: "row" }, h.hospital_id), el("td", {}, pct(h.current.retrieval_rate)),
    el("td", {}, pct(h.current.recognition_rate)), el("td", {}, change(h.growth.recognition_rate, true)),
    el("td", {}, String(h.current.tests_avoided)), el("td", {}, `${h.current.money_saved.toFixed(2)} ${report.currency}`),
    el("td", {}, change(h.growth.money_saved, false)),
    el("td", { class: "hash" }, h.batches.length ? `${h.stream}: ${h.batches.map(([a, b]) => (a === b ? `${a}` : `${a}–${b}`)).join(", ")}` : "—")));
  $("kpi-ranking").tBodies[0].replaceChildren(...rows);
  $("kpi-empty").hidden = report.sources.records > 0;
  $("kpi-results").hidden = false;
}

export function mountKpis() {
  const to = new Date(), from = new Date(to.getTime() - 364 * 86400000);
  $("kpi-to").value = to.toISOString().slice(0, 10);
  $("kpi-from").value = from.toISOString().slice(0, 10);
  $("kpi-load").addEventListener("click", loadKpis);
  $("kpi-csv").addEventListener("click", downloadCsv);
}
