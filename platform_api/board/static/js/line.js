// 产线: a state timeline per device for the shift, OEE and its components, counts per
// hour, the top losses and the devices offline now.
//
// The shift shown is the one named in the address (?shift=), else the shift that
// holds the line's newest data (or now), else the whole day. OEE and the losses are
// summary figures (every role in scope); timelines and counts are raw telemetry, read
// only with an enterprise role.

import { getOrNull } from "./api.js";
import { chartBox, countBars, STATE_LABELS, stateTimeline } from "./charts.js";
import { h, label } from "./dom.js";
import { clock, dateTime, duration, int, localDay, pct } from "./format.js";
import { caveat, figure, notice, section, staleBadge, staleness, table, tile } from "./common.js";
import { latestByLine, lineKey } from "./enterprise.js";
import { enterpriseInfo } from "./registry.js";

function pickShift(shifts, wanted, pivot) {
  if (wanted === "day") return null;
  if (wanted) return shifts.find((s) => s.shift === wanted) || null;
  const t = pivot ?? Date.now();
  const holding = shifts.find((s) => Date.parse(s.start) <= t && t < Date.parse(s.end));
  if (holding) return holding;
  const started = shifts.filter((s) => Date.parse(s.start) <= t);
  return started.length ? started[started.length - 1] : null;
}

export async function loadLine(ctx) {
  const cc = ctx.params[0];
  const code = decodeURIComponent(ctx.params[1]);
  const day = ctx.day;
  const scope = { level: "line", code, enterprise: cc, date: day };
  const [oee, shifts, latest, info] = await Promise.all([
    getOrNull("/kpi/oee", scope),
    getOrNull("/kpi/oee/shifts", scope),
    getOrNull(`/enterprises/${cc}/latest`, { line: code, limit: 500 }),
    enterpriseInfo(cc),
  ]);
  if (oee === null) return { missing: `${cc} / ${code}` };
  const newest = latestByLine(latest).get(code) ?? null;
  const dayStart = Date.parse(oee.period.start);
  const dayEnd = Date.parse(oee.period.end);
  const pivot = newest && newest.t >= dayStart && newest.t < dayEnd ? newest.t
    : Date.now() < dayEnd ? Date.now() : dayEnd - 1;
  const shift = pickShift(shifts?.shifts ?? [], ctx.query.get("shift"), pivot);
  const start = shift ? shift.start : oee.period.start;
  const end = shift ? shift.end : oee.period.end;
  const raw = latest !== null;
  // The shift's own OEE, with its devices' (the day's figures when no shift is shown).
  const shown = shift
    ? await getOrNull("/kpi/oee", { ...scope, period: "shift", shift: shift.shift }) ?? oee
    : oee;
  const devices = shown.devices;
  const [states, countsPerHour] = raw ? await Promise.all([
    Promise.all(devices.map((d) => getOrNull(
      `/enterprises/${cc}/devices/${encodeURIComponent(d.device)}/states`, { start, end, limit: 5000 }))),
    Promise.all(devices.map((d) => getOrNull(
      `/enterprises/${cc}/devices/${encodeURIComponent(d.device)}/counts`, { start, end, bucket: "PT1H" }))),
  ]) : [[], []];
  return { cc, code, info, oee, shown, shifts, shift, start, end, latest, newest, raw, devices, states, countsPerHour };
}

function lossRows(result) {
  return [...(result?.losses ?? [])]
    .filter((l) => l.seconds > 0 && l.loss !== "valuable")
    .sort((a, b) => b.seconds - a.seconds)
    .slice(0, 5)
    .map((l) => ({
      data: { loss: l.loss },
      cells: [label(l.label_zh, l.label_en), duration(l.seconds),
        figure("loss-share", l.share_of_pbt, pct(l.share_of_pbt), { loss: l.loss })],
    }));
}

function hourly(model, zone) {
  const starts = new Set();
  for (const c of model.countsPerHour) for (const b of c?.buckets ?? []) starts.add(Date.parse(b.start));
  const hours = [...starts].sort((a, b) => a - b);
  const index = new Map(hours.map((t, i) => [t, i]));
  const stacks = model.devices.map((d, i) => {
    const values = hours.map(() => 0);
    for (const b of model.countsPerHour[i]?.buckets ?? []) values[index.get(Date.parse(b.start))] += b.good;
    return { name: `${d.device} 合格`, values };
  }).filter((s) => s.values.some((v) => v > 0));
  const reject = hours.map(() => 0);
  model.countsPerHour.forEach((c) => {
    for (const b of c?.buckets ?? []) reject[index.get(Date.parse(b.start))] += b.reject;
  });
  if (reject.some((v) => v > 0)) stacks.push({ name: "不良 reject", values: reject, stack: "reject", colour: "#ef4444" });
  return { labels: hours.map((t) => clock(new Date(t), zone)), stacks };
}

