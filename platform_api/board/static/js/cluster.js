// 产业集群: the cluster's enterprises ranked by networking rate and by OEE, and the
// cluster's trends (OEE and networking rate per day over 30 days).

import { getOrNull } from "./api.js";
import { chartBox, rateBars, trendLines } from "./charts.js";
import { h } from "./dom.js";
import { addDays, int, pct } from "./format.js";
import {
  caveat, counts, figure, groups, notice, rateCell, rateItem, section, table, tile,
} from "./common.js";

const TREND_DAYS = 30;

export async function loadCluster(ctx) {
  const code = decodeURIComponent(ctx.params[0]);
  const day = ctx.day;
  const range = { period: "custom", start: addDays(day, 1 - TREND_DAYS), end: day, every: "day" };
  const [own, byEnterprise, ncByEnterprise, oee, oeeTrend, netTrend] = await Promise.all([
    getOrNull("/kpi/networking", { date: day, group_by: "cluster", cluster: code }),
    getOrNull("/kpi/networking", { date: day, group_by: "enterprise", cluster: code }),
    getOrNull("/kpi/nc", { date: day, group_by: "enterprise", cluster: code }),
    getOrNull("/kpi/oee", { level: "cluster", code, date: day }),
    getOrNull("/kpi/oee/series", { level: "cluster", code, ...range }),
    getOrNull("/kpi/networking/series", { group_by: "cluster", cluster: code, ...range }),
  ]);
  if (own === null) return { missing: code };
  const enterprises = groups(byEnterprise);
  const oees = await Promise.all(enterprises.map((e) =>
    getOrNull("/kpi/oee", { level: "enterprise", code: e.group, date: day })));
  const nc = await getOrNull("/kpi/nc", { date: day, group_by: "cluster", cluster: code });
  return { code, own, nc, byEnterprise, ncByEnterprise, oee, oeeTrend, netTrend, enterprises, oees };
}

export function renderCluster(model, ctx) {
  if (model.missing) {
    return notice(`产业集群 ${model.missing} 不存在或不在您的权限范围内 cluster not found or not in your scope (404)`, "error");
  }
  const net = rateItem(model.own, model.code);
  const nc = rateItem(model.nc, model.code);
  const name = net?.group_name || model.code;
  ctx.crumb([["产业集群", "cluster"], name]);
  ctx.setZone(model.own.period.time_zone);
  const r = model.oee?.result;
  const ncBy = new Map(groups(model.ncByEnterprise).map((g) => [g.group, g]));
  const rows = model.enterprises.map((e, i) => ({
    ...e, oee: model.oees[i]?.result ?? null, nc: ncBy.get(e.group)?.ratio ?? null,
  }));
  const byNet = [...rows].sort((a, b) => (b.ratio?.rate ?? -1) - (a.ratio?.rate ?? -1));

  const trendDays = model.netTrend?.points.map((p) => p.period.first_day) ?? [];
  const oeeByDay = new Map((model.oeeTrend?.points ?? []).map((p) => [p.period.first_day, p.result.oee]));
  const netByDay = new Map((model.netTrend?.points ?? []).map((p) =>
    [p.period.first_day, rateItem(p, model.code)?.rate ?? null]));

  return h("div", { class: "page", data: { page: "cluster", cluster: model.code } },
    h("h1", {}, name, h("small", {}, `产业集群 cluster · ${model.code}`)),
    caveat(model.own.restricted_label),
    h("div", { class: "tiles" },
      tile({ kpi: "oee", zh: "设备综合效率", en: "OEE", value: r?.oee ?? null, text: pct(r?.oee ?? null),
        sub: `A ${pct(r?.availability ?? null)} · P ${pct(r?.performance ?? null)} · Q ${pct(r?.quality ?? null)}` }),
      tile({ kpi: "networking", zh: "设备联网率", en: "networking rate", value: net?.rate ?? null,
        text: pct(net?.rate ?? null), sub: `${counts(net)} 台 devices`, tone: "net" }),
      tile({ kpi: "nc", zh: "数控化率", en: "NC rate", value: nc?.rate ?? null,
        text: pct(nc?.rate ?? null), sub: `${counts(nc)} 台 devices`, tone: "nc" }),
      tile({ kpi: "enterprises", zh: "企业", en: "enterprises", value: net?.enterprises ?? null,
        text: int(net?.enterprises ?? null) })),
    section("企业排名", "enterprises ranked by networking rate",
      table([
        { zh: "名次", en: "rank", cls: "num" },
        { zh: "企业", en: "enterprise" },
        { zh: "设备联网率", en: "networking", cls: "num" },
        { zh: "联网/在役", en: "networked / in service", cls: "num" },
        { zh: "OEE", en: "", cls: "num" },
        { zh: "可用率", en: "A", cls: "num" },
        { zh: "性能", en: "P", cls: "num" },
        { zh: "质量", en: "Q", cls: "num" },
        { zh: "数控化率", en: "NC rate", cls: "num" },
      ], byNet.map((e, i) => ({
        href: `#/enterprise/${e.group}`,
        linkAt: 1,
        data: { enterprise: e.group },
        cells: [
          String(i + 1),
          e.name || e.group,
          rateCell("networking", e.ratio?.rate ?? null, { group: e.group }),
          counts(e.ratio),
          figure("oee", e.oee?.oee ?? null, pct(e.oee?.oee ?? null), { group: e.group }),
          pct(e.oee?.availability ?? null),
          pct(e.oee?.performance ?? null),
          pct(e.oee?.quality ?? null),
          rateCell("nc", e.nc?.rate ?? null, { group: e.group }),
        ],
      })), { kind: "ranking" })),
    h("div", { class: "columns" },
      section("按 OEE 排名", "ranked by OEE",
        chartBox("cluster-oee", rateBars(rows.map((e) => ({ label: e.name || e.group, value: e.oee?.oee ?? null })),
          { name: "OEE", colour: "#38bdf8" }), { height: Math.max(160, 40 * rows.length + 40), used: ctx.used })),
      section("趋势", `trend, ${TREND_DAYS} days`,
        chartBox("cluster-trend", trendLines([
          { name: "OEE", colour: "#38bdf8", points: trendDays.map((d) => [d, oeeByDay.get(d) ?? null]) },
          { name: "联网率 networking", colour: "#22c55e", points: trendDays.map((d) => [d, netByDay.get(d) ?? null]) },
        ]), { height: 300, used: ctx.used }))));
}
