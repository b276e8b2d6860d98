// The board's shell: hash routes, the header (breadcrumbs, day, refresh state, TV
// mode, user), the refresh loop and the 大屏 (TV) cycle.
//
// Routes (the part after #):
//   /login                      login
//   /                           home: the page of the user's grant, or a list of them
//   /region[/CODE]              全省 / 地市 / 区县 (province, city or county code)
//   /cluster/CODE               产业集群
//   /enterprise/CREDIT_CODE     企业
//   /line/CREDIT_CODE/LINE      产线
// Query (after ?): day=YYYY-MM-DD (default, or day=auto: the latest day with data; a
// day chosen stays while the user drills down: a link without one keeps it), shift=NAME|day,
// refresh=S (poll every S seconds, default 10), stale=N (stale after N minutes without
// new data, default 5), tv=1 (大屏), cycle=S (TV: next page or panel every S s, 20).
//
// A refresh fetches the page's figures again and redraws it in place; the page is
// never reloaded. A failed refresh keeps what is shown and says so in the header.

import { ApiError, getOrNull, logout, session, setExpiredHandler, watchExpiry } from "./api.js";
import { sweepCharts } from "./charts.js";
import { fill, h } from "./dom.js";
import { addDays, clockSeconds, localDay, offset } from "./format.js";
import { loadCluster, renderCluster } from "./cluster.js";
import { loadEnterprise, renderEnterprise } from "./enterprise.js";
import { loadHome, renderHome } from "./home.js";
import { loadLine, renderLine } from "./line.js";
import { loginPage } from "./login.js";
import { loadRegion, renderRegion } from "./region.js";
import { notice } from "./common.js";

const DISPLAY_ZONE = "Asia/Shanghai";
const ROUTES = [
  [/^\/$/, loadHome, renderHome],
  [/^\/region(?:\/(\d{6}))?$/, loadRegion, renderRegion],
  [/^\/cluster\/([^/?]+)$/, loadCluster, renderCluster],
  [/^\/enterprise\/([0-9A-HJ-NPQRTUWXY]{18})$/, loadEnterprise, renderEnterprise],
  [/^\/line\/([0-9A-HJ-NPQRTUWXY]{18})\/([^/?]+)$/, loadLine, renderLine],
];

const $ = (id) => document.getElementById(id);
const state = {
  generation: 0,
  timer: null,
  cycleTimer: null,
  zone: DISPLAY_ZONE,
  dataDay: null,
  dataDayAt: 0,
  tvPanel: 0,
  tvSpec: null,
  pinnedDay: null,
};

const DAY = /^\d{4}-\d{2}-\d{2}$/;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  return { path: path || "/", query: new URLSearchParams(query) };
}

function hashWith(changes, path = parseHash().path) {
  const q = parseHash().query;
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === undefined) q.delete(k);
    else q.set(k, v);
  }
  const text = q.toString();
  return `#${path}${text ? `?${text}` : ""}`;
}

function number(query, key, fallback, min) {
  const v = Number(query.get(key));
  return Number.isFinite(v) && v >= min ? v : fallback;
}

// -- the day shown -----------------------------------------------------------------------

/** The latest local day with data in the caller's scope (networked devices > 0), or null. */
async function latestDataDay() {
  const today = localDay(new Date(), DISPLAY_ZONE);
  const series = await getOrNull("/kpi/networking/series", {
    period: "custom", start: addDays(today, -399), end: today, every: "day", group_by: "province",
  });
  for (const point of [...(series?.points ?? [])].reverse()) {
    if (point.items.some((i) => i.numerator > 0)) return point.period.first_day;
  }
  return null;
}

async function resolveDay(query) {
  const asked = query.get("day");
  if (asked && DAY.test(asked)) return { day: asked, auto: false };
  // Looked up again every 5 minutes, and at every refresh while no day has data yet
  // (the demo's first facts arrive after the board is opened).
  const due = !state.dataDay || Date.now() - state.dataDayAt > 300e3;
  if (due) {
    try {
      state.dataDay = await latestDataDay();
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 401) throw exc;
      state.dataDay = null;
    }
    state.dataDayAt = Date.now();
  }
  return { day: state.dataDay || localDay(new Date(), DISPLAY_ZONE), auto: true, found: !!state.dataDay };
}