export function renderLine(model, ctx) {
  if (model.missing) {
    return notice(`产线 ${model.missing} 不存在或不在您的权限范围内 line not found or not in your scope (404)`, "error");
  }
  const { cc, code, oee, shift } = model;
  const zone = oee.period.time_zone;
  ctx.setZone(zone);
  const today = localDay(new Date(), zone);
  ctx.crumb([["企业", "enterprise", `#/enterprise/${cc}`], model.info?.name || cc], [["产线", "line"], code]);
  ctx.tv({ kind: "line", enterprise: cc, line: code });
  const r = model.shown.result;
  const state = model.raw ? staleness(lineKey(cc, code), model.newest?.iso ?? null, ctx.staleMinutes) : null;
  const windowEnd = Math.min(Date.parse(model.end), Date.now());

  const rows = model.devices.map((d, i) => ({
    device: d.device, name: d.name, intervals: model.states[i]?.intervals ?? [],
  }));
  const offline = rows.filter((row) => {
    const last = row.intervals[row.intervals.length - 1];
    return last && last.state === "OFFLINE" && Date.parse(last.end) >= windowEnd - 1000;
  });
  const nowState = new Map(rows.map((row) => [row.device, row.intervals[row.intervals.length - 1]?.state]));

  const shiftLink = (name) => {
    const q = new URLSearchParams(ctx.query);
    q.set("shift", name);
    return `#/line/${cc}/${encodeURIComponent(code)}?${q}`;
  };
  const tabs = h("nav", { class: "tabs", "aria-label": "班次 shifts" },
    h("a", { href: shiftLink("day"), class: shift ? "" : "on" }, "全天 whole day"),
    (model.shifts?.shifts ?? []).map((s) => h("a", {
      href: shiftLink(s.shift), class: shift && shift.shift === s.shift ? "on" : "",
      data: { shift: s.shift },
    }, `${s.shift} ${clock(s.start, zone)}–${clock(s.end, zone)}`)));

  const hours = model.raw ? hourly(model, zone) : null;
  const period = shift
    ? `${shift.shift} ${dateTime(shift.start, zone)}–${clock(shift.end, zone)}`
    : `${oee.period.first_day} 全天 whole day`;

  return h("div", { class: "page", data: { page: "line", enterprise: cc, line: code, shift: shift?.shift ?? "" } },
    h("h1", {}, `产线 ${code}`, h("small", {}, `line · ${cc} · ${period}`),
      state ? staleBadge(lineKey(cc, code), state) : null),
    tabs,
    h("div", { class: "tiles" },
      tile({ kpi: "oee", zh: "设备综合效率", en: "OEE", value: r.oee, text: pct(r.oee), tone: "big" }),
      tile({ kpi: "availability", zh: "可用率", en: "availability", value: r.availability, text: pct(r.availability),
        sub: `开动 APT ${duration(r.actual_production_s)} / 计划 PBT ${duration(r.planned_busy_s)}` }),
      tile({ kpi: "performance", zh: "性能", en: "performance", value: r.performance, text: pct(r.performance) }),
      tile({ kpi: "quality", zh: "质量", en: "quality", value: r.quality, text: pct(r.quality),
        sub: `合格 good ${int(r.good)} · 不良 reject ${int(r.reject)}` }),
      tile({ kpi: "produced", zh: "产量", en: "produced", value: r.produced, text: int(r.produced) }),
      model.raw ? tile({ kpi: "offline-now", zh: "当前离线", en: "offline now", value: offline.length,
        text: int(offline.length), tone: offline.length ? "warn" : null,
        sub: offline.map((o) => o.device).join("、") || `截至 at ${clock(new Date(windowEnd), zone)}` }) : null),
    r.flags?.length ? caveat(r.flags.map((f) => f.label).join("；")) : null,
    model.raw ? null : notice("状态时间线与产量为原始数据，仅企业角色可见 state timelines and counts are raw telemetry: enterprise roles only"),
    model.raw ? section("状态时间线", "state timeline per device",
      h("div", { data: { tvPanel: "1" } }, stateTimeline(rows, { start: model.start, end: model.end, zone }))) : null,
    h("div", { class: "columns" },
      model.raw ? section("每小时产量", "parts per hour",
        chartBox(`line-counts-${cc}-${code}`, countBars(hours.labels, hours.stacks), { height: 280, used: ctx.used })) : null,
      section("主要损失", "top losses",
        table([{ zh: "损失", en: "loss" }, { zh: "时间", en: "time", cls: "num" },
          { zh: "占计划时间", en: "share of PBT", cls: "num" }], lossRows(r), { kind: "losses", empty: "无损失 no losses" }))),
    section("设备", "devices",
      table([
        { zh: "设备", en: "device" }, { zh: "名称", en: "name" }, { zh: "当前状态", en: "state now" },
        { zh: "OEE", en: "", cls: "num" }, { zh: "可用率", en: "A", cls: "num" },
        { zh: "性能", en: "P", cls: "num" }, { zh: "质量", en: "Q", cls: "num" },
        { zh: "产量", en: "produced", cls: "num" },
      ], model.devices.map((d) => ({
        data: { device: d.device },
        cells: [h("b", {}, d.device), d.name,
          nowState.get(d.device) ? h("span", { class: `state st-${nowState.get(d.device)}` },
            STATE_LABELS[nowState.get(d.device)]) : "—",
          figure("device-oee", d.result.oee, pct(d.result.oee), { device: d.device }),
          pct(d.result.availability), pct(d.result.performance), pct(d.result.quality),
          int(d.result.produced)],
      })), { kind: "devices" })),
    h("p", { class: "caveat" },
      `时间为企业当地时间 ${zone} times in the enterprise's zone; 今天 today ${today}`));
}
