// EV charging and V2G: the pilot KPIs of a year (NDRC 718号 targets from the rule set: valley share of
// charging energy >= 60 %, private piles >= 80 %, a V2G project >= 500 kW discharge power and
// >= 100 MWh a year) per city, operator and project, battery indicators, the V2G statement, and what
// the OCPP central system knows (charge points, sessions). Every figure is the API's, in the
// signed-in role's scope.
//
// Routes: #/ev?year=<y>

import { COLORS, axisStyle, baseOption, chart, loadCharts, tooltipLines } from "../charts.js";
import { $, api, auth, fmt, fmtInt, fmtPct, fmtTime, h, pageMessage, pageView, query, stat, table, tl } from "../core.js";
import { addMessages, applyI18n, t } from "../i18n.js";
import { navigate, parseHash } from "../router.js";

const { view, setState, body } = pageView("ev");

addMessages({
  en: {
    "evp.title": "EV charging and V2G",
    "evp.year": "Year",
    "evp.scope": "Scope: {scope} · rule set {ruleset}",
    "evp.kpis": "Pilot KPIs of {year}",
    "evp.sessions": "Sessions",
    "evp.days": "Days covered",
    "evp.valley_share": "Valley share of charging",
    "evp.private_share": "Valley share, private piles",
    "evp.v2g_power": "V2G discharge power",
    "evp.v2g_energy": "V2G discharge (annualised)",
    "evp.v2g_energy_ytd": "V2G discharge, year to date",
    "evp.target_min": "target ≥ {v}",
    "evp.per_project": "(target per project)",
    "evp.ok": "meets the target",
    "evp.not_ok": "below the target",
    "evp.no_data": "no data",
    "evp.empty": "No metered charging session in {year}: the OCPP central system has recorded none, so the valley shares, the discharged energy and the battery indicators are empty. V2G power counts the registered V2G chargers.",
    "evp.by_operator": "Per operator ({n})",
    "evp.by_project": "Per project ({n})",
    "evp.chart.power": "V2G discharge power per project",
    "evp.chart.share": "Valley share per operator",
    "evp.chart.power_series": "discharge power",
    "evp.chart.target": "target",
    "evp.chart.valley": "valley share",
    "evp.chart.private": "private piles",
    "evp.col.key": "Key",
    "evp.col.charge": "Charged (kWh)",
    "evp.col.valley": "Valley (kWh)",
    "evp.col.valley_share": "Valley share",
    "evp.col.private_charge": "Private piles (kWh)",
    "evp.col.private_share": "Private valley share",
    "evp.col.v2g_chargers": "V2G chargers",
    "evp.col.v2g_kw": "Discharge power (kW)",
    "evp.col.v2g_kwh": "Discharged (kWh)",
    "evp.col.v2g_kwh_year": "Annualised (kWh)",
    "evp.col.power_ok": "≥ power",
    "evp.col.energy_ok": "≥ energy",
    "evp.battery": "Battery indicators",
    "evp.battery.vehicles": "Vehicles",
    "evp.battery.throughput": "Throughput",
    "evp.battery.efc_mean": "Equivalent full cycles (mean)",
    "evp.battery.efc_max": "Equivalent full cycles (max)",
    "evp.battery.v2g_efc": "V2G cycles (mean)",
    "evp.battery.soh_min": "SoH (min)",
    "evp.battery.soh_mean": "SoH (mean)",
    "evp.statement": "V2G statement of {year}",
    "evp.statement.sessions": "Sessions with discharge",
    "evp.statement.energy": "Discharged",
    "evp.statement.value": "Energy value",
    "evp.statement.claim": "Subsidy claimed",
    "evp.statement.subsidy": "Subsidy",
    "evp.statement.budget_left": "Budget left",
    "evp.statement.scale": "Pro-rata factor",
    "evp.statement.lines": "Lines ({n}, first {shown} shown)",
    "evp.col.session": "Session",
    "evp.col.charge_point": "Charge point",
    "evp.col.operator": "Operator",
    "evp.col.project": "Project",
    "evp.col.line": "Line",
    "evp.col.energy": "Energy (kWh)",
    "evp.col.amount": "Amount (yuan)",
    "evp.charge_points": "Charge points ({n})",
    "evp.sessions_list": "Sessions ({n})",
    "evp.col.version": "OCPP",
    "evp.col.vendor": "Vendor / model",
    "evp.col.connected": "Connected",
    "evp.col.last_seen": "Last seen",
    "evp.col.status": "Connectors",
    "evp.col.state": "State",
    "evp.col.started": "Started",
    "evp.col.stopped": "Stopped",
    "evp.col.charged": "Charged (kWh)",
    "evp.col.discharged": "Discharged (kWh)",
    "evp.col.v2g": "V2G",
    "evp.none_cp": "No charge point has connected to the OCPP central system.",
    "evp.none_sessions": "No session recorded.",
    "evp.unit.yuan": "yuan",
    "evp.limit": "first {n} shown",
  },
  zh: {
    "evp.title": "电动汽车充电与 V2G",
    "evp.year": "年度",
    "evp.scope": "范围：{scope} · 规则集 {ruleset}",
    "evp.kpis": "{year} 年试点指标",
    "evp.sessions": "充电会话",
    "evp.days": "覆盖天数",
    "evp.valley_share": "低谷充电电量占比",
    "evp.private_share": "私人桩低谷占比",
    "evp.v2g_power": "V2G 放电功率",
    "evp.v2g_energy": "V2G 放电量（年化）",
    "evp.v2g_energy_ytd": "V2G 年内放电量",
    "evp.target_min": "目标 ≥ {v}",
    "evp.per_project": "（按项目考核）",
    "evp.ok": "达标",
    "evp.not_ok": "未达标",
    "evp.no_data": "无数据",
    "evp.empty": "{year} 年没有计量的充电会话：OCPP 中心系统尚未记录，低谷占比、放电量和电池指标为空。V2G 功率按已登记的 V2G 充电桩统计。",
    "evp.by_operator": "按运营商（{n}）",
    "evp.by_project": "按项目（{n}）",
    "evp.chart.power": "各项目 V2G 放电功率",
    "evp.chart.share": "各运营商低谷充电占比",
    "evp.chart.power_series": "放电功率",
    "evp.chart.target": "目标",
    "evp.chart.valley": "低谷占比",
    "evp.chart.private": "私人桩",
    "evp.col.key": "编号",
    "evp.col.charge": "充电量（千瓦时）",
    "evp.col.valley": "低谷（千瓦时）",
    "evp.col.valley_share": "低谷占比",
    "evp.col.private_charge": "私人桩（千瓦时）",
    "evp.col.private_share": "私人桩低谷占比",
    "evp.col.v2g_chargers": "V2G 桩",
    "evp.col.v2g_kw": "放电功率（千瓦）",
    "evp.col.v2g_kwh": "放电量（千瓦时）",
    "evp.col.v2g_kwh_year": "年化（千瓦时）",
    "evp.col.power_ok": "功率达标",
    "evp.col.energy_ok": "电量达标",
    "evp.battery": "电池指标",
    "evp.battery.vehicles": "车辆数",
    "evp.battery.throughput": "吞吐电量",
    "evp.battery.efc_mean": "等效满充次数（平均）",
    "evp.battery.efc_max": "等效满充次数（最大）",
    "evp.battery.v2g_efc": "V2G 循环（平均）",
    "evp.battery.soh_min": "健康度（最低）",
    "evp.battery.soh_mean": "健康度（平均）",
    "evp.statement": "{year} 年 V2G 结算明细",
    "evp.statement.sessions": "有放电的会话",
    "evp.statement.energy": "放电量",
    "evp.statement.value": "放电电费",
    "evp.statement.claim": "补贴申报",
    "evp.statement.subsidy": "补贴",
    "evp.statement.budget_left": "剩余预算",
    "evp.statement.scale": "同比例系数",
    "evp.statement.lines": "明细（{n}，显示前 {shown} 条）",
    "evp.col.session": "会话",
    "evp.col.charge_point": "充电桩",
    "evp.col.operator": "运营商",
    "evp.col.project": "项目",
    "evp.col.line": "明细",
    "evp.col.energy": "电量（千瓦时）",
    "evp.col.amount": "金额（元）",
    "evp.charge_points": "充电桩（{n}）",
    "evp.sessions_list": "充电会话（{n}）",
    "evp.col.version": "OCPP",
    "evp.col.vendor": "厂商 / 型号",
    "evp.col.connected": "在线",
    "evp.col.last_seen": "最后通信",
    "evp.col.status": "接口状态",
    "evp.col.state": "状态",
    "evp.col.started": "开始",
    "evp.col.stopped": "结束",
    "evp.col.charged": "充电（千瓦时）",
    "evp.col.discharged": "放电（千瓦时）",
    "evp.col.v2g": "V2G",
    "evp.none_cp": "尚无充电桩接入 OCPP 中心系统。",
    "evp.none_sessions": "尚无充电会话记录。",
    "evp.unit.yuan": "元",
    "evp.limit": "显示前 {n} 条",
  },
});

