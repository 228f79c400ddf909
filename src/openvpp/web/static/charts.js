// ECharts helpers shared by the pages: one instance per container, the control-room theme.
// ECharts is loaded before the modules from static/vendor/ (see scripts/build_web.sh).

import { escapeHtml } from "./core.js";

export const COLORS = {
  connected: "#1fd1a5",
  adjustable: "#3da5ff",
  up: "#b18cff",
  count: "#ffc83d",
  live: "#ff9f43",
  text: "#e6edf7",
  muted: "#8394b3",
  grid: "#1d2d4d",
  ok: "#1fd1a5",
  warm: "#d6d64a",
  near: "#ff9f43",
  over: "#ff5d6c",
};

const charts = {}; // element id -> echarts instance

let loading = null;

/** Load ECharts (1 MB) on first use: pages without charts never pay for it. Pages that draw ask
 *  for it when they start fetching their data, so both go on at once. Resolves to window.echarts. */
export function loadCharts() {
  if (window.echarts) return Promise.resolve(window.echarts);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const tag = document.createElement("script");
      tag.id = "echarts-js";
      tag.src = "static/vendor/echarts.min.js";
      tag.async = true;
      tag.addEventListener("load", () => (window.echarts ? resolve(window.echarts)
        : reject(new Error("ECharts did not start: run bash scripts/build_web.sh"))));
      tag.addEventListener("error", () => {
        loading = null;
        tag.remove();
        reject(new Error("ECharts could not be loaded: run bash scripts/build_web.sh"));
      });
      document.head.append(tag);
    });
  }
  return loading;
}

export function chart(id) {
  if (!window.echarts) throw new Error("ECharts is not loaded: run bash scripts/build_web.sh");
  const node = document.getElementById(id);
  if (charts[id] && charts[id].getDom() !== node) {
    charts[id].dispose();
    delete charts[id];
  }
  if (!charts[id]) charts[id] = window.echarts.init(node, null, { renderer: "canvas" });
  return charts[id];
}

export function disposeCharts(prefix = "") {
  for (const [id, instance] of Object.entries(charts)) {
    if (!id.startsWith(prefix)) continue;
    instance.dispose();
    delete charts[id];
  }
}

/** Resize the charts whose container is visible (after a page is shown or the window resized). */
export function resizeCharts() {
  for (const instance of Object.values(charts)) {
    if (instance.getDom().offsetParent !== null) instance.resize();
  }
}

export function baseOption(empty, emptyText) {
  return {
    backgroundColor: "transparent",
    textStyle: { color: COLORS.text, fontFamily: getComputedStyle(document.body).fontFamily },
    animationDuration: 400,
    title: empty ? {
      text: emptyText, left: "center", top: "middle",
      textStyle: { color: COLORS.muted, fontSize: 16, fontWeight: "normal" },
    } : { show: false },
    legend: { top: 0, textStyle: { color: COLORS.muted } },
    tooltip: {
      backgroundColor: "#0c1528", borderColor: COLORS.grid, textStyle: { color: COLORS.text },
    },
  };
}

export function axisStyle() {
  return {
    axisLine: { lineStyle: { color: COLORS.grid } },
    axisLabel: { color: COLORS.muted },
    splitLine: { lineStyle: { color: COLORS.grid, type: "dashed" } },
    nameTextStyle: { color: COLORS.muted },
  };
}

export function tooltipLines(title, lines) {
  return [`<b>${escapeHtml(title)}</b>`, ...lines.map(([marker, name, value]) =>
    `${marker || ""}${escapeHtml(name)}: <b>${escapeHtml(value)}</b>`)].join("<br>");
}
