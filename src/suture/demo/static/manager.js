// The manager page: every call goes through sutureFetch (validated, retried on
// transient failures, Retry-After honoured). Server text only ever reaches the
// page through textContent.
import { sutureFetch, renderError, retryMessage } from "/suture.js";

const $ = (id) => document.getElementById(id);

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleString();
}

// A status line shows one message at a time: setting it stops any countdown running in it.
const countdowns = new WeakMap();

function setStatus(el, text, kind = "") {
  clearInterval(countdowns.get(el));
  countdowns.delete(el);
  el.className = `status ${kind}`.trim();
  el.textContent = text;
}

/** Why an attempt failed, in a few plain words (never a table or state name). */
function reason(outcome) {
  if (!outcome || outcome.status === null || outcome.status === undefined) return "The server did not answer";
  if (outcome.status === 503) return "The service is busy";
  if (outcome.status === 429) return "Too many requests";
  if (outcome.status >= 500) return "The server had a problem";
  return `The server answered ${outcome.status}`;
}

/**
 * While retrying: the reason and a countdown to the next attempt (the wait
 * honours Retry-After), one line, updated each second until the next attempt.
 */
function showRetry(el, info, prefix) {
  setStatus(el, "", "retrying");
  let left = Math.max(1, Math.ceil(info.delay / 1000));
  const say = () => {
    el.textContent = `${retryMessage(info, prefix)} ${reason(info.outcome)}; trying again in ${left} s.`;
  };
  say();
  countdowns.set(el, setInterval(() => {
    left -= 1;
    if (left >= 1) say();
    else clearInterval(countdowns.get(el));
  }, 1000));
}

/** The final error, once: a 409 in the user's words, anything else as the server said it. */
function showFailure(el, outcome, { fallback, conflict = null }) {
  setStatus(el, "", "error");
  if (outcome.status === 409 && conflict) el.textContent = conflict;
  else if (outcome.status === 404 && conflict) el.textContent = conflict;
  else renderError(el, outcome, { fallback });
}

/** GET with "Loading... (retry n/3)" in `statusEl`, then the data or a friendly error. */
async function load(url, statusEl, init = {}) {
  setStatus(statusEl, "Loading...");
  const outcome = await sutureFetch(url, {
    ...init,
    attempts: 3,
    // A Retry-After told to one tab holds back this list in every tab of the page.
    shareBackoff: true,
    onRetry: (info) => showRetry(statusEl, info, "Loading..."),
  });
  if (!outcome.ok) {
    showFailure(statusEl, outcome, { fallback: "Could not load this list." });
    return null;
  }
  return outcome.data;
}

/** POST an action; guarded transitions are idempotent, so retrying them is safe. */
async function act(url, statusEl, { body = null, retry = true, label = "Working...", conflict = null } = {}) {
  setStatus(statusEl, label);
  const outcome = await sutureFetch(url, {
    method: "POST",
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
    attempts: retry ? 3 : 1,
    retryUnsafe: retry,
    onRetry: (info) => showRetry(statusEl, info, label),
  });
  if (!outcome.ok) showFailure(statusEl, outcome, { fallback: "That did not work.", conflict });
  return outcome;
}

// --- who is signed in ------------------------------------------------------------

async function loadManager() {
  const outcome = await sutureFetch("/api/manager/me", { attempts: 2 });
  if (outcome.ok) $("whoami").textContent = `signed in as ${outcome.data.manager}`;
}

// --- assistance -----------------------------------------------------------------

async function loadAssistance() {
  const status = $("assistance-status");
  // RFC 5861: while the database is down, the last list the server read (at most
  // ten minutes old) is better than no list; the page then says how old it is.
  const data = await load("/api/manager/assistance", status, {
    headers: { "Cache-Control": "stale-if-error=600" },
  });
  if (!data) return;
  const list = $("assistance-list");
  list.replaceChildren();
  for (const req of data.requests) list.append(assistanceItem(req));
  if (data.stale) {
    // The database is down: the server answered with the last list it read.
    setStatus(status, staleMessage(data.stale), "stale");
    return;
  }
  setStatus(status, data.requests.length ? `${data.requests.length} request(s) need a manager.` : "Nothing needs a manager right now.");
}

/** "Shown from 42 s ago, the database is unavailable." (numbers and words only). */
function staleMessage(stale) {
  const age = Math.max(0, Math.round(Number(stale.age) || 0));
  const reason = stale.reason === "the database is busy" ? "the database is busy" : "the database is unavailable";
  return `Shown from ${age} s ago, ${reason}.`;
}

