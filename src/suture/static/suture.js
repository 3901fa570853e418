// suture.js: the browser client of suture. An ES module with no dependencies.
//
//   import { sutureFetch, renderError, retryMessage } from "/static/suture.js";
//   const outcome = await sutureFetch("/api/queue", {
//     onRetry: (info) => { status.textContent = retryMessage(info); },  // "Loading... (retry 1/3)"
//   });
//   if (outcome.ok) show(outcome.data); else renderError(status, outcome);
//
// sutureFetch() always resolves (it never rejects) to an outcome with the same
// shape as Python's suture.Outcome.as_dict():
//   { ok, status, data, error, retryAfter, transient, snippet, contentType, url, attempts }
// It retries only transient outcomes (network errors, timeouts, 408, 425, 429,
// 5xx), only for idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE, or any
// request carrying an Idempotency-Key header, or with retryUnsafe: true), at
// most `attempts` times in all (default 3, never more than 10), with exponential
// backoff and full jitter, within one overall deadline, each attempt with its own
// timeout. A Retry-After (header, or the body's retryAfter) sets the wait; one
// longer than maxDelay, or ending past the deadline, ends the retries at once and
// the outcome's retryAfter says when to come back: never knock earlier than the
// server asked (the rule of Python's suture.Retry). The outcome's `attempts` is
// the number of calls made (0 when none was). Server text is only ever plain text: put
// it in the page with textContent (renderError does), never innerHTML.

export const DEFAULTS = Object.freeze({
  attempts: 3, // tries in all, the first included
  baseDelay: 500, // ms: the first backoff cap
  maxDelay: 8000, // ms: the cap on any backoff, and the longest Retry-After waited for
  timeout: 10000, // ms: each attempt
  deadline: 30000, // ms: the whole call, waits included
  maxErrorBytes: 65536, // bytes of an error body that are read at most
  expect: "json", // "json" | "text" | "auto"
});

export const MAX_ATTEMPTS = 10;
const ERROR_LIMIT = 300;
const SNIPPET_LIMIT = 200;
const MAX_RETRY_AFTER = 86400;
const TRANSIENT = new Set([408, 425, 429]);
const NO_CONTENT = new Set([204, 205, 304]);
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);
const REASONS = {
  400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
  405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
  413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
  425: "Too Early", 429: "Too Many Requests", 500: "Internal Server Error",
  501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
  504: "Gateway Timeout",
};

/** True for HTTP 5xx, 408, 425 and 429 (the same table as suture.classify). */
export function isTransientStatus(status) {
  return TRANSIENT.has(status) || (status >= 500 && status <= 599);
}

/** "Loading... (retry 1/3)" from the object onRetry receives. */
export function retryMessage(info, prefix = "Loading...") {
  return `${prefix} (retry ${info.attempt}/${info.attempts})`;
}

/**
 * Put an outcome's error (or any text) into `element` as plain text, never as HTML.
 * Returns the element. Adds " Please try again in N s." when the server said when.
 */
export function renderError(element, outcome, { fallback = "Something went wrong.", hint = true } = {}) {
  // an outcome's error is clean text already (never read as markup twice); a string is cleaned
  let text = (typeof outcome === "string" ? cleanText(outcome) : plainLine((outcome && outcome.error) || "")) || fallback;
  if (hint && outcome && typeof outcome === "object" && typeof outcome.retryAfter === "number") {
    text += ` Please try again in ${Math.max(1, Math.ceil(outcome.retryAfter))} s.`;
  }
  element.textContent = text;
  return element;
}

/** A Retry-After value (seconds or an HTTP date) as seconds from now, or null. */
export function parseRetryAfter(value, now = Date.now()) {
  if (value === null || value === undefined) return null;
  const text = String(value).trim();
  if (!text || text.length > 64) return null;
  if (/^[-+.\d]/.test(text)) {
    // delta-seconds, digits only as in suture.classify: a negative or malformed
    // number ("-1", "+5", "1e3", "0x10", which Number() would take) is ignored
    if (!/^(?:\d+(?:\.\d*)?|\.\d+)$/.test(text)) return null;
    const n = Number(text);
    return Number.isFinite(n) ? clamp(n, 0, MAX_RETRY_AFTER) : null;
  }
  const when = Date.parse(text);
  if (!Number.isFinite(when)) return null;
  return clamp((when - now) / 1000, 0, MAX_RETRY_AFTER);
}

