// Events (需求响应事件): the list with filters, a dispatcher's new-event form and lifecycle actions,
// and one event's declarations, clearing, live execution (target vs cleared vs delivered per slot,
// polled while executing) and evaluation. Operators see their own declarations and rows only (the
// API fences them); an operator admin declares for its trading units from here.
//
// Routes: #/events?state=&product=&day=, #/events/new, #/events/<event_id>

import { COLORS, axisStyle, baseOption, chart, disposeCharts, loadCharts, tooltipLines } from "../charts.js";
import { $, api, auth, can, CITY_ROLES, fmt, fmtPct, fmtTime, h, pageMessage, pageView, query, role, stat, table, tl } from "../core.js";
import { addMessages, applyI18n, t } from "../i18n.js";
import { navigate } from "../router.js";

const { view, setState } = pageView("events");

const enc = encodeURIComponent;
const PRODUCTS = ["peak_shaving", "valley_filling", "reactive", "reserve", "congestion", "emergency"];
const STATES = ["draft", "published", "declaring", "cleared", "executing", "evaluating", "settled", "cancelled"];
/** Lifecycle actions a dispatcher may take per state (model/lifecycle.py EVENT_MACHINE); the API checks again. */
const ACTIONS = {
  draft: ["publish", "cancel"],
  published: ["open", "clear", "cancel"],
  declaring: ["clear", "cancel"],
  cleared: ["execute", "cancel"],
  executing: ["evaluate"],
  evaluating: ["evaluate"],
};
const LIVE_MS = 4000; // execution is re-read this often while the event executes

