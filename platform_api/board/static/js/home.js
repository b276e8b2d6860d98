// 首页: where a user starts, from their grants (GET /auth/me). One grant leads
// straight to its page; several are listed.

import { get } from "./api.js";
import { h, label } from "./dom.js";
import { table } from "./common.js";

export function grantTarget(grant) {
  switch (grant.role) {
    case "admin":
      return "#/region";
    case "regional_analyst":
      return `#/region/${grant.scope}`;
    case "cluster_operator":
      return `#/cluster/${encodeURIComponent(grant.scope)}`;
    case "enterprise_engineer":
    case "enterprise_viewer":
      return `#/enterprise/${grant.scope}`;
    default:
      return null;
  }
}

export async function loadHome() {
  return { me: await get("/auth/me") };
}

export function renderHome(model, ctx) {
  const targets = model.me.grants
    .map((g) => ({ grant: g, href: grantTarget(g) }))
    .filter((t) => t.href);
  const unique = [...new Map(targets.map((t) => [t.href, t])).values()];
  if (unique.length === 1) {
    ctx.redirect(unique[0].href);
    return h("div", { class: "page" });
  }
  ctx.crumb();
  return h("div", { class: "page", data: { page: "home" } },
    h("h1", {}, label("您的范围", "your scopes"), h("small", {}, model.me.full_name || model.me.username)),
    unique.length
      ? table([{ zh: "范围", en: "scope" }, { zh: "角色", en: "role" }], unique.map((t) => ({
        href: t.href, cells: [t.grant.scope || "全部 everything", t.grant.role_label],
      })))
      : h("p", { class: "notice" },
        "您的账号没有任何授权，请联系管理员。Your account has no grants yet; ask an administrator."));
}