// -- header ------------------------------------------------------------------------------

function setCrumbs(...levels) {
  const items = [h("a", { href: "#/" }, "首页 home")];
  for (const [[zh, en, href], text] of levels) {
    items.push(h("span", { class: "sep" }, "›"));
    const body = [h("small", {}, `${zh} ${en}`), " ", text];
    items.push(href ? h("a", { href }, ...body) : h("span", { class: "here" }, ...body));
  }
  fill($("crumbs"), items);
}

function setFresh(kind, text) {
  const el = $("fresh");
  el.dataset.state = kind;
  el.textContent = text;
}

function showHeader(show) {
  $("bar").hidden = !show;
  $("foot").hidden = !show;
  const s = session();
  $("who").textContent = s ? s.username : "";
}

// -- TV (大屏) ----------------------------------------------------------------------------

function tvOn(query) {
  return query.get("tv") === "1";
}

function tvTarget(spec) {
  if (spec.kind === "enterprise") {
    return hashWith({ tv: "1", tvlines: spec.lines.join(","), shift: null }, `/enterprise/${spec.enterprise}`);
  }
  return hashWith({ tv: "1" }, `/line/${spec.enterprise}/${encodeURIComponent(spec.line)}`);
}

function scheduleCycle(query, path) {
  clearTimeout(state.cycleTimer);
  if (!tvOn(query)) return;
  const seconds = number(query, "cycle", 20, 2);
  state.cycleTimer = setTimeout(() => {
    const spec = state.tvSpec;
    if (!spec) return;
    const lines = (query.get("tvlines") || "").split(",").filter(Boolean);
    if (spec.kind === "enterprise" && lines.length) {
      location.hash = hashWith({ tv: "1", tvlines: lines.join(","), shift: null },
        `/line/${spec.enterprise}/${encodeURIComponent(lines[0])}`);
    } else if (spec.kind === "line" && lines.length) {
      const next = lines.indexOf(spec.line) + 1;
      location.hash = next > 0 && next < lines.length
        ? hashWith({}, `/line/${spec.enterprise}/${encodeURIComponent(lines[next])}`)
        : hashWith({}, `/enterprise/${spec.enterprise}`);
    } else {
      // One line on the TV: its panels in turn.
      state.tvPanel += 1;
      showPanel();
      scheduleCycle(query, path);
    }
  }, seconds * 1000);
}

function showPanel() {
  const panels = [...document.querySelectorAll("#view .panel")];
  if (!panels.length || !tvOn(parseHash().query) || (parseHash().query.get("tvlines") || "")) {
    panels.forEach((p) => p.classList.remove("tv-hidden"));
    return;
  }
  const i = state.tvPanel % panels.length;
  panels.forEach((p, j) => p.classList.toggle("tv-hidden", j !== i));
}

$("tv").addEventListener("click", async () => {
  const { query } = parseHash();
  if (tvOn(query)) {
    if (document.fullscreenElement) await document.exitFullscreen().catch(() => {});
    location.hash = hashWith({ tv: null, tvlines: null, cycle: null });
    return;
  }
  if (!state.tvSpec) return;
  // Full screen needs the click itself; a browser that refuses still shows the TV layout.
  await document.documentElement.requestFullscreen?.().catch(() => {});
  location.hash = tvTarget(state.tvSpec);
});

$("day").addEventListener("change", (event) => {
  const value = event.target.value;
  location.hash = hashWith({ day: value || "auto" });
});

$("latest").addEventListener("click", () => {
  location.hash = hashWith({ day: "auto" });
});

$("logout").addEventListener("click", () => {
  logout();
  location.hash = "#/login";
});

setExpiredHandler((reason) => {
  const next = location.hash;
  route({ reason, next });
});

// -- routing and refresh -----------------------------------------------------------------