const LIST_LIMIT = 100;
const STATEMENT_LINES = 200;
const PERIODS = ["valley", "flat", "peak", "critical"];

let token = 0;
let current = null; // {year, report, statement, statementError, points, sessions}

async function load(route) {
  const my = ++token;
  const gen = auth.generation;
  setState("loading");
  const year = Number(route.params.year) || new Date().getFullYear();
  try {
    const [report, statement, points, sessions] = await Promise.all([
      api(`/ev/pilot${query({ year })}`),
      api(`/ev/v2g/statement${query({ year })}`).catch((err) => ({ error: err })),
      api(`/ev/charge-points${query({ limit: LIST_LIMIT })}`).catch((err) => ({ error: err })),
      api(`/ev/sessions${query({ limit: LIST_LIMIT })}`).catch((err) => ({ error: err })),
      loadCharts(),
    ]);
    if (my !== token || gen !== auth.generation) return;
    current = { year, report, statement, points, sessions };
    render();
    setState("ready");
  } catch (err) {
    if (my !== token || gen !== auth.generation) return;
    current = null;
    body().replaceChildren(pageMessage(err));
    setState("error");
  }
}

// ---------------------------------------------------------------- rendering

function okMark(ok, id = null) {
  if (ok === null || ok === undefined) return h("span", { class: "muted", dataset: { ok: "" }, id, text: t("evp.no_data") });
  return h("span", { class: ok ? "ok" : "bad", dataset: { ok: String(ok) }, id, text: ok ? `✓ ${t("evp.ok")}` : `✗ ${t("evp.not_ok")}` });
}

