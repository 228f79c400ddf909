// Shared plumbing of the dashboard: the session, API calls (JSON, downloads, the SSE stream),
// what each role may do on screen, formatting and DOM helpers. No framework.

import { locale, t } from "./i18n.js";

export const API = "api/v1"; // relative to the page, so the app also works behind a path prefix
const SESSION_KEY = "openvpp.session";

export const CITY_ROLES = new Set(["city_admin", "dispatcher", "auditor"]);
export const OPERATOR_ROLES = new Set(["operator_admin", "operator_engineer"]);

export const $ = (id) => document.getElementById(id);

/** A page's section (`#<name>-view`) and body (`#<name>-body`), and its state marker: data-state is
 *  loading | ready | error, data-route the hash the view has finished rendering, so a test (or a
 *  user script) can wait for a drill-down without mistaking the previous view for it. */
export function pageView(name) {
  const view = () => $(`${name}-view`);
  const body = () => $(`${name}-body`);
  function setState(s) {
    view().dataset.state = s;
    view().dataset.route = s === "ready" ? window.location.hash : "";
  }
  return { view, body, setState };
}

// ---------------------------------------------------------------- session

/** The signed-in user ({access_token, role, username, operator_id, owner_id}) and a generation
 *  number bumped at each login/logout: answers that arrive for an older generation are dropped. */
export const auth = {
  session: loadSession(),
  generation: 0,
  onExpired: () => {},
};

function loadSession() {
  try {
    const raw = window.sessionStorage.getItem(SESSION_KEY);
    const value = raw ? JSON.parse(raw) : null;
    return value && value.access_token ? value : null;
  } catch {
    return null;
  }
}

export function saveSession(value) {
  auth.session = value;
  auth.generation += 1;
  if (value) window.sessionStorage.setItem(SESSION_KEY, JSON.stringify(value));
  else window.sessionStorage.removeItem(SESSION_KEY);
}

export function role() {
  return auth.session?.role ?? null;
}

/** What the signed-in role may do on screen. Mirrors model/roles.py and model/lifecycle.py; the API
 *  checks again, so a control shown by mistake fails with the server's message, never silently. */
export function can(what) {
  const r = role();
  switch (what) {
    case "admit_operators": // OPERATOR_MACHINE: start_review, admit, reject, suspend, reinstate (city_admin)
    case "create_pools": // POST /pools/defaults needs approve_resources
      return r === "city_admin";
    case "publish_events": // create, publish, open, clear, execute, cancel (model/roles.py PUBLISH_EVENTS)
      return r === "dispatcher";
    case "declare": // operators declare per trading unit (Perm.DECLARE)
      return r === "operator_admin";
    case "sign_settlements": // review, approve, pay; decide disputes (Perm.SIGN_SETTLEMENTS)
      return r === "city_admin";
    case "verification_report": // the report is for the center and operators
    case "events": // owners have no events to see; the API fences operators to their own declarations
    case "pools":
      return r !== null && r !== "owner";
    default:
      return false;
  }
}

// ---------------------------------------------------------------- API

export class ApiError extends Error {
  constructor(status, message, violations = [], code = null) {
    super(message);
    this.status = status;
    this.violations = violations;
    this.code = code;
  }
}

/** Turn an error body into an ApiError. Bodies: {detail: str}, FastAPI's {detail: [..]},
 *  or openvpp's {error, message, violations: [{field, rule, value}]}. */
export function toApiError(status, data, text) {
  let message = "";
  let violations = [];
  let code = null;
  const body = data && typeof data === "object" && data.detail && typeof data.detail === "object"
    && !Array.isArray(data.detail) ? data.detail : data;
  if (body && typeof body === "object") {
    if (typeof body.detail === "string") message = body.detail;
    if (Array.isArray(body.detail)) {
      violations = body.detail.map((d) => ({
        field: (d.loc || []).filter((part) => part !== "body").join("."),
        rule: d.msg || d.type || "",
        value: d.input,
      }));
    }
    if (typeof body.message === "string" && body.message) message = body.message;
    if (typeof body.error === "string") code = body.error;
    if (!message && code) message = code;
    if (Array.isArray(body.violations)) violations = body.violations;
  }
  if (!message) {
    message = t("error.http", { status });
    if (!data && text) message += `: ${text.slice(0, 200)}`;
  }
  return new ApiError(status, message, violations, code);
}

