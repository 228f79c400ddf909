// Operators: admission state and kind, declared versus verified capability; one operator's
// qualification checks, trading units and — for the city administrator — the admission actions,
// with the server's refusal shown as it is.
//
// Routes: #/operators, #/operators/<id>

import { COLORS, axisStyle, baseOption, chart, loadCharts, tooltipLines } from "../charts.js";
import { $, api, auth, can, fmt, fmtInt, fmtPct, fmtTime, h, localName, nextSort, pageMessage, pageView, stat, table, tl } from "../core.js";
import { getLang, t } from "../i18n.js";

const { view, setState } = pageView("operators");

const enc = encodeURIComponent;

/** model/lifecycle.py OPERATOR_MACHINE: the actions the city administrator has from each state.
 *  (exit is also the operator administrator's own action, not offered on this screen.) */
const ACTIONS_FROM = {
  applied: ["start_review", "reject"],
  under_review: ["admit", "reject"],
  admitted: ["suspend", "exit"],
  suspended: ["reinstate", "exit"],
  rejected: [],
  exited: [],
};
const NEEDS_REASON = new Set(["start_review", "admit", "reject", "suspend", "reinstate", "exit"]);
const DANGER = new Set(["reject", "suspend", "exit"]);

let token = 0;
let list = null; // {items, report: Map|null, reportError}
let detail = null; // {op, units, report row, unitsError}
let mode = "list";
let sortState = { key: "id", dir: 1 };
let actionResult = null; // {ok, message, violations}

function opName(op) {
  return localName(op, getLang()) || op.operator_id;
}

export function operatorStateBadge(state) {
  return h("span", { class: "pill pill-opstate", dataset: { opstate: state || "" }, text: state ? t(`opstate.${state}`) : "–" });
}

function kindLabel(kind) {
  const key = `kind.${kind}`;
  const text = t(key);
  return text === key ? kind : text;
}

// ---------------------------------------------------------------- list

async function loadList() {
  const my = ++token;
  const gen = auth.generation;
  setState("loading");
  try {
    const [ops, report] = await Promise.all([
      api("/operators"),
      can("verification_report") ? api("/verification/report").catch((err) => ({ error: err })) : Promise.resolve(null),
      loadCharts(),
    ]);
    if (my !== token || gen !== auth.generation) return;
    list = {
      items: ops.items,
      report: report && !report.error ? new Map(report.items.map((r) => [r.operator_id, r])) : null,
      reportError: report?.error || null,
    };
    renderList();
    setState("ready");
  } catch (err) {
    if (my !== token || gen !== auth.generation) return;
    $("operators-body").replaceChildren(pageMessage(err));
    setState("error");
  }
}

function listColumns() {
  const rep = (o) => list.report?.get(o.operator_id) || null;
  const kw = { unit: t("unit.kw") };
  const cols = [
    {
      key: "id", label: "op.col.id", sort: (o) => o.operator_id,
      render: (o) => h("a", { href: `#/operators/${enc(o.operator_id)}`, class: "mono", text: o.operator_id }),
    },
    { key: "name", label: "op.col.name", cls: "wrap", sort: (o) => opName(o), render: (o) => opName(o) },
    { key: "kind", label: "op.col.kind", sort: (o) => o.kind, render: (o) => kindLabel(o.kind) },
    { key: "state", label: "op.col.state", sort: (o) => o.state, render: (o) => operatorStateBadge(o.state) },
  ];
  if (list.report) {
    cols.push(
      { key: "resources", label: "op.col.resources", num: true, sort: (o) => rep(o)?.resources ?? 0, render: (o) => fmtInt(rep(o)?.resources ?? 0) },
      { key: "declared", label: "op.col.declared", vars: kw, num: true, sort: (o) => rep(o)?.declared_down_kw ?? 0, render: (o) => fmt(rep(o)?.declared_down_kw ?? 0, 1) },
      { key: "verified", label: "op.col.verified", vars: kw, num: true, sort: (o) => rep(o)?.verified_down_kw ?? 0, render: (o) => fmt(rep(o)?.verified_down_kw ?? 0, 1) },
      { key: "ratio", label: "op.col.ratio", num: true, sort: (o) => rep(o)?.verified_ratio ?? null, render: (o) => fmtPct(rep(o)?.verified_ratio, 0) },
      { key: "tested", label: "op.col.tested", num: true, sort: (o) => rep(o)?.tested ?? 0, render: (o) => fmtInt(rep(o)?.tested ?? 0) },
      {
        key: "grades", label: "op.col.grades", sort: (o) => rep(o)?.grade_a ?? 0,
        render: (o) => (rep(o) ? `${fmtInt(rep(o).grade_a)} / ${fmtInt(rep(o).grade_b)} / ${fmtInt(rep(o).grade_c)}` : "–"),
      },
      { key: "flagged", label: "op.col.flagged", num: true, sort: (o) => rep(o)?.flagged ?? 0, render: (o) => fmtInt(rep(o)?.flagged ?? 0) },
    );
  }
  return cols;
}

