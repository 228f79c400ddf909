// Grid drill-down: city → district → substation → feeder → transformer area → site → device.
// Per node: connected and adjustable capacity (registry summaries, in the caller's scope), live power,
// online devices and loading against the node's rating. Live values follow the SSE stream: each
// `live` event (every few seconds) refreshes the live figures of the node on screen.
//
// Routes: #/grid (city), #/grid/<node>, #/grid/<ta>/site/<site>, #/grid/<ta>/site/<site>/device/<resource>

import { COLORS, axisStyle, baseOption, chart, loadCharts, tooltipLines } from "../charts.js";
import {
  $, ApiError, api, auth, fmt, fmtInt, fmtPct, fmtTime, h, nextSort, pageMessage, query, readStream, sortRows,
  stat, table,
} from "../core.js";
import { fetchResource, renderResource, stateBadge } from "../drawer.js";
import { getLang, t, typeLabel } from "../i18n.js";

const enc = encodeURIComponent;
const CHILD_LEVEL = { city: "district", district: "substation", substation: "feeder", feeder: "transformer_area" };
/** Children shown in MW (big nodes) or kW. */
const MW_LEVELS = new Set(["district", "substation"]);

// Loading = |P| / power factor / rating, as kernels/congestion.loading with the congestion
// service's default power factor (services/congestion.py). Bands: ≥ 100% over the rating, ≥ 80% near it.
export const POWER_FACTOR = 0.95;
const BANDS = [[1.0, "over"], [0.8, "near"], [0.6, "warm"], [0, "ok"]];

const LIVE_MIN_MS = 2_000;
const DEVICE_LIVE_MIN_MS = 10_000;
const STREAM_RETRY_MS = 5_000;
const PAGE = 1000; // resources per request when a transformer area's devices are listed
const MAX_PAGES = 5;
const MAX_LIVE_DEVICES = 1000;
const LIVE_BATCH = 200; // device ids per batch read (/live/devices?ids=...)
const DEVICE_PAGE = 50; // devices per page of a transformer area's or site's table
const PARALLEL = 3;

export function loadingOf(powerKw, ratingKva) {
  if (powerKw === null || powerKw === undefined || !ratingKva) return null;
  return Math.abs(Number(powerKw)) / POWER_FACTOR / Number(ratingKva);
}

export function loadingBand(ratio) {
  if (ratio === null || ratio === undefined || !Number.isFinite(ratio)) return "none";
  return BANDS.find(([min]) => ratio >= min)[1];
}

// ---------------------------------------------------------------- caches (cleared at logout)

const cache = {
  root: null, // Promise of {node, children}
  nodes: new Map(), // node_id → grid node row
  summaries: new Map(), // "by|parent" → Promise of Map(key → row)
  tas: new Map(), // ta_id → Promise of {total, items}
  children: new Map(), // node_id → Promise of child rows (filters of the resource database)
};

function clearCache() {
  cache.root = null;
  cache.nodes.clear();
  cache.summaries.clear();
  cache.tas.clear();
  cache.children.clear();
}

function remember(...rows) {
  for (const row of rows.flat()) if (row?.node_id) cache.nodes.set(row.node_id, row);
}

function memo(map, key, make) {
  if (!map.has(key)) {
    const p = make();
    map.set(key, p);
    p.catch(() => map.delete(key));
  }
  return map.get(key);
}

export function rootTree() {
  if (!cache.root) {
    cache.root = api("/grid/nodes").then((tree) => {
      remember(tree.node, tree.children);
      return tree;
    });
    cache.root.catch(() => { cache.root = null; });
  }
  return cache.root;
}

/** Child nodes of a grid node (cached): the cascading filters of the resource database use them. */
export function childrenOf(id) {
  return memo(cache.children, id, () => api(`/grid/nodes?parent=${enc(id)}`).then((tree) => {
    remember(tree.node, tree.children);
    return tree.children;
  }));
}

export function gridNodeName(node) {
  return nodeName(node);
}

async function gridNode(id) {
  if (cache.nodes.has(id)) return cache.nodes.get(id);
  const row = await api(`/grid/nodes/${enc(id)}`);
  remember(row);
  return row;
}

/** Capacity of the resources under `parent` (a grid node; null = the whole city) grouped by `by`. */
function summary(by, parent = null) {
  return memo(cache.summaries, `${by}|${parent ?? ""}`, () => api(`/resources/summary${query({ by, parent })}`)
    .then((data) => new Map(data.rows.map((r) => [r.key, r]))));
}

