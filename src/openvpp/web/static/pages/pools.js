// Resource pools per scenario (peak shaving, valley filling, emergency, reactive, reserve, local
// congestion): the list per scenario with each pool's totals, one pool's rules, totals and members.
// The list shows at once from the definitions; the totals (an evaluation over the registry) follow.
//
// Routes: #/pools?scenario=<scenario>, #/pools/<pool_id>?page=<n>

import { COLORS, axisStyle, baseOption, chart, loadCharts, tooltipLines } from "../charts.js";
import {
  $, OPERATOR_ROLES, api, auth, can, fmt, fmtInt, h, nextSort, pageMessage, query, role, stat, table, tl,
} from "../core.js";
import { openDrawer } from "../drawer.js";
import { getLang, t } from "../i18n.js";
import { navigate } from "../router.js";

const enc = encodeURIComponent;
const MEMBERS = 50;

let token = 0;
let presets = null; // Promise of preset rows
let list = null; // {pools, scenario, totals: Map|null, totalsError}
let detail = null; // {pool, page}
let mode = "list";
let sortState = { key: "level", dir: 1 };

function view() {
  return $("pools-view");
}

function setState(s) {
  view().dataset.state = s;
  // the hash this view has finished rendering, so a test (or a user script) can wait for a drill-down
  view().dataset.route = s === "ready" ? window.location.hash : "";
}

function scenarioLabel(code, rows) {
  const p = rows?.find((x) => x.scenario === code);
  if (p) return (getLang() === "zh" && p.name_zh) || p.name || code;
  const key = `scenario.${code}`;
  return t(key) === key ? code : t(key);
}

function getPresets() {
  presets = presets || api("/pools/presets").then((d) => d.items);
  presets.catch(() => { presets = null; });
  return presets;
}

// ---------------------------------------------------------------- list

async function loadList(scenarioParam) {
  const my = ++token;
  const gen = auth.generation;
  setState("loading");
  view().dataset.totals = "";
  try {
    const [defs, pre] = await Promise.all([api("/pools"), getPresets(), loadCharts()]);
    if (my !== token || gen !== auth.generation) return;
    const scenarios = [...new Set([...pre.map((p) => p.scenario), ...defs.items.map((p) => p.scenario)])];
    const counts = {};
    for (const p of defs.items) counts[p.scenario] = (counts[p.scenario] || 0) + 1;
    const scenario = scenarioParam && scenarios.includes(scenarioParam) ? scenarioParam
      : scenarios.find((s) => counts[s]) || scenarios[0] || null;
    list = { pools: defs.items, presets: pre, scenarios, counts, scenario, totals: null, totalsError: null };
    renderList();
    setState("ready");
    if (scenario && counts[scenario]) loadTotals(my, scenario);
    else view().dataset.totals = "ready";
  } catch (err) {
    if (my !== token || gen !== auth.generation) return;
    $("pools-body").replaceChildren(pageMessage(err));
    setState("error");
  }
}

async function loadTotals(my, scenario) {
  const gen = auth.generation;
  view().dataset.totals = "loading";
  try {
    const data = await api(`/pools${query({ scenario, evaluate: "true" })}`);
    if (my !== token || gen !== auth.generation) return;
    list.totals = new Map(data.items.map((p) => [p.pool_id, p.totals]));
    renderList();
    view().dataset.totals = "ready";
  } catch (err) {
    if (my !== token || gen !== auth.generation) return;
    list.totalsError = err;
    renderList();
    view().dataset.totals = "error";
  }
}

function inScenario() {
  return list.pools.filter((p) => p.scenario === list.scenario);
}

const LEVEL_ORDER = ["city", "district", "substation", "feeder", "transformer_area"];

