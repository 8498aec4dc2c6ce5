// The admin API from the browser: the bearer token kept for this tab only (sessionStorage),
// errors turned into ApiError with the API's own code and message, and a 401 anywhere
// sending the user back to the login page.

const KEY = "nimbus.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};

export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export function unauthorized() {
  onUnauthorized();
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(KEY, t);
  else sessionStorage.removeItem(KEY);
}

async function errorOf(res) {
  let code = "http_" + res.status;
  let message = res.statusText || "request failed";
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(res.status, code, message);
}

// fetch with the token; throws ApiError unless 2xx. tok overrides the stored token (login).
export async function request(method, path, { body, tok, signal, headers } = {}) {
  const h = { Authorization: "Bearer " + (tok ?? token() ?? "") };
  Object.assign(h, headers || {});
  let res;
  try {
    res = await fetch(path, { method, headers: h, body, signal, cache: "no-store" });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "network", "the daemon did not answer: " + e.message);
  }
  if (res.status === 401 && tok === undefined) {
    onUnauthorized();
  }
  if (!res.ok) throw await errorOf(res);
  return res;
}

export async function get(path, opts) {
  const res = await request("GET", path, opts);
  return res.json();
}

// Reads an application/x-ndjson stream, calling onRecord for each parsed line, until it ends
// or signal aborts.
export async function stream(path, onRecord, signal) {
  const res = await request("GET", path, { signal });
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line) continue;
      try {
        onRecord(JSON.parse(line));
      } catch {
        // a line that is not JSON is skipped, never shown half-parsed
      }
    }
  }
}

export const enc = encodeURIComponent;
