// Charts: ECharts (vendored, global `echarts`) for bars and trends, and the state
// timeline as plain elements (one track per device, one block per interval), which
// reads at any size and needs no chart type beyond the common bundle.
//
// A page re-renders on every refresh; a chart keeps its ECharts instance across
// renders (keyed by id) and gets the new option, so a refresh does not flash.

import { clock, duration, offset } from "./format.js";
import { h } from "./dom.js";

export const STATE_COLOURS = {
  RUNNING: "#22c55e",
  IDLE: "#facc15",
  SETUP: "#38bdf8",
  UNPLANNED_STOP: "#ef4444",
  PLANNED_STOP: "#a78bfa",
  OFFLINE: "#64748b",
};
export const STATE_LABELS = {
  RUNNING: "运行 Running",
  IDLE: "待机 Idle",
  SETUP: "换型调整 Setup",
  UNPLANNED_STOP: "故障停机 Unplanned stop",
  PLANNED_STOP: "计划停机 Planned stop",
  OFFLINE: "离线 Offline",
};

const TEXT = "#e5e7eb";
const GRID = "#334155";
const charts = new Map();

function echartsLib() {
  return window.echarts || null;
}

/** Dispose of the charts a render did not use again. */
export function sweepCharts(used) {
  for (const [id, entry] of charts) {
    if (!used.has(id)) {
      entry.chart.dispose();
      charts.delete(id);
    }
  }
}

/** The element of chart `id`, drawn with `option` (its instance is kept). */
export function chartBox(id, option, { height = 260, used } = {}) {
  used?.add(id);
  const lib = echartsLib();
  let entry = charts.get(id);
  if (!entry) {
    const el = h("div", { class: "chart", data: { chart: id }, style: `height:${height}px` });
    if (!lib) {
      el.append("图表库未加载 chart library not loaded");
      return el;
    }
    const chart = lib.init(el, null, { renderer: "canvas" });
    entry = { el, chart };
    charts.set(id, entry);
  }
  entry.chart.setOption(option, { notMerge: true });
  requestAnimationFrame(() => entry.chart.resize());
  return entry.el;
}

window.addEventListener("resize", () => {
  for (const entry of charts.values()) entry.chart.resize();
});

function axisStyle() {
  return {
    axisLabel: { color: TEXT, fontSize: 14 },
    axisLine: { lineStyle: { color: GRID } },
    splitLine: { lineStyle: { color: GRID } },
  };
}

/** Horizontal bars of rates (0..1), one per group, best at the top. */
export function rateBars(rows, { name, colour = "#22c55e", target = null }) {
  const sorted = [...rows].sort((a, b) => (a.value ?? -1) - (b.value ?? -1));
  return {
    animation: false,
    grid: { left: 8, right: 60, top: 10, bottom: 10, containLabel: true },
    tooltip: { trigger: "axis", valueFormatter: (v) => (v == null ? "—" : `${(v * 100).toFixed(1)}%`) },
    xAxis: { type: "value", min: 0, max: 1, ...axisStyle(),
      axisLabel: { color: TEXT, fontSize: 13, formatter: (v) => `${Math.round(v * 100)}%` } },
    yAxis: { type: "category", data: sorted.map((r) => r.label), ...axisStyle() },
    series: [{
      name, type: "bar", data: sorted.map((r) => r.value), itemStyle: { color: colour },
      label: { show: true, position: "right", color: TEXT, fontSize: 14,
        formatter: (p) => (p.value == null ? "—" : `${(p.value * 100).toFixed(1)}%`) },
      markLine: target == null ? undefined : {
        symbol: "none", lineStyle: { color: "#f97316", type: "dashed", width: 2 },
        label: { color: "#f97316", formatter: `目标 target ${Math.round(target * 100)}%` },
        data: [{ xAxis: target }],
      },
    }],
  };
}