function yearPicker() {
  const now = new Date().getFullYear();
  const years = [...new Set([current.year, now, now - 1, now - 2])].sort((a, b) => b - a);
  const select = h("select", { id: "evp-year" }, years.map((y) => h("option", { value: y, text: y, selected: y === current.year })));
  select.addEventListener("change", () => {
    const r = parseHash();
    navigate("ev", r.parts, { ...r.params, year: select.value });
  });
  return h("label", { class: "field" }, h("span", { text: t("evp.year") }), select);
}

function kpiCard(id, labelKey, value, formatted, unit, target, ok, note = "") {
  const card = stat(id, labelKey, value, formatted, unit, "evp-kpi");
  card.append(h("div", { class: "evp-target" }, h("span", { class: "muted", text: `${target}${note ? ` ${note}` : ""}` }), " ", okMark(ok)));
  return card;
}

function render() {
  const { report: r, year } = current;
  const c = r.city;
  const tg = r.targets;
  const parts = [h("div", { class: "settle-head" }, h("p", { class: "muted", id: "evp-scope", text: t("evp.scope", { scope: r.scope, ruleset: r.ruleset }) }), yearPicker())];
  if (!r.sessions) parts.push(h("p", { class: "notice", id: "evp-empty", text: t("evp.empty", { year }) }));
  parts.push(h("h2", { class: "section-title", text: t("evp.kpis", { year }) }));
  parts.push(h("div", { class: "stats", id: "evp-kpis" },
    stat("evp-sessions", "evp.sessions", r.sessions, fmtInt(r.sessions)),
    stat("evp-days", "evp.days", r.days_covered, fmt(r.days_covered, 1)),
    kpiCard("evp-valley", "evp.valley_share", c.valley_share ?? "", fmtPct(c.valley_share, 1), "",
      t("evp.target_min", { v: fmtPct(tg.valley_share_min, 0) }), c.valley_share_ok),
    kpiCard("evp-private", "evp.private_share", c.private_valley_share ?? "", fmtPct(c.private_valley_share, 1), "",
      t("evp.target_min", { v: fmtPct(tg.valley_share_private_min, 0) }), c.private_valley_share_ok),
    kpiCard("evp-power", "evp.v2g_power", c.v2g_discharge_kw, fmt(c.v2g_discharge_kw, 1), t("unit.kw"),
      t("evp.target_min", { v: `${fmtInt(tg.v2g_project_min_kw)} ${t("unit.kw")}` }), c.v2g_power_ok, t("evp.per_project")),
    kpiCard("evp-energy", "evp.v2g_energy", c.v2g_discharge_kwh_annualised, fmt(c.v2g_discharge_kwh_annualised, 1), t("unit.kwh"),
      t("evp.target_min", { v: `${fmtInt(tg.v2g_project_min_kwh_per_year)} ${t("unit.kwh")}` }), c.v2g_energy_ok, t("evp.per_project")),
    stat("evp-energy-ytd", "evp.v2g_energy_ytd", c.v2g_discharge_kwh, fmt(c.v2g_discharge_kwh, 1), t("unit.kwh"))));
  parts.push(h("div", { class: "charts" },
    h("article", { class: "panel" }, tl("h2", "evp.chart.power"), h("div", { id: "chart-evp-power", class: "chart" })),
    h("article", { class: "panel" }, tl("h2", "evp.chart.share"), h("div", { id: "chart-evp-share", class: "chart" }))));
  parts.push(kpiTable("evp-operators", t("evp.by_operator", { n: fmtInt(r.operator.length) }), r.operator));
  parts.push(kpiTable("evp-projects", t("evp.by_project", { n: fmtInt(r.project.length) }), r.project));
  parts.push(batteryPanel(r.battery));
  parts.push(statementPanel());
  parts.push(pointsPanel());
  parts.push(sessionsPanel());
  body().replaceChildren(...parts);
  drawPower();
  drawShare();
}