/**
 * Markup (or text) in, one line of plain text out, at most `limit` characters:
 * read once by the browser's HTML parser (tags, scripts and styles dropped,
 * entities decoded), then never read as markup again (see plainLine), so
 * "Tom &amp; Jerry&#39;s &lt;API&gt; is down" becomes "Tom & Jerry's \u2039API\u203a is down".
 * The same rule as Python's suture.clean_text.
 */
export function cleanText(text, limit = ERROR_LIMIT) {
  if (text === null || text === undefined) return "";
  let out = String(text).slice(0, limit * 8);
  if (out.includes("&") || /<[A-Za-z\/!?]/.test(out)) out = htmlToText(out);
  return plainLine(out, limit);
}

/**
 * Text in (already decoded: a title, a textContent), one line out: control and
 * format characters removed, whitespace collapsed, at most `limit` characters.
 * Nothing is dropped as markup: a "<" that would open a tag becomes "\u2039" and
 * the ">" that would close it "\u203a", so the words stay and no sink sees a tag.
 */
export function plainLine(text, limit = ERROR_LIMIT) {
  if (text === null || text === undefined) return "";
  let out = String(text).slice(0, limit * 8);
  out = out.replace(/[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}]/gu, (ch) => (/\s/.test(ch) ? " " : ""));
  out = out.replace(/\s+/gu, " ").trim();
  out = out.replace(/<([A-Za-z\/!?][^<>]*)(>?)/g, (_, inner, close) => "\u2039" + inner + (close ? "\u203a" : ""));
  if (out.length > limit) out = out.slice(0, limit - 1).trimEnd() + "\u2026";
  return out;
}

function htmlToText(markup) {
  const doc = parseHtml(markup);
  if (!doc) return markup.replace(/</g, "\u2039");
  return doc.body ? doc.body.textContent : "";
}

// Markup read as Python's tokenizer (suture.responses._html) reads it: scripts,
// styles, templates, svg and math dropped, and a <title> holding markup, not raw
// text as a browser reads it (it is parsed renamed: <suture-title>, in the body).
function parseHtml(markup) {
  if (typeof DOMParser === "undefined") return null;
  // An inert document: its scripts never run and it loads nothing.
  const renamed = markup.replace(/<(\/?)title(?=[\s/>])/gi, "<$1suture-title");
  const doc = new DOMParser().parseFromString(renamed, "text/html");
  for (const el of doc.querySelectorAll("script, style, template, noscript, svg, math")) el.remove();
  return doc;
}

function clamp(x, lo, hi) {
  return Math.min(Math.max(x, lo), hi);
}

function reasonPhrase(status) {
  return REASONS[status] ? `${status} ${REASONS[status]}` : String(status);
}