addMessages({
  en: {
    "event.title": "Events",
    "event.new": "New event",
    "event.back": "← All events",
    "event.filter.state": "State",
    "event.filter.product": "Product",
    "event.filter.day": "Day",
    "event.filter.any": "any",
    "event.filter.apply": "Filter",
    "event.col.name": "Event",
    "event.col.state": "State",
    "event.col.product": "Product",
    "event.col.window": "Window",
    "event.col.target": "Target ({unit})",
    "event.col.scope": "Scope",
    "event.none": "No events match these filters.",
    "event.count": "{n} events",
    "event.product.peak_shaving": "peak shaving",
    "event.product.valley_filling": "valley filling",
    "event.product.reactive": "reactive power",
    "event.product.reserve": "reserve",
    "event.product.congestion": "local congestion",
    "event.product.emergency": "emergency",
    "event.state.draft": "draft",
    "event.state.published": "published",
    "event.state.declaring": "declaring",
    "event.state.cleared": "cleared",
    "event.state.executing": "executing",
    "event.state.evaluating": "evaluating",
    "event.state.settled": "settled",
    "event.state.cancelled": "cancelled",
    "event.form.title": "Publish a new event",
    "event.form.name": "Name (optional)",
    "event.form.product": "Product",
    "event.form.day": "Day (Beijing time)",
    "event.form.start": "From",
    "event.form.end": "To",
    "event.form.target": "Target (kW per slot)",
    "event.form.scope": "Scope grid node",
    "event.form.cap": "Price cap (yuan/kWh, empty = rule set)",
    "event.form.pricing": "Pricing",
    "event.form.deadline": "Declaration deadline (empty = 2 h before)",
    "event.form.create": "Create draft",
    "event.form.creating": "Creating…",
    "event.action.publish": "Publish",
    "event.action.open": "Open declarations",
    "event.action.clear": "Clear",
    "event.action.execute": "Start execution",
    "event.action.cancel": "Cancel event",
    "event.action.evaluate": "Evaluate",
    "event.action.reason": "Reason (needed to cancel)",
    "event.action.done": "{action}: the event is now {state}.",
    "event.detail.window": "{day} {from}–{to} · {n} slots",
    "event.detail.deadline": "Declarations until {at}",
    "event.detail.cap": "Price cap {cap} yuan/kWh · {pricing}",
    "event.stat.target": "Target energy",
    "event.stat.cleared": "Cleared energy",
    "event.stat.delivered": "Delivered energy",
    "event.stat.declarations": "Declarations",
    "event.decl.title": "Declarations",
    "event.decl.own": "Only your operator's declarations are shown.",
    "event.decl.unit": "Trading unit",
    "event.decl.operator": "Operator",
    "event.decl.version": "Version",
    "event.decl.qty": "Quantity ({unit})",
    "event.decl.price": "Price (yuan/kWh)",
    "event.decl.capability": "Capability ({unit})",
    "event.decl.by": "Submitted",
    "event.decl.none": "No declarations yet.",
    "event.declare.title": "Declare for a trading unit",
    "event.declare.unit": "Trading unit",
    "event.declare.kw": "Quantity (kW, one number or one per slot)",
    "event.declare.price": "Price (yuan/kWh)",
    "event.declare.submit": "Declare",
    "event.declare.done": "Declared {unit}, version {version}.",
    "event.declare.unit_option": "{unit} · {kw} kW ≥ {h} h",
    "event.declare.no_units": "Your operator has no trading unit.",
    "event.clear.title": "Clearing result",
    "event.clear.slot": "Slot",
    "event.clear.cleared": "Cleared ({unit})",
    "event.clear.price": "Clearing price (yuan/kWh)",
    "event.clear.shortfall": "Shortfall ({unit})",
    "event.clear.awards": "{awards} awards from {decls} declarations",
    "event.clear.mine": "Your awards",
    "event.exec.title": "Execution",
    "event.exec.live": "live, every {s} s",
    "event.exec.asof": "as of {at}",
    "event.exec.reference": "Delivered = power in the hour before the window − metered power (15-minute rollups of the dispatched devices); a slot appears once its quarter hour is rolled up.",
    "event.exec.target": "Target",
    "event.exec.cleared": "Cleared",
    "event.exec.instructed": "Instructed",
    "event.exec.acknowledged": "Acknowledged",
    "event.exec.delivered": "Delivered",
    "event.exec.measured": "Devices measured",
    "event.exec.operators": "Per operator",
    "event.exec.operator": "Operator",
    "event.exec.kwh": "{what} ({unit})",
    "event.exec.ratio": "Delivered / cleared",
    "event.exec.none": "Nothing cleared.",
    "event.eval.title": "Evaluation",
    "event.eval.baseline": "Baseline {baseline} · rule set {ruleset} · version {version}",
    "event.eval.operator": "Operator",
    "event.eval.cleared": "Cleared ({unit})",
    "event.eval.response": "Response ({unit})",
    "event.eval.ratio": "Performance ratio",
    "event.eval.credited": "Credited ({unit})",
    "event.eval.none": "Not evaluated yet.",
    "event.scope_label": "Data scope: {scope}",
  },
  zh: {
    "event.title": "需求响应事件",
    "event.new": "新建事件",
    "event.back": "← 全部事件",
    "event.filter.state": "状态",
    "event.filter.product": "品种",
    "event.filter.day": "日期",
    "event.filter.any": "全部",
    "event.filter.apply": "筛选",
    "event.col.name": "事件",
    "event.col.state": "状态",
    "event.col.product": "品种",
    "event.col.window": "时段",
    "event.col.target": "目标（{unit}）",
    "event.col.scope": "范围",
    "event.none": "没有符合条件的事件。",
    "event.count": "共 {n} 个事件",
    "event.product.peak_shaving": "削峰",
    "event.product.valley_filling": "填谷",
    "event.product.reactive": "无功",
    "event.product.reserve": "备用",
    "event.product.congestion": "局部阻塞",
    "event.product.emergency": "紧急",
    "event.state.draft": "草稿",
    "event.state.published": "已发布",
    "event.state.declaring": "申报中",
    "event.state.cleared": "已出清",
    "event.state.executing": "执行中",
    "event.state.evaluating": "评估中",
    "event.state.settled": "已结算",
    "event.state.cancelled": "已取消",
    "event.form.title": "发布新事件",
    "event.form.name": "名称（可选）",
    "event.form.product": "品种",
    "event.form.day": "日期（北京时间）",
    "event.form.start": "开始",
    "event.form.end": "结束",
    "event.form.target": "目标（每时段千瓦）",
    "event.form.scope": "范围电网节点",
    "event.form.cap": "价格上限（元/千瓦时，留空按规则）",
    "event.form.pricing": "定价方式",
    "event.form.deadline": "申报截止（留空为开始前 2 小时）",
    "event.form.create": "创建草稿",
    "event.form.creating": "创建中…",
    "event.action.publish": "发布",
    "event.action.open": "开放申报",
    "event.action.clear": "出清",
    "event.action.execute": "开始执行",
    "event.action.cancel": "取消事件",
    "event.action.evaluate": "评估",
    "event.action.reason": "原因（取消时必填）",
    "event.action.done": "{action}：事件现为{state}。",
    "event.detail.window": "{day} {from}–{to} · {n} 个时段",
    "event.detail.deadline": "申报截止 {at}",
    "event.detail.cap": "价格上限 {cap} 元/千瓦时 · {pricing}",
    "event.stat.target": "目标电量",
    "event.stat.cleared": "出清电量",
    "event.stat.delivered": "实际响应电量",
    "event.stat.declarations": "申报数",
    "event.decl.title": "申报",
    "event.decl.own": "仅显示本运营商的申报。",
    "event.decl.unit": "交易单元",
    "event.decl.operator": "运营商",
    "event.decl.version": "版本",
    "event.decl.qty": "申报量（{unit}）",
    "event.decl.price": "价格（元/千瓦时）",
    "event.decl.capability": "能力（{unit}）",
    "event.decl.by": "提交",
    "event.decl.none": "暂无申报。",
    "event.declare.title": "交易单元申报",
    "event.declare.unit": "交易单元",
    "event.declare.kw": "申报量（千瓦，一个数或每时段一个）",
    "event.declare.price": "价格（元/千瓦时）",
    "event.declare.submit": "申报",
    "event.declare.done": "已申报 {unit}，版本 {version}。",
    "event.declare.unit_option": "{unit} · {kw} 千瓦 ≥ {h} 小时",
    "event.declare.no_units": "本运营商没有交易单元。",
    "event.clear.title": "出清结果",
    "event.clear.slot": "时段",
    "event.clear.cleared": "出清（{unit}）",
    "event.clear.price": "出清价格（元/千瓦时）",
    "event.clear.shortfall": "缺口（{unit}）",
    "event.clear.awards": "{decls} 份申报，{awards} 条中标",
    "event.clear.mine": "本运营商中标",
    "event.exec.title": "执行",
    "event.exec.live": "实时，每 {s} 秒刷新",
    "event.exec.asof": "截至 {at}",
    "event.exec.reference": "实际响应 = 事件前一小时功率 − 实测功率（已下发设备的 15 分钟汇总）；每个时段在其 15 分钟汇总完成后显示。",
    "event.exec.target": "目标",
    "event.exec.cleared": "出清",
    "event.exec.instructed": "已下发",
    "event.exec.acknowledged": "已确认",
    "event.exec.delivered": "实际响应",
    "event.exec.measured": "有量测设备",
    "event.exec.operators": "按运营商",
    "event.exec.operator": "运营商",
    "event.exec.kwh": "{what}（{unit}）",
    "event.exec.ratio": "响应 / 出清",
    "event.exec.none": "无出清量。",
    "event.eval.title": "效果评估",
    "event.eval.baseline": "基线 {baseline} · 规则 {ruleset} · 版本 {version}",
    "event.eval.operator": "运营商",
    "event.eval.cleared": "出清（{unit}）",
    "event.eval.response": "响应（{unit}）",
    "event.eval.ratio": "履约率",
    "event.eval.credited": "认定量（{unit}）",
    "event.eval.none": "尚未评估。",
    "event.scope_label": "数据范围：{scope}",
  },
});

