// 登录 The login page: OAuth2 password flow, or an API token (for a TV on the wall).

import { ApiError, login, useToken } from "./api.js";
import { h, label } from "./dom.js";

function why(exc) {
  if (exc instanceof ApiError) {
    if (exc.status === 401) return "用户名或密码错误，或账号已停用 User name or password is wrong, or the account is disabled";
    if (exc.status === 429) return `登录失败次数过多，请稍后再试 Too many failed logins: ${exc.message}`;
    if (exc.status === 0) return exc.message;
    return `${exc.status}: ${exc.message}`;
  }
  return String(exc);
}

export function loginPage({ reason, next }) {
  const message = h("p", { class: "login-message", role: "alert", data: { role: "login-message" } },
    reason || "");
  const user = h("input", { name: "username", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const token = h("input", { name: "token", autocomplete: "off", placeholder: "zt_…" });
  const button = h("button", { type: "submit" }, "登录 Log in");
  const done = () => { location.hash = next && next !== "#/login" ? next : "#/"; };

  const form = h("form", {
    class: "login",
    onsubmit: async (event) => {
      event.preventDefault();
      button.disabled = true;
      message.textContent = "登录中 logging in…";
      try {
        await login(user.value.trim(), password.value);
        done();
      } catch (exc) {
        message.textContent = why(exc);
        password.value = "";
        password.focus();
      } finally {
        button.disabled = false;
      }
    },
  },
  h("h1", {}, "智造看板", h("small", {}, "zhizao status board")),
  h("label", {}, label("用户名", "User name"), user),
  h("label", {}, label("密码", "Password"), password),
  button,
  message);

  const tokenForm = h("form", {
    class: "login-token",
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        await useToken(token.value.trim());
        done();
      } catch (exc) {
        message.textContent = why(exc);
      }
    },
  },
  h("details", {},
    h("summary", {}, "使用 API 令牌登录 (大屏) Sign in with an API token (for a TV)"),
    h("label", {}, label("令牌", "Token"), token),
    h("button", { type: "submit" }, "使用令牌 Use token"),
    h("p", { class: "caveat" },
      "令牌用 zhizao tokens create 生成，不会过期退出；只授予看板需要的权限。"
      + " Make one with zhizao tokens create; it does not time out like a login,"
      + " so give it only the grants the screen needs.")));

  return h("div", { class: "login-page" }, form, tokenForm);
}