function kpiTable(id, title, rows) {
  return h("article", { class: "panel", id: `${id}-panel` }, h("h2", { text: title }), h("div", { class: "table-wrap" }, table([
    { key: "key", label: "evp.col.key", render: (x) => h("span", { class: "mono", text: x.key }) },
    { key: "charge", label: "evp.col.charge", num: true, render: (x) => fmt(x.charge_kwh, 1) },
    { key: "valley", label: "evp.col.valley", num: true, render: (x) => fmt(x.valley_kwh, 1) },
    { key: "valley_share", label: "evp.col.valley_share", num: true, render: (x) => h("span", { class: x.valley_share_ok === false ? "bad" : "", text: fmtPct(x.valley_share, 1) }) },
    { key: "private_charge", label: "evp.col.private_charge", num: true, render: (x) => fmt(x.private_charge_kwh, 1) },
    { key: "private_share", label: "evp.col.private_share", num: true, render: (x) => h("span", { class: x.private_valley_share_ok === false ? "bad" : "", text: fmtPct(x.private_valley_share, 1) }) },
    { key: "chargers", label: "evp.col.v2g_chargers", num: true, render: (x) => fmtInt(x.v2g_chargers) },
    { key: "kw", label: "evp.col.v2g_kw", num: true, render: (x) => fmt(x.v2g_discharge_kw, 1) },
    { key: "kwh", label: "evp.col.v2g_kwh", num: true, render: (x) => fmt(x.v2g_discharge_kwh, 1) },
    { key: "kwh_year", label: "evp.col.v2g_kwh_year", num: true, render: (x) => fmt(x.v2g_discharge_kwh_annualised, 1) },
    { key: "power_ok", label: "evp.col.power_ok", render: (x) => ("v2g_power_ok" in x ? okMark(x.v2g_power_ok) : "–") },
    { key: "energy_ok", label: "evp.col.energy_ok", render: (x) => ("v2g_energy_ok" in x ? okMark(x.v2g_energy_ok) : "–") },
  ], rows, {
    id,
    rowProps: (x) => ({
      dataset: {
        id: x.key, valleyShare: x.valley_share ?? "", privateShare: x.private_valley_share ?? "", kw: x.v2g_discharge_kw,
        kwh: x.v2g_discharge_kwh, chargeKwh: x.charge_kwh, powerOk: String(x.v2g_power_ok ?? ""),
      },
    }),
  })));
}