let token = 0;
let mode = "list";
let list = null; // {items, filters}
let detail = null; // {ev, decls, units, execution, evaluation, message}
let timer = null;
let pendingCreated = null; // an event just created: its first read may come before the commit

function stopLive() {
  if (timer !== null) window.clearTimeout(timer);
  timer = null;
}

// ---------------------------------------------------------------- labels

function productLabel(p) {
  return t(`event.product.${p}`) === `event.product.${p}` ? p : t(`event.product.${p}`);
}

function stateLabel(s) {
  return t(`event.state.${s}`) === `event.state.${s}` ? s : t(`event.state.${s}`);
}

function slotLabel(slot) {
  const m = slot * 15;
  return `${String(Math.floor(m / 60)).padStart(2, "0")}:${String(m % 60).padStart(2, "0")}`;
}

function windowText(ev) {
  return `${ev.day} ${slotLabel(ev.start_slot)}–${slotLabel(ev.end_slot)}`;
}

function statePill(s) {
  return h("span", { class: `pill event-state event-state-${s}`, dataset: { state: s }, text: stateLabel(s) });
}

function beijingDay(offsetDays = 0) {
  return new Date(Date.now() + offsetDays * 86_400_000).toLocaleDateString("en-CA", { timeZone: "Asia/Shanghai" });
}

function sum(values) {
  return values.reduce((a, b) => a + (Number(b) || 0), 0);
}

// ---------------------------------------------------------------- list

async function loadList(params) {
  const my = ++token;
  const gen = auth.generation;
  stopLive();
  setState("loading");
  const filters = { state: params.state || "", product: params.product || "", day: params.day || "" };
  try {
    const data = await api(`/events${query({ state: filters.state, day: filters.day })}`);
    if (my !== token || gen !== auth.generation) return;
    const items = filters.product ? data.items.filter((e) => e.product === filters.product) : data.items;
    list = { items, filters };
    renderList();
    setState("ready");
  } catch (err) {
    if (my !== token || gen !== auth.generation) return;
    $("events-body").replaceChildren(pageMessage(err));
    setState("error");
  }
}

function selectField(id, labelKey, options, value) {
  return h("label", { class: "field" }, h("span", { text: t(labelKey) }),
    h("select", { id, name: id }, options.map(([v, text]) => h("option", { value: v, selected: v === value, text }))));
}

function renderList() {
  const f = list.filters;
  const form = h("form", { class: "filters", id: "event-filters", role: "search", onsubmit: (ev) => {
    ev.preventDefault();
    navigate("events", [], { state: $("event-f-state").value, product: $("event-f-product").value, day: $("event-f-day").value });
  } },
  selectField("event-f-state", "event.filter.state", [["", t("event.filter.any")], ...STATES.map((s) => [s, stateLabel(s)])], f.state),
  selectField("event-f-product", "event.filter.product", [["", t("event.filter.any")], ...PRODUCTS.map((p) => [p, productLabel(p)])], f.product),
  h("label", { class: "field" }, h("span", { text: t("event.filter.day") }), h("input", { id: "event-f-day", type: "date", value: f.day })),
  h("button", { type: "submit", class: "btn", id: "event-f-apply", text: t("event.filter.apply") }),
  h("span", { class: "spacer" }),
  can("publish_events") ? h("a", { class: "btn btn-primary", id: "event-new", href: "#/events/new", text: t("event.new") }) : null);
  const kw = { unit: t("unit.kw") };
  const columns = [
    { key: "name", label: "event.col.name", cls: "wrap", render: (e) => h("a", { href: `#/events/${enc(e.event_id)}`, text: e.name }) },
    { key: "state", label: "event.col.state", render: (e) => statePill(e.state) },
    { key: "product", label: "event.col.product", render: (e) => productLabel(e.product) },
    { key: "window", label: "event.col.window", render: (e) => windowText(e) },
    { key: "target", label: "event.col.target", vars: kw, num: true, render: (e) => fmt(Math.max(...e.targets_kw), 0) },
    { key: "scope", label: "event.col.scope", render: (e) => h("span", { class: "mono", text: e.scope_node_id }) },
  ];
  $("events-body").replaceChildren(form,
    h("article", { class: "panel table-wrap" },
      h("p", { class: "muted small", id: "event-count", dataset: { total: String(list.items.length) }, text: t("event.count", { n: list.items.length }) }),
      table(columns, list.items, { id: "events-list", empty: "event.none", rowProps: (e) => ({ dataset: { id: e.event_id, state: e.state, product: e.product } }) })));
}

