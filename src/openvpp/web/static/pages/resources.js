// The resource database: server-side filters and paging over GET /resources (never the whole
// registry in the page), CSV/Parquet export with the same filters, a detail drawer with history.
//
// Route: #/resources?type=&district=&substation=&feeder=&ta=&operator=&state=&grade=&q=&page=&size=&open=

import {
  $, ApiError, api, auth, debounce, download, fmt, fmtInt, h, localName, pageMessage, query, renderScope, table,
} from "../core.js";
import { closeDrawer, gradeBadge, openDrawer, stateBadge } from "../drawer.js";
import { getLang, t, typeLabel } from "../i18n.js";
import { navigate } from "../router.js";
import { childrenOf, gridNodeName, rootTree } from "./grid.js";

/** hash parameter → API query parameter of GET /resources and /resources/export */
export const FILTERS = {
  type: "resource_type", district: "district_id", substation: "substation_id", feeder: "feeder_id",
  ta: "ta_id", operator: "operator_id", state: "state", grade: "verified_grade", q: "q",
};
/** what /resources/export takes (its filters have no free-text search) */
const EXPORT_FILTERS = ["type", "district", "substation", "feeder", "ta", "operator", "state", "grade"];
const TYPES = ["ev_charging", "ev_swapping", "v2g_charger", "central_ac", "district_cooling", "user_storage",
  "shore_power", "distributed_pv", "data_center", "base_station"];
const STATES = ["registered", "active", "rejected", "retired"];
const GRADES = ["A", "B", "C"];
const SIZES = [25, 50, 100, 200];
const DEFAULT_SIZE = 50;
/** a change of a parent filter clears the filters below it */
const CASCADE = { district: ["substation", "feeder", "ta"], substation: ["feeder", "ta"], feeder: ["ta"] };

let token = 0;
let params = {}; // the route's parameters
let last = null; // {data, page, size, params}
let operators = null; // Promise of operator rows
let built = false;

function view() {
  return $("resources-view");
}

function filtersOf(p) {
  const out = {};
  for (const key of Object.keys(FILTERS)) if (p[key]) out[key] = p[key];
  return out;
}

function sameFilters(a, b) {
  const fa = filtersOf(a);
  const fb = filtersOf(b);
  return JSON.stringify(fa) === JSON.stringify(fb) && (a.page || "1") === (b.page || "1")
    && (a.size || "") === (b.size || "");
}

function go(next, replace = true) {
  navigate("resources", [], next, { replace });
}

// ---------------------------------------------------------------- filter form

function option(value, label, key = null, dataset = null) {
  return h("option", { value, "data-i18n": key, text: label, dataset });
}

function select(name, labelKey, options) {
  return h("label", { class: "field" }, h("span", { "data-i18n": labelKey, text: t(labelKey) }),
    h("select", { id: `res-f-${name}`, name, dataset: { filter: name } }, options));
}

function build() {
  if (built) return;
  built = true;
  const form = $("res-filters");
  form.replaceChildren(
    h("label", { class: "field field-wide" }, h("span", { "data-i18n": "res.filter.q", text: t("res.filter.q") }),
      h("input", {
        id: "res-f-q", name: "q", type: "search", autocomplete: "off", dataset: { filter: "q" },
        "data-i18n-placeholder": "res.filter.q_hint", placeholder: t("res.filter.q_hint"),
      })),
    select("type", "res.filter.type", [option("", t("res.filter.all"), "res.filter.all"),
      ...TYPES.map((code) => option(code, typeLabel(code), `type.${code}`))]),
    select("district", "res.filter.district", [option("", t("res.filter.all"), "res.filter.all")]),
    select("substation", "res.filter.substation", [option("", t("res.filter.all"), "res.filter.all")]),
    select("feeder", "res.filter.feeder", [option("", t("res.filter.all"), "res.filter.all")]),
    select("ta", "res.filter.ta", [option("", t("res.filter.all"), "res.filter.all")]),
    select("operator", "res.filter.operator", [option("", t("res.filter.all"), "res.filter.all")]),
    select("state", "res.filter.state", [option("", t("res.filter.all"), "res.filter.all"),
      ...STATES.map((s) => option(s, t(`state.${s}`), `state.${s}`))]),
    select("grade", "res.filter.grade", [option("", t("res.filter.all"), "res.filter.all"),
      ...GRADES.map((g) => option(g, t("grade.value", { g }), null, { grade: g }))]),
    h("button", { type: "button", class: "btn btn-ghost", id: "res-clear", "data-i18n": "res.filter.clear", text: t("res.filter.clear") }),
  );
  form.addEventListener("submit", (ev) => ev.preventDefault());
  for (const sel of form.querySelectorAll("select")) {
    sel.addEventListener("change", () => {
      const name = sel.dataset.filter;
      const next = { ...filtersOf(params), size: params.size };
      next[name] = sel.value;
      for (const below of CASCADE[name] || []) delete next[below];
      go(next);
    });
  }
  const typed = debounce(() => go({ ...filtersOf(params), q: $("res-f-q").value.trim(), size: params.size }), 350);
  $("res-f-q").addEventListener("input", typed);
  $("res-clear").addEventListener("click", () => go({ size: params.size }));

  $("res-size").replaceChildren(...SIZES.map((n) => h("option", { value: String(n), text: String(n) })));
  $("res-size").addEventListener("change", () => go({ ...filtersOf(params), size: $("res-size").value }));
  $("res-export-csv").addEventListener("click", () => exportAs("csv"));
  $("res-export-parquet").addEventListener("click", () => exportAs("parquet"));
}