function renderList() {
  const body = $("operators-body");
  const counts = {};
  for (const o of list.items) counts[o.state] = (counts[o.state] || 0) + 1;
  const stats = h("div", { class: "stats" },
    stat("op-stat-total", "op.stat.total", list.items.length, fmtInt(list.items.length)),
    ...["admitted", "applied", "under_review", "suspended"].map((s) => stat(`op-stat-${s}`, `opstate.${s}`, counts[s] || 0, fmtInt(counts[s] || 0))));
  const tablePanel = h("article", { class: "panel", id: "operators-list-panel" },
    h("h2", { text: t("op.list", { n: fmtInt(list.items.length) }) }),
    table(listColumns(), list.items, {
      id: "operators-list", empty: "op.empty", sort: { ...sortState, onSort },
      rowProps: (o) => ({ dataset: { id: o.operator_id, state: o.state } }),
    }));
  const parts = [stats];
  if (list.reportError) parts.push(h("p", { class: "notice", text: t("op.report_unavailable", { msg: list.reportError.message }) }));
  if (list.report) {
    parts.push(h("div", { class: "split" }, tablePanel,
      h("article", { class: "panel" }, h("h2", { text: t("op.chart.title") }), h("div", { id: "chart-operators", class: "chart" }))));
  } else {
    parts.push(tablePanel);
  }
  body.replaceChildren(...parts);
  if (list.report) drawReportChart();
}

function onSort(key) {
  sortState = nextSort(sortState, key, key === "id" || key === "name" ? 1 : -1);
  renderList();
}

function drawReportChart() {
  const rows = list.items.map((o) => ({ o, r: list.report.get(o.operator_id) })).filter((x) => x.r)
    .sort((a, b) => a.r.declared_down_kw - b.r.declared_down_kw);
  const names = rows.map((x) => x.o.operator_id);
  chart("chart-operators").setOption({
    ...baseOption(rows.length === 0, t("chart.empty")),
    grid: { left: 8, right: 24, top: 40, bottom: 24, containLabel: true },
    tooltip: {
      ...baseOption(false).tooltip, trigger: "axis", axisPointer: { type: "shadow" },
      formatter: (params) => {
        const x = rows[params[0].dataIndex];
        return tooltipLines(`${x.o.operator_id} ${opName(x.o)}`, [
          ...params.map((p) => [p.marker, p.seriesName, `${fmt(p.value, 1)} ${t("unit.mw")}`]),
          ["", t("op.col.ratio"), fmtPct(x.r.verified_ratio, 0)],
        ]);
      },
    },
    yAxis: { type: "category", data: names, ...axisStyle(), axisLabel: { color: COLORS.text }, splitLine: { show: false } },
    xAxis: { type: "value", name: t("unit.mw"), ...axisStyle() },
    series: [
      {
        name: t("op.chart.declared"), type: "bar", barMaxWidth: 12,
        data: rows.map((x) => x.r.declared_down_kw / 1000), itemStyle: { color: COLORS.adjustable, borderRadius: [0, 3, 3, 0] },
      },
      {
        name: t("op.chart.verified"), type: "bar", barMaxWidth: 12,
        data: rows.map((x) => x.r.verified_down_kw / 1000), itemStyle: { color: COLORS.connected, borderRadius: [0, 3, 3, 0] },
      },
    ],
  }, { notMerge: true });
}

