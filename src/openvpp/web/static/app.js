// City VPP dashboard: login, city overview (KPIs vs targets, charts by district and by type).
// Vanilla ES module; ECharts is loaded before it from static/vendor/ (see scripts/build_web.sh).

import {
  applyI18n, districtName, getLang, locale, onLangChange, roleLabel, setLang, t, typeLabel,
} from "./i18n.js";

const API = "api/v1"; // relative to the page, so the app also works behind a path prefix
const SESSION_KEY = "openvpp.session";
const REFRESH_MS = 60_000;
const CITY_ROLES = new Set(["city_admin", "dispatcher", "auditor"]);
const OPERATOR_ROLES = new Set(["operator_admin", "operator_engineer"]);

const COLORS = {
  connected: "#1fd1a5",
  adjustable: "#3da5ff",
  count: "#ffc83d",
  text: "#e6edf7",
  muted: "#8394b3",
  grid: "#1d2d4d",
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- state

let session = loadSession();  // {access_token, role, username, operator_id, owner_id}
let generation = 0;           // bumped at each login/logout: late answers of an old session are dropped
let lastData = null;          // {targets, byType, at}
let refreshTimer = null;
const charts = {};            // id -> echarts instance

function loadSession() {
  try {
    const raw = window.sessionStorage.getItem(SESSION_KEY);
    const value = raw ? JSON.parse(raw) : null;
    return value && value.access_token ? value : null;
  } catch {
    return null;
  }
}

function saveSession(value) {
  session = value;
  if (value) window.sessionStorage.setItem(SESSION_KEY, JSON.stringify(value));
  else window.sessionStorage.removeItem(SESSION_KEY);
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, message, violations = [], code = null) {
    super(message);
    this.status = status;
    this.violations = violations;
    this.code = code;
  }
}

/** Turn an error body into an ApiError. Bodies: {detail: str}, FastAPI's {detail: [..]},
 *  or openvpp's {error, message, violations: [{field, rule, value}]}. */
