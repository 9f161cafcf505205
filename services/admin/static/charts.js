// Small SVG charts for the console's Overview: drawn here, no library, nothing fetched from elsewhere.
// Readable without colour: Okabe-Ito colours (safe for the common colour-vision deficiencies), each series
// also with its own fill pattern, and every mark labelled with its number. Each mark carries its data
// (data-value, data-label) so tests and screen readers read the figures, not pixels.

const SVG = "http://www.w3.org/2000/svg";

// Okabe & Ito (2008), "Color Universal Design"; with the pattern each series gets.
export const PALETTE = {
  blue: "#0072B2", vermillion: "#D55E00", orange: "#E69F00", green: "#009E73",
  sky: "#56B4E9", purple: "#CC79A7", yellow: "#F0E442", grey: "#999999",
};
const PATTERNS = {
  solid: null,
  hatch: (p) => [path(p, "M0,8 L8,0 M-2,2 L2,-2 M6,10 L10,6", 1.6)],
  cross: (p) => [path(p, "M0,0 L8,8 M8,0 L0,8", 1.2)],
  dots: (p) => [el("circle", { cx: 2, cy: 2, r: 1.4, fill: p }), el("circle", { cx: 6, cy: 6, r: 1.4, fill: p })],
  vertical: (p) => [path(p, "M2,0 L2,8 M6,0 L6,8", 1.4)],
  horizontal: (p) => [path(p, "M0,2 L8,2 M0,6 L8,6", 1.4)],
};

let serial = 0;

function el(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) if (value !== undefined && value !== null) node.setAttribute(name, value);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function path(stroke, d, width) {
  return el("path", { d, stroke, "stroke-width": width, fill: "none" });
}

// A fill for one series: its colour, with its pattern drawn over it in white.
function fill(defs, colour, pattern) {
  if (!PATTERNS[pattern]) return colour;
  const id = `pattern-${++serial}`;
  defs.append(el("pattern", { id, width: 8, height: 8, patternUnits: "userSpaceOnUse" },
    el("rect", { width: 8, height: 8, fill: colour }), ...PATTERNS[pattern]("#ffffff")));
  return `url(#${id})`;
}

function swatch(colour, pattern, label) {
  const svg = el("svg", { width: 14, height: 14, viewBox: "0 0 14 14", "aria-hidden": "true" });
  const defs = el("defs");
  svg.append(defs, el("rect", { x: .5, y: .5, width: 13, height: 13, fill: fill(defs, colour, pattern), class: "mark" }));
  const item = document.createElement("span");
  item.append(svg, ` ${label}`);
  return item;
}

function nothing(text) {
  const p = document.createElement("p");
  p.className = "nothing";
  p.dataset.testid = "chart-empty";
  p.textContent = text;
  return p;
}

const niceMax = (value) => {
  if (value <= 5) return 5;
  const step = 10 ** Math.floor(Math.log10(value));
  return Math.ceil(value / step) * step;
};