// ---------------------------------------------------------------- new event (dispatcher)

function slotOptions(from, to, selected) {
  const out = [];
  for (let s = from; s <= to; s += 1) out.push(h("option", { value: String(s), selected: s === selected, text: slotLabel(s) }));
  return out;
}

function renderForm() {
  stopLive();
  const field = (labelKey, control, wide = false) => h("label", { class: `field${wide ? " field-wide" : ""}` }, h("span", { text: t(labelKey) }), control);
  const errors = h("div", { id: "event-form-errors", role: "alert" });
  const form = h("form", { class: "panel event-form", id: "event-form", novalidate: true, onsubmit: submitForm },
    tl("h2", "event.form.title"),
    h("div", { class: "filters" },
      field("event.form.product", h("select", { id: "ev-product" }, PRODUCTS.map((p) => h("option", { value: p, text: productLabel(p) })))),
      field("event.form.name", h("input", { id: "ev-name", type: "text" }), true),
      field("event.form.day", h("input", { id: "ev-day", type: "date", value: beijingDay(1) })),
      field("event.form.start", h("select", { id: "ev-start" }, slotOptions(0, 95, 72))),
      field("event.form.end", h("select", { id: "ev-end" }, slotOptions(1, 96, 76))),
      field("event.form.target", h("input", { id: "ev-target", type: "number", min: "0", step: "any", value: "1000" })),
      field("event.form.scope", h("input", { id: "ev-scope", type: "text", value: "GZ" })),
      field("event.form.pricing", h("select", { id: "ev-pricing" }, ["uniform", "pay_as_bid"].map((p) => h("option", { value: p, text: p })))),
      field("event.form.cap", h("input", { id: "ev-cap", type: "number", step: "any" })),
      field("event.form.deadline", h("input", { id: "ev-deadline", type: "datetime-local" }), true)),
    h("div", { class: "event-actions" }, h("button", { type: "submit", class: "btn btn-primary", id: "ev-create", text: t("event.form.create") })),
    errors);
  $("events-body").replaceChildren(h("a", { class: "back", href: "#/events", text: t("event.back") }), form);
  setState("ready");
}

async function submitForm(event) {
  event.preventDefault();
  const button = $("ev-create");
  const body = {
    product: $("ev-product").value,
    day: $("ev-day").value || null,
    start_slot: Number($("ev-start").value),
    end_slot: Number($("ev-end").value),
    scope_node_id: $("ev-scope").value.trim() || "GZ",
    pricing: $("ev-pricing").value,
  };
  const name = $("ev-name").value.trim();
  if (name) body.name = name;
  // the server names the field when a value is missing or wrong: send what was typed
  if ($("ev-target").value !== "") body.targets_kw = Number($("ev-target").value);
  if ($("ev-cap").value !== "") body.price_cap_yuan_per_kwh = Number($("ev-cap").value);
  // typed in Beijing time, sent in UTC (the SQLite store keeps a datetime's wall time and drops its offset)
  if ($("ev-deadline").value) {
    const at = new Date(`${$("ev-deadline").value}:00+08:00`);
    body.declare_deadline = Number.isNaN(at.getTime()) ? $("ev-deadline").value : at.toISOString();
  }
  button.disabled = true;
  button.textContent = t("event.form.creating");
  $("event-form-errors").replaceChildren();
  try {
    const ev = await api("/events", { method: "POST", json: body });
    pendingCreated = ev.event_id;
    navigate("events", [ev.event_id]);
  } catch (err) {
    $("event-form-errors").replaceChildren(pageMessage(err));
  } finally {
    button.disabled = false;
    button.textContent = t("event.form.create");
  }
}

// ---------------------------------------------------------------- one event

/** `until(ev, declarations)`: what a write just made true. The API commits a write as its answer
 *  goes out, so a read right after it may still see the state before: read again (a few times). */
