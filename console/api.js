// Talking to Rill: every call of the console goes through `api`, which
// adds the token (kept in this tab's sessionStorage, never shown again)
// and the basin header, and turns an error answer into an exception
// carrying the server's {code, message}.

const TOKEN_KEY = "rill.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(basin, extra = {}) {
  const out = { ...extra };
  if (token()) out["Authorization"] = `Bearer ${token()}`;
  if (basin) out["s2-basin"] = basin;
  return out;
}

async function failure(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body.code) code = body.code;
    if (body.message) message = body.message;
  } catch (_) {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, code, message);
}

// One request. `basin` addresses the basin (the `s2-basin` header);
// `body`, if any, is sent as JSON. Answers the parsed JSON (or null).
export async function api(method, path, { basin, body, query } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const extra = { "s2-format": "base64" };
  if (body !== undefined) extra["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers: headers(basin, extra),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

// A live read (SSE over fetch: EventSource cannot send a token). Calls
// `onBatch(records)` for each batch until `signal` aborts it.
export async function follow(basin, stream, fromSeq, onBatch, signal) {
  const path = `/v1/streams/${encodeURIComponent(stream)}/records`;
  const url = new URL(path, location.origin);
  url.searchParams.set("seq_num", String(fromSeq));
  const response = await fetch(url, {
    headers: headers(basin, { Accept: "text/event-stream", "s2-format": "base64" }),
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (event === "batch" && data) onBatch(JSON.parse(data).records || []);
      if (event === "error") throw new ApiError(0, "session_error", data);
    }
  }
}

// Bytes of a base64 text.
export function decodeBase64(text) {
  const raw = atob(text || "");
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

export function encodeBase64Text(text) {
  const bytes = new TextEncoder().encode(text);
  let raw = "";
  for (const b of bytes) raw += String.fromCharCode(b);
  return btoa(raw);
}

// The series of a metric set answer, by name: [[t, v], ...].
export function seriesOf(answer) {
  const out = {};
  for (const metric of answer.values || []) {
    const m = metric.accumulation || metric.gauge;
    if (m) out[m.name] = m.values;
  }
  return out;
}
