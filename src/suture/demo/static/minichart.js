// minichart.js: a small SVG line chart for the suture dashboard. No dependencies.
//
//   import { lineChart } from "/static/minichart.js";
//   lineChart(element, {
//     x: [-299, ..., 0],                       // seconds relative to now
//     series: [{ name: "pool", color: "#3556d8", values: [0.1, null, 0.2, ...] }],
//     yMax: 1, yFormat: (v) => `${Math.round(v * 100)}%`,
//   });
//
// `null` values leave a gap. The chart is redrawn from scratch on each call
// (a few hundred points: cheaper than diffing), as wide as its element.

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

export function lineChart(element, { x, series, yMax = null, yFormat = String, xFormat = null, width = null, height = 220 }) {
  width = width || Math.max(320, Math.round(element.clientWidth || 640));
  const pad = { left: 46, right: 10, top: 10, bottom: 24 };
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

  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const title = el("title");
  title.textContent = series.map((s) => s.name).join(", ");
  svg.append(title);
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    const y = sy(v);
    svg.append(el("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, stroke: "#e4e7ec" }));
    const label = el("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#667085" });
    label.textContent = yFormat(v);
    svg.append(label);
  }
  const ticks = 6;
  for (let i = 0; i <= ticks; i++) {
    const v = xMin + ((xMax - xMin) * i) / ticks;
    const label = el("text", { x: sx(v), y: height - 6, "text-anchor": "middle", "font-size": 11, fill: "#667085" });
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