function mediaType(headers) {
  const raw = (headers && headers.get("content-type")) || "";
  const [mime, ...params] = raw.split(";");
  let charset = "utf-8";
  for (const p of params) {
    const [k, v] = p.split("=");
    if (k && v && k.trim().toLowerCase() === "charset") charset = v.trim().replace(/^["']|["']$/g, "");
  }
  return { mime: mime.trim().toLowerCase(), charset };
}

function isJsonType(mime) {
  return mime === "application/json" || mime === "text/json" || mime.endsWith("+json");
}

function decode(bytes, charset) {
  let decoder;
  try {
    decoder = new TextDecoder(charset || "utf-8");
  } catch {
    decoder = new TextDecoder("utf-8");
  }
  return decoder.decode(bytes); // a BOM is dropped, bad bytes become U+FFFD
}

async function readPrefix(response, limit) {
  if (!response.body) return new Uint8Array(0);
  const reader = response.body.getReader();
  const chunks = [];
  let size = 0;
  try {
    while (size < limit) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } finally {
    reader.cancel().catch(() => {}); // the rest is never downloaded
  }
  const out = new Uint8Array(Math.min(size, limit));
  let offset = 0;
  for (const chunk of chunks) {
    const part = chunk.subarray(0, out.length - offset);
    out.set(part, offset);
    offset += part.length;
    if (offset >= out.length) break;
  }
  return out;
}

function str(value) {
  return typeof value === "string" && value.trim() ? value : null;
}

/** The human reason in a JSON error body, from its common shapes. */
export function messageFromJson(data, depth = 0) {
  if (depth > 3 || data === null || data === undefined) return null;
  if (typeof data === "string") return str(data);
  if (Array.isArray(data)) return messageFromList(data, depth);
  if (typeof data !== "object") return null;
  const title = str(data.title);
  const detail = data.detail;
  if (title && (detail === undefined || detail === null || typeof detail === "string")) {
    const d = str(detail); // RFC 9457 problem details
    return d && d !== title ? `${title}: ${d}` : title;
  }
  const error = data.error;
  if (str(error)) {
    const description = str(data.error_description);
    return description ? `${error}: ${description}` : error;
  }
  if (error && typeof error === "object") {
    const nested = messageFromJson(error, depth + 1);
    if (nested) return nested;
  }
  const message = str(data.message) || str(data.msg);
  if (message) return message;
  if (detail !== undefined && detail !== null) {
    const nested = messageFromJson(detail, depth + 1);
    if (nested) return nested;
  }
  if (data.errors !== undefined && data.errors !== null) {
    const nested = messageFromJson(data.errors, depth + 1);
    if (nested) return nested;
  }
  return str(data.reason) || str(data.description);
}

function messageFromList(items, depth) {
  const parts = [];
  for (const item of items.slice(0, 3)) {
    if (item && typeof item === "object" && !Array.isArray(item)) {
      let msg = str(item.msg) || str(item.message) || messageFromJson(item, depth + 1);
      if (!msg) continue;
      if (Array.isArray(item.loc) && item.loc.length) {
        const where = item.loc.filter((p) => p !== "body").join(".") || String(item.loc[item.loc.length - 1]);
        msg = `${where}: ${msg}`;
      }
      parts.push(msg);
    } else if (str(item)) {
      parts.push(item);
    }
  }
  if (!parts.length) return null;
  const text = parts.join("; ");
  return items.length > 3 ? `${text} (and ${items.length - parts.length} more)` : text;
}

function bodyRetryAfter(data) {
  if (!data || typeof data !== "object" || Array.isArray(data)) return null;
  for (const key of ["retryAfter", "retry_after"]) {
    const v = data[key];
    if (typeof v === "boolean" || v === null || v === undefined) continue;
    // a string must be a decimal number, as for Python's float(): not "0x10" or "0b1"
    const decimal = typeof v === "string" && /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/.test(v.trim());
    const n = typeof v === "number" ? v : decimal ? Number(v.trim()) : NaN;
    if (Number.isFinite(n)) return clamp(n, 0, MAX_RETRY_AFTER);
  }
  return null;
}

function firstLine(text) {
  for (const line of text.slice(0, ERROR_LIMIT * 8).split(/\r\n|\r|\n/)) {
    if (line.trim()) return line;
  }
  return "";
}

function htmlMessage(markup) {
  // The title as Python reads it: tags in it dropped, entities decoded once, and
  // what the decoding made kept as text (plainLine), never read as markup again.
  const doc = parseHtml(markup);
  if (!doc) return { message: "", snippet: "" };
  let titleText = "";
  for (const title of doc.querySelectorAll("suture-title")) {
    if (!titleText.trim()) titleText = title.textContent; // the first that says something
    title.remove(); // not part of the snippet, as in Python
  }
  const h1 = doc.querySelector("h1");
  const message = plainLine(titleText) || plainLine(h1 ? h1.textContent : "");
  const snippet = plainLine(doc.body ? doc.body.textContent : "", SNIPPET_LIMIT) || message;
  return { message, snippet };
}

function bodyKind(mime, text) {
  if (isJsonType(mime)) return "json";
  if (mime === "text/html" || mime === "application/xhtml+xml" || mime.endsWith("xml")) return "html";
  if (mime.startsWith("text/") || mime.startsWith("application/problem")) return "text";
  if (mime && mime !== "application/octet-stream") return "binary";
  const start = text.slice(0, 64).trimStart();
  if (/^[{["]/.test(start)) return "json";
  if (start.startsWith("<")) return "html";
  return mime ? "binary" : "text";
}

function makeOutcome(fields) {
  return {
    ok: false,
    status: null,
    data: null,
    error: null,
    retryAfter: null,
    transient: false,
    snippet: "",
    contentType: "",
    url: "",
    attempts: 1,
    ...fields,
  };
}

/**
 * Validate one fetch Response into an outcome (never rejects). Only the first
 * maxErrorBytes of a failed response are read; the rest is cancelled.
 */
export async function validateResponse(response, options = {}) {
  const expect = options.expect || DEFAULTS.expect;
  const maxErrorBytes = options.maxErrorBytes ?? DEFAULTS.maxErrorBytes;
  const status = response.status;
  const { mime, charset } = mediaType(response.headers);
  const headerHint = parseRetryAfter(response.headers.get("retry-after"));
  const base = { status, contentType: mime, url: response.url || String(options.url || "") };
  // `error` is markup to clean, or clean text already when `plain` (an HTML page's title)
  const fail = (error, extra = {}, plain = false) =>
    makeOutcome({
      ...base,
      transient: isTransientStatus(status),
      ...extra,
      error: (plain ? error : cleanText(error)) || `HTTP ${reasonPhrase(status)}`,
      retryAfter: headerHint ?? extra.retryAfter ?? null,
    });
  try {
    if (NO_CONTENT.has(status)) {
      if (response.body) response.body.cancel().catch(() => {});
      return makeOutcome({ ...base, ok: true, retryAfter: headerHint });
    }
    if (status >= 200 && status < 300) {
      const text = decode(new Uint8Array(await response.arrayBuffer()), charset);
      const snippet = cleanText(text, SNIPPET_LIMIT);
      const json = isJsonType(mime);
      let data = text;
      if (expect === "json" || (expect === "auto" && json)) {
        if (mime && !json) return fail(`expected JSON, got ${mime}`, { transient: false, snippet });
        if (!text.trim()) return fail("expected JSON, got an empty body", { transient: false });
        try {
          data = JSON.parse(text);
        } catch (e) {
          return fail(`invalid JSON: ${e && e.message ? e.message : "parse error"}`, { transient: false, snippet });
        }
        if (data && typeof data === "object" && data.success === false) {
          return fail(messageFromJson(data) || "the server reported a failure", {
            transient: false,
            snippet,
            retryAfter: bodyRetryAfter(data),
          });
        }
      }
      return makeOutcome({ ...base, ok: true, data, retryAfter: headerHint });
    }
    const bytes = await readPrefix(response, maxErrorBytes);
    const text = decode(bytes, charset);
    const kind = bodyKind(mime, text);
    if (kind === "json") {
      let data;
      try {
        data = JSON.parse(text);
      } catch {
        return fail("", { snippet: cleanText(text, SNIPPET_LIMIT) });
      }
      return fail(messageFromJson(data) || "", {
        snippet: cleanText(text, SNIPPET_LIMIT),
        retryAfter: bodyRetryAfter(data),
      });
    }
    if (kind === "html") {
      const page = htmlMessage(text);
      return fail(page.message, { snippet: page.snippet }, true);
    }
    if (kind === "text") return fail(firstLine(text), { snippet: cleanText(text, SNIPPET_LIMIT) });
    return fail("");
  } catch (e) {
    // The body could not be read (the connection dropped, the attempt timed out).
    return fail(`could not read the response body (${(e && e.name) || "Error"})`, { transient: true });
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal && signal.aborted) return resolve(false); // "abort" will not fire again
    if (ms <= 0) return resolve(true);
    const timer = setTimeout(() => {
      if (signal) signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    function onAbort() {
      clearTimeout(timer);
      resolve(false);
    }
    if (signal) signal.addEventListener("abort", onAbort, { once: true });
  });
}

function headerValue(headers, name) {
  if (!headers) return null;
  if (typeof Headers !== "undefined" && headers instanceof Headers) return headers.get(name);
  if (Array.isArray(headers)) {
    const pair = headers.find(([k]) => String(k).toLowerCase() === name);
    return pair ? pair[1] : null;
  }
  for (const key of Object.keys(headers)) if (key.toLowerCase() === name) return headers[key];
  return null;
}

function finiteOr(value, fallback, lo, hi) {
  const n = Number(value);
  return Number.isFinite(n) ? clamp(n, lo, hi) : fallback;
}

/**
 * fetch(), validated and retried. Always resolves to an outcome:
 *   { ok, status, data, error, retryAfter, transient, snippet, contentType, url, attempts }
 *
 * options: every fetch() option (method, headers, body, credentials, signal...), plus
 *   attempts (3; at most 10), baseDelay (500 ms), maxDelay (8000 ms: the backoff cap and
 *   the longest Retry-After waited for), timeout (10000 ms per attempt), deadline
 *   (30000 ms for the whole call),
 *   expect ("json" | "text" | "auto"), maxErrorBytes (65536), retryUnsafe (false),
 *   onRetry({ attempt, attempts, delay, outcome }): called before each wait;
 *   `attempt` is the attempt that just failed, `delay` the wait in ms,
 *   shareBackoff (false): a Retry-After received by any tab of this origin makes
 *   every shareBackoff call wait for it before knocking again (localStorage);
 *   random (Math.random) and fetch (globalThis.fetch) for tests.
 */
export async function sutureFetch(url, options = {}) {
  const {
    attempts: attemptsOpt,
    baseDelay: baseOpt,
    maxDelay: maxOpt,
    timeout: timeoutOpt,
    deadline: deadlineOpt,
    maxRetryAfter: _removed, // maxDelay is the one limit now; kept out of fetch()'s options
    expect = DEFAULTS.expect,
    maxErrorBytes = DEFAULTS.maxErrorBytes,
    retryUnsafe = false,
    shareBackoff = false,
    onRetry = null,
    random = Math.random,
    fetch: fetchImpl = globalThis.fetch.bind(globalThis),
    signal: userSignal = null,
    ...init
  } = options;
  const attempts = Math.floor(finiteOr(attemptsOpt ?? DEFAULTS.attempts, DEFAULTS.attempts, 1, MAX_ATTEMPTS));
  const baseDelay = finiteOr(baseOpt ?? DEFAULTS.baseDelay, DEFAULTS.baseDelay, 0, 3600e3);
  const maxDelay = finiteOr(maxOpt ?? DEFAULTS.maxDelay, DEFAULTS.maxDelay, 0, 3600e3);
  const timeout = finiteOr(timeoutOpt ?? DEFAULTS.timeout, DEFAULTS.timeout, 1, 3600e3);
  const deadline = finiteOr(deadlineOpt ?? DEFAULTS.deadline, DEFAULTS.deadline, 1, 24 * 3600e3);
  const method = String(init.method || "GET").toUpperCase();
  const retryable =
    retryUnsafe || IDEMPOTENT.has(method) || Boolean(headerValue(init.headers, "idempotency-key"));
  const started = Date.now();
  const href = String(url);

  const pause = shareBackoff ? sharedPause(href) : null;

  let outcome = null;
  for (let attempt = 1; ; attempt++) {
    if (pause) {
      // Another tab (or call) was told to wait: do not knock before that time.
      const wait = pause.remaining();
      if (wait > 0) {
        if (wait >= deadline - (Date.now() - started)) {
          return makeOutcome({
            url: href,
            transient: true,
            retryAfter: Math.ceil(wait / 1000),
            attempts: attempt - 1,
            error: "The server is busy; please try again shortly.",
          });
        }
        if (!(await sleep(wait, userSignal))) {
          return makeOutcome({ url: href, attempts: attempt - 1, error: "The request was cancelled." });
        }
      }
    }
    if (userSignal && userSignal.aborted) {
      // cancelled before this call: no call is made, none is counted
      return makeOutcome({ url: href, attempts: attempt - 1, error: "The request was cancelled." });
    }
    const remaining = deadline - (Date.now() - started);
    outcome = await oneAttempt(fetchImpl, href, init, {
      expect,
      maxErrorBytes,
      timeout: Math.max(1, Math.min(timeout, remaining)),
      userSignal,
    });
    outcome.attempts = attempt;
    if (pause && !outcome.ok && typeof outcome.retryAfter === "number") {
      pause.until(Date.now() + outcome.retryAfter * 1000);
    }
    if (outcome.ok || !outcome.transient || !retryable || attempt >= attempts) return outcome;
    if (userSignal && userSignal.aborted) return outcome;
    let delay;
    if (typeof outcome.retryAfter === "number") {
      // Retry-After wins: a wait longer than maxDelay ends the retries (the page can
      // say "try again in N s"); never knock earlier than the server asked.
      delay = outcome.retryAfter * 1000;
      if (delay > maxDelay) return outcome;
    } else {
      const cap = Math.min(maxDelay, baseDelay * 2 ** (attempt - 1));
      delay = random() * cap; // full jitter
    }
    const left = deadline - (Date.now() - started);
    if (delay >= left) return outcome; // the next attempt would end past the deadline
    if (typeof onRetry === "function") {
      try {
        onRetry({ attempt, attempts, delay, outcome });
      } catch (e) {
        // a broken progress callback must not break the request
        if (typeof console !== "undefined") console.error("suture.js: onRetry failed", e);
      }
    }
    if (!(await sleep(delay, userSignal))) return outcome;
  }
}

// A wait shared by every tab of this origin (localStorage), so that a Retry-After
// received by one tab holds back the others too. Storage may be unavailable: then
// the pause is simply not shared.
function sharedPause(href) {
  let key = "suture:pause";
  try {
    key += ":" + new URL(href, globalThis.location ? globalThis.location.href : undefined).origin;
  } catch {
    // a relative URL outside a page: one key for all
  }
  const read = () => {
    try {
      const v = Number(globalThis.localStorage.getItem(key));
      return Number.isFinite(v) ? v : 0;
    } catch {
      return 0;
    }
  };
  return {
    remaining: () => Math.max(0, read() - Date.now()),
    until: (when) => {
      try {
        if (when > read()) globalThis.localStorage.setItem(key, String(Math.round(when)));
      } catch {
        // storage disabled or full: nothing to share
      }
    },
  };
}

async function oneAttempt(fetchImpl, url, init, { expect, maxErrorBytes, timeout, userSignal }) {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeout);
  const onUserAbort = () => controller.abort();
  if (userSignal) {
    if (userSignal.aborted) controller.abort();
    else userSignal.addEventListener("abort", onUserAbort, { once: true });
  }
  try {
    let response;
    try {
      response = await fetchImpl(url, { ...init, signal: controller.signal });
    } catch (e) {
      if (timedOut) {
        return makeOutcome({ url, transient: true, error: `The request timed out after ${fmtSeconds(timeout)}.` });
      }
      if (userSignal && userSignal.aborted) {
        return makeOutcome({ url, transient: false, error: "The request was cancelled." });
      }
      return makeOutcome({ url, transient: true, error: "Network error: the server could not be reached." });
    }
    const outcome = await validateResponse(response, { expect, maxErrorBytes, url });
    if (timedOut && outcome.error && outcome.error.startsWith("could not read")) {
      outcome.error = `The request timed out after ${fmtSeconds(timeout)}.`;
    }
    return outcome;
  } finally {
    clearTimeout(timer);
    if (userSignal) userSignal.removeEventListener("abort", onUserAbort);
  }
}

function fmtSeconds(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(1)} s`;
}