function assistanceItem(req) {
  const answer = h("textarea", { rows: "2", placeholder: "Your answer to the agent", "aria-label": `Answer for task ${req.id}` });
  const note = h("div", { class: "status" });
  const button = h("button", { class: "primary", type: "button" }, "Respond");
  const item = h(
    "li",
    { "data-task": String(req.id) },
    h("div", {}, h("span", { class: "tag" }, req.type), h("strong", {}, req.title)),
    h("div", { class: "meta" }, `#${req.id} · ${req.assignee || "unassigned"} · asked ${when(req.requestedAt)}`),
    h("div", {}, req.assistanceNotes || ""),
    answer,
    h("div", { class: "row" }, button),
    note,
  );
  button.addEventListener("click", async () => {
    const text = answer.value.trim();
    if (!text) {
      setStatus(note, "Write an answer first.", "error");
      return;
    }
    button.disabled = true;
    const outcome = await act(`/api/manager/assistance/${req.id}/respond`, note, {
      body: { response: text },
      retry: false,
      label: "Sending...",
      conflict: "Someone already answered this request.",
    });
    button.disabled = false;
    if (outcome.ok) {
      item.remove();
      const by = outcome.data.task && outcome.data.task.respondedBy;
      const left = $("assistance-list").children.length;
      const still = left ? `${left} request(s) still need a manager.` : "Nothing else needs a manager.";
      setStatus($("assistance-status"), `Answered task #${req.id}${by ? ` by ${by}` : ""}. ${still}`);
    }
  });
  return item;
}

// --- spam -----------------------------------------------------------------------

async function loadSpam() {
  const status = $("spam-status");
  const data = await load("/api/manager/spam?limit=50", status);
  if (!data) return;
  const list = $("spam-list");
  list.replaceChildren();
  for (const msg of data.messages) list.append(spamItem(msg));
  setStatus(status, `${data.total} message(s) waiting for review${data.total > data.messages.length ? ` (first ${data.messages.length} shown)` : ""}.`);
}

function messageBody(msg) {
  return [
    h("div", { class: "meta" }, `#${msg.id} · ${msg.brand} · ${when(msg.createdAt)}`),
    h("div", {}, msg.text),
  ];
}

function spamItem(msg) {
  const note = h("div", { class: "status" });
  const item = h("li", { "data-message": String(msg.id) }, ...messageBody(msg));
  const patterns = h("div", {});
  for (const p of msg.matchedPatterns || []) patterns.append(h("span", { class: "tag" }, p));
  const move = (verb, label) =>
    h("button", {
      type: "button",
      class: verb === "archive" ? "danger" : "",
      onclick: async () => {
        const outcome = await act(`/api/manager/spam/${msg.id}/${verb}`, note, {
          label,
          conflict: "Someone already reviewed this message.",
        });
        if (outcome.ok) {
          item.remove();
          loadSpam(); // the count of messages waiting, refreshed
          if (verb === "release") loadInbox();
        }
      },
    }, verb === "archive" ? "Archive" : "Release");
  item.append(patterns, h("div", { class: "row" }, move("release", "Releasing..."), move("archive", "Archiving...")), note);
  return item;
}

async function capture() {
  const status = $("capture-status");
  const button = $("capture");
  const size = Math.max(1, Math.min(10000, Number($("batch-size").value) || 1000));
  button.disabled = true;
  const outcome = await act(`/api/manager/spam/capture?batchSize=${size}`, status, { label: "Capturing..." });
  button.disabled = false;
  if (outcome.ok) {
    const d = outcome.data;
    setStatus(status, `Captured ${d.updatedCount} of ${d.processed} message(s) checked; ${d.remainingInQueue} left in the inbox.`);
    loadSpam();
    loadInbox();
  }
}

// --- inbox ----------------------------------------------------------------------

async function loadInbox() {
  const status = $("inbox-status");
  const data = await load("/api/messages?status=READY&limit=15", status);
  if (!data) return;
  const list = $("inbox-list");
  list.replaceChildren();
  for (const msg of data.messages) {
    const note = h("div", { class: "status" });
    const item = h("li", { "data-message": String(msg.id) }, ...messageBody(msg));
    const promote = h("button", {
      type: "button",
      onclick: async () => {
        const outcome = await act(`/api/messages/${msg.id}/promote`, note, {
          label: "Promoting...",
          conflict: "This message has already left the inbox.",
        });
        if (outcome.ok) {
          item.remove();
          loadInbox(); // the inbox count, refreshed
        }
      },
    }, "Promote");
    item.append(h("div", { class: "row" }, promote), note);
    list.append(item);
  }
  setStatus(status, `${data.total} message(s) in the inbox.`);
}

$("assistance-reload").addEventListener("click", loadAssistance);
$("inbox-reload").addEventListener("click", loadInbox);
$("capture").addEventListener("click", capture);
loadAssistance();
loadSpam();
loadInbox();
loadManager();