// ---------------------------------------------------------------- detail

async function loadDetail(id, keepResult = false) {
  const my = ++token;
  const gen = auth.generation;
  if (!keepResult) actionResult = null;
  setState("loading");
  try {
    const [op, units, report] = await Promise.all([
      api(`/operators/${enc(id)}`),
      api(`/operators/${enc(id)}/trading-units`).catch((err) => ({ error: err })),
      can("verification_report") ? api("/verification/report").catch((err) => ({ error: err })) : Promise.resolve(null),
    ]);
    if (my !== token || gen !== auth.generation) return;
    detail = {
      op,
      units: units.error ? null : units.units,
      unitsError: units.error || null,
      report: report && !report.error ? report.items.find((r) => r.operator_id === id) || null : null,
      reportError: report?.error || null,
    };
    renderDetail();
    setState("ready");
  } catch (err) {
    if (my !== token || gen !== auth.generation) return;
    detail = null;
    $("operators-body").replaceChildren(backLink(), pageMessage(err));
    setState("error");
  }
}

function backLink() {
  return h("a", { class: "back", href: "#/operators", text: t("op.back") });
}

function checkDetail(c) {
  const d = c.detail;
  if (d === null || d === undefined) return "–";
  if (typeof d !== "object") return String(d);
  if (Array.isArray(d.units)) {
    const ok = d.units.filter((u) => u.qualifies).length;
    return `${d.rule ? `${d.rule} — ` : ""}${t("op.check.units", { ok: fmtInt(ok), n: fmtInt(d.units.length) })}`;
  }
  if (d.rule) return d.rule;
  if (d.detail) return `${d.detail}${d.rtt_ms !== null && d.rtt_ms !== undefined ? ` (${fmt(d.rtt_ms, 1)} ms)` : ""}`;
  if (d.endpoint) return d.endpoint;
  return JSON.stringify(d).slice(0, 200);
}

function checkLabel(name) {
  const key = `check.${name}`;
  const text = t(key);
  return text === key ? name : text;
}

