// 全省 / 地市 / 区县: networking and NC rates of a region by city, county, cluster and
// industry, and the enterprises furthest behind. Every figure is computed by the API
// over the caller's enterprises only (a cluster operator's "province" is its cluster).

import { get, getOrNull } from "./api.js";
import { chartBox, rateBars } from "./charts.js";
import { h, label } from "./dom.js";
import { int, pct } from "./format.js";
import {
  caveat, counts, groups, notice, rateCell, rateItem, section, table, tile,
} from "./common.js";

const LEVELS = {
  province: ["全省", "province"],
  city: ["地市", "city"],
  county: ["区县", "county"],
};

export function regionLevel(code) {
  if (code.endsWith("0000")) return "province";
  if (code.endsWith("00")) return "city";
  return "county";
}

async function rates(kind, day, groupBy, region) {
  return getOrNull(`/kpi/${kind}`, { date: day, group_by: groupBy, region });
}

export async function loadRegion(ctx) {
  let code = ctx.params[0] || null;
  if (!code) {
    // No region named: the caller's provinces (normally one).
    const provinces = await get("/kpi/networking", { date: ctx.day, group_by: "province" });
    const codes = [...new Set(provinces.items.map((i) => i.group))];
    if (codes.length !== 1) return { choose: groups(provinces) };
    code = codes[0];
  }
  const level = regionLevel(code);
  const breakdowns = [
    ...(level === "province" ? ["city"] : []),
    ...(level !== "county" ? ["county"] : []),
    "cluster", "industry", "enterprise",
  ];
  const wanted = [level, ...breakdowns];
  const answers = await Promise.all(wanted.flatMap((g) => [
    rates("networking", ctx.day, g, code),
    rates("nc", ctx.day, g, code),
  ]));
  if (answers[0] === null) return { missing: code };
  const by = {};
  wanted.forEach((g, i) => { by[g] = { net: answers[2 * i], nc: answers[2 * i + 1] }; });
  return { code, level, breakdowns, by, zone: answers[0].period.time_zone };
}

function groupRows(kind, net, nc, { href }) {
  const ncByGroup = new Map(groups(nc).map((g) => [g.group, g]));
  return groups(net)
    .sort((a, b) => (b.ratio?.rate ?? -1) - (a.ratio?.rate ?? -1))
    .map((g) => {
      const n = ncByGroup.get(g.group);
      return {
        href: href ? href(g.group) : null,
        data: { group: g.group, groupBy: kind },
        cells: [
          g.name ? h("span", {}, g.name, h("small", { class: "code" }, g.group)) : g.group,
          rateCell("networking", g.ratio?.rate ?? null, { group: g.group }),
          counts(g.ratio),
          h("span", { class: "muted" }, pct(g.mean?.rate ?? null)),
          rateCell("nc", n?.ratio?.rate ?? null, { group: g.group }),
          int(g.ratio?.enterprises ?? null),
        ],
      };
    });
}

const GROUP_COLUMNS = (zh, en) => [
  { zh, en },
  { zh: "设备联网率", en: "networking", cls: "num" },
  { zh: "联网/在役", en: "networked / in service", cls: "num" },
  { zh: "企业平均", en: "mean of enterprises", cls: "num" },
  { zh: "数控化率", en: "NC rate", cls: "num" },
  { zh: "企业数", en: "enterprises", cls: "num" },
];

const BREAKDOWN = {
  city: ["按地市", "by city", (g) => `#/region/${g}`],
  county: ["按区县", "by county", (g) => `#/region/${g}`],
  cluster: ["按产业集群", "by cluster", (g) => `#/cluster/${encodeURIComponent(g)}`],
  industry: ["按行业", "by industry (GB/T 4754)", null],
};

export function renderRegion(model, ctx) {
  if (model.choose) {
    return h("div", { class: "page" }, h("h1", {}, label("选择地区", "Choose a region")),
      table([{ zh: "省", en: "province" }], model.choose.map((g) => ({
        href: `#/region/${g.group}`, cells: [`${g.name || ""} ${g.group}`],
      }))));
  }
  if (model.missing) {
    return notice(`地区 ${model.missing} 不存在或不在您的权限范围内 region not found or not in your scope`, "error");
  }
  const own = model.by[model.level];
  const net = rateItem(own.net, model.code);
  const nc = rateItem(own.nc, model.code);
  const name = net?.group_name || model.code;
  ctx.crumb([[LEVELS[model.level][0], LEVELS[model.level][1]], name]);
  ctx.setZone(model.zone);

  const behind = groups(model.by.enterprise.net)
    .filter((g) => g.ratio && g.ratio.rate !== null)
    .sort((a, b) => a.ratio.rate - b.ratio.rate)
    .slice(0, 10);

  const chartGroup = model.level === "province" ? "city" : model.level === "city" ? "county" : "cluster";
  const chartRows = groups(model.by[chartGroup].net).map((g) => ({
    label: g.name || g.group, value: g.ratio?.rate ?? null,
  }));

  return h("div", { class: "page", data: { page: "region", region: model.code } },
    h("h1", {}, name, h("small", {}, `${LEVELS[model.level][0]} ${LEVELS[model.level][1]} · ${model.code}`)),
    caveat(own.net.restricted_label),
    h("div", { class: "tiles" },
      tile({ kpi: "networking", zh: "设备联网率", en: "networking rate", value: net?.rate ?? null,
        text: pct(net?.rate ?? null), sub: `${counts(net)} 台 devices`, tone: "net" }),
      tile({ kpi: "nc", zh: "数控化率", en: "NC rate", value: nc?.rate ?? null,
        text: pct(nc?.rate ?? null), sub: `${counts(nc)} 台 devices`, tone: "nc" }),
      tile({ kpi: "enterprises", zh: "企业", en: "enterprises", value: net?.enterprises ?? null,
        text: int(net?.enterprises ?? null) }),
      tile({ kpi: "devices", zh: "在役生产设备", en: "production devices in service",
        value: net?.denominator ?? null, text: int(net?.denominator ?? null) })),
    h("div", { class: "columns" },
      section(`联网率${BREAKDOWN[chartGroup][0]}`, `networking ${BREAKDOWN[chartGroup][1]}`,
        chartBox(`region-${chartGroup}`, rateBars(chartRows, { name: "联网率" }),
          { height: Math.max(160, 40 * chartRows.length + 40), used: ctx.used })),
      section("联网率最低的企业", "enterprises furthest behind",
        table([
          { zh: "企业", en: "enterprise" },
          { zh: "设备联网率", en: "networking", cls: "num" },
          { zh: "联网/在役", en: "networked / in service", cls: "num" },
        ], behind.map((g) => ({
          href: `#/enterprise/${g.group}`,
          data: { enterprise: g.group },
          cells: [g.name || g.group, rateCell("networking", g.ratio.rate, { group: g.group }), counts(g.ratio)],
        })), { kind: "behind" }))),
    model.breakdowns.filter((g) => g !== "enterprise").map((g) =>
      section(BREAKDOWN[g][0], BREAKDOWN[g][1],
        table(GROUP_COLUMNS(BREAKDOWN[g][0].slice(1), BREAKDOWN[g][1].slice(3)),
          groupRows(g, model.by[g].net, model.by[g].nc, { href: BREAKDOWN[g][2] }),
          { kind: `by-${g}` }))),
    h("p", { class: "caveat" },
      "设备联网率与数控化率为合计口径（分子、分母分别加总后相除），企业平均口径另列。"
      + " Rates are ratios of sums; the mean of enterprise rates is shown beside them."));
}
