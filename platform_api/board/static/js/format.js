// Numbers and times as a zh-CN reader expects them, times in the enterprise's zone.
//
// The API answers instants as ISO 8601 with the enterprise's offset and names the
// zone (time_zone); the board formats them with Intl in that zone, so a page shows
// the factory's local time whatever the zone of the browser (a TV set to UTC, a
// laptop in another province).

const PCT = new Intl.NumberFormat("zh-CN", {
  style: "percent",
  minimumFractionDigits: 1,
  maximumFractionDigits: 1,
});
const INT = new Intl.NumberFormat("zh-CN", { maximumFractionDigits: 0 });
const DEC1 = new Intl.NumberFormat("zh-CN", { minimumFractionDigits: 1, maximumFractionDigits: 1 });

export const DASH = "—";

/** 0.7479 → "74.8%"; null → "—". */
export function pct(value) {
  return value === null || value === undefined || Number.isNaN(value) ? DASH : PCT.format(value);
}

/** 19271 → "19,271". */
export function int(value) {
  return value === null || value === undefined ? DASH : INT.format(value);
}

/** Seconds as hours with one decimal: 5400 → "1.5". */
export function hours(seconds) {
  return seconds === null || seconds === undefined ? DASH : DEC1.format(seconds / 3600);
}

/** A duration a person reads: "2 小时 05 分", "42 分", "35 秒". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return DASH;
  const s = Math.round(seconds);
  if (s < 60) return `${s} 秒`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} 分`;
  const hh = Math.floor(m / 60);
  return `${hh} 小时 ${String(m % 60).padStart(2, "0")} 分`;
}

const _formats = new Map();

function formatter(zone, options) {
  const key = `${zone}|${JSON.stringify(options)}`;
  let f = _formats.get(key);
  if (!f) {
    f = new Intl.DateTimeFormat("zh-CN", { timeZone: zone, hourCycle: "h23", ...options });
    _formats.set(key, f);
  }
  return f;
}

function parts(instant, zone, options) {
  const out = {};
  for (const p of formatter(zone, options).formatToParts(instant)) out[p.type] = p.value;
  return out;
}

function asDate(value) {
  return value instanceof Date ? value : new Date(value);
}

/** "08:42" in the zone. */
export function clock(value, zone) {
  if (!value) return DASH;
  const p = parts(asDate(value), zone, { hour: "2-digit", minute: "2-digit" });
  return `${p.hour}:${p.minute}`;
}

/** "08:42:05" in the zone. */
export function clockSeconds(value, zone) {
  if (!value) return DASH;
  const p = parts(asDate(value), zone, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return `${p.hour}:${p.minute}:${p.second}`;
}

/** The local day of an instant in the zone: "2026-03-02". */
export function localDay(value, zone) {
  const p = parts(asDate(value), zone, { year: "numeric", month: "2-digit", day: "2-digit" });
  return `${p.year}-${p.month}-${p.day}`;
}

/** "2026-03-02 08:42" in the zone; the day is left out when it is `today` there. */
export function dateTime(value, zone, today) {
  if (!value) return DASH;
  const day = localDay(value, zone);
  const time = clock(value, zone);
  return day === today ? time : `${day} ${time}`;
}

/** The zone's UTC offset at an instant: "+08:00". */
export function offset(zone, at = new Date()) {
  const name = parts(asDate(at), zone, { timeZoneName: "longOffset" }).timeZoneName || "GMT";
  const m = /GMT([+-]\d{2}):?(\d{2})?/.exec(name);
  return m ? `${m[1]}:${m[2] || "00"}` : "+00:00";
}

/** "3月2日 周一": a day as a heading, for a YYYY-MM-DD day. */
export function dayHeading(day) {
  const [y, m, d] = day.split("-").map(Number);
  const weekday = "日一二三四五六"[new Date(Date.UTC(y, m - 1, d)).getUTCDay()];
  return `${y}年${m}月${d}日 周${weekday}`;
}

/** A YYYY-MM-DD day moved by whole days. */
export function addDays(day, n) {
  const [y, m, d] = day.split("-").map(Number);
  const t = new Date(Date.UTC(y, m - 1, d + n));
  return t.toISOString().slice(0, 10);
}

/** "how long ago" in minutes, for the stale badge: "12 分钟前". */
export function ago(seconds) {
  if (seconds < 90) return `${Math.max(0, Math.round(seconds))} 秒前`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} 分钟前`;
  if (seconds < 86400 * 2) return `${Math.round(seconds / 3600)} 小时前`;
  return `${Math.round(seconds / 86400)} 天前`;
}