async function loadDetail(id, { quiet = false, until = null } = {}) {
  const my = ++token;
  const gen = auth.generation;
  stopLive();
  if (!quiet) setState("loading");
  try {
    const opId = auth.session?.operator_id;
    const read = () => Promise.all([
      api(`/events/${enc(id)}`),
      api(`/events/${enc(id)}/declarations`),
      can("declare") && opId ? api(`/operators/${enc(opId)}/trading-units`).catch(() => ({ units: [] })) : Promise.resolve(null),
      loadCharts(),
    ]);
    // while waiting for a write, a 404 (the event just created) is the same "not yet"
    const attempt = () => read().catch((err) => (until && err.status === 404 ? null : Promise.reject(err)));
    let got = await attempt();
    for (let tries = 0; until && (!got || !until(got[0], got[1].items)) && tries < 10; tries += 1) {
      await new Promise((resolve) => { window.setTimeout(resolve, 200); });
      if (my !== token || gen !== auth.generation) return;
      got = await attempt();
    }
    const [ev, decls, units] = got || await read();
    const executes = ["cleared", "executing", "evaluating", "settled"].includes(ev.state);
    const [execution, evaluation] = await Promise.all([
      executes ? api(`/events/${enc(id)}/execution`) : Promise.resolve(null),
      ["evaluating", "settled"].includes(ev.state) ? api(`/evaluations/${enc(id)}`).catch((err) => (err.status === 404 ? null : Promise.reject(err))) : Promise.resolve(null),
    ]);
    if (my !== token || gen !== auth.generation) return;
    const message = detail?.ev?.event_id === id ? detail.message : null;
    detail = { ev, decls: decls.items, units: units?.units ?? null, execution, evaluation, message };
    renderDetail();
    setState("ready");
    if (ev.state === "executing") scheduleLive(my);
  } catch (err) {
    if (my !== token || gen !== auth.generation) return;
    detail = null;
    $("events-body").replaceChildren(h("a", { class: "back", href: "#/events", text: t("event.back") }), pageMessage(err));
    setState("error");
  }
}

/** While the event executes, re-read its execution view and redraw that panel only. */
function scheduleLive(my) {
  stopLive();
  timer = window.setTimeout(async () => {
    if (my !== token || !detail) return;
    const gen = auth.generation;
    try {
      const execution = await api(`/events/${enc(detail.ev.event_id)}/execution`);
      if (my !== token || gen !== auth.generation || !detail) return;
      detail.execution = execution;
      if (execution.state !== detail.ev.state) {
        loadDetail(detail.ev.event_id, { quiet: true });
        return;
      }
      renderExecution();
    } catch (err) {
      if (my !== token) return;
      $("event-exec-note")?.replaceChildren(pageMessage(err));
    }
    if (my === token) scheduleLive(my);
  }, LIVE_MS);
}

function renderDetail() {
  const { ev } = detail;
  const n = ev.end_slot - ev.start_slot;
  const cleared = ev.result?.cleared_kw || [];
  const delivered = detail.execution?.totals?.delivered_kwh;
  $("events-body").replaceChildren(...[
    h("a", { class: "back", href: "#/events", text: t("event.back") }),
    h("div", { class: "node-head", id: "event-detail", dataset: { id: ev.event_id, state: ev.state } },
      h("div", {},
        h("h2", { class: "node-title", text: ev.name }),
        h("div", { class: "muted" }, [productLabel(ev.product), t("event.detail.window", { day: ev.day, from: slotLabel(ev.start_slot), to: slotLabel(ev.end_slot), n }), ev.scope_node_id].join(" · ")),
        h("div", { class: "muted small" }, [t("event.detail.deadline", { at: fmtTime(ev.declare_deadline) }),
          t("event.detail.cap", { cap: fmt(ev.price_cap_yuan_per_kwh, 2), pricing: ev.pricing })].join(" · "))),
      h("div", { class: "detail-badges" }, statePill(ev.state), h("span", { class: "mono small muted", text: ev.event_id }))),
    actionsPanel(),
    h("div", { class: "stats" },
      stat("event-stat-target", "event.stat.target", sum(ev.targets_kw) * 0.25, fmt(sum(ev.targets_kw) * 0.25, 0), t("unit.kwh")),
      stat("event-stat-cleared", "event.stat.cleared", cleared.length ? sum(cleared) * 0.25 : "", cleared.length ? fmt(sum(cleared) * 0.25, 0) : "–", t("unit.kwh")),
      stat("event-stat-delivered", "event.stat.delivered", delivered ?? "", fmt(delivered, 0), t("unit.kwh")),
      stat("event-stat-decls", "event.stat.declarations", detail.decls.length, String(detail.decls.length))),
    declarationsPanel(),
    clearingPanel(),
    h("article", { class: "panel", id: "event-exec-panel" }),
    evaluationPanel(),
  ].filter(Boolean));
  renderExecution();
}

// ---- actions

function actionsPanel() {
  const { ev } = detail;
  const box = h("div", { class: "event-actions", id: "event-actions" });
  const msg = detail.message;
  if (can("publish_events")) {
    const actions = (ACTIONS[ev.state] || []).filter((a) => a !== "clear" || ev.state !== "published" || ev.product === "emergency");
    const reason = h("input", { id: "event-reason", type: "text" });
    for (const a of actions) {
      box.append(h("button", {
        type: "button", class: `btn ${a === "cancel" ? "btn-danger" : "btn-primary"}`, dataset: { action: a },
        text: t(`event.action.${a}`), onclick: (e) => act(a, e.currentTarget),
      }));
    }
    if (actions.includes("cancel")) box.append(h("label", { class: "field field-wide" }, h("span", { text: t("event.action.reason") }), reason));
  }
  const out = h("div", { id: "event-action-result" });
  if (msg) out.append(msg.error ? pageMessage(msg.error) : h("p", { class: "notice", text: msg.text }));
  return h("div", {}, box, out);
}