function addUp(rows) {
  const out = { resources: 0, connected_kw: 0, adjustable_down_kw: 0, adjustable_up_kw: 0 };
  for (const r of rows) {
    out.resources += Number(r.resources ?? 1);
    out.connected_kw += Number(r.connected_kw ?? r.capacity_kw ?? 0);
    out.adjustable_down_kw += Number(r.adjustable_down_kw ?? 0);
    out.adjustable_up_kw += Number(r.adjustable_up_kw ?? 0);
  }
  return out;
}

function groupBy(items, key) {
  const groups = new Map();
  for (const item of items) {
    const k = item[key];
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(item);
  }
  return groups;
}

/** Every resource of a transformer area (all states), a few pages at most. */
function taResources(taId) {
  return memo(cache.tas, taId, async () => {
    const items = [];
    let total = 0;
    for (let pageNo = 0; pageNo < MAX_PAGES; pageNo += 1) {
      const page = await api(`/resources${query({ ta_id: taId, limit: PAGE, offset: pageNo * PAGE })}`);
      total = page.total;
      items.push(...page.items);
      if (items.length >= total || !page.items.length) break;
    }
    return { total, items };
  });
}

/** Live rows of a level (children of `parent`; a parent with no reporting devices has none). */
async function liveRows(level, parent) {
  const data = await api(`/live/nodes/${enc(level)}${query({ parent })}`);
  return { at: data.at, rows: new Map(data.rows.map((r) => [r.id, r])) };
}

/** Live figures of a node and of its children. */
async function liveOf(node) {
  const childLevel = CHILD_LEVEL[node.level];
  const isCity = node.level === "city";
  const [children, own] = await Promise.all([
    childLevel ? liveRows(childLevel, isCity ? null : node.node_id) : Promise.resolve(null),
    isCity ? api("/live/summary").then((s) => ({ at: s.at, row: s.city }))
      : liveRows(node.level, node.parent_id).then((x) => ({ at: x.at, row: x.rows.get(node.node_id) || null })),
  ]);
  return { at: own.at || children?.at || null, own: own.row, children: children?.rows || new Map() };
}

/** Live points of devices (id → point, or null when unknown or outside the scope), in batch reads. */
async function devicesLive(ids) {
  const out = new Map();
  const queue = [];
  const wanted = ids.slice(0, MAX_LIVE_DEVICES);
  for (let i = 0; i < wanted.length; i += LIVE_BATCH) queue.push(wanted.slice(i, i + LIVE_BATCH));
  async function worker() {
    while (queue.length) {
      const batch = queue.shift();
      const data = await api(`/live/devices${query({ ids: batch.join(",") })}`);
      for (const d of data.items) out.set(d.device_id, d);
      for (const id of data.missing) out.set(id, null);
    }
  }
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  return out;
}

// ---------------------------------------------------------------- state

let token = 0;
let current = null; // what is on screen
let active = false;
let sortState = { key: "name", dir: 1 };
let devicePage = 1;
const liveState = { stream: null, retry: null, busy: false, pending: false, last: 0, lastDevices: 0, city: null };

function view() {
  return $("grid-view");
}

function setState(state) {
  view().dataset.state = state;
  // the hash this view has finished rendering, so a test (or a user script) can wait for a drill-down
  view().dataset.route = state === "ready" ? window.location.hash : "";
}

// ---------------------------------------------------------------- loading

async function loadBranch(node, children) {
  const childLevel = CHILD_LEVEL[node.level];
  const [childCap, live] = await Promise.all([
    summary(childLevel, node.level === "city" ? null : node.node_id),
    liveOf(node).catch((err) => ({ error: err, own: null, children: new Map() })),
  ]);
  const rows = children.map((c) => ({ node: c, cap: childCap.get(c.node_id) || null }));
  // every resource of a node sits under one of its children: the node's figures are their sum
  const own = addUp(rows.map((r) => r.cap).filter(Boolean));
  return { kind: "branch", childLevel, rows, own, live };
}

async function loadTa(node) {
  const [res, live] = await Promise.all([
    taResources(node.node_id),
    liveOf(node).catch((err) => ({ error: err, own: null, children: new Map() })),
  ]);
  const activeItems = res.items.filter((r) => r.state === "active");
  const sites = [...groupBy(res.items, "site_id")].map(([siteId, items]) => ({
    site_id: siteId, items, cap: addUp(items.filter((r) => r.state === "active")),
  }));
  return {
    kind: "ta", res, sites, own: addUp(activeItems), live, devices: null,
  };
}

async function ancestors(node) {
  const root = (await rootTree()).node;
  if (node.level === "city") return [node];
  const ids = [node.district_id, node.substation_id, node.feeder_id].filter((id) => id && id !== node.node_id);
  const chain = await Promise.all(ids.map(gridNode));
  return [root, ...chain, node];
}

function needsChart(node, target) {
  return !target.deviceId && node.level !== "transformer_area";
}