// Columns over time: per point, one bar per series side by side, on one axis. A series with ``parts`` (point ->
// {name: value}) is stacked from its parts, each styled by ``style(name)`` -> [colour, pattern] and in the legend.
export function columns(points, series, { height = 200, timeLabel, label }) {
  const width = 1300, left = 40, bottom = 24, top = 16;
  const max = niceMax(Math.max(0, ...points.flatMap((point) => series.map((s) => point[s.key]))));
  const defs = el("defs");
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, "data-max": max });
  svg.append(defs);
  const plotH = height - top - bottom, slot = (width - left) / Math.max(points.length, 1);
  const barW = Math.max(2, (slot - 6) / series.length);
  for (const tick of [0, max / 2, max]) {
    const y = top + plotH - (tick / max) * plotH;
    svg.append(el("line", { x1: left, x2: width, y1: y, y2: y, class: "grid" }),
      el("text", { x: left - 4, y: y + 4, "text-anchor": "end" }, tick));
  }
  const fills = series.map((s) => fill(defs, s.colour, s.pattern));
  const partFills = new Map();
  const partFill = (s, name) => {
    if (!partFills.has(name)) partFills.set(name, fill(defs, ...s.style(name)));
    return partFills.get(name);
  };
  points.forEach((point, index) => {
    const x0 = left + index * slot + 3;
    series.forEach((s, k) => {
      const value = point[s.key];
      const h = (value / max) * plotH;
      const x = x0 + k * barW, y = top + plotH - h;
      let base = top + plotH;
      for (const [name, part] of Object.entries(s.parts ? s.parts(point) : {})) {
        const partH = (part / max) * plotH;
        base -= partH;
        svg.append(el("rect", {
          x, y: base, width: barW - 1, height: partH, fill: partFill(s, name), "data-testid": "series-part",
          "data-series": s.key, "data-part": name, "data-value": part, "data-start": point.start,
        }, el("title", {}, `${timeLabel(point)}: ${part} ${name}`)));
      }
      const bar = el("rect", {
        x, y, width: barW - 1, height: Math.max(h, 0), fill: s.parts ? "none" : fills[k], class: "mark",
        "data-testid": "series-bar", "data-series": s.key, "data-value": value, "data-start": point.start,
      }, el("title", {}, `${timeLabel(point)}: ${value} ${s.label}`));
      svg.append(bar);
      if (value) svg.append(el("text", { x: x + (barW - 1) / 2, y: y - 3, "text-anchor": "middle" }, value));
    });
    if (index % 3 === 0 || index === points.length - 1) {
      svg.append(el("text", { x: x0 + (slot - 6) / 2, y: height - 6, "text-anchor": "middle" }, timeLabel(point)));
    }
  });
  svg.append(el("line", { x1: left, x2: width, y1: top + plotH, y2: top + plotH, class: "axis" }));
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const s of series) {
    if (!s.parts) legend.append(swatch(s.colour, s.pattern, s.label));
    else {
      const names = [...new Set(points.flatMap((point) => Object.keys(s.parts(point))))].sort();
      legend.append(...(names.length ? names.map((name) => swatch(...s.style(name), `${s.label}: ${name}`))
        : [swatch(s.colour, s.pattern, s.label)]));
    }
  }
  return [svg, legend];
}

// Horizontal bars, one per row: the label above its bar, the figure (or the row's text) right of the bar.
// rows: [{label, value, max?, text?, colour, pattern, testid, data: {...}}]
export function bars(rows, { empty, label, max: fixedMax }) {
  if (!rows.length) return [nothing(empty)];
  const rowH = 34, textW = 170, width = 480;
  const max = fixedMax ?? niceMax(Math.max(0, ...rows.map((row) => row.value)));
  const defs = el("defs");
  const svg = el("svg", { viewBox: `0 0 ${width} ${rows.length * rowH + 2}`, role: "img", "aria-label": label });
  svg.append(defs);
  const plotW = width - textW;
  rows.forEach((row, index) => {
    const y = index * rowH;
    const w = (Math.min(row.value, row.max ?? max) / (row.max ?? max)) * plotW;
    const data = Object.fromEntries(Object.entries(row.data || {}).map(([name, value]) => [`data-${name}`, value]));
    svg.append(
      el("text", { x: 0, y: y + 12 }, row.label),
      el("rect", { x: 0, y: y + 17, width: plotW, height: 14, fill: "#f3f3f3" }),
      el("rect", {
        x: 0, y: y + 17, width: Math.max(w, 0), height: 14, fill: fill(defs, row.colour, row.pattern),
        class: "mark", "data-testid": row.testid, "data-label": row.label, "data-value": row.value, ...data,
      }, el("title", {}, `${row.label}: ${row.text ?? row.value}`)),
      el("text", { x: plotW + 6, y: y + 28 }, row.text ?? row.value));
  });
  return [svg];
}
