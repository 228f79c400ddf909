// Labels of the dashboard in English and Chinese. Every visible word goes through t().
// Elements carry data-i18n="key" (text), data-i18n-placeholder, data-i18n-title or
// data-i18n-aria-label; applyI18n() fills them. The choice is kept in localStorage.

const STORAGE_KEY = "openvpp.lang";

export const LANGS = ["en", "zh"];

const MESSAGES = {
  en: {
    "app.title": "Guangzhou City Virtual Power Plant",
    "app.short": "City VPP",
    "app.subtitle": "Management center",
    "lang.switch": "中文",
    "lang.switch.title": "切换到中文",

    "nav.overview": "City overview",
    "nav.grid": "Grid",
    "nav.resources": "Resources",
    "nav.operators": "Operators",
    "nav.events": "Events",
    "nav.settlement": "Settlement",
    "nav.ev": "EV / V2G",
    "nav.soon": "Coming soon",

    "auth.title": "Sign in",
    "auth.hint": "Use the account issued by the management center or your operator.",
    "auth.username": "Username",
    "auth.password": "Password",
    "auth.submit": "Sign in",
    "auth.signing_in": "Signing in…",
    "auth.logout": "Log out",
    "auth.expired": "Your session has ended. Please sign in again.",
    "auth.missing": "Enter a username and a password.",

    "role.city_admin": "City administrator",
    "role.dispatcher": "City dispatcher",
    "role.operator_admin": "Operator administrator",
    "role.operator_engineer": "Operator engineer",
    "role.owner": "Resource owner",
    "role.auditor": "Auditor",
    "role.device": "Device",

    "scope.city": "Scope: whole city",
    "scope.operator": "Scope: operator {id} only",
    "scope.owner": "Scope: owner {id} only",
    "scope.unknown": "Scope: as granted to your account",

    "overview.title": "City overview",
    "overview.ruleset": "Rule set {v}",
    "overview.updated": "Updated {t} (Beijing time)",
    "overview.refresh": "Refresh",
    "overview.loading": "Loading…",

    "kpi.connected": "Connected capacity",
    "kpi.adjustable": "Adjustable capability",
    "kpi.adjustable_up": "Upward adjustable",
    "kpi.resources": "Resources",
    "kpi.resources.unit": "",
    "kpi.mw": "MW",
    "kpi.target": "{year} target",
    "kpi.target_of": "{value} of {target} MW",
    "kpi.up_hint": "Load that can be added on request (valley filling)",
    "kpi.resources_hint": "Active resources counted in the figures",
    "kpi.no_targets": "No targets in the rule set",

    "chart.district.title": "By district",
    "chart.district.connected": "Connected (MW)",
    "chart.district.adjustable": "Adjustable (MW)",
    "chart.district.resources": "Resources",
    "chart.type.title": "By resource type",
    "chart.type.connected": "Connected (MW)",
    "chart.type.count": "Resources (count)",
    "chart.type.adjustable": "Adjustable down (MW)",
    "chart.empty": "No data",
    "unit.mw": "MW",

    "type.ev_charging": "EV charging station",
    "type.ev_swapping": "Battery swapping station",
    "type.v2g_charger": "V2G charger",
    "type.central_ac": "Central air conditioning",
    "type.district_cooling": "District cooling",
    "type.user_storage": "User-side storage",
    "type.shore_power": "Port shore power",
    "type.distributed_pv": "Distributed PV",
    "type.data_center": "Data center",
    "type.base_station": "Telecom base station",

    "error.title": "Error",
    "error.network": "Cannot reach the server: {msg}",
    "error.http": "The server answered {status}",
    "error.violation": "{field}: {rule} (value: {value})",
    "error.close": "Close",
  },
  zh: {
    "app.title": "广州市虚拟电厂",
    "app.short": "城市虚拟电厂",
    "app.subtitle": "管理中心",
    "lang.switch": "English",
    "lang.switch.title": "Switch to English",

    "nav.overview": "城市总览",
    "nav.grid": "电网",
    "nav.resources": "资源",
    "nav.operators": "运营商",
    "nav.events": "事件",
    "nav.settlement": "结算",
    "nav.ev": "电动汽车 / V2G",
    "nav.soon": "即将推出",

    "auth.title": "登录",
    "auth.hint": "请使用管理中心或运营商分配的账号。",
    "auth.username": "用户名",
    "auth.password": "密码",
    "auth.submit": "登录",
    "auth.signing_in": "正在登录…",
    "auth.logout": "退出登录",
    "auth.expired": "登录已失效，请重新登录。",
    "auth.missing": "请输入用户名和密码。",

    "role.city_admin": "市级管理员",
    "role.dispatcher": "市级调度员",
    "role.operator_admin": "运营商管理员",
    "role.operator_engineer": "运营商工程师",
    "role.owner": "资源业主",
    "role.auditor": "审计员",
    "role.device": "设备",

    "scope.city": "数据范围：全市",
    "scope.operator": "数据范围：仅运营商 {id}",
    "scope.owner": "数据范围：仅业主 {id}",
    "scope.unknown": "数据范围：按账号授权",

    "overview.title": "城市总览",
    "overview.ruleset": "规则版本 {v}",
    "overview.updated": "更新于 {t}（北京时间）",
    "overview.refresh": "刷新",
    "overview.loading": "加载中…",

    "kpi.connected": "接入容量",
    "kpi.adjustable": "可调节能力",
    "kpi.adjustable_up": "向上可调能力",
    "kpi.resources": "资源数量",
    "kpi.resources.unit": "个",
    "kpi.mw": "兆瓦",
    "kpi.target": "{year}年目标",
    "kpi.target_of": "{value} / {target} 兆瓦",
    "kpi.up_hint": "可按需增加的负荷（填谷）",
    "kpi.resources_hint": "计入统计的在运资源",
    "kpi.no_targets": "规则集中没有目标",

    "chart.district.title": "分区统计",
    "chart.district.connected": "接入容量（兆瓦）",
    "chart.district.adjustable": "可调节能力（兆瓦）",
    "chart.district.resources": "资源数量",
    "chart.type.title": "按资源类型",
    "chart.type.connected": "接入容量（兆瓦）",
    "chart.type.count": "资源数量（个）",
    "chart.type.adjustable": "向下可调（兆瓦）",
    "chart.empty": "暂无数据",
    "unit.mw": "兆瓦",

    "type.ev_charging": "充电站",
    "type.ev_swapping": "换电站",
    "type.v2g_charger": "V2G充电桩",
    "type.central_ac": "中央空调",
    "type.district_cooling": "区域供冷",
    "type.user_storage": "用户侧储能",
    "type.shore_power": "港口岸电",
    "type.distributed_pv": "分布式光伏",
    "type.data_center": "数据中心",
    "type.base_station": "通信基站",

    "error.title": "错误",
    "error.network": "无法连接服务器：{msg}",
    "error.http": "服务器返回 {status}",
    "error.violation": "{field}：{rule}（值：{value}）",
    "error.close": "关闭",
  },
};