function enter(route) {
  active = true;
  openStream();
  const [nodeId, k1, siteId, k2, deviceId] = route.parts;
  const target = {
    nodeId: nodeId || null,
    siteId: k1 === "site" ? siteId || null : null,
    deviceId: k1 === "site" && k2 === "device" ? deviceId || null : null,
  };
  load(target);
}

async function load(target) {
  const my = ++token;
  devicePage = 1;
  const gen = auth.generation;
  setState("loading");
  view().dataset.live = "loading";
  try {
    const rootP = rootTree();
    const tree = target.nodeId ? await api(`/grid/nodes?parent=${enc(target.nodeId)}`) : await rootP;
    remember(tree.node, tree.children);
    const node = tree.node;
    if (target.siteId && node.level !== "transformer_area") {
      throw new ApiError(404, t("grid.site_not_under", { id: node.node_id }));
    }
    let work;
    if (target.deviceId) work = Promise.resolve({ kind: "device", live: null }); // the device's own point comes with it
    else if (node.level === "transformer_area") work = loadTa(node);
    else work = loadBranch(node, tree.children);
    const [crumbs, data, device] = await Promise.all([
      ancestors(node),
      work,
      target.deviceId ? fetchResource(target.deviceId) : Promise.resolve(null),
      needsChart(node, target) ? loadCharts() : null,
    ]);
    if (my !== token || gen !== auth.generation) return;
    if (device && (device.resource.ta_id !== node.node_id || device.resource.site_id !== target.siteId)) {
      throw new ApiError(404, t("grid.device_elsewhere", { id: target.deviceId, ta: device.resource.ta_id, site: device.resource.site_id }));
    }
    if (target.siteId && data.kind === "ta" && !data.sites.some((s) => s.site_id === target.siteId)) {
      throw new ApiError(404, t("grid.site_missing", { site: target.siteId, ta: node.node_id }));
    }
    current = { ...target, node, crumbs, ...data, device };
    render();
    setState("ready");
    liveState.last = Date.now();
    liveState.lastDevices = Date.now();
    if (data.kind === "ta") {
      await refreshDevices(my);
    } else {
      view().dataset.live = data.live?.error ? "error" : "ready";
    }
  } catch (err) {
    if (my !== token || gen !== auth.generation) return;
    current = null;
    $("grid-body").replaceChildren(pageMessage(err));
    $("grid-crumbs").replaceChildren(crumbLink({ href: "#/grid", label: t("grid.city") }));
    setState("error");
  }
}

/** Live points of the devices on screen first (the page's live view is then complete), then of
 *  the others of the area (the sites' sums), at most MAX_LIVE_DEVICES in all, in batch reads. */
async function refreshDevices(my) {
  const shown = visibleDevices().map((r) => r.resource_id);
  const seen = new Set(shown);
  const rest = currentDevices().map((r) => r.resource_id).filter((id) => !seen.has(id));
  try {
    for (const ids of [shown, rest.slice(0, Math.max(0, MAX_LIVE_DEVICES - shown.length))]) {
      if (!ids.length) continue;
      const live = await devicesLive(ids);
      if (my !== token || !current) return;
      current.devices = new Map([...(current.devices || new Map()), ...live]);
      liveState.lastDevices = Date.now();
      renderBody();
      view().dataset.live = "ready";
    }
    if (!current.devices) {
      current.devices = new Map();
      view().dataset.live = "ready";
    }
  } catch (err) {
    if (my !== token || !current) return;
    current.devicesError = err;
    renderBody();
    view().dataset.live = "error";
  }
}

/** Live refresh on a stream tick: node figures every tick, device points less often. */
async function refreshLive() {
  if (!current || liveState.busy) {
    liveState.pending = Boolean(current);
    return;
  }
  liveState.busy = true;
  const my = token;
  try {
    if (current.kind === "device") {
      if (Date.now() - liveState.lastDevices >= DEVICE_LIVE_MIN_MS) {
        const id = current.deviceId;
        const live = await api(`/live/devices/${enc(id)}`).catch(() => null);
        if (my !== token || !current || current.deviceId !== id) return;
        current.device = { ...current.device, live, liveError: live ? null : current.device.liveError };
        liveState.lastDevices = Date.now();
        renderBody();
      }
      return;
    }
    const live = await liveOf(current.node).catch((err) => ({ error: err, own: null, children: new Map() }));
    if (my !== token || !current) return;
    current.live = live;
    if (current.kind === "ta" && Date.now() - liveState.lastDevices >= DEVICE_LIVE_MIN_MS) {
      await refreshDevices(my);
    } else {
      renderBody();
    }
  } finally {
    liveState.busy = false;
    liveState.last = Date.now();
    if (liveState.pending) {
      liveState.pending = false;
      window.setTimeout(scheduleLive, LIVE_MIN_MS);
    }
  }
}

