// 企业: the enterprise's lines with OEE and A/P/Q, its networking and NC rates, the
// devices not networked with their last-seen times, and its edge gateways' health.
//
// Raw telemetry (latest values, edge status) is read only with an enterprise role; a
// cluster operator or regional analyst sees the KPIs and the networking evidence, and
// the page says what it leaves out.

import { getOrNull } from "./api.js";
import { h, label } from "./dom.js";
import { dateTime, int, localDay, pct } from "./format.js";
import {
  caveat, figure, notice, rateCell, section, staleBadge, staleness, table, tile,
} from "./common.js";
import { enterpriseInfo, naturalSort } from "./registry.js";

export function lineKey(cc, line) {
  return `${cc}/${line}`;
}

/** The newest data time per line, from the latest values of the enterprise's devices. */
export function latestByLine(latest) {
  const out = new Map();
  for (const device of latest?.items ?? []) {
    const line = device.line || null;
    for (const m of device.metrics || []) {
      const t = Date.parse(m.time);
      if (!out.has(line) || t > out.get(line).t) out.set(line, { t, iso: m.time });
    }
  }
  return out;
}

export async function loadEnterprise(ctx) {
  const cc = ctx.params[0];
  const day = ctx.day;
  const [oee, evidence, nc, info, latest] = await Promise.all([
    getOrNull("/kpi/oee", { level: "enterprise", code: cc, date: day }),
    getOrNull("/kpi/networking/evidence", { date: day, group_by: "enterprise", group: cc, limit: 1000 }),
    getOrNull("/kpi/nc", { date: day, group_by: "enterprise" }),
    enterpriseInfo(cc),
    getOrNull(`/enterprises/${cc}/latest`, { limit: 500 }),
  ]);
  if (oee === null) return { missing: cc };
  const lineCodes = naturalSort([...new Set([
    ...(info?.lines ?? []).map((l) => l.code),
    ...(latest?.items ?? []).map((d) => d.line).filter(Boolean),
  ])]);
  const [lines, edges] = await Promise.all([
    Promise.all(lineCodes.map((code) =>
      getOrNull("/kpi/oee", { level: "line", code, enterprise: cc, date: day }))),
    Promise.all((info?.edges ?? []).map((e) =>
      getOrNull(`/enterprises/${cc}/edges/${encodeURIComponent(e.edge_id)}/status`, { limit: 1 }))),
  ]);
  return { cc, oee, evidence, nc, info, latest, lineCodes, lines, edges };
}