async function act(action, button) {
  const { ev } = detail;
  button.disabled = true;
  const my = token;
  try {
    let state;
    if (action === "evaluate") {
      const out = await api(`/evaluations/${enc(ev.event_id)}`, { method: "POST", json: {} });
      state = "evaluating";
      void out;
    } else {
      const reason = $("event-reason")?.value.trim() || null;
      state = (await api(`/events/${enc(ev.event_id)}/transitions`, { method: "POST", json: { action, reason } })).state;
    }
    if (my !== token) return;
    detail.message = { text: t("event.action.done", { action: t(`event.action.${action}`), state: stateLabel(state) }) };
    loadDetail(ev.event_id, { quiet: true, until: (e) => e.state === state });
  } catch (err) {
    if (my !== token) return;
    button.disabled = false;
    detail.message = { error: err };
    $("event-action-result").replaceChildren(pageMessage(err));
  }
}

// ---- declarations

function declarationsPanel() {
  const { ev, decls } = detail;
  const kw = { unit: t("unit.kw") };
  const range = (xs) => {
    const lo = Math.min(...xs);
    const hi = Math.max(...xs);
    return lo === hi ? fmt(lo, lo < 10 ? 2 : 0) : `${fmt(lo, 0)}–${fmt(hi, 0)}`;
  };
  const columns = [
    { key: "unit", label: "event.decl.unit", render: (d) => h("span", { class: "mono", text: d.unit_id }) },
    { key: "operator", label: "event.decl.operator", render: (d) => d.operator_id },
    { key: "version", label: "event.decl.version", num: true, render: (d) => String(d.version) },
    { key: "qty", label: "event.decl.qty", vars: kw, num: true, render: (d) => range(d.quantities_kw) },
    { key: "price", label: "event.decl.price", num: true, render: (d) => range(d.prices_yuan_per_kwh) },
    { key: "cap", label: "event.decl.capability", vars: kw, num: true, render: (d) => fmt(d.capability_kw, 0) },
    { key: "by", label: "event.decl.by", render: (d) => `${d.submitted_by} · ${fmtTime(d.submitted_at)}` },
  ];
  const panel = h("article", { class: "panel table-wrap", id: "event-decl-panel" }, tl("h2", "event.decl.title"));
  if (!CITY_ROLES.has(role())) panel.append(h("p", { class: "muted small", text: t("event.decl.own") }));
  panel.append(table(columns, decls, { id: "event-declarations", empty: "event.decl.none", rowProps: (d) => ({ dataset: { id: d.unit_id, operator: d.operator_id } }) }));
  if (can("declare") && ev.state === "declaring") panel.append(declareForm());
  return panel;
}

function declareForm() {
  const { ev } = detail;
  const op = auth.session?.operator_id;
  const units = detail.units || [];
  const result = h("div", { id: "event-declare-result", role: "status" });
  if (!units.length) return h("p", { class: "muted", id: "event-declare-form", text: t("event.declare.no_units") });
  const best = [...units].sort((a, b) => b.declared_kw_min_duration - a.declared_kw_min_duration)[0];
  const select = h("select", { id: "decl-unit" }, units.map((u) => h("option", {
    value: `${op}@${u.clearing_node}`, selected: u === best,
    text: t("event.declare.unit_option", { unit: `${op}@${u.clearing_node}`, kw: fmt(u.declared_kw_min_duration, 0), h: 1 }),
  })));
  const form = h("form", { class: "filters event-declare", id: "event-declare-form", onsubmit: async (e) => {
    e.preventDefault();
    const raw = $("decl-kw").value.split(/[,\s]+/).filter(Boolean).map(Number);
    const n = ev.end_slot - ev.start_slot;
    const quantities = raw.length === 1 ? Array(n).fill(raw[0]) : raw;
    const price = $("decl-price").value === "" ? null : Number($("decl-price").value);
    const button = $("decl-submit");
    button.disabled = true;
    result.replaceChildren();
    try {
      const row = await api(`/events/${enc(ev.event_id)}/declarations`, {
        method: "POST", json: { unit_id: select.value, quantities_kw: quantities, prices_yuan_per_kwh: price },
      });
      detail.message = { text: t("event.declare.done", { unit: row.unit_id, version: row.version }) };
      loadDetail(ev.event_id, { quiet: true, until: (e, ds) => ds.some((d) => d.unit_id === row.unit_id && d.version === row.version) });
    } catch (err) {
      button.disabled = false;
      result.replaceChildren(pageMessage(err));
    }
  } },
  tl("h3", "event.declare.title", { class: "event-declare-title" }),
  h("label", { class: "field field-wide" }, h("span", { text: t("event.declare.unit") }), select),
  h("label", { class: "field field-wide" }, h("span", { text: t("event.declare.kw") }), h("input", { id: "decl-kw", type: "text", value: String(Math.floor(best.declared_kw_min_duration)) })),
  h("label", { class: "field" }, h("span", { text: t("event.declare.price") }), h("input", { id: "decl-price", type: "number", step: "any", value: String(Math.min(1, ev.price_cap_yuan_per_kwh)) })),
  h("button", { type: "submit", class: "btn btn-primary", id: "decl-submit", text: t("event.declare.submit") }));
  return h("div", {}, form, result);
}

// ---- clearing