function listColumns() {
  const tot = (p) => list.totals?.get(p.pool_id) || null;
  const pending = () => (list.totals || list.totalsError ? "–" : h("span", { class: "muted", text: "…" }));
  const num = (p, key, digits = 1) => (tot(p) ? fmt(tot(p)[key], digits) : pending());
  const kw = { unit: t("unit.kw") };
  const kwh = { unit: t("unit.kwh") };
  return [
    { key: "name", label: "pool.col.name", cls: "wrap", sort: (p) => p.name, render: (p) => h("a", { href: `#/pools/${enc(p.pool_id)}`, text: p.name }) },
    {
      key: "level", label: "pool.col.node", sort: (p) => `${LEVEL_ORDER.indexOf(p.level)}-${p.node_id}`,
      render: (p) => h("span", {}, h("a", { href: p.level === "city" ? "#/grid" : `#/grid/${enc(p.node_id)}`, class: "mono", text: p.node_id }),
        h("span", { class: "muted small", text: ` ${t(`level.${p.level}`)}` })),
    },
    { key: "mandatory", label: "pool.col.mandatory", sort: (p) => (p.mandatory ? 1 : 0), render: (p) => (p.mandatory ? t("common.yes") : t("common.no")) },
    { key: "count", label: "pool.col.count", num: true, sort: (p) => tot(p)?.count ?? null, render: (p) => (tot(p) ? fmtInt(tot(p).count) : pending()) },
    { key: "down", label: "pool.col.down", vars: kw, num: true, sort: (p) => tot(p)?.down_kw ?? null, render: (p) => num(p, "down_kw") },
    { key: "up", label: "pool.col.up", vars: kw, num: true, sort: (p) => tot(p)?.up_kw ?? null, render: (p) => num(p, "up_kw") },
    { key: "edown", label: "pool.col.energy_down", vars: kwh, num: true, sort: (p) => tot(p)?.energy_down_kwh ?? null, render: (p) => num(p, "energy_down_kwh", 0) },
    { key: "eup", label: "pool.col.energy_up", vars: kwh, num: true, sort: (p) => tot(p)?.energy_up_kwh ?? null, render: (p) => num(p, "energy_up_kwh", 0) },
  ];
}

function renderList() {
  const body = $("pools-body");
  const tabs = h("div", { class: "tabs", role: "tablist", id: "pool-tabs" }, list.scenarios.map((s) => h("a", {
    href: `#/pools?scenario=${enc(s)}`, role: "tab", class: `tab${s === list.scenario ? " active" : ""}`,
    "aria-selected": String(s === list.scenario), dataset: { scenario: s },
  }, scenarioLabel(s, list.presets), h("span", { class: "tab-count", text: fmtInt(list.counts[s] || 0) }))));
  const parts = [tabs];
  const preset = list.presets.find((p) => p.scenario === list.scenario);
  if (preset) {
    parts.push(h("p", { class: "muted scenario-note" }, preset.description || "",
      preset.mandatory ? h("span", { class: "pill pill-warn", text: t("pool.mandatory_note") }) : null));
  }
  if (!list.pools.length) {
    const own = OPERATOR_ROLES.has(role()) ? t("pool.none_operator") : t("pool.none");
    const empty = h("article", { class: "panel", id: "pools-empty" }, h("p", { text: own }));
    if (can("create_pools")) {
      empty.append(h("button", { type: "button", class: "btn btn-primary", id: "pools-defaults", text: t("pool.create_defaults"), onclick: createDefaults }));
    }
    parts.push(empty);
    body.replaceChildren(...parts);
    return;
  }
  const rows = inScenario();
  const city = rows.find((p) => p.level === "city");
  const cityTot = city ? list.totals?.get(city.pool_id) : null;
  parts.push(h("div", { class: "stats" },
    stat("pool-stat-pools", "pool.stat.pools", rows.length, fmtInt(rows.length)),
    stat("pool-stat-count", "pool.stat.city_count", cityTot?.count ?? "", cityTot ? fmtInt(cityTot.count) : "–"),
    stat("pool-stat-down", "pool.stat.city_down", cityTot?.down_kw ?? "", cityTot ? fmt(cityTot.down_kw / 1000, 2) : "–", t("unit.mw")),
    stat("pool-stat-up", "pool.stat.city_up", cityTot?.up_kw ?? "", cityTot ? fmt(cityTot.up_kw / 1000, 2) : "–", t("unit.mw"))));
  if (list.totalsError) parts.push(h("p", { class: "notice", text: t("pool.totals_failed", { msg: list.totalsError.message }) }));
  parts.push(h("div", { class: "split" },
    h("article", { class: "panel", id: "pools-list-panel" },
      h("h2", { text: t("pool.list", { scenario: scenarioLabel(list.scenario, list.presets), n: fmtInt(rows.length) }) }),
      table(listColumns(), rows, {
        id: "pools-list", empty: "pool.none_in_scenario", sort: { ...sortState, onSort },
        rowProps: (p) => ({ dataset: { id: p.pool_id, level: p.level } }),
      })),
    h("article", { class: "panel" }, h("h2", { text: t("pool.chart.title") }), h("div", { id: "chart-pools", class: "chart" }))));
  body.replaceChildren(...parts);
  drawChart(rows);
}

function onSort(key) {
  sortState = nextSort(sortState, key, key === "name" || key === "level" ? 1 : -1);
  renderList();
}

