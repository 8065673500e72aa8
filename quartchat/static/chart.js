// A small bar chart drawn as SVG by the page (no library, no build step), for the usage views.
// Bars may be stacked (prompt and reply tokens, say). The SVG is drawn at the width its box has,
// so its text stays the page's size on a phone, and again when that width changes. It is one
// image to assistive technology, named by a sentence that sums it up; the same numbers are in a
// table under it ("Show the numbers"), which keyboard and screen-reader users can open.
// Colours come from classes in the stylesheet (the CSP allows no inline style): each series
// names its class.

import { h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 180;
const AXIS = 20; // room under the bars for their labels
const TOP = 16; // room above the tallest bar for the scale's label
const LABEL_WIDTH = 34; // the narrowest a bar's label may have to itself
const BAR_WIDTH = 64; // the widest a bar gets (one user's bar across the whole chart says less)

function svg(tag, attributes = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
  el.append(...children);
  return el;
}

/** A round number at or above `value` for the top of the scale: 1, 2 or 5 times a power of ten. */
export function niceCeiling(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

/**
 * A chart as a `<figure>`: `caption`; `labels`, one per bar (short: "3", "gpt-4o"); `names`, the
 * long form of each label for the table and the summary ("3 May"), default the labels;
 * `series`: [{name, className, values}] stacked from the bottom up; `format(n)` writes a value;
 * `summary`: the sentence that names the image (default: the total and the largest bar);
 * `heading`: what the labels are, the table's first column ("Day"); `numbers`: false when the page
 * shows the same numbers in a table of its own, so the chart need not repeat them.
 */
export function barChart({ caption, labels, names = labels, heading = "", series, format = (n) => n.toLocaleString(), summary = null, numbers = true }) {
  const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] ?? 0), 0));
  const figure = h("figure", { className: "chart" }, h("figcaption", { className: "chart-caption" }, caption));
  const box = h("div", { className: "chart-box" });
  const image = svg("svg", { role: "img", class: "chart-svg", "aria-label": `${caption}. ${summary ?? sumUp(names, totals, format)}` });
  box.append(image);
  figure.append(...[box, legend(series), numbers && table(caption, heading, names, series, totals, format)].filter(Boolean));

  let drawnWidth = 0;
  const draw = () => {
    const width = Math.round(box.clientWidth);
    if (!width || width === drawnWidth) return;
    drawnWidth = width;
    image.replaceChildren(...bars(width, labels, names, series, totals, format));
    image.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
    image.setAttribute("width", width);
    image.setAttribute("height", HEIGHT);
  };
  new ResizeObserver(draw).observe(box);
  return figure;
}

function sumUp(names, totals, format) {
  if (!totals.some((t) => t > 0)) return "Nothing yet.";
  const all = totals.reduce((a, b) => a + b, 0);
  const most = totals.indexOf(Math.max(...totals));
  return `In all ${format(all)}; the most, ${format(totals[most])}, for ${names[most]}.`;
}

function bars(width, labels, names, series, totals, format) {
  const top = niceCeiling(Math.max(0, ...totals));
  const plot = HEIGHT - AXIS - TOP;
  const slot = width / Math.max(1, labels.length);
  const gap = Math.min(8, slot * 0.25);
  // Only every n-th label fits when the bars are narrow (a month of days on a phone).
  const every = Math.ceil(LABEL_WIDTH / slot);
  const y = (value) => TOP + plot - (value / top) * plot;
  const parts = [
    svg("line", { class: "chart-grid", x1: 0, x2: width, y1: TOP, y2: TOP }),
    svg("text", { class: "chart-scale", x: 0, y: TOP - 4 }, format(top)),
    svg("line", { class: "chart-axis", x1: 0, x2: width, y1: TOP + plot, y2: TOP + plot }),
  ];
  labels.forEach((label, i) => {
    const bar = Math.max(1, Math.min(BAR_WIDTH, slot - gap));
    const x = i * slot + (slot - bar) / 2;
    const group = svg("g", {}, svg("title", {}, `${names[i]}: ${series.map((s) => `${format(s.values[i] ?? 0)} ${s.name}`).join(", ")}`));
    let base = 0;
    for (const s of series) {
      const value = s.values[i] ?? 0;
      if (value > 0) {
        // A bar of a value too small to see is still a sliver, so "some" never looks like "none".
        const height = Math.max(1, y(base) - y(base + value));
        group.append(svg("rect", { class: `chart-bar ${s.className}`, x, y: y(base) - height, width: bar, height }));
      }
      base += value;
    }
    parts.push(group);
    if (i % every === 0) {
      parts.push(svg("text", { class: "chart-label", x: i * slot + slot / 2, y: HEIGHT - 5, "text-anchor": "middle" }, shorten(label, Math.floor((slot * every) / 7))));
    }
  });
  return parts;
}

function shorten(text, room) {
  return text.length <= Math.max(3, room) ? text : `${text.slice(0, Math.max(2, room - 1))}…`;
}

function legend(series) {
  if (series.length < 2) return null;
  return h(
    "ul",
    { className: "chart-legend", "aria-hidden": "true" }, // the table says the same, in words
    ...series.map((s) => h("li", {}, swatch(s.className), s.name)),
  );
}

function swatch(className) {
  return svg("svg", { class: "chart-swatch", width: 12, height: 12, viewBox: "0 0 12 12", "aria-hidden": "true" }, svg("rect", { class: `chart-bar ${className}`, width: 12, height: 12, rx: 2 }));
}

function table(caption, heading, names, series, totals, format) {
  const head = h("tr", {}, h("th", { scope: "col" }, heading || "Of"), ...series.map((s) => h("th", { scope: "col", className: "num" }, cap(s.name))));
  if (series.length > 1) head.append(h("th", { scope: "col", className: "num" }, "Total"));
  // Bars of nothing (the days without use) are left out: the table lists what there was.
  const rows = names.flatMap((name, i) => {
    if (!totals[i]) return [];
    const row = h("tr", {}, h("th", { scope: "row" }, name), ...series.map((s) => h("td", {}, format(s.values[i] ?? 0))));
    if (series.length > 1) row.append(h("td", {}, format(totals[i])));
    return [row];
  });
  if (!rows.length) return null;
  return h(
    "details",
    { className: "chart-numbers" },
    h("summary", {}, "Show the numbers"),
    h("div", { className: "table-wrap", tabIndex: 0, role: "region", "aria-label": caption }, h("table", { className: "data" }, h("caption", { className: "visually-hidden" }, caption), h("thead", {}, head), h("tbody", {}, ...rows))),
  );
}

const cap = (text) => text[0].toUpperCase() + text.slice(1);
