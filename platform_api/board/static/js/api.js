// The board's only way to data: the public API under /api/v1 with the user's token.
//
// The token lives in sessionStorage (gone when the tab closes; never in a cookie, so
// no request is authenticated without the page asking). An answer 401 ends the
// session: the board goes back to the login page and says why. So does the token's
// expiry (expires_at of the login answer), checked by a timer.

const KEY = "zhizao.board.session";

/** The API's root, from where the board is served (/board/ → /api/v1). */
export const API_ROOT = `${location.pathname.replace(/board\/.*$/, "").replace(/\/$/, "")}/api/v1`;

export class ApiError extends Error {
  constructor(status, problem, path) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.path = path;
  }
}

let onExpired = () => {};
let expiryTimer = null;

/** Called with a reason when the session ends (401, expiry). */
export function setExpiredHandler(handler) {
  onExpired = handler;
}

export function session() {
  try {
    const raw = sessionStorage.getItem(KEY);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

function store(value) {
  if (value) sessionStorage.setItem(KEY, JSON.stringify(value));
  else sessionStorage.removeItem(KEY);
  armExpiry();
}

/** Arm the expiry timer (after setExpiredHandler, so an old token ends with a reason). */
export function watchExpiry() {
  armExpiry();
}

function armExpiry() {
  clearTimeout(expiryTimer);
  const s = session();
  if (!s || !s.expires_at) return;
  const left = Date.parse(s.expires_at) - Date.now();
  if (left <= 0) {
    expire("登录已过期，请重新登录 Your session has expired; please log in again");
    return;
  }
  // setTimeout holds at most ~24.8 days; re-arm on the way for long tokens.
  expiryTimer = setTimeout(armExpiry, Math.min(left + 500, 2 ** 31 - 1));
}

export function expire(reason) {
  if (!session()) return;
  store(null);
  onExpired(reason);
}

export function logout() {
  store(null);
}

/** OAuth2 password flow; stores the session and returns it. */
export async function login(username, password) {
  const body = new URLSearchParams({ username, password, grant_type: "password" });
  const response = await fetch(`${API_ROOT}/auth/token`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
    body,
  });
  const data = await parse(response);
  if (!response.ok) throw new ApiError(response.status, data, "/auth/token");
  store({ token: data.access_token, expires_at: data.expires_at, username });
  return session();
}

/** Sign in with a machine token (zt_…), e.g. for a TV: checked by asking who it is. */
export async function useToken(token) {
  const response = await fetch(`${API_ROOT}/auth/me`, {
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
  });
  const data = await parse(response);
  if (!response.ok) throw new ApiError(response.status, data, "/auth/me");
  store({ token, expires_at: null, username: data.username });
  return session();
}

async function parse(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }
  return null;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === null || value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) q.append(key, String(v));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

/** GET /api/v1{path}?{params} with the session's token; resolves to the JSON body. */
export async function get(path, params) {
  const s = session();
  if (!s) throw new ApiError(401, { detail: "not logged in" }, path);
  const url = `${API_ROOT}${path}${query(params)}`;
  let response;
  try {
    response = await fetch(url, {
      headers: { Authorization: `Bearer ${s.token}`, Accept: "application/json" },
      cache: "no-store",
    });
  } catch (exc) {
    throw new ApiError(0, { detail: `平台接口无法访问 the API cannot be reached (${exc.message})` }, path);
  }
  const data = await parse(response);
  if (response.status === 401) {
    expire("登录已失效，请重新登录 Your session has ended; please log in again");
    throw new ApiError(401, data, path);
  }
  if (!response.ok) throw new ApiError(response.status, data, path);
  return data;
}

/** The same, but a 403 or 404 resolves to null (the caller shows "not in your scope"). */
export async function getOrNull(path, params) {
  try {
    return await get(path, params);
  } catch (exc) {
    if (exc instanceof ApiError && (exc.status === 403 || exc.status === 404)) return null;
    throw exc;
  }
}