function batteryPanel(b) {
  const panel = h("article", { class: "panel", id: "evp-battery" }, tl("h2", "evp.battery"));
  if (!b.vehicles) {
    panel.append(h("p", { class: "muted", id: "evp-battery-note", text: b.note || t("evp.no_data") }));
    return panel;
  }
  panel.append(h("div", { class: "stats stats-compact" },
    stat("evp-bat-vehicles", "evp.battery.vehicles", b.vehicles, fmtInt(b.vehicles)),
    stat("evp-bat-throughput", "evp.battery.throughput", b.throughput_kwh, fmt(b.throughput_kwh, 1), t("unit.kwh")),
    stat("evp-bat-efc-mean", "evp.battery.efc_mean", b.efc_mean, fmt(b.efc_mean, 3)),
    stat("evp-bat-efc-max", "evp.battery.efc_max", b.efc_max, fmt(b.efc_max, 3)),
    stat("evp-bat-v2g-efc", "evp.battery.v2g_efc", b.v2g_efc_mean, fmt(b.v2g_efc_mean, 3)),
    stat("evp-bat-soh-min", "evp.battery.soh_min", b.soh_min, fmtPct(b.soh_min, 2)),
    stat("evp-bat-soh-mean", "evp.battery.soh_mean", b.soh_mean, fmtPct(b.soh_mean, 2))));
  if (b.model) panel.append(h("p", { class: "muted small", text: b.model }));
  return panel;
}

function statementPanel() {
  const s = current.statement;
  const panel = h("article", { class: "panel", id: "evp-statement" }, h("h2", { text: t("evp.statement", { year: current.year }) }));
  if (s.error) {
    panel.append(pageMessage(s.error));
    return panel;
  }
  const tt = s.totals;
  const yuanUnit = t("evp.unit.yuan");
  panel.append(h("div", { class: "stats stats-compact" },
    stat("evp-st-sessions", "evp.statement.sessions", tt.sessions, fmtInt(tt.sessions)),
    stat("evp-st-energy", "evp.statement.energy", tt.energy_kwh, fmt(tt.energy_kwh, 3), t("unit.kwh")),
    stat("evp-st-value", "evp.statement.value", tt.energy_value_yuan, fmt(tt.energy_value_yuan, 2), yuanUnit),
    stat("evp-st-claim", "evp.statement.claim", tt.subsidy_claim_yuan, fmt(tt.subsidy_claim_yuan, 2), yuanUnit),
    stat("evp-st-subsidy", "evp.statement.subsidy", tt.subsidy_yuan, fmt(tt.subsidy_yuan, 2), yuanUnit),
    stat("evp-st-budget", "evp.statement.budget_left", tt.budget_left_yuan, fmt(tt.budget_left_yuan, 2), yuanUnit),
    stat("evp-st-scale", "evp.statement.scale", tt.scale, fmt(tt.scale, 6))));
  const shown = s.lines.slice(0, STATEMENT_LINES);
  panel.append(h("h3", { text: t("evp.statement.lines", { n: fmtInt(s.lines.length), shown: fmtInt(shown.length) }) }));
  panel.append(h("div", { class: "table-wrap" }, table([
    { key: "session", label: "evp.col.session", render: (l) => h("span", { class: "mono small", text: l.session_id }) },
    { key: "cp", label: "evp.col.charge_point", render: (l) => l.charge_point_id },
    { key: "operator", label: "evp.col.operator", render: (l) => l.operator_id },
    { key: "project", label: "evp.col.project", render: (l) => l.project_id },
    { key: "line", label: "evp.col.line", render: (l) => l.line },
    { key: "energy", label: "evp.col.energy", num: true, render: (l) => fmt(l.energy_kwh, 3) },
    { key: "amount", label: "evp.col.amount", num: true, render: (l) => h("span", { dataset: { value: l.amount_yuan }, text: fmt(l.amount_yuan, 2) }) },
  ], shown, { id: "evp-statement-lines", rowProps: (l) => ({ dataset: { session: l.session_id, line: l.line } }) })));
  return panel;
}

