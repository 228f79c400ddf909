// One resource in detail: declared and verified attributes, its live point, its operator links and
// audit trail. Rendered in the side drawer (resource database, pool members) and in the grid's device view.

import {
  $, ApiError, api, auth, fmt, fmtInt, fmtTime, h, pageMessage, tl,
} from "./core.js";
import { t, typeLabel } from "./i18n.js";

const enc = encodeURIComponent;

/** The resource, its live point and its history; live and history may fail alone (kept as errors). */
export async function fetchResource(id) {
  const [resource, live, history] = await Promise.allSettled([
    api(`/resources/${enc(id)}`),
    api(`/live/devices/${enc(id)}`),
    api(`/resources/${enc(id)}/history`),
  ]);
  if (resource.status === "rejected") throw resource.reason;
  return {
    resource: resource.value,
    live: live.status === "fulfilled" ? live.value : null,
    liveError: live.status === "rejected" ? live.reason : null,
    history: history.status === "fulfilled" ? history.value : null,
    historyError: history.status === "rejected" ? history.reason : null,
  };
}

function badge(kind, value, label) {
  return h("span", { class: `pill pill-${kind}`, dataset: { [kind]: value ?? "" }, text: label });
}

export function stateBadge(state) {
  return badge("state", state, state ? t(`state.${state}`) : "–");
}

export function gradeBadge(grade) {
  return badge("grade", grade, grade ? t("grade.value", { g: grade }) : t("grade.none"));
}

function pairs(rows) {
  return h("dl", { class: "pairs" }, rows.filter(Boolean).map(([key, value]) => [
    h("dt", { text: t(key) }),
    h("dd", {}, value === null || value === undefined || value === "" ? "–" : value),
  ]));
}

const kw = (v) => (v === null || v === undefined ? "–" : `${fmt(v, 1)} ${t("unit.kw")}`);
const link = (href, text) => h("a", { href, text });

export function renderResource(data) {
  const r = data.resource;
  const wrap = h("div", { class: "resource-detail", dataset: { id: r.resource_id } });
  wrap.append(h("div", { class: "detail-head" },
    h("div", {},
      h("div", { class: "detail-title", text: r.name || r.resource_id }),
      h("div", { class: "muted mono", text: r.resource_id })),
    h("div", { class: "detail-badges" }, h("span", { class: "pill", text: typeLabel(r.resource_type) }),
      stateBadge(r.state), gradeBadge(r.verified_grade))));

  const grid = r.ta_id ? `#/grid/${enc(r.ta_id)}` : null;
  wrap.append(h("section", { class: "detail-section" }, tl("h3", "res.section.identity"), pairs([
    ["res.col.operator", r.operator_id ? link(`#/operators/${enc(r.operator_id)}`, r.operator_id) : "–"],
    ["res.col.owner", r.owner_id],
    ["res.col.site", r.site_id && r.ta_id ? link(`${grid}/site/${enc(r.site_id)}`, r.site_id) : r.site_id],
    ["res.col.ta", grid ? link(grid, r.ta_id) : "–"],
    ["res.col.feeder", r.feeder_id],
    ["res.col.substation", r.substation_id],
    ["res.col.district", r.district_id],
    ["res.col.meter", r.meter_id],
    ["res.col.protocol", r.control_protocol],
    ["res.col.commissioned", r.commissioned_on],
    ["res.col.operator_since", r.operator_since ? fmtTime(r.operator_since) : t("res.since_registration")],
  ])));

  wrap.append(h("section", { class: "detail-section" }, tl("h3", "res.section.capability"), pairs([
    ["res.col.capacity", kw(r.capacity_kw)],
    ["res.col.capacity_kva", r.capacity_kva ? `${fmt(r.capacity_kva, 1)} kVA` : "–"],
    ["res.col.down", kw(r.adjustable_down_kw)],
    ["res.col.up", kw(r.adjustable_up_kw)],
    ["res.col.duration", r.adjustable_duration_h === null ? "–" : `${fmt(r.adjustable_duration_h, 1)} h`],
    ["res.col.latency", r.latency_s === null ? "–" : `${fmt(r.latency_s, 0)} s`],
    ["res.col.mode", r.response_mode ? t(`mode.${r.response_mode}`) : "–"],
    ["res.col.verified_down", kw(r.verified_down_kw)],
    ["res.col.verified_up", kw(r.verified_up_kw)],
    ["res.col.verified_latency", r.verified_latency_s === null ? "–" : `${fmt(r.verified_latency_s, 0)} s`],
    ["res.col.verified_at", r.verified_at ? fmtTime(r.verified_at) : "–"],
    r.flagged ? ["res.col.flagged", r.flagged] : null,
  ])));

  const live = h("section", { class: "detail-section", id: "detail-live" }, tl("h3", "res.section.live"));
  if (data.live) {
    const l = data.live;
    live.dataset.online = String(Boolean(l.online));
    live.append(pairs([
      ["live.online", h("span", { class: l.online ? "dot dot-on" : "dot dot-off", text: l.online ? t("live.on") : t("live.off") })],
      ["live.power", kw(l.power_kw)],
      ["live.down", kw(l.down_kw)],
      ["live.up", kw(l.up_kw)],
      ["live.soc", l.soc === null ? "–" : `${fmt(100 * l.soc, 0)}%`],
      ["live.last", l.last_ts ? fmtTime(l.last_ts) : t("live.never")],
    ]));
  } else {
    live.append(h("p", { class: "muted", text: data.liveError?.status === 404 ? t("live.none") : (data.liveError?.message || t("live.none")) }));
  }
  wrap.append(live);

  const hist = h("section", { class: "detail-section", id: "detail-history" }, tl("h3", "res.section.history"));
  if (data.history) {
    const links = data.history.closed_links || [];
    hist.append(h("h4", { text: t("res.history.links") }));
    const current = h("li", {},
      h("strong", { text: data.history.operator_id || "–" }), " ",
      h("span", { class: "muted", text: data.history.operator_since
        ? t("res.history.since", { t: fmtTime(data.history.operator_since) }) : t("res.since_registration") }));
    hist.append(h("ul", { class: "timeline" }, current, links.slice().reverse().map((l) => h("li", {},
      h("strong", { text: l.operator_id }), " ",
      h("span", { class: "muted", text: `${l.valid_from ? fmtTime(l.valid_from) : t("res.history.start")} → ${fmtTime(l.valid_to)}` }),
      l.reason ? h("div", { class: "muted", text: l.reason }) : null))));
    const audit = data.history.audit || [];
    hist.append(h("h4", { text: t("res.history.audit", { n: fmtInt(audit.length) }) }));
    if (!audit.length) hist.append(h("p", { class: "muted", text: t("res.history.no_audit") }));
    else {
      hist.append(h("ul", { class: "timeline audit" }, audit.map((a) => h("li", { dataset: { action: a.action } },
        h("div", {}, h("strong", { text: a.action }), " ",
          h("span", { class: "muted", text: `${fmtTime(a.at)} · ${a.actor} (${a.actor_role})` })),
        a.reason ? h("div", { text: a.reason }) : null,
        changes(a.before, a.after)))));
    }
  } else if (data.historyError) {
    hist.append(pageMessage(data.historyError));
  }
  wrap.append(hist);
  return wrap;
}