/** Lines of rates (0..1) over days: [{name, points: [[day, value]], colour}]. */
export function trendLines(series) {
  return {
    animation: false,
    grid: { left: 8, right: 24, top: 36, bottom: 8, containLabel: true },
    legend: { textStyle: { color: TEXT, fontSize: 14 }, top: 0 },
    tooltip: { trigger: "axis", valueFormatter: (v) => (v == null ? "—" : `${(v * 100).toFixed(1)}%`) },
    xAxis: { type: "category", data: series[0]?.points.map((p) => p[0].slice(5)) ?? [], ...axisStyle() },
    yAxis: { type: "value", min: 0, max: 1, ...axisStyle(),
      axisLabel: { color: TEXT, fontSize: 13, formatter: (v) => `${Math.round(v * 100)}%` } },
    series: series.map((s) => ({
      name: s.name, type: "line", connectNulls: false, symbolSize: 6,
      lineStyle: { width: 3, color: s.colour }, itemStyle: { color: s.colour },
      data: s.points.map((p) => p[1]),
    })),
  };
}

/** Stacked bars of counts per hour: hours = ["08:00", ...], stacks = [{name, values}]. */
export function countBars(hours, stacks) {
  const palette = ["#22c55e", "#38bdf8", "#facc15", "#a78bfa", "#f472b6", "#fb923c", "#2dd4bf"];
  return {
    animation: false,
    grid: { left: 8, right: 16, top: 36, bottom: 8, containLabel: true },
    legend: { textStyle: { color: TEXT, fontSize: 13 }, top: 0, type: "scroll",
      pageTextStyle: { color: TEXT } },
    tooltip: { trigger: "axis" },
    xAxis: { type: "category", data: hours, ...axisStyle() },
    yAxis: { type: "value", minInterval: 1, ...axisStyle() },
    series: stacks.map((s, i) => ({
      name: s.name, type: "bar", stack: s.stack || "good", data: s.values,
      itemStyle: { color: s.colour || palette[i % palette.length] },
    })),
  };
}

// -- state timeline ---------------------------------------------------------------------

function hourTicks(start, end, zone) {
  const span = end - start;
  const step = span > 16 * 3600e3 ? 2 * 3600e3 : 3600e3;
  const off = offsetMinutes(zone, start) * 60e3;
  let t = Math.ceil((start + off) / step) * step - off;
  const ticks = [];
  for (; t <= end; t += step) ticks.push(t);
  return ticks;
}

function offsetMinutes(zone, at) {
  const [hh, mm] = offset(zone, new Date(at)).split(":");
  const sign = hh.startsWith("-") ? -1 : 1;
  return sign * (Math.abs(Number(hh)) * 60 + Number(mm));
}

/**
 * Timeline rows: [{device, name, intervals: [{start, end, state, state_label}]}] over
 * [start, end) in `zone`; each block carries data-state (and a tooltip with its times).
 */
export function stateTimeline(rows, { start, end, zone }) {
  const t0 = Date.parse(start);
  const t1 = Date.parse(end);
  const span = Math.max(1, t1 - t0);
  const pos = (t) => `${(((t - t0) / span) * 100).toFixed(3)}%`;
  const ticks = hourTicks(t0, t1, zone);
  const axis = h("div", { class: "tl-axis" },
    ticks.map((t) => h("span", { style: `left:${pos(t)}` }, clock(new Date(t), zone))));
  const body = rows.map((row) =>
    h("div", { class: "tl-row", data: { device: row.device } },
      h("div", { class: "tl-name" }, h("b", {}, row.device), h("small", {}, row.name || "")),
      h("div", { class: "tl-track" },
        row.intervals.map((iv) => {
          const a = Math.max(t0, Date.parse(iv.start));
          const b = Math.min(t1, Date.parse(iv.end));
          if (b <= a) return null;
          const text = `${iv.state_label || STATE_LABELS[iv.state] || iv.state}`
            + ` ${clock(iv.start, zone)}–${clock(iv.end, zone)} (${duration((b - a) / 1000)})`;
          return h("i", {
            class: "tl-block", title: text,
            data: { state: iv.state },
            style: `left:${pos(a)};width:${(((b - a) / span) * 100).toFixed(3)}%;`
              + `background:${STATE_COLOURS[iv.state] || "#475569"}`,
          });
        }))));
  const legend = h("div", { class: "tl-legend" },
    Object.entries(STATE_LABELS).map(([state, text]) =>
      h("span", {}, h("i", { style: `background:${STATE_COLOURS[state]}` }), text)));
  return h("div", { class: "timeline" }, legend, h("div", { class: "tl-rows" }, body),
    h("div", { class: "tl-axis-row" }, h("div", { class: "tl-name" }), axis));
}
