// minichart.js: a small SVG line chart for the suture dashboard. No dependencies.
//
//   import { lineChart, dataTable, legend } from "/static/minichart.js";
//   lineChart(element, {
//     x: [-299, ..., 0],                       // seconds relative to now
//     series: [{ name: "pool", color: "#3556d8", values: [0.1, null, 0.2, ...] }],
//     yMax: 1, yFormat: (v) => `${Math.round(v * 100)}%`,
//     xFormat: (t) => "12:01:30",              // default: "-30s"
//     band: { values: ["closed", "open", ...], colors: { open: "#b42318" }, label: "breaker" },
//   });
//
// `null` values leave a gap. The chart is redrawn from scratch on each call
// (a few hundred points: cheaper than diffing), as wide as its element. The
// optional band is a strip along the top of the plot, one colour per state
// (runs of the same state are one <rect data-state="...">), so an outage reads
// on the time axis of every chart that carries it. No inline style attribute is
// written (the pages' CSP allows none): colours are SVG presentation attributes.

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function pathFor(xs, ys, sx, sy) {
  let d = "";
  let pen = false;
  for (let i = 0; i < xs.length; i++) {
    const y = ys[i];
    if (y === null || y === undefined || !Number.isFinite(y)) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${sx(xs[i]).toFixed(1)},${sy(y).toFixed(1)}`;
    pen = true;
  }
  return d;
}

function drawBand(svg, band, xs, sx, pad, width) {
  const step = xs.length > 1 ? sx(xs[1]) - sx(xs[0]) : width - pad.left - pad.right;
  let start = 0;
  for (let i = 1; i <= xs.length; i++) {
    if (i < xs.length && band.values[i] === band.values[start]) continue;
    const state = band.values[start];
    if (state) {
      const x0 = Math.max(pad.left, sx(xs[start]) - step / 2);
      const x1 = Math.min(width - pad.right, sx(xs[i - 1]) + step / 2);
      const rect = el("rect", {
        x: x0.toFixed(1), y: 0, width: Math.max(1, x1 - x0).toFixed(1), height: pad.top - 2,
        fill: band.colors[state] || "#98a2b3", "data-state": state,
      });
      const tip = el("title");
      tip.textContent = `${band.label || "state"}: ${state.replace("_", "-")}`;
      rect.append(tip);
      svg.append(rect);
    }
    start = i;
  }
}

export function lineChart(element, { x, series, yMax = null, yFormat = String, xFormat = null, width = null, height = 220, band = null }) {
  width = width || Math.max(300, Math.round(element.clientWidth || 640));
  const pad = { left: 46, right: 10, top: band ? 16 : 10, bottom: 24 };
  const xs = x.length ? x : [0, 1];
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs);
  let top = yMax;
  if (top === null) {
    top = 0;
    for (const s of series) for (const v of s.values) if (Number.isFinite(v) && v > top) top = v;
    top = top > 0 ? top * 1.15 : 1;
  }
  const sx = (v) => pad.left + ((v - xMin) / (xMax - xMin || 1)) * (width - pad.left - pad.right);
  const sy = (v) => pad.top + (1 - Math.min(v, top) / top) * (height - pad.top - pad.bottom);

  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-hidden": "true" });
  if (band) drawBand(svg, band, xs, sx, pad, width);
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    const y = sy(v);
    svg.append(el("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, stroke: "#e4e7ec" }));
    const label = el("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#475467" });
    label.textContent = yFormat(v);
    svg.append(label);
  }
  const ticks = width < 420 ? 2 : width < 620 ? 3 : 6;
  for (let i = 0; i <= ticks; i++) {
    const v = xMin + ((xMax - xMin) * i) / ticks;
    const anchor = i === 0 ? "start" : i === ticks ? "end" : "middle";
    const label = el("text", { x: sx(v), y: height - 6, "text-anchor": anchor, "font-size": 11, fill: "#475467" });
    label.textContent = xFormat ? xFormat(v) : `${Math.round(v)}s`;
    svg.append(label);
  }
  for (const s of series) {
    svg.append(
      el("path", {
        d: pathFor(xs, s.values, sx, sy),
        fill: "none",
        stroke: s.color,
        "stroke-width": 2,
        "stroke-linejoin": "round",
        "data-series": s.name,
      }),
    );
  }
  element.replaceChildren(svg);
  return svg;
}

/** A legend of coloured keys (no inline style: the key is a tiny SVG). */
export function legend(element, items) {
  element.replaceChildren(
    ...items.map(({ name, color }) => {
      const span = document.createElement("span");
      const key = el("svg", { width: 12, height: 4, "aria-hidden": "true" });
      key.append(el("rect", { width: 12, height: 4, fill: color }));
      span.append(key, document.createTextNode(` ${name}`));
      return span;
    }),
  );
}

/** The chart's data as a table for screen readers and keyboard users: the last `rows` points. */
export function dataTable(element, { caption, x, xFormat, columns, rows = 10 }) {
  const table = document.createElement("table");
  const cap = document.createElement("caption");
  cap.textContent = caption;
  const head = document.createElement("tr");
  for (const name of ["time", ...columns.map((c) => c.name)]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = name;
    head.append(th);
  }
  const thead = document.createElement("thead");
  thead.append(head);
  const body = document.createElement("tbody");
  for (let i = Math.max(0, x.length - rows); i < x.length; i++) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = xFormat(x[i]);
    tr.append(th);
    for (const c of columns) {
      const td = document.createElement("td");
      const v = c.values[i];
      td.textContent = v === null || v === undefined ? "" : c.format ? c.format(v) : String(v);
      tr.append(td);
    }
    body.append(tr);
  }
  table.append(cap, thead, body);
  element.replaceChildren(table);
}