function initialLang() {
  let saved = null;
  try {
    saved = window.localStorage.getItem(STORAGE_KEY);
  } catch {
    saved = null; // storage disabled: fall back to the browser language
  }
  if (LANGS.includes(saved)) return saved;
  const nav = (navigator.language || "en").toLowerCase();
  return nav.startsWith("zh") ? "zh" : "en";
}

let current = initialLang();
const listeners = [];

export function getLang() {
  return current;
}

/** BCP 47 tag of the current language, for Intl and <html lang>. */
export function locale() {
  return current === "zh" ? "zh-CN" : "en-US";
}

export function setLang(lang) {
  if (!LANGS.includes(lang)) return;
  current = lang;
  try {
    window.localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // not remembered, still switched
  }
  document.documentElement.lang = locale();
  applyI18n(document);
  for (const fn of listeners) fn(lang);
}

/** Call fn(lang) after each language switch (charts redraw their labels). */
export function onLangChange(fn) {
  listeners.push(fn);
}

/** Translate key, filling {name} placeholders from vars. Unknown keys fall back to English, then the key. */
export function t(key, vars = {}) {
  const table = MESSAGES[current] || MESSAGES.en;
  let text = table[key] ?? MESSAGES.en[key] ?? key;
  for (const [name, value] of Object.entries(vars)) {
    text = text.split(`{${name}}`).join(String(value));
  }
  return text;
}

/** Label of a resource type code (ev_charging, central_ac, ...); unknown codes show `fallback`. */
export function typeLabel(code, fallback = code) {
  const key = `type.${code}`;
  return key in MESSAGES.en ? t(key) : String(fallback);
}

export function roleLabel(code) {
  const key = `role.${code}`;
  return key in MESSAGES.en ? t(key) : String(code);
}

/** Name of a district row from the API ({name, name_zh, node_id}) in the current language. */
export function districtName(row) {
  if (current === "zh" && row.name_zh) return row.name_zh;
  return row.name || row.name_zh || row.node_id || "?";
}

export function applyI18n(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  }
  document.title = `${t("app.short")} · ${t("overview.title")}`;
}