function renderDetail() {
  const { op, units, report } = detail;
  const body = $("operators-body");
  const kw = { unit: t("unit.kw") };
  const head = h("div", { class: "node-head", dataset: { id: op.operator_id } },
    h("div", {},
      h("h2", { class: "node-title", text: opName(op) }),
      h("div", { class: "muted", text: [op.operator_id, kindLabel(op.kind), op.credit_code].filter(Boolean).join(" · ") })),
    h("div", { class: "detail-badges" }, operatorStateBadge(op.state),
      h("a", { class: "btn btn-ghost", href: `#/resources?operator=${enc(op.operator_id)}`, text: t("op.resources_link") })));

  const info = h("article", { class: "panel" }, tl("h2", "op.section.info"), h("dl", { class: "pairs" },
    h("dt", { text: t("op.col.state") }), h("dd", {}, operatorStateBadge(op.state)),
    h("dt", { text: t("op.col.kind") }), h("dd", { text: kindLabel(op.kind) }),
    h("dt", { text: t("op.tss") }), h("dd", { class: "mono small", text: op.tss_endpoint || "–" }),
    h("dt", { text: t("op.created") }), h("dd", { text: fmtTime(op.created_at) }),
    h("dt", { text: t("op.updated") }), h("dd", { text: fmtTime(op.updated_at) })));

  const parts = [backLink(), head];
  if (can("admit_operators")) parts.push(actionsPanel(op));

  const figures = h("article", { class: "panel", id: "op-verification" }, tl("h2", "op.section.verification"));
  if (report) {
    figures.append(h("div", { class: "stats stats-compact" },
      stat("op-declared", "op.declared_down", report.declared_down_kw, fmt(report.declared_down_kw, 1), t("unit.kw")),
      stat("op-tested", "op.declared_tested", report.declared_tested_kw, fmt(report.declared_tested_kw, 1), t("unit.kw")),
      stat("op-verified", "op.verified_down", report.verified_down_kw, fmt(report.verified_down_kw, 1), t("unit.kw")),
      stat("op-ratio", "op.col.ratio", report.verified_ratio ?? "", fmtPct(report.verified_ratio, 0)),
      stat("op-grades", "op.col.grades", report.grade_a, `${fmtInt(report.grade_a)} / ${fmtInt(report.grade_b)} / ${fmtInt(report.grade_c)}`),
      stat("op-flagged", "op.col.flagged", report.flagged, fmtInt(report.flagged))));
  } else {
    figures.append(h("p", { class: "muted", text: detail.reportError ? detail.reportError.message : t("op.no_report") }));
  }
  parts.push(h("div", { class: "split split-even" }, info, figures));

  const checks = op.checks || [];
  parts.push(h("article", { class: "panel", id: "op-checks" },
    h("h2", { text: t("op.section.checks", { n: fmtInt(checks.length) }) }),
    table([
      { key: "check", label: "op.check.name", render: (c) => checkLabel(c.check) },
      {
        key: "passed", label: "op.check.passed",
        render: (c) => h("span", { class: c.passed ? "ok" : "bad", dataset: { passed: String(Boolean(c.passed)) }, text: c.passed ? `✓ ${t("op.check.pass")}` : `✗ ${t("op.check.fail")}` }),
      },
      { key: "detail", label: "op.check.detail", cls: "wrap", render: checkDetail },
      { key: "at", label: "op.check.at", render: (c) => fmtTime(c.checked_at) },
      { key: "by", label: "op.check.by", render: (c) => c.checked_by || "–" },
    ], checks, { empty: "op.check.none", rowProps: (c) => ({ dataset: { check: c.check } }) })));

  const unitsPanel = h("article", { class: "panel", id: "op-units" },
    h("h2", { text: t("op.section.units", { n: fmtInt(units?.length ?? 0) }) }), h("p", { class: "muted", text: t("op.units.rule") }));
  if (units) {
    unitsPanel.append(table([
      { key: "node", label: "op.unit.node", render: (u) => h("a", { href: `#/grid/${enc(u.clearing_node)}`, class: "mono", text: u.clearing_node }) },
      { key: "resources", label: "op.col.resources", num: true, render: (u) => fmtInt(u.resources) },
      { key: "declared", label: "op.unit.declared", vars: kw, num: true, render: (u) => fmt(u.declared_kw, 1) },
      { key: "min_duration", label: "op.unit.min_duration", vars: kw, num: true, render: (u) => fmt(u.declared_kw_min_duration, 1) },
      { key: "minute", label: "op.unit.minute", vars: kw, num: true, render: (u) => fmt(u.verified_minute_kw, 1) },
      {
        key: "qualifies", label: "op.unit.qualifies",
        render: (u) => h("span", { class: u.qualifies ? "ok" : "bad", text: u.qualifies ? `✓ ${t("common.yes")}` : `✗ ${t("common.no")}` }),
      },
      { key: "minute_level", label: "op.unit.minute_level", render: (u) => (u.minute_level ? `✓ ${t("common.yes")}` : t("common.no")) },
    ], units, {
      empty: "op.unit.none",
      rowProps: (u) => ({ dataset: { node: u.clearing_node, qualifies: String(Boolean(u.qualifies)) } }),
    }));
  } else if (detail.unitsError) {
    unitsPanel.append(pageMessage(detail.unitsError));
  }
  parts.push(unitsPanel);
  body.replaceChildren(...parts);
}

