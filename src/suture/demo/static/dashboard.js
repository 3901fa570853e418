// The monitoring dashboard: polls /api/dashboard each second through sutureFetch.
import { sutureFetch, renderError } from "/suture.js";
import { lineChart } from "/static/minichart.js";

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

function renderBreakers(breakers) {
  const root = $("breakers");
  root.replaceChildren(
    ...breakers.map((b) =>
      h(
        "div",
        { class: "breaker", "data-breaker": b.name },
        h("div", { class: "row" }, h("strong", {}, b.name),
          h("span", { class: "badge", id: `breaker-state-${b.name}`, "data-state": b.state }, b.state.replace("_", "-").toUpperCase()),
          b.retry_after ? h("span", { class: "meta" }, `probe in ${Math.ceil(b.retry_after)} s`) : ""),
        h("div", { class: "stats spaced" },
          ...[["calls", b.total_calls], ["failures", b.total_failures], ["rejected", b.total_rejections],
              ["opened", b.total_opens], ["failure rate (window)", pct(b.failure_rate)]]
            .map(([k, v]) => h("div", { class: "stat" }, h("span", {}, k), h("b", {}, v)))),
      ),
    ),
  );
}

function renderPool(pool) {
  const level = pool.level || "NORMAL";
  $("pool-level").textContent = level;
  $("pool-level").dataset.level = level;
  $("pool-gauge").dataset.level = level;
  $("pool-gauge").firstElementChild.style.width = pct(pool.fraction);
  $("pool-text").textContent =
    pool.fraction === null ? "no sample yet" : `${pool.current} of ${pool.limit} connections in use (${pct(pool.fraction)})${pool.stale ? " · stale sample" : ""}`;
}

function renderEvents(events) {
  $("events").replaceChildren(
    ...events.map((e) => h("li", { "data-event": e.event }, h("span", { class: "meta" }, new Date(e.at * 1000).toLocaleTimeString() + " "), e.message)),
  );
}

function render(d) {
  renderBreakers(d.breakers);
  renderPool(d.pool);
  $("rate-retries").textContent = num(d.rates.retries);
  $("rate-shed").textContent = num(d.rates.shed);
  $("rate-errors").textContent = pct(d.rates.errorRate);
  $("rate-calls").textContent = num(d.rates.db_calls);
  $("total-rejected").textContent = d.totals.rejected_transitions;
  $("total-faults").textContent = d.totals.faults;
  const s = d.series;
  lineChart($("chart-pool"), {
    x: s.t,
    yMax: 1,
    yFormat: pct,
    series: [
      { name: "pool usage", color: "#3556d8", values: s.pool },
      { name: "error rate", color: "#b42318", values: s.errorRate },
    ],
  });
  lineChart($("chart-rates"), {
    x: s.t,
    yFormat: num,
    series: [
      { name: "retries/s", color: "#b54708", values: s.retries },
      { name: "shed/s", color: "#7a2e9e", values: s.shed },
      { name: "rejected transitions/s", color: "#12805c", values: s.rejected_transitions },
    ],
  });
  renderEvents(d.recent);
  $("chaos-card").hidden = !d.chaos;
  if (d.pool.limit) $("chaos-exhaust").dataset.chaos = JSON.stringify({ hold: d.pool.limit });
  renderTraffic(d.traffic);
}

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