function clearingPanel() {
  const { ev } = detail;
  const res = ev.result;
  if (!res || !res.cleared_kw) return null;
  const kw = { unit: t("unit.kw") };
  const rows = res.cleared_kw.map((c, j) => ({
    slot: ev.start_slot + j, cleared: c, price: res.clearing_price?.[j] ?? null, shortfall: res.shortfall_kw?.[j] ?? null,
  }));
  const columns = [
    { key: "slot", label: "event.clear.slot", render: (r) => `${slotLabel(r.slot)}–${slotLabel(r.slot + 1)}` },
    { key: "cleared", label: "event.clear.cleared", vars: kw, num: true, render: (r) => fmt(r.cleared, 1) },
    { key: "price", label: "event.clear.price", num: true, render: (r) => fmt(r.price, 3) },
    { key: "shortfall", label: "event.clear.shortfall", vars: kw, num: true, render: (r) => fmt(r.shortfall, 1) },
  ];
  const mine = ev.awards || [];
  return h("article", { class: "panel table-wrap", id: "event-clearing", dataset: { total: String(sum(res.cleared_kw)) } },
    tl("h2", "event.clear.title"),
    h("p", { class: "muted small", text: t("event.clear.awards", { awards: res.awards ?? "–", decls: res.declarations ?? "–" }) }),
    table(columns, rows, { id: "event-clearing-table", rowProps: (r) => ({ dataset: { slot: String(r.slot), cleared: String(r.cleared) } }) }),
    !CITY_ROLES.has(role()) && mine.length ? h("p", { class: "small", id: "event-my-awards", dataset: { total: String(sum(mine.map((a) => a.cleared_kw))) },
      text: `${t("event.clear.mine")}: ${[...new Set(mine.map((a) => a.unit_id))].join(", ")} · ${fmt(sum(mine.map((a) => a.cleared_kw)) * 0.25, 0)} ${t("unit.kwh")}` }) : null);
}

// ---- execution

function renderExecution() {
  const panel = $("event-exec-panel");
  if (!panel) return;
  const x = detail.execution;
  if (!x) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  const live = detail.ev.state === "executing";
  const unit = x.quantity_unit === "kvar" ? "kvar" : t("unit.kw");
  panel.dataset.live = live ? "on" : "off";
  panel.dataset.asOf = x.as_of;
  panel.dataset.scope = x.scope;
  panel.dataset.delivered = x.totals.delivered_kwh ?? "";
  const delivered = $("event-stat-delivered");
  if (delivered) {
    const v = delivered.querySelector(".stat-value");
    v.dataset.value = x.totals.delivered_kwh ?? "";
    v.textContent = fmt(x.totals.delivered_kwh, 0);
  }
  const cols = [
    { key: "slot", label: "event.clear.slot", render: (r) => `${slotLabel(r.slot)}–${slotLabel(r.slot + 1)}` },
    { key: "target", label: "event.exec.kwh", vars: { what: t("event.exec.target"), unit }, num: true, render: (r) => fmt(r.target_kw, 1) },
    { key: "cleared", label: "event.exec.kwh", vars: { what: t("event.exec.cleared"), unit }, num: true, render: (r) => fmt(r.cleared_kw, 1) },
    { key: "instructed", label: "event.exec.kwh", vars: { what: t("event.exec.instructed"), unit }, num: true, render: (r) => fmt(r.instructed_kw, 1) },
    { key: "acknowledged", label: "event.exec.kwh", vars: { what: t("event.exec.acknowledged"), unit }, num: true, render: (r) => fmt(r.acknowledged_kw, 1) },
    { key: "delivered", label: "event.exec.kwh", vars: { what: t("event.exec.delivered"), unit }, num: true, render: (r) => fmt(r.delivered_kw, 1) },
    { key: "measured", label: "event.exec.measured", num: true, render: (r) => `${r.measured}/${r.devices}` },
  ];
  const opCols = [
    { key: "operator", label: "event.exec.operator", render: (o) => o.operator_id },
    { key: "cleared", label: "event.exec.kwh", vars: { what: t("event.exec.cleared"), unit: t("unit.kwh") }, num: true, render: (o) => fmt(o.totals.cleared_kwh, 1) },
    { key: "acknowledged", label: "event.exec.kwh", vars: { what: t("event.exec.acknowledged"), unit: t("unit.kwh") }, num: true, render: (o) => fmt(o.totals.acknowledged_kwh, 1) },
    { key: "delivered", label: "event.exec.kwh", vars: { what: t("event.exec.delivered"), unit: t("unit.kwh") }, num: true, render: (o) => fmt(o.totals.delivered_kwh, 1) },
    { key: "ratio", label: "event.exec.ratio", num: true, render: (o) => (o.totals.delivered_kwh === null || !o.totals.cleared_kwh ? "–" : fmtPct(o.totals.delivered_kwh / o.totals.cleared_kwh)) },
  ];
  panel.replaceChildren(
    h("div", { class: "event-exec-head" }, tl("h2", "event.exec.title"),
      live ? h("span", { class: "live-badge", id: "event-live", dataset: { state: "live" }, text: t("event.exec.live", { s: LIVE_MS / 1000 }) }) : null,
      h("span", { class: "muted small", text: `${t("event.scope_label", { scope: x.scope })} · ${t("event.exec.asof", { at: fmtTime(x.as_of) })}` })),
    h("p", { class: "muted small", id: "event-exec-note", text: t("event.exec.reference") }),
    h("div", { id: "chart-execution", class: "chart event-chart" }),
    h("div", { class: "table-wrap" }, table(cols, x.slots, { id: "event-execution", rowProps: (r) => ({ dataset: { slot: String(r.slot), delivered: r.delivered_kw ?? "" } }) })),
    tl("h3", "event.exec.operators"),
    h("div", { class: "table-wrap" }, table(opCols, x.operators, { id: "event-exec-operators", empty: "event.exec.none", rowProps: (o) => ({ dataset: { id: o.operator_id, delivered: o.totals.delivered_kwh ?? "" } }) })));
  drawExecution(x, unit);
}