function authHeaders(headers, useAuth) {
  if (useAuth && auth.session) headers.Authorization = `Bearer ${auth.session.access_token}`;
  return headers;
}

async function parseJson(resp) {
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  return { text, data };
}

/** Call the API; resolves to the JSON body, rejects with an ApiError carrying the server's message.
 *  A 401 ends the session (back to the login form). */
export async function api(path, { method = "GET", form = null, json = undefined, useAuth = true, signal } = {}) {
  const headers = authHeaders({ Accept: "application/json" }, useAuth);
  let body;
  if (form) {
    headers["Content-Type"] = "application/x-www-form-urlencoded";
    body = new URLSearchParams(form).toString();
  } else if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const gen = auth.generation;
  let resp;
  try {
    resp = await fetch(`${API}${path}`, { method, headers, body, cache: "no-store", signal });
  } catch (err) {
    if (err?.name === "AbortError") throw err;
    throw new ApiError(0, t("error.network", { msg: err.message }));
  }
  const { text, data } = await parseJson(resp);
  if (!resp.ok) {
    const err = toApiError(resp.status, data, text);
    if (resp.status === 401 && useAuth && gen === auth.generation) auth.onExpired();
    throw err;
  }
  return data;
}

/** Download an API file with the bearer token (fetch → blob → a temporary link). */
export async function download(path, fallbackName) {
  const gen = auth.generation;
  let resp;
  try {
    resp = await fetch(`${API}${path}`, { headers: authHeaders({}, true), cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, t("error.network", { msg: err.message }));
  }
  if (!resp.ok) {
    const { text, data } = await parseJson(resp);
    const err = toApiError(resp.status, data, text);
    if (resp.status === 401 && gen === auth.generation) auth.onExpired();
    throw err;
  }
  const blob = await resp.blob();
  const disposition = resp.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/i.exec(disposition);
  const name = match ? match[1] : fallbackName;
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 30_000);
  return { name, bytes: blob.size };
}

/** Read a Server-Sent Events stream with the bearer token (EventSource cannot send one).
 *  Calls onEvent({event, id, data}) per event (data parsed as JSON when it is JSON) and
 *  onEnd(error|null) once when the stream stops, unless `signal` aborted it. */
export function readStream(path, { onEvent, onEnd, signal }) {
  const gen = auth.generation;
  (async () => {
    let error = null;
    try {
      const resp = await fetch(`${API}${path}`, {
        headers: authHeaders({ Accept: "text/event-stream" }, true), cache: "no-store", signal,
      });
      if (!resp.ok) {
        const { text, data } = await parseJson(resp);
        if (resp.status === 401 && gen === auth.generation) auth.onExpired();
        throw toApiError(resp.status, data, text);
      }
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let cut = buffer.indexOf("\n\n");
        while (cut >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const message = parseEvent(block);
          if (message) onEvent(message);
          cut = buffer.indexOf("\n\n");
        }
      }
    } catch (err) {
      error = err;
    }
    if (!signal?.aborted) onEnd?.(error);
  })();
}

function parseEvent(block) {
  let event = "message";
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // comments are keep-alives
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  const raw = data.join("\n");
  let parsed = raw;
  try {
    parsed = JSON.parse(raw);
  } catch {
    parsed = raw;
  }
  return { event, id, data: parsed };
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const out = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") out.set(k, String(v));
  }
  const s = out.toString();
  return s ? `?${s}` : "";
}

// ---------------------------------------------------------------- formatting