function pointsPanel() {
  const p = current.points;
  const panel = h("article", { class: "panel", id: "evp-points" });
  if (p.error) {
    panel.append(pageMessage(p.error));
    return panel;
  }
  panel.append(h("h2", { text: t("evp.charge_points", { n: p.items.length >= LIST_LIMIT ? t("evp.limit", { n: LIST_LIMIT }) : fmtInt(p.items.length) }) }));
  panel.append(h("div", { class: "table-wrap" }, table([
    { key: "id", label: "evp.col.charge_point", render: (x) => h("span", { class: "mono", text: x.charge_point_id }) },
    { key: "version", label: "evp.col.version", render: (x) => x.ocpp_version },
    { key: "vendor", label: "evp.col.vendor", render: (x) => [x.vendor, x.model].filter(Boolean).join(" / ") || "–" },
    { key: "connected", label: "evp.col.connected", render: (x) => h("span", { class: x.connected ? "dot-on" : "dot-off", text: x.connected ? `● ${t("common.yes")}` : `○ ${t("common.no")}` }) },
    { key: "last_seen", label: "evp.col.last_seen", render: (x) => fmtTime(x.last_seen_at) },
    { key: "status", label: "evp.col.status", cls: "wrap", render: (x) => Object.entries(x.status || {}).map(([k, v]) => `${k}: ${v}`).join(", ") || "–" },
  ], p.items, { id: "evp-points-table", empty: "evp.none_cp", rowProps: (x) => ({ dataset: { id: x.charge_point_id } }) })));
  return panel;
}

function periodSum(row, prefix) {
  return PERIODS.reduce((acc, p) => acc + Number(row[`${prefix}_${p}_kwh`] || 0), 0);
}

function sessionsPanel() {
  const s = current.sessions;
  const panel = h("article", { class: "panel", id: "evp-sessions" });
  if (s.error) {
    panel.append(pageMessage(s.error));
    return panel;
  }
  panel.append(h("h2", { text: t("evp.sessions_list", { n: s.items.length >= LIST_LIMIT ? t("evp.limit", { n: LIST_LIMIT }) : fmtInt(s.items.length) }) }));
  panel.append(h("div", { class: "table-wrap" }, table([
    { key: "id", label: "evp.col.session", render: (x) => h("span", { class: "mono small", text: x.session_id }) },
    { key: "cp", label: "evp.col.charge_point", render: (x) => x.charge_point_id },
    { key: "state", label: "evp.col.state", render: (x) => x.state },
    { key: "started", label: "evp.col.started", render: (x) => fmtTime(x.started_at) },
    { key: "stopped", label: "evp.col.stopped", render: (x) => (x.stopped_at ? fmtTime(x.stopped_at) : "–") },
    { key: "charged", label: "evp.col.charged", num: true, render: (x) => fmt(periodSum(x, "charge"), 2) },
    { key: "valley", label: "evp.col.valley", num: true, render: (x) => fmt(x.charge_valley_kwh, 2) },
    { key: "discharged", label: "evp.col.discharged", num: true, render: (x) => fmt(periodSum(x, "discharge"), 2) },
    { key: "v2g", label: "evp.col.v2g", render: (x) => (x.v2g ? t("common.yes") : t("common.no")) },
  ], s.items, { id: "evp-sessions-table", empty: "evp.none_sessions", rowProps: (x) => ({ dataset: { id: x.session_id } }) })));
  return panel;
}

// ---------------------------------------------------------------- charts

