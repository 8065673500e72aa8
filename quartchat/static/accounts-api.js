// The server's account API as the account pages use it: the one module that knows its URLs.
// Every change is a JSON request (the server refuses anything else); every failure becomes an
// ApiError carrying the server's message, which the pages show as it is.

/** Why a request failed: the server's `{error: {code, message, request_id}}`, or the network. */
export class ApiError extends Error {
  constructor(message, { code = null, status = null, requestId = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.code = code;
    this.status = status;
    this.requestId = requestId;
  }
}

/** The login page, coming back here afterwards. */
export function loginUrl() {
  const here = encodeURIComponent(location.pathname + location.search + location.hash);
  return `/login?next=${here.replaceAll("%2F", "/")}`; // as the server writes it: /login?next=/account
}

async function errorFrom(response) {
  let error = {};
  try {
    error = (await response.json()).error ?? {};
  } catch {
    // Not our JSON (a proxy's error page, say): the status is all there is.
  }
  return new ApiError(error.message || `The server answered ${response.status} ${response.statusText}`.trim(), {
    code: error.code ?? null,
    status: response.status,
    requestId: error.request_id ?? response.headers.get("X-Request-ID"),
  });
}

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError("Could not reach the server. Check the connection and try again.", { code: "NETWORK" });
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    // The session ended (logged out elsewhere, disabled, password reset): log in again.
    if (error.code === "UNAUTHENTICATED") location.assign(loginUrl());
    throw error;
  }
  return response.json();
}

const get = (path) => call("GET", path);
const post = (path, body) => call("POST", path, body);

// ---- logging in, and making accounts ----

export const authState = () => get("/api/auth/state");
export const login = (email, password) => post("/api/auth/login", { email, password });
export const signUp = (email, password) => post("/api/auth/signup", { email, password });
export const setUp = (token, email, password) => post("/api/auth/setup", { token, email, password });
export const invitation = (token) => post("/api/auth/invite", { token });
export const acceptInvite = (token, email, password) =>
  post("/api/auth/invite/accept", email ? { token, email, password } : { token, password });

// ---- my account ----

export const me = () => get("/api/auth/me");
export const logout = () => post("/api/auth/logout");
export const logoutEverywhere = (revokeTokens) => post("/api/auth/logout-everywhere", { revoke_tokens: revokeTokens });
export const changePassword = (current, next) => post("/api/auth/password", { current, new: next });
export const sessions = () => get("/api/auth/sessions");
export const endSession = (id) => call("DELETE", `/api/auth/sessions/${encodeURIComponent(id)}`);
export const tokens = () => get("/api/auth/tokens");
/** A new token: `expiresInDays` null for never; `password` null when the session is young. */
export const createToken = (name, expiresInDays, password) =>
  post("/api/auth/tokens", { name, expires_in_days: expiresInDays, ...(password ? { password } : {}) });
export const revokeToken = (id) => call("DELETE", `/api/auth/tokens/${encodeURIComponent(id)}`);
/** My usage in a month ("YYYY-MM"): totals, by model and by day. */
export const myUsage = (month) => get(`/api/usage?month=${encodeURIComponent(month)}`);

// ---- administration ----

export const PAGE_SIZE = 100;
export const users = (after = 0) => get(`/api/admin/users${after ? `?after=${encodeURIComponent(after)}` : ""}`);
export const createUser = (email, password, role) => post("/api/admin/users", { email, password, role });
export const changeUser = (id, change) => call("PATCH", `/api/admin/users/${encodeURIComponent(id)}`, change);
export const invites = () => get("/api/invites");
export const createInvite = (email, role) => post("/api/invites", email ? { email, role } : { role });
export const userTokens = (id) => get(`/api/admin/users/${encodeURIComponent(id)}/tokens`);
export const revokeUserToken = (id, tokenId) =>
  call("DELETE", `/api/admin/users/${encodeURIComponent(id)}/tokens/${encodeURIComponent(tokenId)}`);
export const upstreamStatus = () => get("/api/admin/upstream");
export const policies = () => get("/api/admin/policies");
export const putPolicy = (subject, fields) => call("PUT", `/api/admin/policies/${encodeURIComponent(subject)}`, fields);
export const deletePolicy = (subject) => call("DELETE", `/api/admin/policies/${encodeURIComponent(subject)}`);
const usageQuery = (from, to, group) => `from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}&group=${encodeURIComponent(group)}`;
/** Everyone's usage from `from` to `to` (days, "YYYY-MM-DD", both included) by user, model or day. */
export const usage = (from, to, group) => get(`/api/admin/usage?${usageQuery(from, to, group)}`);
/** The same as a CSV file, for a download link. */
export const usageCsvUrl = (from, to, group) => `/api/admin/usage?${usageQuery(from, to, group)}&format=csv`;
export const withdrawInvite = (id) => call("DELETE", `/api/invites/${encodeURIComponent(id)}`);

/** The link an invite token makes. */
export const inviteLink = (token) => `${location.origin}/invite?token=${encodeURIComponent(token)}`;