function scheduleLive() {
  if (!active || !current) return;
  if (Date.now() - liveState.last < LIVE_MIN_MS) return;
  refreshLive();
}

// ---------------------------------------------------------------- the stream

function openStream() {
  if (liveState.stream) return;
  window.clearTimeout(liveState.retry);
  const controller = new AbortController();
  liveState.stream = controller;
  setBadge("connecting");
  readStream("/live/stream?levels=city", {
    signal: controller.signal,
    onEvent: (msg) => {
      if (msg.event !== "live" || typeof msg.data !== "object") return;
      const city = (msg.data.levels?.city || [])[0] || null;
      liveState.city = { at: msg.data.at, tick: msg.data.tick, scope: msg.data.scope, row: city };
      setBadge("live");
      scheduleLive();
    },
    onEnd: (err) => {
      if (liveState.stream !== controller) return;
      liveState.stream = null;
      setBadge("offline", err);
      if (active && auth.session) liveState.retry = window.setTimeout(openStream, STREAM_RETRY_MS);
    },
  });
}

function closeStream() {
  window.clearTimeout(liveState.retry);
  if (liveState.stream) liveState.stream.abort();
  liveState.stream = null;
  liveState.city = null;
}

function setBadge(state, err = null) {
  const badge = $("grid-live");
  badge.dataset.state = state;
  const c = liveState.city;
  if (state === "live" && c) {
    badge.dataset.tick = String(c.tick ?? "");
    const row = c.row || { power_kw: 0, online: 0, devices: 0 };
    badge.textContent = t("grid.live.badge", {
      power: fmt(row.power_kw / 1000, 2), online: fmtInt(row.online), devices: fmtInt(row.devices), t: fmtTime(c.at),
    });
  } else if (state === "offline") {
    badge.textContent = t("grid.live.offline", { msg: err?.message || "" });
  } else {
    badge.textContent = t("grid.live.connecting");
  }
}

// ---------------------------------------------------------------- rendering

function nodeName(node) {
  if (!node) return "";
  return (getLang() === "zh" && node.name_zh) || node.name || node.name_zh || node.node_id;
}

function crumbLink({ href, label, level, current: isCurrent = false }) {
  return h("li", { dataset: { level: level || "" } }, isCurrent
    ? h("span", { "aria-current": "page", text: label })
    : h("a", { href, text: label }));
}

function renderCrumbs() {
  const c = current;
  const items = c.crumbs.map((n) => ({
    href: n.level === "city" ? "#/grid" : `#/grid/${enc(n.node_id)}`, label: nodeName(n), level: n.level,
  }));
  if (c.siteId) items.push({ href: `#/grid/${enc(c.node.node_id)}/site/${enc(c.siteId)}`, label: t("grid.site_label", { id: c.siteId }), level: "site" });
  if (c.deviceId) items.push({ href: "", label: c.device?.resource?.name || c.deviceId, level: "device" });
  items[items.length - 1].current = true;
  $("grid-crumbs").replaceChildren(h("ol", {}, items.map(crumbLink)));
}

function render() {
  renderCrumbs();
  renderBody();
}

function unitOf(level) {
  return MW_LEVELS.has(level) || level === "city" ? "mw" : "kw";
}

function power(kw, unit) {
  if (kw === null || kw === undefined) return "–";
  return unit === "mw" ? fmt(Number(kw) / 1000, 2) : fmt(Number(kw), 1);
}

function loadingCell(ratio) {
  const band = loadingBand(ratio);
  if (band === "none") return h("span", { class: "muted", text: "–" });
  const fill = h("span", { class: `meter-fill load-${band}` });
  fill.style.width = `${Math.min(100, 100 * ratio)}%`;
  return h("span", { class: `meter load-${band}`, dataset: { loading: ratio.toFixed(4), band } },
    h("span", { class: "meter-bar" }, fill), h("span", { class: "meter-text", text: fmtPct(ratio, 0) }));
}

function ratingText(kva) {
  if (!kva) return "–";
  return kva >= 10_000 ? `${fmt(kva / 1000, 1)} MVA` : `${fmt(kva, 0)} kVA`;
}

function liveOnline(row) {
  return row && row.online > 0 ? row : null;
}