function drawExecution(x, unit) {
  const labels = x.slots.map((s) => slotLabel(s.slot));
  const series = [
    { key: "target", name: t("event.exec.target"), type: "line", step: "middle", data: x.slots.map((s) => s.target_kw), lineStyle: { type: "dashed", width: 2 }, itemStyle: { color: COLORS.count }, symbol: "none" },
    { key: "cleared", name: t("event.exec.cleared"), type: "bar", barMaxWidth: 26, data: x.slots.map((s) => s.cleared_kw), itemStyle: { color: COLORS.adjustable } },
    { key: "delivered", name: t("event.exec.delivered"), type: "line", data: x.slots.map((s) => s.delivered_kw), connectNulls: false, itemStyle: { color: COLORS.connected }, lineStyle: { width: 3 }, symbolSize: 8 },
  ];
  chart("chart-execution").setOption({
    ...baseOption(false, ""),
    grid: { left: 8, right: 16, top: 40, bottom: 24, containLabel: true },
    tooltip: {
      ...baseOption(false).tooltip, trigger: "axis",
      formatter: (params) => tooltipLines(labels[params[0].dataIndex], params.map((p) => [p.marker, p.seriesName, `${fmt(p.value, 1)} ${unit}`])),
    },
    xAxis: { type: "category", data: labels, ...axisStyle(), splitLine: { show: false } },
    yAxis: { type: "value", name: unit, ...axisStyle() },
    series: series.map(({ key, ...s }) => ({ ...s, id: key })),
  }, { notMerge: true });
}

// ---- evaluation

function evaluationPanel() {
  const { ev, evaluation } = detail;
  if (!["evaluating", "settled"].includes(ev.state)) return null;
  const panel = h("article", { class: "panel table-wrap", id: "event-evaluation" }, tl("h2", "event.eval.title"));
  if (!evaluation) {
    panel.append(h("p", { class: "muted", text: t("event.eval.none") }));
    return panel;
  }
  const unit = evaluation.quantity_unit || t("unit.kwh");
  const rows = evaluation.operators.map((o) => {
    const cleared = sum(o.slots.map((s) => s.cleared_kw)) * 0.25;
    const response = sum(o.slots.map((s) => s.response_kw)) * 0.25;
    return { operator_id: o.operator_id, cleared, response, ratio: cleared ? response / cleared : null, credited: o.credited };
  });
  const cols = [
    { key: "operator", label: "event.eval.operator", render: (r) => r.operator_id },
    { key: "cleared", label: "event.eval.cleared", vars: { unit }, num: true, render: (r) => fmt(r.cleared, 1) },
    { key: "response", label: "event.eval.response", vars: { unit }, num: true, render: (r) => fmt(r.response, 1) },
    { key: "ratio", label: "event.eval.ratio", num: true, render: (r) => fmtPct(r.ratio) },
    { key: "credited", label: "event.eval.credited", vars: { unit }, num: true, render: (r) => fmt(r.credited, 1) },
  ];
  panel.append(
    h("p", { class: "muted small", text: t("event.eval.baseline", { baseline: evaluation.baseline_id, ruleset: evaluation.ruleset, version: evaluation.version }) }),
    table(cols, rows, { id: "event-eval-operators", rowProps: (r) => ({ dataset: { id: r.operator_id, ratio: r.ratio ?? "", credited: String(r.credited) } }) }));
  return panel;
}

// ---------------------------------------------------------------- page

function enter(route) {
  applyI18n(view()); // the heading's label arrived with this module, after the page was first labelled
  const id = route.parts[0];
  if (id === "new") {
    mode = "form";
    token += 1;
    if (!can("publish_events")) {
      navigate("events", [], {}, { replace: true });
      return;
    }
    renderForm();
  } else if (id) {
    mode = "detail";
    if (detail?.ev?.event_id !== id) detail = null;
    const created = pendingCreated === id;
    pendingCreated = null;
    loadDetail(id, created ? { until: (e) => Boolean(e) } : {});
  } else {
    mode = "list";
    loadList(route.params);
  }
}

export default {
  id: "events",
  title: "event.title",
  enter,
  leave() {
    token += 1;
    stopLive();
  },
  reset() {
    token += 1;
    stopLive();
    list = null;
    detail = null;
    disposeCharts("chart-execution");
    $("events-body").replaceChildren();
    setState("");
  },
  relabel() {
    if (view().dataset.state !== "ready") return;
    if (mode === "list" && list) renderList();
    if (mode === "form") renderForm();
    if (mode === "detail" && detail) {
      renderDetail();
      if (detail.ev.state === "executing") scheduleLive(token);
    }
  },
  refresh() {
    if (mode === "detail" && detail) loadDetail(detail.ev.event_id);
    else if (mode === "list") loadList(list?.filters || {});
  },
};
