// City VPP dashboard: login, role-based navigation and hash routing over the pages
// (overview, grid drill-down, resource database, operators, pools). Vanilla ES modules;
// ECharts is loaded before them from static/vendor/ (see scripts/build_web.sh).

import { disposeCharts, resizeCharts } from "./charts.js";
import { $, api, auth, can, clearError, saveSession, showError } from "./core.js";
import { closeDrawer, drawerRelabel, initDrawer } from "./drawer.js";
import { getLang, locale, onLangChange, roleLabel, setLang, setTitle, t, applyI18n } from "./i18n.js";
import { navigate, onRoute, parseHash } from "./router.js";

/** Page modules, fetched when a page is first shown (a first view loads only its own page). */
const PAGE_MODULES = {
  overview: () => import("./pages/overview.js"),
  grid: () => import("./pages/grid.js"),
  resources: () => import("./pages/resources.js"),
  operators: () => import("./pages/operators.js"),
  pools: () => import("./pages/pools.js"),
  events: () => import("./pages/events.js"),
  settlement: () => import("./pages/settlement.js"),
  ev: () => import("./pages/ev.js"),
};
const PAGES = {}; // name → the loaded page ({enter, leave, reset, relabel, refresh, title})

/** Who sees which page (DESIGN.md "Who uses it"); the API fences the data again. */
const ACCESS = {
  overview: () => true,
  grid: () => true,
  resources: () => true,
  operators: () => true,
  pools: () => can("pools"),
  events: () => can("events"),
  settlement: () => true,
  ev: () => true,
};

let currentPage = null;
let routeSeq = 0;

async function pageModule(name) {
  if (!PAGES[name]) PAGES[name] = (await PAGE_MODULES[name]()).default;
  return PAGES[name];
}

// ---------------------------------------------------------------- session

function showLoginError(message, violations = []) {
  const box = $("login-error");
  const parts = [message, ...violations.map((v) => t("error.violation", {
    field: v.field ?? "?", rule: v.rule ?? "?", value: JSON.stringify(v.value ?? null),
  }))];
  box.textContent = parts.filter(Boolean).join(" · ");
  box.hidden = !box.textContent;
}

function hidePages() {
  for (const section of document.querySelectorAll("main > .page")) section.hidden = true;
}

/** Back to the login form; every page forgets its data, so the next user never sees the last one's. */
function showLogin(message = "") {
  if (currentPage) PAGES[currentPage].leave();
  currentPage = null;
  for (const page of Object.values(PAGES)) page.reset();
  closeDrawer({ silent: true });
  disposeCharts();
  clearError();
  hidePages();
  $("nav").hidden = true;
  $("user-box").hidden = true;
  $("login-view").hidden = false;
  setTitle("auth.title");
  showLoginError(message);
  $("login-username").focus();
}

function expireSession() {
  saveSession(null);
  showLogin(t("auth.expired"));
}

function logout() {
  saveSession(null);
  $("login-password").value = "";
  showLogin();
}

function renderUser() {
  const session = auth.session;
  if (!session) return;
  $("user-name").textContent = session.username || "";
  $("user-role").textContent = roleLabel(session.role);
  $("user-role").dataset.role = session.role || "";
}

function renderNav() {
  for (const item of document.querySelectorAll("#nav .nav-item")) {
    const page = item.dataset.page;
    if (page in ACCESS) item.hidden = !ACCESS[page]();
  }
}

function enterApp() {
  $("login-view").hidden = true;
  $("nav").hidden = false;
  $("user-box").hidden = false;
  renderUser();
  renderNav();
  route();
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
      method: "POST", form: { grant_type: "password", username, password }, useAuth: false,
    });
    saveSession({
      access_token: data.access_token,
      token_type: data.token_type,
      role: data.role,
      username: data.username || username,
      operator_id: data.operator_id ?? null,
      owner_id: data.owner_id ?? null,
    });
    $("login-password").value = "";
    enterApp();
  } catch (err) {
    showLoginError(err.message, err.violations || []);
  } finally {
    button.disabled = false;
    button.textContent = t("auth.submit");
  }
}

// ---------------------------------------------------------------- routing

async function route() {
  const seq = ++routeSeq;
  if (!auth.session) {
    if ($("login-view").hidden) showLogin();
    return;
  }
  const r = parseHash();
  const page = r.page in PAGE_MODULES ? r.page : "overview";
  const allowed = ACCESS[page]();
  let mod = null;
  if (allowed) {
    try {
      mod = await pageModule(page);
    } catch (err) {
      showError(err);
      return;
    }
    if (seq !== routeSeq || !auth.session) return;
  }
  if (currentPage && currentPage !== page) {
    PAGES[currentPage].leave();
    closeDrawer({ silent: true });
  }
  clearError();
  hidePages();
  for (const item of document.querySelectorAll("#nav .nav-item")) {
    const on = item.dataset.page === page;
    item.classList.toggle("active", on);
    if (on) item.setAttribute("aria-current", "page");
    else item.removeAttribute("aria-current");
  }
  if (!allowed) {
    currentPage = null;
    $("denied-message").textContent = t("denied.page", { page: t(`nav.${page}`), role: roleLabel(auth.session.role) });
    $("denied-view").hidden = false;
    setTitle(`nav.${page}`);
    return;
  }
  currentPage = page;
  $(`${page}-view`).hidden = false;
  setTitle(mod.title);
  mod.enter(r);
  window.requestAnimationFrame(resizeCharts);
}

// ---------------------------------------------------------------- wiring

function start() {
  document.documentElement.lang = locale();
  applyI18n(document);
  initDrawer();
  onRoute(route);
  $("lang-toggle").addEventListener("click", () => setLang(getLang() === "en" ? "zh" : "en"));
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("error-close").addEventListener("click", clearError);
  for (const button of document.querySelectorAll("[data-refresh]")) {
    button.addEventListener("click", () => currentPage && PAGES[currentPage].refresh());
  }
  for (const item of document.querySelectorAll("#nav .nav-item")) {
    item.addEventListener("click", () => {
      if (!item.disabled) navigate(item.dataset.page);
    });
  }
  window.addEventListener("hashchange", route);
  window.addEventListener("resize", resizeCharts);
  auth.onExpired = expireSession;
  onLangChange(() => {
    renderUser();
    if (currentPage) {
      setTitle(PAGES[currentPage].title);
      PAGES[currentPage].relabel();
    }
    drawerRelabel();
  });
  if (auth.session) enterApp();
  else showLogin();
}

start();