function renderCards() {
  const c = current;
  const node = c.node;
  const unit = unitOf(node.level);
  const own = c.own || {};
  const liveRow = c.live?.own || null;
  let livePower = liveOnline(liveRow)?.power_kw ?? null;
  let online = liveRow ? liveRow.online : null;
  let devices = liveRow ? liveRow.devices : null;
  let cap = own;
  let title = nodeName(node);
  let subtitle = [t(`level.${node.level}`), node.node_id, node.voltage_kv ? `${fmt(node.voltage_kv, 1)} kV` : null,
    node.rating_kva ? t("grid.rating", { r: ratingText(node.rating_kva) }) : null].filter(Boolean).join(" · ");
  let ratio = loadingOf(livePower, node.rating_kva);
  if (c.kind === "ta" && c.siteId) {
    const site = c.sites.find((s) => s.site_id === c.siteId);
    cap = site.cap;
    title = t("grid.site_label", { id: c.siteId });
    subtitle = [t("level.site"), t("grid.in_ta", { ta: nodeName(node) })].join(" · ");
    const live = siteLive(site);
    livePower = live.power;
    online = live.online;
    devices = live.devices;
    ratio = null;
  }
  const band = loadingBand(ratio);
  const unitLabel = t(`unit.${unit}`);
  const head = h("div", { class: "node-head", dataset: { level: node.level, id: node.node_id } },
    h("div", {}, h("h2", { class: "node-title", text: title }), h("div", { class: "muted", text: subtitle })),
    c.kind === "ta" && !c.siteId ? h("a", {
      class: "btn btn-ghost", href: `#/resources?ta=${enc(node.node_id)}`, text: t("grid.open_in_resources"),
    }) : null);
  const cards = h("div", { class: "stats" },
    stat("grid-stat-connected", "grid.stat.connected", cap?.connected_kw ?? "", power(cap?.connected_kw ?? null, unit), unitLabel),
    stat("grid-stat-down", "grid.stat.down", cap?.adjustable_down_kw ?? "", power(cap?.adjustable_down_kw ?? null, unit), unitLabel),
    stat("grid-stat-up", "grid.stat.up", cap?.adjustable_up_kw ?? "", power(cap?.adjustable_up_kw ?? null, unit), unitLabel),
    stat("grid-stat-resources", "grid.stat.resources", cap?.resources ?? "", fmtInt(cap?.resources ?? null)),
    stat("grid-stat-live", "grid.stat.live", livePower ?? "", power(livePower, unit), unitLabel, "stat-live"),
    stat("grid-stat-online", "grid.stat.online", online ?? "", online === null ? "–" : `${fmtInt(online)} / ${fmtInt(devices)}`),
    stat("grid-stat-loading", "grid.stat.loading", ratio ?? "", fmtPct(ratio, 0), "", `stat-loading load-${band}`));
  const loadingCard = cards.querySelector("#grid-stat-loading");
  loadingCard.dataset.band = band;
  if (band === "near" || band === "over") {
    loadingCard.append(h("p", { class: "stat-note", text: t(`grid.band.${band}`) }));
  }
  return [head, cards];
}

function siteLive(site) {
  let powerKw = 0;
  let online = 0;
  let known = 0;
  for (const r of site.items) {
    const l = current.devices?.get(r.resource_id);
    if (l === undefined) continue;
    known += 1;
    if (l && l.online) {
      online += 1;
      powerKw += Number(l.power_kw || 0);
    }
  }
  return { power: known && online ? powerKw : null, online: current.devices ? online : null, devices: site.items.length };
}

function childColumns(childLevel) {
  const unit = unitOf(childLevel);
  const u = { unit: t(`unit.${unit}`) };
  const liveOf = (row) => current.live?.children?.get(row.node.node_id) || null;
  const livePower = (row) => liveOnline(liveOf(row))?.power_kw ?? null;
  const ratioOf = (row) => loadingOf(livePower(row), row.node.rating_kva);
  return [
    {
      key: "name", label: `level.${childLevel}`, sort: (r) => r.node.node_id,
      render: (r) => h("span", {}, h("a", { href: `#/grid/${enc(r.node.node_id)}`, text: nodeName(r.node) }),
        h("div", { class: "muted mono small", text: r.node.node_id })),
    },
    { key: "rating", label: "grid.col.rating", num: true, sort: (r) => r.node.rating_kva, render: (r) => ratingText(r.node.rating_kva) },
    { key: "connected", label: "grid.col.connected", vars: u, num: true, sort: (r) => r.cap?.connected_kw ?? 0, render: (r) => power(r.cap?.connected_kw ?? 0, unit) },
    { key: "down", label: "grid.col.down", vars: u, num: true, sort: (r) => r.cap?.adjustable_down_kw ?? 0, render: (r) => power(r.cap?.adjustable_down_kw ?? 0, unit) },
    { key: "up", label: "grid.col.up", vars: u, num: true, sort: (r) => r.cap?.adjustable_up_kw ?? 0, render: (r) => power(r.cap?.adjustable_up_kw ?? 0, unit) },
    { key: "resources", label: "grid.col.resources", num: true, sort: (r) => r.cap?.resources ?? 0, render: (r) => fmtInt(r.cap?.resources ?? 0) },
    { key: "live", label: "grid.col.live", vars: u, num: true, sort: livePower, render: (r) => power(livePower(r), unit) },
    {
      key: "online", label: "grid.col.online", num: true, sort: (r) => liveOf(r)?.online ?? null,
      render: (r) => (liveOf(r) ? `${fmtInt(liveOf(r).online)} / ${fmtInt(liveOf(r).devices)}` : "–"),
    },
    { key: "loading", label: "grid.col.loading", sort: ratioOf, render: (r) => loadingCell(ratioOf(r)) },
  ];
}

