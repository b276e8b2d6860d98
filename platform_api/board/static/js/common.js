// Pieces every page uses: figure tiles, tables, sections, rate look-ups, staleness.

import { h, label } from "./dom.js";
import { ago, int, pct } from "./format.js";

export const RATIO = "ratio_of_sums";
export const MEAN = "mean_of_enterprise_rates";

/** A section with a bilingual heading. */
export function section(zh, en, ...children) {
  return h("section", { class: "panel" }, h("h2", {}, label(zh, en)), ...children);
}

/**
 * A figure tile. `kpi` names it for tests and tools (data-kpi), `value` is the API's
 * raw number (data-value), `text` what is shown.
 */
export function tile({ kpi, zh, en, value = null, text, sub = null, tone = null, data = {} }) {
  return h("div", { class: `tile${tone ? ` tone-${tone}` : ""}` },
    h("div", { class: "tile-label" }, label(zh, en)),
    h("div", { class: "tile-value", data: { kpi, value: value ?? "", ...data } }, text),
    sub ? h("div", { class: "tile-sub" }, sub) : null);
}

/** A figure inside a table cell (data-kpi, data-value), e.g. a line's OEE. */
export function figure(kpi, value, text, data = {}) {
  return h("span", { class: "fig", data: { kpi, value: value ?? "", ...data } }, text);
}

/** The tone of a rate for colouring: good ≥ 85 %, fair ≥ 60 %, else poor. */
export function tone(value, good = 0.85, fair = 0.6) {
  if (value === null || value === undefined) return "none";
  return value >= good ? "good" : value >= fair ? "fair" : "poor";
}

/** A rate figure with its bar, for tables. */
export function rateCell(kpi, value, data = {}) {
  const width = value == null ? 0 : Math.max(0, Math.min(1, value)) * 100;
  return h("div", { class: `rate tone-${tone(value)}` },
    h("span", { class: "rate-bar", style: `width:${width.toFixed(1)}%` }),
    figure(kpi, value, pct(value), data));
}

/**
 * A table: columns = [{zh, en, cls}], rows = [{cells: [...], href, data}]. A row with
 * href is a drill-down: the whole row is clickable and its first cell a link.
 */
export function table(columns, rows, { empty = "无数据 no data", kind = "" } = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.cls || "" }, label(c.zh, c.en))));
  const body = rows.length
    ? rows.map((row) => h("tr", {
      class: row.href ? "drill" : "",
      data: row.data || {},
      onclick: row.href ? (event) => {
        if (!(event.target instanceof HTMLAnchorElement)) location.hash = row.href;
      } : null,
    }, row.cells.map((cell, i) => h("td", { class: columns[i]?.cls || "" },
      i === (row.linkAt ?? 0) && row.href ? h("a", { href: row.href }, cell) : cell))))
    : [h("tr", {}, h("td", { class: "empty", colspan: columns.length }, empty))];
  return h("table", { class: `grid ${kind}` }, h("thead", {}, head), h("tbody", {}, body));
}

/** A line of text under a heading: the API's own caveat (restricted scope, flags). */
export function caveat(text) {
  return text ? h("p", { class: "caveat" }, text) : null;
}

export function notice(text, kind = "info") {
  return h("div", { class: `notice notice-${kind}` }, text);
}

/** The figure of `method` for `group` among a rates answer's items (or null). */
export function rateItem(answer, group, method = RATIO) {
  if (!answer) return null;
  return answer.items.find((i) => i.group === group && i.method === method) || null;
}

/** Groups of a rates answer, one per group: {group, name, ratio, mean}. */
export function groups(answer) {
  if (!answer) return [];
  const out = new Map();
  for (const item of answer.items) {
    const g = out.get(item.group) || { group: item.group, name: item.group_name, ratio: null, mean: null };
    if (item.method === RATIO) g.ratio = item;
    else g.mean = item;
    out.set(item.group, g);
  }
  return [...out.values()];
}

/** "12 / 15" of a rate item (networked or NC / in service). */
export function counts(item) {
  return item ? `${int(item.numerator)} / ${int(item.denominator)}` : "—";
}

// -- staleness --------------------------------------------------------------------------
//
// Data is stale when nothing new came for N minutes. "New" is judged two ways, and
// either keeps the badge fresh: the newest data is less than N minutes old by the wall
// clock (a factory producing now), or, while this page watched, the newest data time
// moved forward within the last N minutes (a replay or the demo's simulated day, whose
// times lie in the past but still arrive).

const watched = new Map();

/**
 * {stale, latest, sinceS, text} for `key` (a line) whose newest data time is `latestIso`.
 * `now` is injectable for tests of the rule.
 */
export function staleness(key, latestIso, minutes, now = Date.now()) {
  const latest = latestIso ? Date.parse(latestIso) : null;
  const limit = minutes * 60e3;
  let seen = watched.get(key);
  if (!seen) {
    seen = { latest, movedAt: null };
    watched.set(key, seen);
  } else if (latest !== null && (seen.latest === null || latest > seen.latest)) {
    seen.latest = latest;
    seen.movedAt = now;
  }
  const recent = latest !== null && now - latest < limit;
  const moving = seen.movedAt !== null && now - seen.movedAt < limit;
  const stale = !(recent || moving);
  const sinceS = latest === null ? null : (now - latest) / 1000;
  let text;
  if (latest === null) text = "无数据 no data yet";
  else if (!stale) text = moving && !recent ? "数据到达中 data arriving" : `最新 latest ${ago(sinceS)}`;
  else text = `数据停滞 stale: ${minutes} 分钟无新数据 no new data for ${minutes} min`;
  return { stale, latest, sinceS, text };
}

export function staleBadge(key, state) {
  return h("span", {
    class: `stale-badge ${state.stale ? "is-stale" : "is-fresh"}`,
    data: { stale: state.stale ? "1" : "0", staleKey: key },
  }, state.stale ? "⚠ " : "● ", state.text);
}