function fillSelect(name, rows, valueOf, labelOf) {
  const sel = $(`res-f-${name}`);
  const value = params[name] || "";
  const opts = [option("", t("res.filter.all"), "res.filter.all"), ...rows.map((r) => option(valueOf(r), labelOf(r)))];
  if (value && !rows.some((r) => valueOf(r) === value)) opts.push(option(value, value)); // a linked id we cannot list
  sel.replaceChildren(...opts);
  sel.value = value;
}

/** Options of the cascading grid filters and of the operator filter, for the current parameters. */
async function fillOptions() {
  const gen = auth.generation;
  const nodeLabel = (n) => `${gridNodeName(n)} (${n.node_id})`;
  const tasks = [
    rootTree().then((tree) => ["district", tree.children]),
    params.district ? childrenOf(params.district).then((rows) => ["substation", rows]) : Promise.resolve(["substation", []]),
    params.substation ? childrenOf(params.substation).then((rows) => ["feeder", rows]) : Promise.resolve(["feeder", []]),
    params.feeder ? childrenOf(params.feeder).then((rows) => ["ta", rows]) : Promise.resolve(["ta", []]),
  ];
  operators = operators || api("/operators").then((d) => d.items);
  operators.catch(() => { operators = null; });
  const results = await Promise.allSettled([...tasks, operators.then((rows) => ["operator", rows])]);
  if (gen !== auth.generation) return;
  for (const r of results) {
    if (r.status !== "fulfilled") continue;
    const [name, rows] = r.value;
    if (name === "operator") fillSelect(name, rows, (o) => o.operator_id, (o) => `${o.operator_id} · ${localName(o, getLang())}`);
    else fillSelect(name, rows, (n) => n.node_id, name === "district" ? gridNodeName : nodeLabel);
  }
  for (const name of ["substation", "feeder", "ta"]) {
    const parent = { substation: "district", feeder: "substation", ta: "feeder" }[name];
    $(`res-f-${name}`).disabled = !params[parent] && !params[name];
  }
}

function syncForm() {
  for (const name of ["type", "state", "grade"]) {
    const sel = $(`res-f-${name}`);
    const value = params[name] || "";
    if (value && ![...sel.options].some((o) => o.value === value)) sel.append(option(value, value));
    sel.value = value;
  }
  const q = $("res-f-q");
  if (document.activeElement !== q) q.value = params.q || "";
  $("res-size").value = String(sizeOf(params));
}

function sizeOf(p) {
  const n = Number(p.size);
  return SIZES.includes(n) ? n : DEFAULT_SIZE;
}

// ---------------------------------------------------------------- list

function enter(route) {
  build();
  const prev = params;
  params = route.params;
  syncForm();
  // the filter options (grid nodes, operators) are not part of the first view: asked after the list
  if (!last || !sameFilters(prev, params) || view().dataset.state !== "ready") load().then(fillOptions);
  else fillOptions();
  if (params.open) {
    if ($("drawer").dataset.id !== params.open) openDrawer(params.open, { onClose: dropOpen });
  } else {
    closeDrawer({ silent: true });
  }
}

function dropOpen() {
  if (!params.open) return;
  const next = { ...params };
  delete next.open;
  go(next);
}

async function load() {
  const my = ++token;
  const gen = auth.generation;
  const size = sizeOf(params);
  const page = Math.max(1, Number.parseInt(params.page, 10) || 1);
  const apiParams = { limit: size, offset: (page - 1) * size };
  for (const [key, apiKey] of Object.entries(FILTERS)) if (params[key]) apiParams[apiKey] = params[key];
  view().dataset.state = "loading";
  view().dataset.route = "";
  $("res-table").classList.add("busy");
  try {
    const data = await api(`/resources${query(apiParams)}`);
    if (my !== token || gen !== auth.generation) return;
    const pages = Math.max(1, Math.ceil(data.total / size));
    if (page > pages) {
      go({ ...params, page: String(pages) });
      return;
    }
    last = { data, page, size, pages, params: { ...params } };
    render();
    view().dataset.state = "ready";
    view().dataset.route = window.location.hash;
  } catch (err) {
    if (my !== token || gen !== auth.generation) return;
    last = null;
    $("res-table").replaceChildren(pageMessage(err));
    $("res-total").textContent = "";
    $("res-pager-info").textContent = "";
    view().dataset.state = "error";
  } finally {
    if (my === token) $("res-table").classList.remove("busy");
  }
}