function siteColumns() {
  return [
    {
      key: "name", label: "level.site", sort: (s) => s.site_id,
      render: (s) => h("a", { href: `#/grid/${enc(current.node.node_id)}/site/${enc(s.site_id)}`, text: t("grid.site_label", { id: s.site_id }) }),
    },
    { key: "connected", label: "grid.col.connected", vars: { unit: t("unit.kw") }, num: true, sort: (s) => s.cap.connected_kw, render: (s) => fmt(s.cap.connected_kw, 1) },
    { key: "down", label: "grid.col.down", vars: { unit: t("unit.kw") }, num: true, sort: (s) => s.cap.adjustable_down_kw, render: (s) => fmt(s.cap.adjustable_down_kw, 1) },
    { key: "up", label: "grid.col.up", vars: { unit: t("unit.kw") }, num: true, sort: (s) => s.cap.adjustable_up_kw, render: (s) => fmt(s.cap.adjustable_up_kw, 1) },
    { key: "resources", label: "grid.col.devices", num: true, sort: (s) => s.items.length, render: (s) => fmtInt(s.items.length) },
    { key: "live", label: "grid.col.live", vars: { unit: t("unit.kw") }, num: true, sort: (s) => siteLive(s).power, render: (s) => (siteLive(s).power === null ? "–" : fmt(siteLive(s).power, 1)) },
    {
      key: "online", label: "grid.col.online", num: true, sort: (s) => siteLive(s).online,
      render: (s) => (siteLive(s).online === null ? "–" : `${fmtInt(siteLive(s).online)} / ${fmtInt(s.items.length)}`),
    },
  ];
}

function deviceColumns() {
  const node = current.node;
  const liveFor = (r) => current.devices?.get(r.resource_id);
  return [
    {
      key: "id", label: "res.col.id", sort: (r) => r.resource_id,
      render: (r) => h("a", { href: `#/grid/${enc(node.node_id)}/site/${enc(r.site_id)}/device/${enc(r.resource_id)}`, text: r.resource_id }),
    },
    { key: "name", label: "res.col.name", sort: (r) => r.name },
    { key: "type", label: "res.col.type", sort: (r) => r.resource_type, render: (r) => typeLabel(r.resource_type) },
    { key: "operator", label: "res.col.operator", sort: (r) => r.operator_id, render: (r) => r.operator_id },
    { key: "site", label: "res.col.site", sort: (r) => r.site_id, render: (r) => r.site_id },
    { key: "capacity", label: "res.col.capacity_kw", num: true, sort: (r) => r.capacity_kw, render: (r) => fmt(r.capacity_kw, 1) },
    { key: "down", label: "res.col.down_kw", num: true, sort: (r) => r.adjustable_down_kw, render: (r) => fmt(r.adjustable_down_kw, 1) },
    { key: "up", label: "res.col.up_kw", num: true, sort: (r) => r.adjustable_up_kw, render: (r) => fmt(r.adjustable_up_kw, 1) },
    { key: "state", label: "res.col.state", sort: (r) => r.state, render: (r) => stateBadge(r.state) },
    {
      key: "live", label: "grid.col.live", vars: { unit: t("unit.kw") }, num: true,
      sort: (r) => (liveFor(r)?.online ? liveFor(r).power_kw : null),
      render: (r) => {
        const l = liveFor(r);
        if (l === undefined) return h("span", { class: "muted", text: current.devices ? "–" : "…" });
        return l && l.online ? fmt(l.power_kw, 1) : "–";
      },
    },
    {
      key: "online", label: "live.online", sort: (r) => (liveFor(r)?.online ? 1 : 0),
      render: (r) => {
        const l = liveFor(r);
        if (!l) return h("span", { class: "dot dot-off", title: t("live.off"), text: "○" });
        return h("span", { class: l.online ? "dot dot-on" : "dot dot-off", title: l.online ? t("live.on") : t("live.off"), text: l.online ? "●" : "○" });
      },
    },
    { key: "soc", label: "live.soc", num: true, render: (r) => (liveFor(r)?.soc === null || liveFor(r)?.soc === undefined ? "–" : `${fmt(100 * liveFor(r).soc, 0)}%`) },
  ];
}