function actionsPanel(op) {
  const actions = ACTIONS_FROM[op.state] || [];
  const panel = h("article", { class: "panel panel-actions", id: "op-actions" }, tl("h2", "op.section.actions"));
  panel.append(h("p", { class: "muted", text: t("op.actions.state", { state: t(`opstate.${op.state}`) }) }));
  if (!actions.length) {
    panel.append(h("p", { class: "muted", text: t("op.actions.none") }));
  } else {
    const reason = h("textarea", { id: "op-reason", rows: "2", "data-i18n-placeholder": "op.actions.reason_hint", placeholder: t("op.actions.reason_hint") });
    const handover = actions.includes("exit") ? h("input", {
      id: "op-handover", type: "text", autocomplete: "off", placeholder: t("op.actions.handover_hint"),
    }) : null;
    panel.append(h("label", { class: "field field-wide" }, h("span", { text: t("op.actions.reason") }), reason));
    if (handover) panel.append(h("label", { class: "field" }, h("span", { text: t("op.actions.handover") }), handover));
    panel.append(h("div", { class: "actions" }, actions.map((a) => h("button", {
      type: "button", class: `btn ${DANGER.has(a) ? "btn-danger" : "btn-primary"}`, dataset: { action: a },
      text: t(`op.action.${a}`), onclick: () => act(op, a),
    }))));
  }
  const box = h("div", { id: "op-action-result", role: "status" });
  if (actionResult) {
    box.dataset.ok = String(actionResult.ok);
    box.className = actionResult.ok ? "result result-ok" : "result result-bad";
    box.setAttribute("role", actionResult.ok ? "status" : "alert");
    box.append(h("span", { class: "result-message", text: actionResult.message }));
    if (actionResult.violations?.length) {
      box.append(h("ul", {}, actionResult.violations.map((v) => h("li", { text: t("error.violation", { field: v.field ?? "?", rule: v.rule ?? "?", value: JSON.stringify(v.value ?? null) }) }))));
    }
  }
  panel.append(box);
  return panel;
}

async function act(op, action) {
  const reason = $("op-reason")?.value.trim() || null;
  const handover = $("op-handover")?.value.trim() || null;
  for (const b of document.querySelectorAll("#op-actions button")) b.disabled = true;
  const gen = auth.generation;
  try {
    const out = await api(`/operators/${enc(op.operator_id)}/transitions`, {
      method: "POST", json: { action, reason, handover_to: action === "exit" ? handover : null },
    });
    if (gen !== auth.generation) return;
    actionResult = { ok: true, message: t("op.actions.done", { action: t(`op.action.${action}`), state: t(`opstate.${out.state}`) }) };
  } catch (err) {
    if (gen !== auth.generation) return;
    actionResult = { ok: false, message: err.message, violations: err.violations || [], status: err.status };
  }
  list = null;
  await loadDetail(op.operator_id, true);
}

// ---------------------------------------------------------------- page

function enter(route) {
  const id = route.parts[0];
  if (id) {
    if (mode !== "detail" || detail?.op?.operator_id !== id) actionResult = null;
    mode = "detail";
    loadDetail(id, true);
  } else {
    mode = "list";
    loadList();
  }
}

export default {
  id: "operators",
  title: "op.title",
  enter,
  leave() {
    token += 1;
  },
  reset() {
    token += 1;
    list = null;
    detail = null;
    actionResult = null;
    $("operators-body").replaceChildren();
    setState("");
  },
  relabel() {
    if (view().dataset.state !== "ready") return;
    if (mode === "list" && list) renderList();
    if (mode === "detail" && detail) renderDetail();
  },
  refresh() {
    if (mode === "detail" && detail) loadDetail(detail.op.operator_id);
    else loadList();
  },
};