function columns() {
  const kw = { unit: t("unit.kw") };
  return [
    { key: "id", label: "res.col.id", render: (r) => h("a", { href: "#", class: "mono", text: r.resource_id, onclick: (ev) => { ev.preventDefault(); openRow(r.resource_id); } }) },
    { key: "name", label: "res.col.name", cls: "wrap" },
    { key: "type", label: "res.col.type", render: (r) => typeLabel(r.resource_type) },
    { key: "operator", label: "res.col.operator", render: (r) => r.operator_id || "–" },
    { key: "district", label: "res.col.district", render: (r) => r.district_id || "–" },
    { key: "ta", label: "res.col.ta", render: (r) => h("a", { href: `#/grid/${encodeURIComponent(r.ta_id)}`, class: "mono small", text: r.ta_id }) },
    { key: "capacity", label: "res.col.capacity_u", vars: kw, num: true, render: (r) => fmt(r.capacity_kw, 1) },
    { key: "down", label: "res.col.down_u", vars: kw, num: true, render: (r) => fmt(r.adjustable_down_kw, 1) },
    { key: "up", label: "res.col.up_u", vars: kw, num: true, render: (r) => fmt(r.adjustable_up_kw, 1) },
    { key: "mode", label: "res.col.mode", render: (r) => (r.response_mode ? t(`mode.${r.response_mode}`) : "–") },
    { key: "state", label: "res.col.state", render: (r) => stateBadge(r.state) },
    { key: "grade", label: "res.col.grade", render: (r) => gradeBadge(r.verified_grade) },
  ];
}

function openRow(id) {
  go({ ...params, open: id });
}

function render() {
  if (!last) return;
  const { data, page, size, pages } = last;
  renderScope(data.scope, $("res-scope"));
  $("res-total").dataset.total = String(data.total);
  $("res-total").textContent = t("res.total", { n: fmtInt(data.total) });
  $("res-table").replaceChildren(table(columns(), data.items, {
    id: "res-rows", empty: "res.empty",
    rowProps: (r) => ({ dataset: { id: r.resource_id }, class: "clickable", onclick: (ev) => {
      if (ev.target.closest("a")) return;
      openRow(r.resource_id);
    } }),
  }));
  const from = data.total ? (page - 1) * size + 1 : 0;
  const to = Math.min(data.total, (page - 1) * size + data.items.length);
  const info = $("res-pager-info");
  info.dataset.page = String(page);
  info.dataset.pages = String(pages);
  info.textContent = t("res.pager", { page: fmtInt(page), pages: fmtInt(pages), from: fmtInt(from), to: fmtInt(to), total: fmtInt(data.total) });
  $("res-first").disabled = page <= 1;
  $("res-prev").disabled = page <= 1;
  $("res-next").disabled = page >= pages;
  $("res-last").disabled = page >= pages;
  const notes = [];
  if (params.grade && data.items.some((r) => r.verified_grade !== params.grade)) notes.push(t("res.note.grade_ignored"));
  if (params.q) notes.push(t("res.note.q_not_exported"));
  $("res-notes").replaceChildren(...notes.map((n) => h("p", { class: "notice", text: n })));
}

function toPage(which) {
  if (!last) return;
  const page = { first: 1, prev: last.page - 1, next: last.page + 1, last: last.pages }[which];
  go({ ...filtersOf(params), size: params.size, page: String(Math.max(1, Math.min(last.pages, page))) }, false);
}

// ---------------------------------------------------------------- export

async function exportAs(format) {
  const button = $(`res-export-${format}`);
  const status = $("res-export-status");
  const apiParams = { format };
  for (const key of EXPORT_FILTERS) if (params[key]) apiParams[FILTERS[key]] = params[key];
  button.disabled = true;
  status.dataset.state = "working";
  status.textContent = t("res.export.working");
  try {
    const { name, bytes } = await download(`/resources/export${query(apiParams)}`, `resources.${format}`);
    status.dataset.state = "done";
    status.textContent = t("res.export.done", { name, size: fmt(bytes / 1e6, 2) });
  } catch (err) {
    status.dataset.state = "error";
    status.textContent = err instanceof ApiError ? err.message : String(err);
  } finally {
    button.disabled = false;
  }
}

for (const which of ["first", "prev", "next", "last"]) $(`res-${which}`).addEventListener("click", () => toPage(which));

export default {
  id: "resources",
  title: "res.title",
  enter,
  leave() {
    token += 1;
    closeDrawer({ silent: true });
  },
  reset() {
    token += 1;
    last = null;
    params = {};
    operators = null;
    $("res-table").replaceChildren();
    $("res-total").textContent = "";
    $("res-pager-info").textContent = "";
    $("res-export-status").textContent = "";
    $("res-notes").replaceChildren();
    view().dataset.state = "";
    if (built) {
      for (const name of ["district", "substation", "feeder", "ta", "operator"]) {
        $(`res-f-${name}`).replaceChildren(option("", t("res.filter.all"), "res.filter.all"));
      }
    }
  },
  relabel() {
    if (!built) return;
    for (const opt of document.querySelectorAll("#res-f-grade option[data-grade]")) {
      opt.textContent = t("grade.value", { g: opt.dataset.grade });
    }
    render();
    fillOptions();
  },
  refresh() {
    operators = null;
    fillOptions();
    load();
  },
};