function currentDevices() {
  if (current?.kind !== "ta") return [];
  const items = current.res.items;
  return current.siteId ? items.filter((r) => r.site_id === current.siteId) : items;
}

/** The page of devices on screen, in the table's order. */
function visibleDevices() {
  const all = sortRows(currentDevices(), deviceColumns(), sortState);
  const pages = Math.max(1, Math.ceil(all.length / DEVICE_PAGE));
  devicePage = Math.min(Math.max(1, devicePage), pages);
  return all.slice((devicePage - 1) * DEVICE_PAGE, devicePage * DEVICE_PAGE);
}

function toDevicePage(page) {
  devicePage = page;
  renderBody();
  const missing = visibleDevices().filter((r) => !current.devices?.has(r.resource_id)).map((r) => r.resource_id);
  if (!missing.length) return;
  const my = token;
  devicesLive(missing).then((live) => {
    if (my !== token || !current) return;
    current.devices = new Map([...(current.devices || new Map()), ...live]);
    renderBody();
  }).catch(() => {});
}

function onSort(key) {
  sortState = nextSort(sortState, key, key === "name" ? 1 : -1);
  renderBody();
}

function renderBody() {
  const c = current;
  if (!c) return;
  const body = $("grid-body");
  if (c.kind === "device") {
    body.replaceChildren(h("article", { class: "panel", id: "grid-device" }, renderResource(c.device)));
    return;
  }
  const parts = [...renderCards()];
  if (c.live?.error) parts.push(h("p", { class: "notice", text: t("grid.live.unavailable", { msg: c.live.error.message }) }));

  if (c.kind === "branch") {
    const cols = childColumns(c.childLevel);
    parts.push(h("div", { class: "split" },
      h("article", { class: "panel", id: "grid-children-panel" },
        h("h2", { text: t("grid.children", { level: t(`level.${c.childLevel}.plural`), n: fmtInt(c.rows.length) }) }),
        table(cols, c.rows, {
          id: "grid-children", sort: { ...sortState, onSort }, empty: "grid.no_children",
          rowProps: (r) => {
            const liveRow = liveOnline(c.live?.children?.get(r.node.node_id));
            const band = loadingBand(loadingOf(liveRow?.power_kw ?? null, r.node.rating_kva));
            return { class: `load-row load-${band}`, dataset: { id: r.node.node_id, band } };
          },
        })),
      h("article", { class: "panel" }, h("h2", { id: "grid-chart-title" }), h("div", { id: "chart-grid", class: "chart" }))));
  } else {
    if (!c.siteId) {
      parts.push(h("article", { class: "panel", id: "grid-sites-panel" },
        h("h2", { text: t("grid.sites", { n: fmtInt(c.sites.length) }) }),
        table(siteColumns(), c.sites, {
          id: "grid-sites", sort: { ...sortState, onSort }, empty: "grid.no_sites",
          rowProps: (s) => ({ dataset: { id: s.site_id } }),
        })));
    }
    const devices = currentDevices();
    const panel = h("article", { class: "panel", id: "grid-devices-panel" },
      h("h2", { text: t("grid.devices", { n: fmtInt(devices.length) }) }));
    if (c.res.total > c.res.items.length) {
      panel.append(h("p", { class: "notice", text: t("grid.devices_partial", { shown: fmtInt(c.res.items.length), total: fmtInt(c.res.total) }) }));
    }
    if (c.devicesError) panel.append(h("p", { class: "notice", text: t("grid.live.unavailable", { msg: c.devicesError.message }) }));
    panel.append(table(deviceColumns(), visibleDevices(), {
      id: "grid-devices", sort: { ...sortState, onSort }, empty: "grid.no_devices",
      rowProps: (r) => ({ dataset: { id: r.resource_id } }),
    }));
    const pages = Math.max(1, Math.ceil(devices.length / DEVICE_PAGE));
    if (pages > 1) {
      const from = (devicePage - 1) * DEVICE_PAGE + 1;
      panel.append(h("div", { class: "pager", id: "grid-devices-pager" },
        h("button", { type: "button", class: "btn btn-ghost", id: "grid-devices-prev", disabled: devicePage <= 1, text: t("pager.prev"), onclick: () => toDevicePage(devicePage - 1) }),
        h("span", { class: "pager-info", dataset: { page: String(devicePage), pages: String(pages) }, text: t("grid.devices_page", {
          page: fmtInt(devicePage), pages: fmtInt(pages), from: fmtInt(from), to: fmtInt(Math.min(devices.length, from + DEVICE_PAGE - 1)), total: fmtInt(devices.length),
        }) }),
        h("button", { type: "button", class: "btn btn-ghost", id: "grid-devices-next", disabled: devicePage >= pages, text: t("pager.next"), onclick: () => toDevicePage(devicePage + 1) })));
    }
    parts.push(panel);
  }
  body.replaceChildren(...parts);
  if (c.kind === "branch") drawChart();
}