function drawPower() {
  const rows = current.report.project.filter((x) => x.v2g_chargers > 0).sort((a, b) => b.v2g_discharge_kw - a.v2g_discharge_kw);
  const target = current.report.targets.v2g_project_min_kw;
  chart("chart-evp-power").setOption({
    ...baseOption(!rows.length, t("chart.empty")),
    grid: { left: 8, right: 24, top: 40, bottom: 24, containLabel: true },
    tooltip: {
      ...baseOption(false).tooltip, trigger: "axis", axisPointer: { type: "shadow" },
      formatter: (params) => {
        const x = rows[params[0].dataIndex];
        return tooltipLines(x.key, [
          ["", t("evp.col.v2g_chargers"), fmtInt(x.v2g_chargers)],
          ["", t("evp.col.v2g_kw"), fmt(x.v2g_discharge_kw, 1)],
          ["", t("evp.col.v2g_kwh_year"), fmt(x.v2g_discharge_kwh_annualised, 1)],
        ]);
      },
    },
    xAxis: { type: "category", data: rows.map((x) => x.key), ...axisStyle(), axisLabel: { color: COLORS.muted, rotate: rows.length > 8 ? 45 : 0 } },
    yAxis: { type: "value", name: t("unit.kw"), max: (v) => Math.max(v.max, target) * 1.1, ...axisStyle() },
    series: [{
      name: t("evp.chart.power_series"), type: "bar", barMaxWidth: 28,
      data: rows.map((x) => ({ value: x.v2g_discharge_kw, itemStyle: { color: x.v2g_power_ok ? COLORS.ok : COLORS.near } })),
      markLine: {
        symbol: "none", label: { position: "insideEndTop", formatter: `${t("evp.chart.target")} ${fmtInt(target)} ${t("unit.kw")}`, color: COLORS.over },
        lineStyle: { color: COLORS.over, type: "dashed" }, data: [{ yAxis: target }],
      },
    }],
  }, { notMerge: true });
}

function drawShare() {
  const rows = current.report.operator.filter((x) => x.charge_kwh > 0);
  const tg = current.report.targets;
  const pct = (v) => (v === null || v === undefined ? null : 100 * v);
  chart("chart-evp-share").setOption({
    ...baseOption(!rows.length, t("chart.empty")),
    grid: { left: 8, right: 24, top: 40, bottom: 24, containLabel: true },
    tooltip: { ...baseOption(false).tooltip, trigger: "axis", axisPointer: { type: "shadow" } },
    xAxis: { type: "category", data: rows.map((x) => x.key), ...axisStyle() },
    yAxis: { type: "value", name: "%", min: 0, max: 100, ...axisStyle() },
    series: [
      {
        name: t("evp.chart.valley"), type: "bar", barMaxWidth: 24, data: rows.map((x) => pct(x.valley_share)), itemStyle: { color: COLORS.adjustable },
        markLine: { symbol: "none", lineStyle: { color: COLORS.adjustable, type: "dashed" }, label: { position: "insideEndTop", formatter: `≥ ${fmtPct(tg.valley_share_min, 0)}` }, data: [{ yAxis: 100 * tg.valley_share_min }] },
      },
      {
        name: t("evp.chart.private"), type: "bar", barMaxWidth: 24, data: rows.map((x) => pct(x.private_valley_share)), itemStyle: { color: COLORS.up },
        markLine: { symbol: "none", lineStyle: { color: COLORS.up, type: "dashed" }, label: { position: "insideEndTop", formatter: `≥ ${fmtPct(tg.valley_share_private_min, 0)}` }, data: [{ yAxis: 100 * tg.valley_share_private_min }] },
      },
    ],
  }, { notMerge: true });
}

// ---------------------------------------------------------------- page

export default {
  id: "ev",
  title: "evp.title",
  enter(route) {
    applyI18n(view());
    load(route);
  },
  leave() {
    token += 1;
  },
  reset() {
    token += 1;
    current = null;
    body().replaceChildren();
    setState("");
  },
  relabel() {
    applyI18n(view());
    if (view().dataset.state === "ready" && current) render();
  },
  refresh() {
    load(parseHash());
  },
};