async function show(generation, found, path, query, first) {
  const [, load, render] = found.route;
  const view = $("view");
  if (first) setFresh("loading", "加载中 loading…");
  else setFresh("loading", "刷新中 refreshing…");
  let day;
  try {
    day = await resolveDay(query);
  } catch (exc) {
    if (generation !== state.generation) return;
    throw exc;
  }
  state.tvSpec = null;
  const used = new Set();
  const ctx = {
    params: found.params,
    query,
    day: day.day,
    dayAuto: day.auto,
    staleMinutes: number(query, "stale", 5, 0.1),
    used,
    crumb: setCrumbs,
    setZone: (zone) => { state.zone = zone || DISPLAY_ZONE; },
    tv: (spec) => { state.tvSpec = spec; },
    redirect: (href) => { setTimeout(() => { location.replace(href); }, 0); },
  };
  let model;
  try {
    model = await load(ctx);
  } catch (exc) {
    if (generation !== state.generation) return;
    if (exc instanceof ApiError && exc.status === 401) return; // expire() took over
    if (first) fill(view, notice(`无法加载 could not load: ${exc.message}`, "error"));
    setFresh("error", `刷新失败 refresh failed: ${exc.message}`);
    return;
  }
  if (generation !== state.generation) return;
  const node = render(model, ctx);
  const scroll = window.scrollY;
  fill(view, node);
  window.scrollTo(0, scroll);
  sweepCharts(used);
  showPanel();

  $("day").value = day.day;
  $("latest").hidden = day.auto;
  $("day-note").textContent = day.auto
    ? (day.found ? "最新有数据的一天 latest day with data" : "今天 today (暂无数据 no data yet)")
    : "";
  const tv = tvOn(query);
  $("tv").hidden = !state.tvSpec && !tv;
  $("tv").textContent = tv ? "退出大屏 exit TV" : "大屏 TV";
  $("zone-note").textContent = `时区 time zone ${state.zone} (UTC${offset(state.zone)})`;
  setFresh("ok", `已更新 updated ${clockSeconds(new Date(), state.zone)}`);
}

async function route(options = {}) {
  state.generation += 1;
  const generation = state.generation;
  clearTimeout(state.timer);
  clearTimeout(state.cycleTimer);
  const { path, query } = parseHash();
  // A chosen day stays while the user drills down: a link without one keeps it.
  const asked = query.get("day");
  if (asked && DAY.test(asked)) state.pinnedDay = asked;
  else if (asked === "auto") state.pinnedDay = null;
  else if (!asked && state.pinnedDay && path !== "/login") {
    location.replace(hashWith({ day: state.pinnedDay }));
    return;
  }
  document.body.classList.toggle("tv", tvOn(query));
  const view = $("view");
  if (path === "/login" || !session()) {
    showHeader(false);
    sweepCharts(new Set());
    const next = options.next ?? (path === "/login" ? query.get("next") : location.hash);
    if (path !== "/login") history.replaceState(null, "", "#/login");
    fill(view, loginPage({ reason: options.reason, next }));
    return;
  }
  showHeader(true);
  let found = null;
  for (const r of ROUTES) {
    const m = r[0].exec(path);
    if (m) found = { route: r, params: m.slice(1).filter((p) => p !== undefined) };
  }
  if (!found) {
    setCrumbs();
    fill(view, notice(`没有这个页面 no such page: ${path}`, "error"));
    return;
  }
  if (path !== "/") state.tvPanel = 0;
  const refreshS = number(query, "refresh", 10, 1);
  const tick = async (first) => {
    try {
      await show(generation, found, path, query, first);
    } catch (exc) {
      if (generation === state.generation) setFresh("error", `刷新失败 refresh failed: ${exc.message}`);
    }
    if (generation !== state.generation || !session()) return;
    state.timer = setTimeout(() => tick(false), refreshS * 1000);
  };
  await tick(true);
  if (generation === state.generation) scheduleCycle(query, path);
}

window.addEventListener("hashchange", () => route());
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && tvOn(parseHash().query)) location.hash = hashWith({ tv: null, tvlines: null });
});

// A token that expired while the tab slept ends the session here, with its reason.
const hadSession = session() !== null;
watchExpiry();
if (!hadSession || session()) route();