function drawChart() {
  const c = current;
  const unit = unitOf(c.childLevel);
  const rows = c.rows.map((r) => {
    const liveRow = liveOnline(c.live?.children?.get(r.node.node_id));
    return { r, live: liveRow, ratio: loadingOf(liveRow?.power_kw ?? null, r.node.rating_kva) };
  });
  const withLive = rows.some((x) => x.ratio !== null);
  const names = rows.map((x) => nodeName(x.r.node));
  $("grid-chart-title").textContent = withLive ? t("grid.chart.loading") : t("grid.chart.capacity", { unit: t(`unit.${unit}`) });
  const scale = unit === "mw" ? 1000 : 1;
  const option = {
    ...baseOption(rows.length === 0, t("chart.empty")),
    animation: false,
    grid: { left: 8, right: 40, top: 40, bottom: 24, containLabel: true },
    tooltip: {
      ...baseOption(false).tooltip,
      trigger: "axis",
      axisPointer: { type: "shadow" },
      formatter: (params) => {
        const x = rows[params[0].dataIndex];
        return tooltipLines(names[params[0].dataIndex], [
          ["", t("grid.col.rating"), ratingText(x.r.node.rating_kva)],
          ["", t("grid.stat.connected"), `${power(x.r.cap?.connected_kw ?? 0, unit)} ${t(`unit.${unit}`)}`],
          ["", t("grid.stat.live"), x.live ? `${power(x.live.power_kw, unit)} ${t(`unit.${unit}`)}` : "–"],
          ["", t("grid.stat.loading"), fmtPct(x.ratio, 1)],
        ]);
      },
    },
    yAxis: {
      type: "category", data: names, inverse: true, ...axisStyle(),
      axisLabel: { color: COLORS.text, width: 150, overflow: "truncate" }, splitLine: { show: false },
    },
    legend: { show: !withLive, top: 0, textStyle: { color: COLORS.muted } },
    xAxis: withLive
      ? {
        type: "value", min: 0, max: (v) => Math.max(100, Math.ceil(v.max / 20) * 20), ...axisStyle(),
        axisLabel: { color: COLORS.muted, formatter: "{value}%" },
      }
      : { type: "value", name: t(`unit.${unit}`), ...axisStyle() },
    series: withLive
      ? [{
        name: t("grid.stat.loading"), type: "bar", barMaxWidth: 16,
        data: rows.map((x) => ({
          value: x.ratio === null ? 0 : +(100 * x.ratio).toFixed(2),
          itemStyle: { color: COLORS[loadingBand(x.ratio)] || COLORS.muted, borderRadius: [0, 3, 3, 0] },
        })),
        markLine: {
          symbol: "none", silent: true, label: { color: COLORS.muted, formatter: "{c}%" },
          data: [{ xAxis: 80, lineStyle: { color: COLORS.near, type: "dashed" } },
            { xAxis: 100, lineStyle: { color: COLORS.over, type: "solid" } }],
        },
      }]
      : [
        {
          name: t("grid.stat.connected"), type: "bar", barMaxWidth: 14,
          data: rows.map((x) => (x.r.cap?.connected_kw ?? 0) / scale), itemStyle: { color: COLORS.connected, borderRadius: [0, 3, 3, 0] },
        },
        {
          name: t("grid.stat.down"), type: "bar", barMaxWidth: 14,
          data: rows.map((x) => (x.r.cap?.adjustable_down_kw ?? 0) / scale), itemStyle: { color: COLORS.adjustable, borderRadius: [0, 3, 3, 0] },
        },
      ],
  };
  chart("chart-grid").setOption(option, { notMerge: true });
}

// ---------------------------------------------------------------- page

function leave() {
  active = false;
  token += 1;
  closeStream();
}

function reset() {
  leave();
  current = null;
  clearCache();
  sortState = { key: "name", dir: 1 };
  $("grid-body").replaceChildren();
  $("grid-crumbs").replaceChildren();
  setState("");
  view().dataset.live = "";
}

function refresh() {
  clearCache();
  const c = current;
  load(c ? { nodeId: c.node.level === "city" ? null : c.node.node_id, siteId: c.siteId, deviceId: c.deviceId }
    : { nodeId: null, siteId: null, deviceId: null });
}

export default {
  id: "grid",
  title: "grid.title",
  enter,
  leave,
  reset,
  relabel() {
    if (current) render();
    setBadge(view().querySelector("#grid-live").dataset.state || "connecting");
  },
  refresh,
};