export function fmt(value, digits = null) {
  if (value === null || value === undefined || value === "") return "–";
  const v = Number(value);
  if (!Number.isFinite(v)) return "–";
  const d = digits ?? (Math.abs(v) < 10 ? 2 : 1);
  return new Intl.NumberFormat(locale(), { minimumFractionDigits: d, maximumFractionDigits: d }).format(v);
}

export function fmtInt(value) {
  if (value === null || value === undefined || value === "") return "–";
  const v = Number(value);
  return Number.isFinite(v) ? new Intl.NumberFormat(locale()).format(Math.round(v)) : "–";
}

export function fmtPct(ratio, digits = 0) {
  if (ratio === null || ratio === undefined || !Number.isFinite(Number(ratio))) return "–";
  return `${fmt(100 * Number(ratio), digits)}%`;
}

/** kW shown in the unit of the magnitude at hand ("kW" or "MW"), for one value in a text. */
export function fmtPower(kw) {
  if (kw === null || kw === undefined || !Number.isFinite(Number(kw))) return "–";
  const v = Number(kw);
  return Math.abs(v) >= 10_000 ? `${fmt(v / 1000, 1)} ${t("unit.mw")}` : `${fmt(v, 1)} ${t("unit.kw")}`;
}

/** Timestamps arrive as ISO text; naive ones are UTC (SQLite). Shown in Beijing time. */
export function fmtTime(iso) {
  if (!iso) return "–";
  const text = /[zZ]|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`;
  const d = new Date(text);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(locale(), { timeZone: "Asia/Shanghai", hour12: false });
}

/** Name of an API row in the current language: name_zh/label_zh in Chinese, else name/label. */
export function localName(row, lang) {
  if (!row) return "";
  const zh = row.name_zh ?? row.label_zh;
  const en = row.name ?? row.label;
  if (lang === "zh" && zh) return zh;
  return en || zh || row.node_id || row.operator_id || row.key || row.id || "";
}

// ---------------------------------------------------------------- DOM

export function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

/** Create an element: h("a", {class: "x", href: "#/", text: "go", onclick: fn}, child, ...). */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

/** An element whose text is the label `key` (kept translated by applyI18n on a language switch). */
export function tl(tag, key, props = {}) {
  return h(tag, { ...props, "data-i18n": key, text: t(key) });
}

/** A table. columns: [{key, label (i18n key), vars, num, cls, render(row) → node|text, sort(row) → value}];
 *  rowProps(row) → attributes of the <tr>; sort = {key, dir: 1|-1, onSort(key)} makes headers clickable.
 *  Pages re-render their tables after a language switch (labels are plain text). */
export function table(columns, rows, { rowProps = null, empty = "table.empty", sort = null, id = null } = {}) {
  const head = h("tr", {}, columns.map((c) => {
    const sortable = sort && c.sort;
    const active = sortable && sort.key === c.key;
    return h("th", {
      class: [c.num ? "num" : "", c.cls || "", sortable ? "sortable" : ""].join(" ").trim() || null,
      scope: "col", "data-col": c.key, text: t(c.label, c.vars || {}),
      "aria-sort": active ? (sort.dir > 0 ? "ascending" : "descending") : null,
      tabindex: sortable ? "0" : null,
      onclick: sortable ? () => sort.onSort(c.key) : null,
      onkeydown: sortable ? (ev) => { if (ev.key === "Enter") sort.onSort(c.key); } : null,
    });
  }));
  const ordered = sortRows(rows, columns, sort);
  const body = ordered.length
    ? ordered.map((row) => h("tr", rowProps ? rowProps(row) : {}, columns.map((c) => {
      const value = c.render ? c.render(row) : row[c.key];
      return h("td", {
        class: [c.num ? "num" : "", c.cls || ""].join(" ").trim() || null, "data-col": c.key,
      }, value === null || value === undefined || value === "" ? "–" : value);
    })))
    : [h("tr", { class: "empty-row" }, h("td", { colspan: columns.length, text: t(empty) }))];
  return h("table", { class: "data", id }, h("thead", {}, head), h("tbody", {}, body));
}

/** Rows in the order of `sort` ({key, dir}) by the column's sort(row) value; missing values last,
 *  text in natural order ("pile 2" before "pile 10"). */
export function sortRows(rows, columns, sort) {
  const col = sort && sort.key ? columns.find((c) => c.key === sort.key && c.sort) : null;
  if (!col) return rows;
  return [...rows].sort((a, b) => {
    const va = col.sort(a);
    const vb = col.sort(b);
    if (va === vb) return 0;
    if (va === null || va === undefined) return 1;
    if (vb === null || vb === undefined) return -1;
    if (typeof va === "string" && typeof vb === "string") {
      return va.localeCompare(vb, undefined, { numeric: true }) * sort.dir;
    }
    return (va < vb ? -1 : 1) * sort.dir;
  });
}

/** Sort state of a table: same key flips the direction, a new key starts with `firstDir`. */
export function nextSort(state, key, firstDir = 1) {
  return state.key === key ? { key, dir: -state.dir } : { key, dir: firstDir };
}

/** A labelled figure: {label key, value text, unit, data-value}. */
export function stat(id, labelKey, value, formatted, unit = "", extraClass = "") {
  return h("article", { class: `stat ${extraClass}`.trim(), id },
    tl("h2", labelKey),
    h("div", { class: "stat-figure" },
      h("span", { class: "stat-value", dataset: { value: value ?? "" }, text: formatted }),
      unit ? h("span", { class: "stat-unit", text: unit }) : null));
}

/** A message in place of a page's content (errors keep the server's words). */
export function pageMessage(err) {
  const box = h("div", { class: "page-error", role: "alert" },
    h("strong", { text: err.status ? `${t("error.title")} ${err.status}` : t("error.title") }),
    h("span", { class: "page-error-message", text: err.message || String(err) }));
  if (err.violations?.length) {
    box.append(h("ul", {}, err.violations.map((v) => h("li", {
      text: t("error.violation", { field: v.field ?? "?", rule: v.rule ?? "?", value: JSON.stringify(v.value ?? null) }),
    }))));
  }
  return box;
}

/** Run fn at most once per `ms` (trailing call kept). */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    if (timer !== null) window.clearTimeout(timer);
    timer = window.setTimeout(() => {
      timer = null;
      fn(...args);
    }, ms);
  };
}

/** Scope label: the server's own word for the data's scope ("city", "operator OP01", "owner OW1")
 *  when it sent one, else what the role implies. */
export function renderScope(serverScope = null, label = $("scope-label")) {
  const session = auth.session;
  const role = session?.role;
  let scope = "unknown";
  let id = null;
  const m = typeof serverScope === "string" ? /^(city|operator|owner)(?:\s+(.+))?$/.exec(serverScope.trim()) : null;
  if (m) {
    scope = m[1];
    id = m[2] ?? null;
  } else if (CITY_ROLES.has(role)) {
    scope = "city";
  } else if (OPERATOR_ROLES.has(role)) {
    scope = "operator";
    id = session.operator_id;
  } else if (role === "owner") {
    scope = "owner";
    id = session.owner_id;
  }
  label.dataset.scope = scope;
  label.textContent = scope === "unknown" ? t("scope.unknown") : t(`scope.${scope}`, { id: id ?? "?" });
}

// ---------------------------------------------------------------- the error banner

export function showError(err) {
  if (err instanceof ApiError && err.status === 401) return; // already back at the login form
  if (err?.name === "AbortError") return;
  $("error-message").textContent = err.message || String(err);
  $("error-violations").replaceChildren(...(err.violations || []).map((v) => h("li", {
    text: t("error.violation", { field: v.field ?? "?", rule: v.rule ?? "?", value: JSON.stringify(v.value ?? null) }),
  })));
  $("error-banner").hidden = false;
}

export function clearError() {
  $("error-banner").hidden = true;
}
