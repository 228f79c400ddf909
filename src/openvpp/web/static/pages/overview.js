// City overview: KPIs against the 2025–2027 targets, charts by district and by resource type.

import { COLORS, axisStyle, baseOption, chart, loadCharts, tooltipLines } from "../charts.js";
import {
  $, api, auth, clearError, fmt, fmtInt, h, renderScope, showError,
} from "../core.js";
import { districtName, getLang, locale, t, typeLabel } from "../i18n.js";

const REFRESH_MS = 60_000;
const KPIS = ["kpi-connected", "kpi-adjustable", "kpi-up", "kpi-resources"];

let lastData = null; // {targets, byType, at}
let refreshTimer = null;

function view() {
  return $("overview-view");
}

/** Blank the figures, so the next user never sees the previous user's numbers. */
function reset() {
  stop();
  lastData = null;
  for (const id of KPIS) setKpi(id, "", "–");
  for (const box of view().querySelectorAll(".targets")) box.replaceChildren();
  for (const id of ["ruleset", "updated-at", "scope-label"]) $(id).textContent = "";
  $("scope-label").dataset.scope = "";
  view().dataset.state = "";
}

function stop() {
  if (refreshTimer !== null) window.clearInterval(refreshTimer);
  refreshTimer = null;
}

function enter() {
  renderScope(lastData?.targets?.scope ?? null);
  load();
  stop();
  refreshTimer = window.setInterval(() => {
    if (!document.hidden && auth.session) load();
  }, REFRESH_MS);
}

async function load() {
  const gen = auth.generation;
  view().dataset.state = "loading";
  view().dataset.route = "";
  try {
    const [targets] = await Promise.all([api("/reports/targets"), loadCharts()]);
    // the report carries the figures by type; older servers without them are asked separately
    const byType = Array.isArray(targets.by_type)
      ? {
        scope: targets.scope,
        rows: targets.by_type.map((r) => ({
          key: r.resource_type, label: r.resource_type, resources: r.resources, connected_kw: 1000 * r.connected_mw,
          adjustable_down_kw: 1000 * r.adjustable_mw, adjustable_up_kw: 1000 * r.adjustable_up_mw,
        })),
      }
      : await api("/resources/summary?by=type");
    if (gen !== auth.generation) return;
    lastData = { targets, byType, at: new Date() };
    clearError();
    render();
    view().dataset.state = "ready";
    view().dataset.route = window.location.hash;
  } catch (err) {
    if (gen !== auth.generation) return;
    view().dataset.state = "error";
    showError(err);
  }
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
    box.replaceChildren(h("div", { class: "muted", text: t("kpi.no_targets") }));
    return;
  }
  box.replaceChildren(...rows.map((tg) => {
    const target = Number(tg[field]);
    const pct = (100 * Number(value || 0)) / target;
    const fill = h("div", { class: "bar-fill" });
    fill.style.width = `${Math.max(0, Math.min(100, pct))}%`;
    const bar = h("div", {
      class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": String(target),
      "aria-valuenow": String(value ?? 0),
    }, fill);
    return h("div", { class: "target-row", dataset: { year: String(tg.year) } },
      h("span", { class: "target-label", text: t("kpi.target", { year: tg.year }) }), bar,
      h("span", { class: "target-pct", text: `${fmt(pct, 1)}%` }),
      h("div", { class: "target-detail", text: t("kpi.target_of", { value: fmt(value), target: fmtInt(target) }) }));
  }));
}

function render() {
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

function drawDistrictChart(rows) {
  const sorted = [...rows].sort((a, b) => b.connected_mw - a.connected_mw);
  const names = sorted.map(districtName);
  const option = {
    ...baseOption(sorted.length === 0, t("chart.empty")),
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
    ...baseOption(sorted.length === 0, t("chart.empty")),
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

export default {
  id: "overview",
  title: "overview.title",
  enter,
  leave: stop,
  reset,
  relabel() {
    renderScope(lastData?.targets?.scope ?? null);
    render();
  },
  refresh: load,
};