export function renderEnterprise(model, ctx) {
  if (model.missing) {
    return notice(`企业 ${model.missing} 不存在或不在您的权限范围内 enterprise not found or not in your scope (404)`, "error");
  }
  const { cc, oee, evidence } = model;
  const zone = oee.period.time_zone;
  ctx.setZone(zone);
  const today = localDay(new Date(), zone);
  const name = model.info?.name || evidence?.items?.[0]?.enterprise_name || cc;
  ctx.crumb([["企业", "enterprise"], name]);
  ctx.tv({ kind: "enterprise", enterprise: cc, lines: model.lineCodes });
  const r = oee.result;
  const ncItem = model.nc?.items.find((i) => i.group === cc && i.method === "ratio_of_sums") ?? null;
  const silent = (evidence?.items ?? []).filter((i) => i.status === "not_counted");
  const latest = latestByLine(model.latest);

  const lineRows = model.lineCodes.map((code, i) => {
    const report = model.lines[i];
    const lr = report?.result ?? null;
    const newest = latest.get(code);
    const state = model.latest ? staleness(lineKey(cc, code), newest?.iso ?? null, ctx.staleMinutes) : null;
    const lname = model.info?.lines?.find((l) => l.code === code)?.name;
    return {
      href: `#/line/${cc}/${encodeURIComponent(code)}`,
      data: { line: code },
      cells: [
        h("span", {}, h("b", {}, code), lname && lname !== code ? h("small", { class: "code" }, lname) : null),
        rateCell("line-oee", lr?.oee ?? null, { line: code }),
        figure("line-availability", lr?.availability ?? null, pct(lr?.availability ?? null), { line: code }),
        figure("line-performance", lr?.performance ?? null, pct(lr?.performance ?? null), { line: code }),
        figure("line-quality", lr?.quality ?? null, pct(lr?.quality ?? null), { line: code }),
        figure("line-produced", lr?.produced ?? null, int(lr?.produced ?? null), { line: code }),
        int(lr?.reject ?? null),
        state ? staleBadge(lineKey(cc, code), state) : h("span", { class: "muted" }, "—"),
      ],
    };
  });

  const edgeRows = (model.info?.edges ?? []).map((e, i) => {
    const s = model.edges[i];
    return {
      data: { edge: e.edge_id },
      cells: [
        h("b", {}, e.edge_id), e.name || "",
        s ? h("span", { class: `status ${s.online ? "on" : "off"}`, data: { kpi: "edge-online", value: String(s.online) } },
          s.status_label) : h("span", { class: "muted" }, "需企业角色 enterprise roles only"),
        s ? dateTime(s.last_seen, zone, today) : "—",
        s?.software || "—",
        int((e.device_codes ?? e.devices ?? []).length || null),
      ],
    };
  });

  return h("div", { class: "page", data: { page: "enterprise", enterprise: cc } },
    h("h1", {}, name, h("small", {}, `企业 enterprise · ${cc}`)),
    h("div", { class: "tiles" },
      tile({ kpi: "oee", zh: "设备综合效率", en: "OEE", value: r.oee, text: pct(r.oee),
        sub: `A ${pct(r.availability)} · P ${pct(r.performance)} · Q ${pct(r.quality)}` }),
      tile({ kpi: "networking", zh: "设备联网率", en: "networking rate", value: evidence?.rate ?? null,
        text: pct(evidence?.rate ?? null), tone: "net",
        sub: evidence ? `${int(evidence.counted)} / ${int(evidence.counted + evidence.not_counted)} 台 devices` : null }),
      tile({ kpi: "nc", zh: "数控化率", en: "NC rate", value: ncItem?.rate ?? null, text: pct(ncItem?.rate ?? null),
        tone: "nc", sub: ncItem ? `${int(ncItem.numerator)} / ${int(ncItem.denominator)} 台 devices` : null }),
      tile({ kpi: "not-networked", zh: "未联网设备", en: "devices not networked", value: silent.length,
        text: int(silent.length), tone: silent.length ? "warn" : null })),
    r.flags?.length ? caveat(r.flags.map((f) => f.label).join("；")) : null,
    section("产线", "lines",
      model.lineCodes.length ? table([
        { zh: "产线", en: "line" },
        { zh: "OEE", en: "", cls: "num" },
        { zh: "可用率", en: "A", cls: "num" },
        { zh: "性能", en: "P", cls: "num" },
        { zh: "质量", en: "Q", cls: "num" },
        { zh: "产量", en: "produced", cls: "num" },
        { zh: "不良", en: "reject", cls: "num" },
        { zh: "数据", en: "data", cls: "" },
      ], lineRows, { kind: "lines" })
        : notice("产线清单需要台账接口或企业角色 the list of lines needs the registry routes or an enterprise role")),
    h("div", { class: "columns" },
      section("未联网设备", "devices not networked",
        table([
          { zh: "设备", en: "device" },
          { zh: "名称", en: "name" },
          { zh: "原因", en: "why" },
          { zh: "最后在线", en: "last seen" },
        ], silent.map((d) => ({
          data: { device: d.device },
          cells: [h("b", {}, d.device), d.name, d.reason_label,
            h("span", { data: { kpi: "last-seen", value: d.last_seen ?? "" } },
              d.last_seen ? dateTime(d.last_seen, d.time_zone, today) : "从未 never")],
        })), { kind: "silent", empty: "全部联网 every device networked" })),
      section("边缘网关", "edge gateways",
        edgeRows.length ? table([
          { zh: "网关", en: "edge" },
          { zh: "名称", en: "name" },
          { zh: "状态", en: "status" },
          { zh: "最后通信", en: "last seen" },
          { zh: "软件", en: "software" },
          { zh: "设备", en: "devices", cls: "num" },
        ], edgeRows, { kind: "edges" }) : notice(model.info
          ? "无边缘网关 no edge gateway: 该企业尚无设备接入 none of its devices is connected"
          : "网关清单需要台账接口 the list of edges needs the registry routes"))),
    h("p", { class: "caveat" }, label(`时间为企业当地时间 ${zone}`, "times in the enterprise's zone")));
}
