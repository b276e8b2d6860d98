// The ledger's view of an enterprise (name, zone, lines, edges) from the registry
// routes, shaped for the pages. Null when the caller cannot see it.

import { getOrNull } from "./api.js";

const NATURAL = new Intl.Collator("zh-CN", { numeric: true });

/** Codes in natural order: L2 before L10. */
export function naturalSort(codes) {
  return [...codes].sort((a, b) => NATURAL.compare(a, b));
}

function items(answer) {
  if (!answer) return [];
  return Array.isArray(answer) ? answer : answer.items ?? [];
}

export async function enterpriseInfo(cc) {
  const [enterprise, lines, edges] = await Promise.all([
    getOrNull(`/enterprises/${cc}`),
    getOrNull(`/enterprises/${cc}/lines`, { limit: 1000 }),
    getOrNull(`/enterprises/${cc}/edges`, { limit: 1000 }),
  ]);
  if (!enterprise) return null;
  return {
    name: enterprise.name,
    time_zone: enterprise.time_zone,
    region: enterprise.region_code,
    clusters: enterprise.cluster_codes ?? enterprise.clusters ?? [],
    lines: items(lines).map((l) => ({ code: l.code, name: l.name })),
    edges: items(edges).map((e) => ({ edge_id: e.edge_id, name: e.name, devices: e.device_codes ?? e.devices ?? [] })),
  };
}
