// Hand-drawn SVG charts: no plotting library to ship or to trust.
const NS = "http://www.w3.org/2000/svg";

function svg(tag, attributes = {}, text = null) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

function scale(values, from, to, log = false) {
  const f = log ? Math.log10 : (v) => v;
  let lo = Math.min(...values.map(f)), hi = Math.max(...values.map(f));
  if (lo === hi) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.08;
  lo -= pad; hi += pad;
  return (v) => from + ((f(v) - lo) / (hi - lo)) * (to - from);
}

// Points on the frontier: no other point is at least as small (x) and at least as good (y), and better in one.
export function paretoOptimal(points, higherIsBetter = true) {
  const better = (a, b) => (higherIsBetter ? a >= b : a <= b);
  return points.map((p) => !points.some((q) => q !== p && q.x <= p.x && better(q.y, p.y) &&
                                         (q.x < p.x || q.y !== p.y)));
}

export function paretoPlot({ points, xLabel, yLabel, higherIsBetter = true, logX = true, id }) {
  const width = 520, height = 340, left = 64, right = 16, top = 16, bottom = 44;
  const root = svg("svg", { class: "plot", width, height, viewBox: `0 0 ${width} ${height}`, id,
                            role: "img", "aria-label": `${yLabel} vs ${xLabel}` });
  if (!points.length) {
    root.append(svg("text", { x: 20, y: 40 }, "no finished job with this figure yet"));
    return root;
  }
  const x = scale(points.map((p) => p.x), left, width - right, logX && points.every((p) => p.x > 0));
  const y = scale(points.map((p) => p.y), height - bottom, top);
  root.append(svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width - right, y2: height - bottom }));
  root.append(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: height - bottom }));
  root.append(svg("text", { x: (left + width) / 2, y: height - 10, "text-anchor": "middle" }, xLabel));
  root.append(svg("text", { x: 14, y: (top + height - bottom) / 2, "text-anchor": "middle",
                            transform: `rotate(-90 14 ${(top + height - bottom) / 2})` }, yLabel));
  for (const value of [Math.min(...points.map((p) => p.x)), Math.max(...points.map((p) => p.x))]) {
    root.append(svg("text", { x: x(value), y: height - bottom + 14, "text-anchor": "middle" }, tick(value)));
  }
  for (const value of [Math.min(...points.map((p) => p.y)), Math.max(...points.map((p) => p.y))]) {
    root.append(svg("text", { x: left - 4, y: y(value) + 4, "text-anchor": "end" }, tick(value)));
  }
  const optimal = paretoOptimal(points, higherIsBetter);
  const frontier = points.filter((_, i) => optimal[i]).sort((a, b) => a.x - b.x);
  root.append(svg("polyline", { class: "frontier", points: frontier.map((p) => `${x(p.x)},${y(p.y)}`).join(" ") }));
  points.forEach((p, i) => {
    const dot = svg("circle", { cx: x(p.x), cy: y(p.y), r: 5,
                                class: p.baseline ? "baseline" : optimal[i] ? "optimal" : "dominated" });
    dot.append(svg("title", {}, `${p.label}: ${tick(p.y)} at ${tick(p.x)}`));
    root.append(dot);
    // Labels near the right edge go to the left of their point so they stay inside the plot.
    const leftSide = x(p.x) > width - 130;
    root.append(svg("text", { x: x(p.x) + (leftSide ? -7 : 7), y: y(p.y) - 6,
                              "text-anchor": leftSide ? "end" : "start" }, p.label));
  });
  return root;
}

export function barChart({ rows, label, value, unit = "", id }) {
  const shown = rows.filter((row) => typeof row[value] === "number").slice(0, 40);
  const barHeight = 16, left = 200, width = 560, top = 8;
  const height = top * 2 + shown.length * (barHeight + 4) + 16;
  const root = svg("svg", { class: "plot", width, height, viewBox: `0 0 ${width} ${height}`, id,
                            role: "img", "aria-label": `${value} per layer` });
  if (!shown.length) return root;
  const max = Math.max(...shown.map((row) => Math.abs(row[value])), 1e-9);
  shown.forEach((row, i) => {
    const yPos = top + i * (barHeight + 4);
    const length = (Math.abs(row[value]) / max) * (width - left - 70);
    root.append(svg("text", { x: left - 6, y: yPos + 12, "text-anchor": "end" }, String(row[label]).slice(0, 32)));
    root.append(svg("rect", { class: "bar", x: left, y: yPos, width: Math.max(1, length), height: barHeight }));
    root.append(svg("text", { x: left + length + 4, y: yPos + 12 }, `${tick(row[value])}${unit}`));
  });
  return root;
}

function tick(value) {
  if (Math.abs(value) >= 1e6) return `${(value / 1e6).toFixed(2)}M`;
  if (Math.abs(value) >= 1e3) return `${(value / 1e3).toFixed(1)}k`;
  return Math.abs(value) >= 10 ? value.toFixed(1) : value.toFixed(3);
}