function changes(before, after) {
  if (!before && !after) return null;
  const keys = [...new Set([...Object.keys(before || {}), ...Object.keys(after || {})])];
  const shown = keys.filter((k) => JSON.stringify(before?.[k]) !== JSON.stringify(after?.[k])).slice(0, 12);
  if (!shown.length) return null;
  return h("div", { class: "mono small" }, shown.map((k) => h("div", {
    text: `${k}: ${JSON.stringify(before?.[k] ?? null)} → ${JSON.stringify(after?.[k] ?? null)}`,
  })));
}

// ---------------------------------------------------------------- the drawer

let drawerToken = 0;
let onCloseFn = null;
let shown = null; // the data on screen, redrawn after a language switch

export function openDrawer(id, { onClose = null } = {}) {
  const my = ++drawerToken;
  const gen = auth.generation;
  onCloseFn = onClose;
  const drawer = $("drawer");
  const body = $("drawer-body");
  drawer.hidden = false;
  drawer.dataset.id = id;
  drawer.dataset.state = "loading";
  $("drawer-title").textContent = id;
  body.replaceChildren(h("p", { class: "muted", text: t("common.loading") }));
  fetchResource(id).then((data) => {
    if (my !== drawerToken || gen !== auth.generation) return;
    shown = data;
    $("drawer-title").textContent = data.resource.name || id;
    body.replaceChildren(renderResource(data));
    drawer.dataset.state = "ready";
  }).catch((err) => {
    if (my !== drawerToken || gen !== auth.generation) return;
    body.replaceChildren(pageMessage(err instanceof ApiError ? err : new ApiError(0, String(err))));
    drawer.dataset.state = "error";
  });
}

export function closeDrawer({ silent = false } = {}) {
  drawerToken += 1;
  const drawer = $("drawer");
  if (drawer.hidden) return;
  drawer.hidden = true;
  drawer.dataset.id = "";
  drawer.dataset.state = "";
  shown = null;
  $("drawer-body").replaceChildren();
  const fn = onCloseFn;
  onCloseFn = null;
  if (fn && !silent) fn();
}

export function initDrawer() {
  $("drawer-close").addEventListener("click", () => closeDrawer());
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !$("drawer").hidden) closeDrawer();
  });
}

export function drawerRelabel() {
  if (shown && $("drawer").dataset.state === "ready") $("drawer-body").replaceChildren(renderResource(shown));
}