function drawChart(rows) {
  const shown = rows.filter((p) => p.level !== "city" && list.totals?.get(p.pool_id))
    .map((p) => ({ p, tot: list.totals.get(p.pool_id) }))
    .sort((a, b) => (a.tot.down_kw + a.tot.up_kw) - (b.tot.down_kw + b.tot.up_kw));
  const names = shown.map((x) => x.p.node_id);
  chart("chart-pools").setOption({
    ...baseOption(shown.length === 0, list.totals ? t("chart.empty") : t("common.loading")),
    grid: { left: 8, right: 24, top: 40, bottom: 24, containLabel: true },
    tooltip: {
      ...baseOption(false).tooltip, trigger: "axis", axisPointer: { type: "shadow" },
      formatter: (params) => {
        const x = shown[params[0].dataIndex];
        return tooltipLines(x.p.name, [...params.map((p) => [p.marker, p.seriesName, `${fmt(p.value, 2)} ${t("unit.mw")}`]),
          ["", t("pool.col.count"), fmtInt(x.tot.count)]]);
      },
    },
    yAxis: { type: "category", data: names, ...axisStyle(), axisLabel: { color: COLORS.text }, splitLine: { show: false } },
    xAxis: { type: "value", ...axisStyle() },
    series: [
      { name: t("pool.col.down", { unit: t("unit.mw") }), type: "bar", stack: "f", barMaxWidth: 14, data: shown.map((x) => x.tot.down_kw / 1000), itemStyle: { color: COLORS.adjustable } },
      { name: t("pool.col.up", { unit: t("unit.mw") }), type: "bar", stack: "f", barMaxWidth: 14, data: shown.map((x) => x.tot.up_kw / 1000), itemStyle: { color: COLORS.up } },
    ],
  }, { notMerge: true });
}

async function createDefaults() {
  const button = $("pools-defaults");
  button.disabled = true;
  try {
    await api("/pools/defaults", { method: "POST" });
    loadList(null);
  } catch (err) {
    button.disabled = false;
    $("pools-empty").append(pageMessage(err));
  }
}

// ---------------------------------------------------------------- detail

/** A pool's definition shows at once (from the list, which is not evaluated); its totals and a page
 *  of members follow when the server has evaluated it (seconds on a large city). */
async function loadDetail(id, page) {
  const my = ++token;
  const gen = auth.generation;
  setState("loading");
  view().dataset.totals = "loading";
  const evaluated = api(`/pools/${enc(id)}${query({ members_limit: MEMBERS, members_offset: (page - 1) * MEMBERS })}`);
  evaluated.catch(() => {});
  try {
    const listed = list?.pools.find((p) => p.pool_id === id);
    const known = detail?.pool?.pool_id === id ? Promise.resolve(detail.pool)
      : listed ? Promise.resolve(listed) : api("/pools").then((d) => d.items.find((p) => p.pool_id === id) || null).catch(() => null);
    const [definition, pre] = await Promise.all([known, getPresets().catch(() => [])]);
    if (my !== token || gen !== auth.generation) return;
    if (definition) {
      detail = { pool: definition, page, pages: detail?.pages ?? null, presets: pre, pending: true };
      renderDetail();
      setState("ready");
    }
    const pool = await evaluated;
    if (my !== token || gen !== auth.generation) return;
    const total = pool.totals?.members?.total ?? 0;
    const pages = Math.max(1, Math.ceil(total / MEMBERS));
    if (page > pages) {
      navigate("pools", [id], { page: String(pages) }, { replace: true });
      return;
    }
    detail = { pool, page, pages, presets: pre, pending: false };
    renderDetail();
    setState("ready");
    view().dataset.totals = "ready";
  } catch (err) {
    if (my !== token || gen !== auth.generation) return;
    detail = null;
    $("pools-body").replaceChildren(h("a", { class: "back", href: "#/pools", text: t("pool.back") }), pageMessage(err));
    setState("error");
  }
}

function ruleText(key, value) {
  if (value === null || value === undefined || (Array.isArray(value) && !value.length)) return null;
  if (Array.isArray(value)) return value.join(", ");
  if (typeof value === "boolean") return value ? t("common.yes") : t("common.no");
  return String(value);
}

