// UI text in English, German and Chinese (Simplified). Elements carry data-i18n="key"; the language is
// picked from ?lang=, then localStorage, then navigator.language, and switchable in the page.
const T = {
  en: {
    "lang.name": "English", "skip": "Skip to the verdict",
    "verify.title": "Check a medical result", "verify.intro": "Open the receipt file or QR code the patient brings. The result is checked in this browser first, then with the ledger.",
    "in.receipt": "Receipt", "in.file": "Receipt file or photo of the QR code", "in.paste": "…or paste the receipt (JSON or MRL:/ text)",
    "in.verify": "Check receipt", "in.camera": "Scan QR with camera", "in.camera.stop": "Stop camera",
    "in.record": "Result without receipt (doctor)", "in.record.help": "Paste the record JSON as the hospital committed it, with its hospital and result id. Needs a doctor token.",
    "in.hid": "Hospital id", "in.rid": "Result id", "in.version": "Version (optional)", "in.recordjson": "Record (JSON)",
    "in.fhir": "FHIR resource from another hospital (doctor)", "in.fhir.help": "Paste the FHIR resource you received (Observation, DiagnosticReport, ImagingStudy, or a Bundle with one result) and the sending hospital's id. The ledger reads the result id from the resource. Needs a doctor token.",
    "in.tz": "Time zone of dates without a time (optional)", "in.fhirjson": "FHIR resource (JSON)", "in.verifyfhir": "Check FHIR resource",
    "in.fhir.moved": "This is a FHIR resource, not a receipt: it was moved to the FHIR form below.", "err.hid": "Enter the hospital id of the hospital that sent the result.",
    "in.verifyrecord": "Check result", "set.title": "Settings", "set.token": "Doctor token (kept for this tab only)",
    "set.rpc": "Your own JSON-RPC endpoint to check the root on chain (optional)",
    "set.explorer": "Block explorer link, {tx} is replaced by the transaction hash (optional)",
    "v.none": "No result checked yet", "v.working": "Checking…",
    "v.authentic": "AUTHENTIC", "v.tampered": "TAMPERED — do not use", "v.unknown": "UNKNOWN — cannot be confirmed",
    "v.pending": "PENDING — not yet anchored", "v.cannot-match": "CANNOT MATCH — not decidable, not a sign of tampering", "v.revoked": "REVOKED — entered in error", "v.superseded": "AUTHENTIC but SUPERSEDED",
    "v.offline-only": "Checked in this browser only",
    "rec.recognise": "May be recognised (no need to repeat the test)", "rec.reorder": "Repeat the test",
    "off.title": "1. Checked in this browser", "off.ok": "Passed: the record, its salt and the Merkle proof give the batch root.",
    "off.unanchored": "Passed, but the receipt has no anchor yet.", "off.fail": "Failed at check",
    "srv.title": "2. Checked with the ledger", "srv.skip": "Not asked.", "srv.error": "The ledger could not be asked",
    "chain.title": "3. Checked on your own chain endpoint", "chain.skip": "No endpoint configured.", "chain.ok": "The registry holds this root.", "chain.fail": "The registry does not confirm this root",
    "st.title": "4. Still the current version? (status map)", "st.skip": "Not asked.", "st.node": "the node's word: give a chain endpoint to check it", "st.chain": "checked on your chain endpoint", "st.v1": "map root as the node states it (v1 registry)", "st.v2": "map root bound on chain (v2 registry)", "st.unverified": "The current status could not be confirmed",
    "d.hospital": "Hospital", "d.result": "Result", "d.version": "Version", "d.issued": "Issued", "d.sealed": "Batch sealed",
    "d.anchored": "Anchored", "d.block": "Block", "d.conf": "Confirmations", "d.tx": "Transaction", "d.superseded": "Newer version",
    "d.reasons": "Reasons", "d.checks": "Checks", "d.batch": "Batch",
    "d.signature": "Hospital signature", "sig.valid": "Signed by", "sig.node": "checked by the ledger node (certificates are not checked in this browser)",
    "sig.absent": "Not signed (the batch was sealed without a signature)", "sig.notchecked": "Present but not checked (the ledger node has no trust anchors)",
    "sig.notasked": "Present; only the ledger node checks it", "sig.fail": "Signature not valid",
    "qr.reading": "Reading QR code…", "qr.none": "No QR code found in the image.", "qr.ref": "The QR code holds a reference; the proof was fetched from the ledger.",
    "qr.refmin": "The QR code holds no record: paste the printed record below to compare.", "err.json": "This is not valid JSON.",
    "cam.unavailable": "No camera available in this browser.",
    "audit.title": "Audit a hospital's ledger", "audit.token": "Auditor token (kept for this tab only)", "audit.hospital": "Hospital",
    "audit.load": "Load", "audit.batches": "Batches in sequence order", "audit.gaps": "Gaps", "audit.nogaps": "No gaps: every sequence number is present and anchored in order.",
    "audit.missing": "Missing batch numbers", "audit.anchorgap": "Not anchored although a later batch is",
    "audit.seq": "Seq", "audit.size": "Results", "audit.sealed": "Sealed", "audit.status": "Anchor status", "audit.root": "Root",
    "audit.chart": "Batch sizes and anchoring delay over time", "audit.delay": "Anchoring delay (s)", "audit.delay.na": "Anchoring delay needs block times: set a JSON-RPC endpoint.",
    "audit.lineage": "Lineage of a result", "audit.lineage.load": "Show lineage", "audit.intact": "Chain of versions intact", "audit.broken": "Chain of versions broken",
    "audit.rpc": "JSON-RPC endpoint for block times (optional)", "audit.missingrow": "MISSING", "audit.vstatus": "Status", "audit.supersedes": "Supersedes",
    "dec.title": "Your decision", "dec.reason": "Reason for repeating the test", "dec.detail": "Detail (required for “other”; no patient data)",
    "dec.do.recognise": "Recognise (no new test)", "dec.do.reorder": "Reorder the test", "dec.noreason": "— no reason —",
    "dec.help": "Record what you do: recognise the result, or reorder the test with a reason. It counts for your hospital.",
    "dec.help.reorder": "The programme does not recognise this result: record the reorder (a reason is optional).",
    "dec.needtoken": "To record your decision, enter a doctor token of your hospital in the settings.",
    "dec.recorded": "Decision recorded", "dec.recognised": "recognised", "dec.reordered": "reordered", "dec.refused": "Not recorded",
    "reason.condition-changed": "The patient's condition has changed", "reason.result-too-old": "The result is too old",
    "reason.quality-doubt": "Doubt about the quality of the result", "reason.emergency": "Emergency",
    "reason.patient-request": "The patient asked for it", "reason.not-in-catalogue": "The test is not in the catalogue", "reason.other": "Other (explain)",
    "kpi.title": "Recognition KPIs", "kpi.from": "From", "kpi.to": "To (inclusive)", "kpi.tz": "Time zone (optional, default UTC)",
    "kpi.load": "Load KPIs", "kpi.csv": "Download CSV", "kpi.none": "No decisions or encounters in this period.",
    "kpi.chart": "Both rates per month and hospital", "kpi.retrieval": "Retrieval rate", "kpi.recognition": "Post-retrieval recognition rate",
    "kpi.ranking": "Hospitals ranked by growth", "kpi.rank": "Rank", "kpi.growth": "Change in recognition rate",
    "kpi.tests": "Tests avoided", "kpi.money": "Money saved", "kpi.moneygrowth": "Change in money saved", "kpi.batches": "Anchored batches",
  },
  de: {
    "lang.name": "Deutsch", "skip": "Zum Ergebnis springen",
    "verify.title": "Befund prüfen", "verify.intro": "Öffnen Sie die Quittung oder den QR-Code der Patientin. Geprüft wird zuerst in diesem Browser, dann beim Ledger.",
    "in.receipt": "Quittung", "in.file": "Quittungsdatei oder Foto des QR-Codes", "in.paste": "…oder Quittung einfügen (JSON oder MRL:/-Text)",
    "in.verify": "Quittung prüfen", "in.camera": "QR-Code mit Kamera scannen", "in.camera.stop": "Kamera beenden",
    "in.record": "Befund ohne Quittung (Ärztin/Arzt)", "in.record.help": "Befund-JSON so einfügen, wie das Krankenhaus ihn festgeschrieben hat, mit Krankenhaus- und Befund-ID. Erfordert ein Arzt-Token.",
    "in.hid": "Krankenhaus-ID", "in.rid": "Befund-ID", "in.version": "Version (optional)", "in.recordjson": "Befund (JSON)",
    "in.fhir": "FHIR-Ressource eines anderen Krankenhauses (Ärztin/Arzt)", "in.fhir.help": "Erhaltene FHIR-Ressource einfügen (Observation, DiagnosticReport, ImagingStudy oder ein Bundle mit einem Befund), dazu die ID des sendenden Krankenhauses. Die Befund-ID liest das Ledger aus der Ressource. Erfordert ein Arzt-Token.",
    "in.tz": "Zeitzone für Daten ohne Uhrzeit (optional)", "in.fhirjson": "FHIR-Ressource (JSON)", "in.verifyfhir": "FHIR-Ressource prüfen",
    "in.fhir.moved": "Das ist eine FHIR-Ressource, keine Quittung: sie wurde unten ins FHIR-Formular übernommen.", "err.hid": "Bitte die ID des Krankenhauses eintragen, das den Befund gesendet hat.",
    "in.verifyrecord": "Befund prüfen", "set.title": "Einstellungen", "set.token": "Arzt-Token (nur für diesen Tab gespeichert)",
    "set.rpc": "Eigener JSON-RPC-Endpunkt zur Prüfung der Wurzel auf der Chain (optional)",
    "set.explorer": "Link zum Block-Explorer, {tx} wird durch den Transaktions-Hash ersetzt (optional)",
    "v.none": "Noch nichts geprüft", "v.working": "Wird geprüft…",
    "v.authentic": "ECHT", "v.tampered": "VERFÄLSCHT — nicht verwenden", "v.unknown": "UNBEKANNT — nicht bestätigt",
    "v.pending": "AUSSTEHEND — noch nicht verankert", "v.cannot-match": "NICHT ZUORDENBAR — nicht entscheidbar, kein Hinweis auf Fälschung", "v.revoked": "WIDERRUFEN — irrtümlich erfasst", "v.superseded": "ECHT, aber ERSETZT",
    "v.offline-only": "Nur in diesem Browser geprüft",
    "rec.recognise": "Kann anerkannt werden (keine Wiederholung nötig)", "rec.reorder": "Untersuchung wiederholen",
    "off.title": "1. In diesem Browser geprüft", "off.ok": "Bestanden: Befund, Salt und Merkle-Beweis ergeben die Wurzel des Stapels.",
    "off.unanchored": "Bestanden, aber die Quittung ist noch nicht verankert.", "off.fail": "Fehlgeschlagen bei Prüfung",
    "srv.title": "2. Beim Ledger geprüft", "srv.skip": "Nicht gefragt.", "srv.error": "Das Ledger war nicht erreichbar",
    "chain.title": "3. Auf Ihrem eigenen Chain-Endpunkt geprüft", "chain.skip": "Kein Endpunkt eingestellt.", "chain.ok": "Das Register enthält diese Wurzel.", "chain.fail": "Das Register bestätigt diese Wurzel nicht",
    "st.title": "4. Noch die aktuelle Version? (Status-Map)", "st.skip": "Nicht gefragt.", "st.node": "Angabe des Knotens: zur Prüfung einen Chain-Endpunkt angeben", "st.chain": "auf Ihrem Chain-Endpunkt geprüft", "st.v1": "Map-Wurzel laut Knoten (Register v1)", "st.v2": "Map-Wurzel auf der Chain gebunden (Register v2)", "st.unverified": "Der aktuelle Status ließ sich nicht bestätigen",
    "d.hospital": "Krankenhaus", "d.result": "Befund", "d.version": "Version", "d.issued": "Ausgestellt", "d.sealed": "Stapel versiegelt",
    "d.anchored": "Verankert", "d.block": "Block", "d.conf": "Bestätigungen", "d.tx": "Transaktion", "d.superseded": "Neuere Version",
    "d.reasons": "Gründe", "d.checks": "Prüfungen", "d.batch": "Stapel",
    "d.signature": "Signatur des Krankenhauses", "sig.valid": "Signiert von", "sig.node": "vom Ledger-Knoten geprüft (Zertifikate werden nicht in diesem Browser geprüft)",
    "sig.absent": "Nicht signiert (der Stapel wurde ohne Signatur versiegelt)", "sig.notchecked": "Vorhanden, aber nicht geprüft (der Ledger-Knoten hat keine Vertrauensanker)",
    "sig.notasked": "Vorhanden; nur der Ledger-Knoten prüft sie", "sig.fail": "Signatur ungültig",
    "qr.reading": "QR-Code wird gelesen…", "qr.none": "Kein QR-Code im Bild gefunden.", "qr.ref": "Der QR-Code enthält einen Verweis; der Beweis wurde vom Ledger geholt.",
    "qr.refmin": "Der QR-Code enthält keinen Befund: gedruckten Befund unten einfügen.", "err.json": "Das ist kein gültiges JSON.",
    "cam.unavailable": "Keine Kamera in diesem Browser verfügbar.",
    "audit.title": "Ledger eines Krankenhauses prüfen", "audit.token": "Prüfer-Token (nur für diesen Tab gespeichert)", "audit.hospital": "Krankenhaus",
    "audit.load": "Laden", "audit.batches": "Stapel in Reihenfolge", "audit.gaps": "Lücken", "audit.nogaps": "Keine Lücken: jede Nummer ist vorhanden und der Reihe nach verankert.",
    "audit.missing": "Fehlende Stapelnummern", "audit.anchorgap": "Nicht verankert, obwohl ein späterer Stapel es ist",
    "audit.seq": "Nr.", "audit.size": "Befunde", "audit.sealed": "Versiegelt", "audit.status": "Verankerung", "audit.root": "Wurzel",
    "audit.chart": "Stapelgrößen und Verankerungsdauer im Zeitverlauf", "audit.delay": "Verankerungsdauer (s)", "audit.delay.na": "Die Verankerungsdauer braucht Blockzeiten: JSON-RPC-Endpunkt eintragen.",
    "audit.lineage": "Versionsverlauf eines Befunds", "audit.lineage.load": "Verlauf zeigen", "audit.intact": "Versionskette intakt", "audit.broken": "Versionskette gebrochen",
    "audit.rpc": "JSON-RPC-Endpunkt für Blockzeiten (optional)", "audit.missingrow": "FEHLT", "audit.vstatus": "Status", "audit.supersedes": "Ersetzt",
    "dec.title": "Ihre Entscheidung", "dec.reason": "Grund für die Wiederholung", "dec.detail": "Erläuterung (bei „Sonstiges“ nötig; keine Patientendaten)",
    "dec.do.recognise": "Anerkennen (keine neue Untersuchung)", "dec.do.reorder": "Untersuchung wiederholen", "dec.noreason": "— kein Grund —",
    "dec.help": "Halten Sie fest, was Sie tun: den Befund anerkennen oder die Untersuchung mit Grund wiederholen. Es zählt für Ihr Krankenhaus.",
    "dec.help.reorder": "Das Programm erkennt diesen Befund nicht an: Wiederholung festhalten (Grund optional).",
    "dec.needtoken": "Um Ihre Entscheidung festzuhalten, geben Sie in den Einstellungen ein Arzt-Token Ihres Krankenhauses ein.",
    "dec.recorded": "Entscheidung festgehalten", "dec.recognised": "anerkannt", "dec.reordered": "wiederholt", "dec.refused": "Nicht festgehalten",
    "reason.condition-changed": "Der Zustand der Patientin hat sich geändert", "reason.result-too-old": "Der Befund ist zu alt",
    "reason.quality-doubt": "Zweifel an der Qualität des Befunds", "reason.emergency": "Notfall",
    "reason.patient-request": "Auf Wunsch der Patientin", "reason.not-in-catalogue": "Die Untersuchung steht nicht im Katalog", "reason.other": "Sonstiges (bitte erläutern)",
    "kpi.title": "Kennzahlen der Anerkennung", "kpi.from": "Von", "kpi.to": "Bis (einschließlich)", "kpi.tz": "Zeitzone (optional, Standard UTC)",
    "kpi.load": "Kennzahlen laden", "kpi.csv": "CSV herunterladen", "kpi.none": "Keine Entscheidungen oder Kontakte in diesem Zeitraum.",
    "kpi.chart": "Beide Quoten je Monat und Krankenhaus", "kpi.retrieval": "Abrufquote", "kpi.recognition": "Anerkennungsquote nach Abruf",
    "kpi.ranking": "Krankenhäuser nach Zuwachs", "kpi.rank": "Rang", "kpi.growth": "Änderung der Anerkennungsquote",
    "kpi.tests": "Vermiedene Untersuchungen", "kpi.money": "Eingespartes Geld", "kpi.moneygrowth": "Änderung der Einsparung", "kpi.batches": "Verankerte Stapel",
  },
  "zh-CN": {
    "lang.name": "中文", "skip": "跳到核验结果",
    "verify.title": "核验检查结果", "verify.intro": "打开患者带来的凭证文件或二维码。先在本浏览器内核验，再向账本核验。",
    "in.receipt": "凭证", "in.file": "凭证文件或二维码照片", "in.paste": "…或粘贴凭证（JSON 或 MRL:/ 文本）",
    "in.verify": "核验凭证", "in.camera": "用摄像头扫描二维码", "in.camera.stop": "关闭摄像头",
    "in.record": "无凭证的结果（医生）", "in.record.help": "粘贴医院提交的结果 JSON，并填写医院编号和结果编号。需要医生令牌。",
    "in.hid": "医院编号", "in.rid": "结果编号", "in.version": "版本（可选）", "in.recordjson": "结果（JSON）",
    "in.fhir": "其他医院发送的 FHIR 资源（医生）", "in.fhir.help": "粘贴收到的 FHIR 资源（Observation、DiagnosticReport、ImagingStudy，或只含一个结果的 Bundle），并填写发送医院的编号。结果编号由账本从资源中读取。需要医生令牌。",
    "in.tz": "不含时间的日期所用时区（可选）", "in.fhirjson": "FHIR 资源（JSON）", "in.verifyfhir": "核验 FHIR 资源",
    "in.fhir.moved": "这是 FHIR 资源，不是凭证：已移至下方的 FHIR 表单。", "err.hid": "请填写发送该结果的医院编号。",
    "in.verifyrecord": "核验结果", "set.title": "设置", "set.token": "医生令牌（仅保存在此标签页）",
    "set.rpc": "用于链上核验根哈希的自有 JSON-RPC 节点（可选）",
    "set.explorer": "区块浏览器链接，{tx} 替换为交易哈希（可选）",
    "v.none": "尚未核验", "v.working": "正在核验…",
    "v.authentic": "真实有效", "v.tampered": "已被篡改 — 请勿使用", "v.unknown": "未知 — 无法确认",
    "v.pending": "待定 — 尚未上链", "v.cannot-match": "无法比对 — 无法判定，并非篡改", "v.revoked": "已撤销 — 录入错误", "v.superseded": "真实，但已被更新",
    "v.offline-only": "仅在本浏览器内核验",
    "rec.recognise": "可以互认（无需重复检查）", "rec.reorder": "请重新检查",
    "off.title": "1. 本浏览器内核验", "off.ok": "通过：结果、盐值和默克尔证明得出批次根哈希。",
    "off.unanchored": "通过，但凭证尚未上链。", "off.fail": "未通过的检查",
    "srv.title": "2. 账本核验", "srv.skip": "未查询。", "srv.error": "无法连接账本",
    "chain.title": "3. 在您自己的链节点上核验", "chain.skip": "未设置节点。", "chain.ok": "链上登记合约包含此根哈希。", "chain.fail": "链上登记合约未确认此根哈希",
    "st.title": "4. 仍是最新版本吗？（状态映射）", "st.skip": "未查询。", "st.node": "节点的说法：设置链节点后可核验", "st.chain": "已在您的链节点上核验", "st.v1": "映射根为节点所述（v1 登记合约）", "st.v2": "映射根已在链上绑定（v2 登记合约）", "st.unverified": "无法确认当前状态",
    "d.hospital": "医院", "d.result": "结果", "d.version": "版本", "d.issued": "签发时间", "d.sealed": "批次封存",
    "d.anchored": "上链时间", "d.block": "区块", "d.conf": "确认数", "d.tx": "交易", "d.superseded": "更新版本",
    "d.reasons": "原因", "d.checks": "检查项", "d.batch": "批次",
    "d.signature": "医院电子签名", "sig.valid": "签名方", "sig.node": "由账本节点核验（证书不在本浏览器内核验）",
    "sig.absent": "未签名（该批次封存时未签名）", "sig.notchecked": "有签名，但未核验（账本节点未配置信任锚）",
    "sig.notasked": "有签名；仅由账本节点核验", "sig.fail": "签名无效",
    "qr.reading": "正在读取二维码…", "qr.none": "图片中未找到二维码。", "qr.ref": "二维码为引用；证明已从账本获取。",
    "qr.refmin": "二维码不含结果内容：请在下方粘贴纸质报告上的结果。", "err.json": "不是有效的 JSON。",
    "cam.unavailable": "此浏览器无可用摄像头。",
    "audit.title": "审计医院账本", "audit.token": "审计令牌（仅保存在此标签页）", "audit.hospital": "医院",
    "audit.load": "加载", "audit.batches": "按序号排列的批次", "audit.gaps": "缺口", "audit.nogaps": "无缺口：每个序号都存在且按序上链。",
    "audit.missing": "缺失的批次序号", "audit.anchorgap": "未上链，但其后的批次已上链",
    "audit.seq": "序号", "audit.size": "结果数", "audit.sealed": "封存时间", "audit.status": "上链状态", "audit.root": "根哈希",
    "audit.chart": "批次大小与上链延迟随时间变化", "audit.delay": "上链延迟（秒）", "audit.delay.na": "上链延迟需要区块时间：请设置 JSON-RPC 节点。",
    "audit.lineage": "结果的版本沿革", "audit.lineage.load": "显示沿革", "audit.intact": "版本链完整", "audit.broken": "版本链断裂",
    "audit.rpc": "用于区块时间的 JSON-RPC 节点（可选）", "audit.missingrow": "缺失", "audit.vstatus": "状态", "audit.supersedes": "取代版本",
    "dec.title": "您的决定", "dec.reason": "重新检查的原因", "dec.detail": "说明（选择“其他”时必填；请勿填写患者信息）",
    "dec.do.recognise": "互认（不重复检查）", "dec.do.reorder": "重新检查", "dec.noreason": "— 无原因 —",
    "dec.help": "记录您的处理：互认该结果，或注明原因后重新检查。计入您所在医院。",
    "dec.help.reorder": "按互认规则此结果不予互认：请记录重新检查（原因可选）。",
    "dec.needtoken": "如需记录决定，请在设置中输入本院的医生令牌。",
    "dec.recorded": "已记录决定", "dec.recognised": "已互认", "dec.reordered": "已重新检查", "dec.refused": "未记录",
    "reason.condition-changed": "病情发生变化", "reason.result-too-old": "结果时间过久",
    "reason.quality-doubt": "对结果质量存疑", "reason.emergency": "急诊",
    "reason.patient-request": "患者要求", "reason.not-in-catalogue": "该项目不在互认目录中", "reason.other": "其他（请说明）",
    "kpi.title": "互认指标", "kpi.from": "起始日期", "kpi.to": "截止日期（含）", "kpi.tz": "时区（可选，默认 UTC）",
    "kpi.load": "加载指标", "kpi.csv": "下载 CSV", "kpi.none": "此期间内无决定或就诊记录。",
    "kpi.chart": "各医院每月两项比率", "kpi.retrieval": "调阅率", "kpi.recognition": "调阅后互认率",
    "kpi.ranking": "按增长排名的医院", "kpi.rank": "排名", "kpi.growth": "互认率变化",
    "kpi.tests": "避免的检查数", "kpi.money": "节省费用", "kpi.moneygrowth": "节省费用变化", "kpi.batches": "已上链批次",
  },
};

export const LANGS = Object.keys(T);

function pick() {
  const q = new URLSearchParams(location.search).get("lang");
  const stored = localStorage.getItem("mrl.lang");
  for (const c of [q, stored, ...(navigator.languages || [navigator.language])]) {
    if (!c) continue;
    if (T[c]) return c;
    const base = c.toLowerCase().split("-")[0];
    if (base === "zh") return "zh-CN";
    if (T[base]) return base;
  }
  return "en";
}

export let lang = pick();
export const t = (key) => (T[lang] && T[lang][key]) || T.en[key] || key;

export function apply(root = document) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
}

export function setLang(code, onChange) {
  lang = T[code] ? code : "en";
  localStorage.setItem("mrl.lang", lang);
  apply();
  if (onChange) onChange();
}

// A <select> of the languages, each named in its own language.
export function mountSwitcher(select, onChange) {
  select.replaceChildren(...LANGS.map((c) => new Option(T[c]["lang.name"], c, false, c === lang)));
  select.addEventListener("change", () => setLang(select.value, onChange));
  apply();
}