function toApiError(status, data, text) {
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

async function api(path, { method = "GET", form = null, auth = true } = {}) {
  const headers = { Accept: "application/json" };
  let body;
  if (form) {
    headers["Content-Type"] = "application/x-www-form-urlencoded";
    body = new URLSearchParams(form).toString();
  }
  if (auth && session) headers.Authorization = `Bearer ${session.access_token}`;
  let resp;
  try {
    resp = await fetch(`${API}${path}`, { method, headers, body, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, t("error.network", { msg: err.message }));
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) {
    const err = toApiError(resp.status, data, text);
    if (resp.status === 401 && auth) expireSession();
    throw err;
  }
  return data;
}

// ---------------------------------------------------------------- formatting

function fmt(value, digits = null) {
  const v = Number(value);
  if (!Number.isFinite(v)) return "–";
  const d = digits ?? (Math.abs(v) < 10 ? 2 : 1);
  return new Intl.NumberFormat(locale(), { minimumFractionDigits: d, maximumFractionDigits: d }).format(v);
}

function fmtInt(value) {
  const v = Number(value);
  return Number.isFinite(v) ? new Intl.NumberFormat(locale()).format(Math.round(v)) : "–";
}

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---------------------------------------------------------------- messages

function showError(err) {
  if (err instanceof ApiError && err.status === 401) return; // already back at the login form
  $("error-message").textContent = err.message || String(err);
  const list = $("error-violations");
  list.replaceChildren(...(err.violations || []).map((v) => el("li", null, t("error.violation", {
    field: v.field ?? "?", rule: v.rule ?? "?", value: JSON.stringify(v.value ?? null),
  }))));
  $("error-banner").hidden = false;
}

function clearError() {
  $("error-banner").hidden = true;
}

function showLoginError(message, violations = []) {
  const box = $("login-error");
  const parts = [message, ...violations.map((v) => t("error.violation", {
    field: v.field ?? "?", rule: v.rule ?? "?", value: JSON.stringify(v.value ?? null),
  }))];
  box.textContent = parts.filter(Boolean).join(" · ");
  box.hidden = !box.textContent;
}

// ---------------------------------------------------------------- views

/** Blank the figures, so the next user never sees the previous user's numbers. */
function resetOverview() {
  for (const id of ["kpi-connected", "kpi-adjustable", "kpi-up", "kpi-resources"]) setKpi(id, "", "–");
  for (const box of document.querySelectorAll("#overview-view .targets")) box.replaceChildren();
  for (const id of ["ruleset", "updated-at", "scope-label"]) $(id).textContent = "";
  $("scope-label").dataset.scope = "";
  $("overview-view").dataset.state = "";
}

function showLogin(message = "") {
  stopRefresh();
  disposeCharts();
  resetOverview();
  clearError();
  $("overview-view").hidden = true;
  $("nav").hidden = true;
  $("user-box").hidden = true;
  $("login-view").hidden = false;
  showLoginError(message);
  $("login-username").focus();
}

function expireSession() {
  generation += 1;
  saveSession(null);
  lastData = null;
  showLogin(t("auth.expired"));
}

function logout() {
  generation += 1;
  saveSession(null);
  lastData = null;
  $("login-password").value = "";
  showLogin();
}

function renderUser() {
  if (!session) return;
  $("user-name").textContent = session.username || "";
  $("user-role").textContent = roleLabel(session.role);
  $("user-role").dataset.role = session.role || "";
}

function showOverview() {
  $("login-view").hidden = true;
  $("nav").hidden = false;
  $("user-box").hidden = false;
  $("overview-view").hidden = false;
  renderUser();
  renderScope();
  loadOverview();
  stopRefresh();
  refreshTimer = window.setInterval(() => {
    if (!document.hidden && session) loadOverview();
  }, REFRESH_MS);
}

function stopRefresh() {
  if (refreshTimer !== null) window.clearInterval(refreshTimer);
  refreshTimer = null;
}

async function login(event) {
  event.preventDefault();
  const username = $("login-username").value.trim();
  const password = $("login-password").value;
  if (!username || !password) {
    showLoginError(t("auth.missing"));
    return;
  }
  const button = $("login-submit");
  button.disabled = true;
  button.textContent = t("auth.signing_in");
  showLoginError("");
  try {
    const data = await api("/auth/token", {
      method: "POST", form: { grant_type: "password", username, password }, auth: false,
    });
    generation += 1;
    saveSession({
      access_token: data.access_token,
      token_type: data.token_type,
      role: data.role,
      username: data.username || username,
      operator_id: data.operator_id ?? null,
      owner_id: data.owner_id ?? null,
    });
    $("login-password").value = "";
    showOverview();
  } catch (err) {
    showLoginError(err.message, err.violations || []);
  } finally {
    button.disabled = false;
    button.textContent = t("auth.submit");
  }
}

// ---------------------------------------------------------------- overview

async function loadOverview() {
  const gen = generation;
  const view = $("overview-view");
  view.dataset.state = "loading";
  try {
    const [targets, byType] = await Promise.all([
      api("/reports/targets"),
      api("/resources/summary?by=type"),
    ]);
    if (gen !== generation) return;
    lastData = { targets, byType, at: new Date() };
    clearError();
    renderOverview();
    view.dataset.state = "ready";
  } catch (err) {
    if (gen !== generation) return;
    view.dataset.state = "error";
    showError(err);
  }
}

/** Scope label: the server's own word for the data's scope ("city", "operator OP01", "owner OW1")
 *  when it sent one, else what the role implies. */
function renderScope(serverScope = null) {
  const label = $("scope-label");
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

function setKpi(id, value, formatted) {
  const node = document.querySelector(`#${id} .kpi-value`);
  node.dataset.value = String(value ?? "");
  node.textContent = formatted;
}

function renderTargets(id, value, targets, field) {
  const box = document.querySelector(`#${id} .targets`);
  const rows = [...(targets || [])].filter((tg) => Number(tg[field]) > 0).sort((a, b) => a.year - b.year);
  if (!rows.length) {
    box.replaceChildren(el("div", "muted", t("kpi.no_targets")));
    return;
  }
  box.replaceChildren(...rows.flatMap((tg) => {
    const target = Number(tg[field]);
    const pct = (100 * Number(value || 0)) / target;
    const row = el("div", "target-row");
    row.dataset.year = String(tg.year);
    const bar = el("div", "bar");
    const fill = el("div", "bar-fill");
    fill.style.width = `${Math.max(0, Math.min(100, pct))}%`;
    bar.append(fill);
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", String(target));
    bar.setAttribute("aria-valuenow", String(value ?? 0));
    row.append(el("span", "target-label", t("kpi.target", { year: tg.year })), bar,
      el("span", "target-pct", `${fmt(pct, 1)}%`));
    const detail = el("div", "target-detail", t("kpi.target_of", { value: fmt(value), target: fmtInt(target) }));
    row.append(detail);
    return [row];
  }));
}

function renderOverview() {
  if (!lastData) return;
  const { targets, byType, at } = lastData;
  const city = targets.city || {};
  renderScope(targets.scope ?? byType.scope ?? null);
  $("ruleset").textContent = targets.ruleset ? t("overview.ruleset", { v: targets.ruleset }) : "";
  $("updated-at").textContent = t("overview.updated", {
    t: at.toLocaleString(locale(), { timeZone: "Asia/Shanghai", hour12: false }),
  });
  setKpi("kpi-connected", city.connected_mw, fmt(city.connected_mw));
  setKpi("kpi-adjustable", city.adjustable_mw, fmt(city.adjustable_mw));
  setKpi("kpi-up", city.adjustable_up_mw, fmt(city.adjustable_up_mw));
  setKpi("kpi-resources", city.resources, fmtInt(city.resources));
  renderTargets("kpi-connected", city.connected_mw, targets.targets, "connected_mw");
  renderTargets("kpi-adjustable", city.adjustable_mw, targets.targets, "adjustable_mw");
  drawDistrictChart(targets.by_district || []);
  drawTypeChart(byType.rows || []);
}

// ---------------------------------------------------------------- charts

function chart(id) {
  if (!window.echarts) throw new Error("ECharts is not loaded: run bash scripts/build_web.sh");
  if (!charts[id]) charts[id] = window.echarts.init($(id), null, { renderer: "canvas" });
  return charts[id];
}

function disposeCharts() {
  for (const [id, instance] of Object.entries(charts)) {
    instance.dispose();
    delete charts[id];
  }
}

function baseOption(empty) {
  return {
    backgroundColor: "transparent",
    textStyle: { color: COLORS.text, fontFamily: getComputedStyle(document.body).fontFamily },
    animationDuration: 400,
    title: empty ? {
      text: t("chart.empty"), left: "center", top: "middle",
      textStyle: { color: COLORS.muted, fontSize: 16, fontWeight: "normal" },
    } : { show: false },
    legend: { top: 0, textStyle: { color: COLORS.muted } },
    tooltip: {
      backgroundColor: "#0c1528", borderColor: COLORS.grid, textStyle: { color: COLORS.text },
    },
  };
}

function axisStyle() {
  return {
    axisLine: { lineStyle: { color: COLORS.grid } },
    axisLabel: { color: COLORS.muted },
    splitLine: { lineStyle: { color: COLORS.grid, type: "dashed" } },
    nameTextStyle: { color: COLORS.muted },
  };
}

function tooltipLines(title, lines) {
  return [`<b>${escapeHtml(title)}</b>`, ...lines.map(([marker, name, value]) =>
    `${marker || ""}${escapeHtml(name)}: <b>${escapeHtml(value)}</b>`)].join("<br>");
}

function drawDistrictChart(rows) {
  const sorted = [...rows].sort((a, b) => b.connected_mw - a.connected_mw);
  const names = sorted.map(districtName);
  const option = {
    ...baseOption(sorted.length === 0),
    grid: { left: 56, right: 16, top: 40, bottom: 64 },
    tooltip: {
      ...baseOption(false).tooltip,
      trigger: "axis",
      axisPointer: { type: "shadow" },
      formatter: (params) => {
        const row = sorted[params[0].dataIndex];
        return tooltipLines(names[params[0].dataIndex], [
          ...params.map((p) => [p.marker, p.seriesName, `${fmt(p.value)} ${t("unit.mw")}`]),
          ["", t("chart.district.resources"), fmtInt(row.resources)],
        ]);
      },
    },
    xAxis: {
      type: "category", data: names, ...axisStyle(),
      axisLabel: { color: COLORS.text, interval: 0, rotate: names.length > 8 && getLang() === "en" ? 30 : 0 },
      splitLine: { show: false },
    },
    yAxis: { type: "value", name: t("unit.mw"), ...axisStyle() },
    series: [
      {
        name: t("chart.district.connected"), type: "bar", barMaxWidth: 26,
        data: sorted.map((r) => r.connected_mw), itemStyle: { color: COLORS.connected, borderRadius: [3, 3, 0, 0] },
      },
      {
        name: t("chart.district.adjustable"), type: "bar", barMaxWidth: 26,
        data: sorted.map((r) => r.adjustable_mw), itemStyle: { color: COLORS.adjustable, borderRadius: [3, 3, 0, 0] },
      },
    ],
  };
  chart("chart-district").setOption(option, { notMerge: true });
}

function drawTypeChart(rows) {
  // ascending, so the biggest type is at the top of a horizontal bar chart
  const sorted = [...rows].sort((a, b) => a.connected_kw - b.connected_kw);
  const names = sorted.map((r) => typeLabel(r.key, r.label || r.key));
  const option = {
    ...baseOption(sorted.length === 0),
    grid: { left: 8, right: 24, top: 56, bottom: 28, containLabel: true },
    tooltip: {
      ...baseOption(false).tooltip,
      trigger: "axis",
      axisPointer: { type: "shadow" },
      formatter: (params) => {
        const row = sorted[params[0].dataIndex];
        return tooltipLines(names[params[0].dataIndex], [
          [params[0].marker, t("chart.type.connected"), `${fmt(row.connected_kw / 1000)} ${t("unit.mw")}`],
          ["", t("chart.type.adjustable"), `${fmt((row.adjustable_down_kw || 0) / 1000)} ${t("unit.mw")}`],
          [params[1]?.marker, t("chart.type.count"), fmtInt(row.resources)],
        ]);
      },
    },
    yAxis: {
      type: "category", data: names, ...axisStyle(),
      axisLabel: { color: COLORS.text }, splitLine: { show: false },
    },
    xAxis: [
      { type: "value", position: "bottom", ...axisStyle() },
      { type: "value", position: "top", ...axisStyle(), splitLine: { show: false } },
    ],
    series: [
      {
        name: t("chart.type.connected"), type: "bar", xAxisIndex: 0, barMaxWidth: 14,
        data: sorted.map((r) => r.connected_kw / 1000), itemStyle: { color: COLORS.connected, borderRadius: [0, 3, 3, 0] },
      },
      {
        name: t("chart.type.count"), type: "bar", xAxisIndex: 1, barMaxWidth: 14,
        data: sorted.map((r) => r.resources), itemStyle: { color: COLORS.count, borderRadius: [0, 3, 3, 0] },
      },
    ],
  };
  chart("chart-type").setOption(option, { notMerge: true });
}

// ---------------------------------------------------------------- wiring

function start() {
  document.documentElement.lang = locale();
  applyI18n(document);
  $("lang-toggle").addEventListener("click", () => setLang(getLang() === "en" ? "zh" : "en"));
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("refresh").addEventListener("click", () => loadOverview());
  $("error-close").addEventListener("click", clearError);
  window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));
  onLangChange(() => {
    renderUser();
    renderScope(lastData?.targets?.scope ?? null);
    try {
      renderOverview();
    } catch (err) {
      showError(err);
    }
  });
  if (session) showOverview();
  else showLogin();
}

start();