function renderDetail() {
  const { pool, page, pending } = detail;
  const pages = detail.pages ?? 1;
  const tot = (!pending && pool.totals) || {};
  const members = tot.members || { items: [], total: null };
  const rules = Object.entries(pool.rules || {}).map(([k, v]) => [k, ruleText(k, v)]).filter(([, v]) => v !== null);
  const pager = h("div", { class: "pager", id: "pool-pager" },
    h("button", { type: "button", class: "btn btn-ghost", id: "pool-prev", disabled: pending || page <= 1, text: t("pager.prev"), onclick: () => navigate("pools", [pool.pool_id], { page: String(page - 1) }) }),
    h("span", { id: "pool-pager-info", dataset: { page: pending ? "" : String(page), pages: String(pages) }, text: pending ? t("pool.evaluating") : t("pool.members_page", { page: fmtInt(page), pages: fmtInt(pages), total: fmtInt(members.total) }) }),
    h("button", { type: "button", class: "btn btn-ghost", id: "pool-next", disabled: pending || page >= pages, text: t("pager.next"), onclick: () => navigate("pools", [pool.pool_id], { page: String(page + 1) }) }));
  const memberList = h("ol", { class: "members", id: "pool-members", start: String((page - 1) * MEMBERS + 1) },
    members.items.map((id) => h("li", {}, h("a", {
      href: "#", class: "mono", dataset: { id }, text: id, onclick: (ev) => { ev.preventDefault(); openDrawer(id); },
    }))));
  $("pools-body").replaceChildren(
    h("a", { class: "back", href: `#/pools?scenario=${enc(pool.scenario)}`, text: t("pool.back") }),
    h("div", { class: "node-head", dataset: { id: pool.pool_id } },
      h("div", {}, h("h2", { class: "node-title", text: pool.name }),
        h("div", { class: "muted", text: [scenarioLabel(pool.scenario, detail.presets), pool.node_id, t(`level.${pool.level}`)].join(" · ") })),
      pool.mandatory ? h("span", { class: "pill pill-warn", text: t("pool.mandatory_note") }) : null),
    h("div", { class: "stats" },
      stat("pool-count", "pool.col.count", tot.count ?? "", fmtInt(tot.count)),
      stat("pool-down", "pool.stat.down", tot.down_kw ?? "", fmt(tot.down_kw, 1), t("unit.kw")),
      stat("pool-up", "pool.stat.up", tot.up_kw ?? "", fmt(tot.up_kw, 1), t("unit.kw")),
      stat("pool-edown", "pool.stat.energy_down", tot.energy_down_kwh ?? "", fmt(tot.energy_down_kwh, 0), t("unit.kwh")),
      stat("pool-eup", "pool.stat.energy_up", tot.energy_up_kwh ?? "", fmt(tot.energy_up_kwh, 0), t("unit.kwh"))),
    h("div", { class: "split split-even" },
      h("article", { class: "panel", id: "pool-rules" }, tl("h2", "pool.rules"),
        rules.length ? h("dl", { class: "pairs" }, rules.map(([k, v]) => [h("dt", { text: t(`rule.${k}`) === `rule.${k}` ? k : t(`rule.${k}`) }), h("dd", { text: v })]))
          : h("p", { class: "muted", text: t("pool.rules_none") }),
        h("p", { class: "muted small", text: t("pool.created", { by: pool.created_by || "–" }) })),
      h("article", { class: "panel", id: "pool-members-panel" },
        h("h2", { text: t("pool.members", { n: pending ? "…" : fmtInt(members.total) }) }), pager, memberList)),
  );
}

// ---------------------------------------------------------------- page

function enter(route) {
  const id = route.parts[0];
  if (id) {
    mode = "detail";
    loadDetail(id, Math.max(1, Number.parseInt(route.params.page, 10) || 1));
  } else {
    mode = "list";
    if (list && route.params.scenario && list.scenarios.includes(route.params.scenario) && list.scenario !== route.params.scenario) {
      list.scenario = route.params.scenario;
      list.totals = null;
      list.totalsError = null;
      renderList();
      const my = ++token;
      setState("ready");
      if (list.counts[list.scenario]) loadTotals(my, list.scenario);
      else view().dataset.totals = "ready";
      return;
    }
    loadList(route.params.scenario || null);
  }
}

export default {
  id: "pools",
  title: "pool.title",
  enter,
  leave() {
    token += 1;
  },
  reset() {
    token += 1;
    view().dataset.totals = "";
    list = null;
    detail = null;
    presets = null;
    $("pools-body").replaceChildren();
    setState("");
    view().dataset.totals = "";
  },
  relabel() {
    if (view().dataset.state !== "ready") return;
    if (mode === "list" && list) renderList();
    if (mode === "detail" && detail) renderDetail();
  },
  refresh() {
    if (mode === "detail" && detail) loadDetail(detail.pool.pool_id, detail.page);
    else loadList(list?.scenario || null);
  },
};
