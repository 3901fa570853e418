// The monitoring dashboard: polls /api/dashboard each second through sutureFetch.
import { sutureFetch, renderError } from "/suture.js";
import { dataTable, legend, lineChart } from "/static/minichart.js";

const $ = (id) => document.getElementById(id);
const pct = (v) => `${Math.round((v || 0) * 100)}%`;
const num = (v) => (Math.round((v || 0) * 10) / 10).toString();

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
}

const COLORS = {
  ok: "#12805c", client: "#475467", shed: "#b54708", error: "#b42318",
  p50: "#3556d8", p99: "#7a2e9e", pool: "#3556d8", errorRate: "#b42318",
  retries: "#b54708", shedRate: "#7a2e9e", rejected: "#12805c",
};
const BAND = { label: "breaker", colors: { closed: "#12805c", half_open: "#dc6803", open: "#b42318" } };
const STATE_TEXT = { closed: "CLOSED", half_open: "HALF-OPEN", open: "OPEN" };

let lastAt = Date.now() / 1000;
const clockTime = (t) =>
  new Date((lastAt + t) * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

// --- the one live region: state changes only ---------------------------------------
// Changes seen in one render are said together, once, when the render ends.
const announced = {};
let pending = [];
function announce(key, value, text) {
  if (announced[key] === undefined) {
    announced[key] = value; // the first render is not a change
    return;
  }
  if (announced[key] === value) return;
  announced[key] = value;
  pending.push(text);
}
function flushAnnouncements() {
  if (pending.length) $("announce").textContent = pending.join(" ");
  pending = [];
}

function renderBreakers(breakers) {
  const root = $("breakers");
  root.replaceChildren(
    ...breakers.map((b) =>
      h(
        "div",
        { class: "breaker", "data-breaker": b.name },
        h("div", { class: "row" }, h("h3", {}, b.name),
          h("span", { class: "badge", id: `breaker-state-${b.name}`, "data-state": b.state }, STATE_TEXT[b.state] || b.state),
          b.retry_after ? h("span", { class: "meta" }, `probe in ${Math.ceil(b.retry_after)} s`) : ""),
        h("div", { class: "stats spaced" },
          ...[["calls", b.total_calls], ["failures", b.total_failures], ["rejected", b.total_rejections],
              ["opened", b.total_opens], ["failure rate (window)", pct(b.failure_rate)]]
            .map(([k, v]) => h("div", { class: "stat" }, h("span", {}, k), h("b", {}, v)))),
      ),
    ),
  );
  for (const b of breakers) announce(`breaker:${b.name}`, b.state, `Breaker ${b.name} is ${STATE_TEXT[b.state] || b.state}`);
}

function renderPool(pool) {
  const level = pool.level || "NORMAL";
  $("pool-level").textContent = level;
  $("pool-level").dataset.level = level;
  $("pool-gauge").dataset.level = level;
  $("pool-gauge").firstElementChild.style.width = pct(pool.fraction);
  $("pool-text").textContent =
    pool.fraction === null ? "no sample yet" : `${pool.current} of ${pool.limit} connections in use (${pct(pool.fraction)})${pool.stale ? " · stale sample" : ""}`;
  announce("pool", level, `Database pool pressure is ${level}`);
}

const when = (at) => new Date(at * 1000).toLocaleTimeString();

function groupText(g) {
  if (g.count === 1) return g.message;
  const span = Math.max(1, Math.round(g.last - g.first));
  return `${g.message} × ${g.count} in ${span} s`;
}

function renderEvents(d) {
  $("pinned").replaceChildren(
    ...(d.pinned || []).map((e) => h("li", { "data-event": e.event }, h("span", { class: "meta" }, `${when(e.at)} `), e.message)),
  );
  const only = $("event-filter").value;
  const groups = (d.events || []).filter((g) => !only || g.event === only);
  $("events").replaceChildren(
    ...groups.map((g) =>
      h("li", { "data-event": g.event, "data-count": g.count }, h("span", { class: "meta" }, `${when(g.last)} `), groupText(g)),
    ),
  );
}

// Which fault buttons are pressed, from the server's chaos snapshot (so a reload shows them).
function renderFaults(chaos) {
  const db = (chaos && chaos.database) || {};
  const errorRate = db.error_rate || 0;
  const pressed = {
    errors30: errorRate > 0 && errorRate < 1,
    errors100: errorRate >= 1,
    latency: (db.latency || 0) > 0,
    hold: (db.hold || 0) > 0,
  };
  for (const button of document.querySelectorAll("[data-fault]")) {
    button.setAttribute("aria-pressed", String(Boolean(pressed[button.dataset.fault])));
  }
  const parts = [];
  if (errorRate > 0) parts.push(`${pct(errorRate)} errors`);
  if (db.latency) parts.push(`+${Math.round(db.latency * 1000)} ms`);
  if (db.hold) parts.push(`${db.hold} connection(s) held`);
  const text = parts.length ? `Active on database: ${parts.join(", ")}.` : "No fault active.";
  $("active-faults").textContent = text;
  $("active-faults").dataset.active = String(parts.length > 0);
  announce("faults", text, text);
}

const ms = (v) => `${Math.round(v)} ms`;

function chart(key, { series, yMax = null, yFormat, caption, s }) {
  legend($(`legend-${key}`), series);
  lineChart($(`chart-${key}`), { x: s.t, series, yMax, yFormat, xFormat: clockTime, band: { ...BAND, values: s.state } });
  dataTable($(`table-${key}`), {
    caption, x: s.t, xFormat: clockTime,
    columns: [...series.map((c) => ({ name: c.name, values: c.values, format: yFormat })),
      { name: "breaker", values: s.state, format: (v) => STATE_TEXT[v] || v }],
  });
}

function render(d) {
  lastAt = d.at;
  renderBreakers(d.breakers);
  renderPool(d.pool);
  $("rate-retries").textContent = num(d.rates.retries);
  $("rate-shed").textContent = num(d.rates.shed);
  $("rate-errors").textContent = pct(d.rates.errorRate);
  $("rate-calls").textContent = num(d.rates.db_calls);
  $("total-rejected").textContent = d.totals.rejected_transitions;
  $("total-faults").textContent = d.totals.faults;
  const s = d.series;
  chart("requests", {
    s, yFormat: num, caption: "Requests per second by outcome, last 10 seconds",
    series: [
      { name: "2xx", color: COLORS.ok, values: s.req_2xx },
      { name: "503 shed or rejected", color: COLORS.shed, values: s.req_503 },
      { name: "other 5xx", color: COLORS.error, values: s.req_5xx },
      { name: "4xx", color: COLORS.client, values: s.req_4xx },
    ],
  });
  chart("latency", {
    s, yFormat: ms, caption: "Request latency in milliseconds, last 10 seconds",
    series: [
      { name: "p50", color: COLORS.p50, values: s.p50 },
      { name: "p99", color: COLORS.p99, values: s.p99 },
    ],
  });
  chart("pool", {
    s, yMax: 1, yFormat: pct, caption: "Database error rate and pool usage, last 10 seconds",
    series: [
      { name: "pool usage", color: COLORS.pool, values: s.pool },
      { name: "database error rate", color: COLORS.errorRate, values: s.errorRate },
    ],
  });
  chart("rates", {
    s, yFormat: num, caption: "Retries, shed requests and rejected transitions per second, last 10 seconds",
    series: [
      { name: "retries/s", color: COLORS.retries, values: s.retries },
      { name: "shed/s", color: COLORS.shedRate, values: s.shed },
      { name: "rejected transitions/s", color: COLORS.rejected, values: s.rejected_transitions },
    ],
  });
  renderEvents(d);
  $("chaos-card").hidden = !d.chaos;
  if (d.chaos) renderFaults(d.chaos);
  if (d.pool.limit) $("chaos-exhaust").dataset.chaos = JSON.stringify({ hold: d.pool.limit });
  renderTraffic(d.traffic);
  flushAnnouncements();
  lastData = d;
}

let lastData = null;
$("event-filter").addEventListener("change", () => {
  if (lastData) renderEvents(lastData);
});

// Synthetic traffic (suture demo --traffic N): requests the app sends to its own API.
function renderTraffic(rate) {
  const toggle = $("traffic-toggle");
  toggle.hidden = rate === null || rate === undefined;
  if (toggle.hidden) return;
  const on = rate > 0;
  toggle.textContent = on ? `stop traffic (${num(rate)}/s)` : "start traffic (5/s)";
  toggle.dataset.chaos = JSON.stringify({ traffic: on ? 0 : 5 });
}

// Polling, not retrying forever: one request a second while the tab is visible. After
// a failure the next poll waits longer each time (2, 4, 8... at most 30 s), and never
// less than the server's Retry-After; a hidden tab does not poll at all.
const POLL_MS = 1000;
const MAX_BACKOFF_MS = 30000;
let failures = 0;
let polling = false; // a poll is running or scheduled

function nextDelay(outcome) {
  if (outcome.ok) return POLL_MS;
  let delay = Math.min(MAX_BACKOFF_MS, POLL_MS * 2 ** failures);
  if (typeof outcome.retryAfter === "number" && Number.isFinite(outcome.retryAfter)) {
    delay = Math.max(delay, Math.min(outcome.retryAfter, 3600) * 1000);
  }
  return delay;
}

async function tick() {
  if (document.hidden) {
    polling = false; // visibilitychange starts it again
    return;
  }
  polling = true;
  const outcome = await sutureFetch("/api/dashboard", { attempts: 1, timeout: 2500 });
  const live = $("live");
  if (outcome.ok) {
    failures = 0;
    live.textContent = `live · ${new Date().toLocaleTimeString()}`;
    render(outcome.data);
  } else {
    failures += 1;
    renderError(live, outcome, { fallback: "dashboard unreachable", hint: false });
    live.append(` (next try in ${Math.ceil(nextDelay(outcome) / 1000)} s)`);
  }
  live.dataset.failures = String(failures);
  setTimeout(tick, nextDelay(outcome));
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && !polling) tick();
});

for (const button of document.querySelectorAll("[data-chaos]")) {
  button.addEventListener("click", async () => {
    const status = $("chaos-status");
    const outcome = await sutureFetch("/api/admin/chaos", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: button.dataset.chaos,
      attempts: 1,
    });
    if (outcome.ok) {
      const db = outcome.data.chaos.database || {};
      renderTraffic(outcome.data.traffic);
      renderFaults(outcome.data.chaos);
      flushAnnouncements();
      status.className = "status";
      const traffic = outcome.data.traffic ? `; traffic ${num(outcome.data.traffic)}/s` : "";
      status.textContent = `database: ${pct(db.error_rate)} errors, +${Math.round((db.latency || 0) * 1000)} ms, ${db.hold || 0} connection(s) held${traffic}`;
    } else {
      status.className = "status error";
      renderError(status, outcome);
    }
  });
}

tick();
