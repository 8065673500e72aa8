// The usage views of the account and admin pages, from the ledger's totals ({requests, errors,
// prompt_tokens, completion_tokens, total_tokens, cost_usd (null: no price), estimated}): the
// totals as facts, a table of rows, and the chart of tokens (chart.js).

import { barChart } from "./chart.js";
import { h } from "./dom.js";
import { dollars, tokens } from "./usage-format.js";

export const TOKEN_SERIES = [
  { name: "prompt tokens", className: "series-prompt", key: "prompt_tokens" },
  { name: "reply tokens", className: "series-reply", key: "completion_tokens" },
];

// The ledger counts requests refused before a model was chosen under the model "".
export const NO_MODEL = "no model (refused first)";

const costText = (cost) => (cost === null || cost === undefined ? "—" : dollars(cost));

/** The totals as a list of facts: requests (and failures), tokens, cost. */
export function totalsFacts(total) {
  const failed = total.errors ? `, ${tokens(total.errors)} failed` : "";
  const facts = [
    h("div", {}, h("dt", {}, "Requests"), h("dd", {}, `${tokens(total.requests)}${failed}`)),
    h(
      "div",
      {},
      h("dt", {}, "Tokens"),
      h("dd", {}, `${tokens(total.total_tokens)}`, h("span", { className: "fact-detail" }, ` (${tokens(total.prompt_tokens)} prompt + ${tokens(total.completion_tokens)} reply)`)),
    ),
    h("div", {}, h("dt", {}, "Cost"), h("dd", {}, total.cost_usd === null || total.cost_usd === undefined ? "No price set" : dollars(total.cost_usd))),
  ];
  return h("dl", { className: "usage-totals" }, ...facts);
}

/** Said under the totals when some counts were estimated (the upstream gave no usage). */
export function estimatedNote(total) {
  const n = Number(total.estimated) || 0;
  if (!n) return null;
  const which = n === 1 ? "1 request's tokens were" : `${tokens(n)} requests' tokens were`;
  return h("p", { className: "hint" }, `${which} estimated: the model did not report them.`);
}

/**
 * A table of rows: `columns` [{label, value(row) -> text or node, numeric}], the first column
 * names the row (a row header). In a box that scrolls sideways on a phone (focusable, named, so a
 * keyboard can scroll it too).
 */
export function dataTable(caption, columns, rows) {
  const head = h("tr", {}, ...columns.map((c) => h("th", { scope: "col", className: c.numeric ? "num" : null }, c.label)));
  const body = rows.map((row) =>
    h(
      "tr",
      {},
      ...columns.map((c, i) => h(i === 0 ? "th" : "td", { scope: i === 0 ? "row" : null, className: c.numeric ? "num" : null }, c.value(row))),
    ),
  );
  return h(
    "div",
    { className: "table-wrap", tabIndex: 0, role: "region", "aria-label": caption },
    h("table", { className: "data" }, h("caption", { className: "visually-hidden" }, caption), h("thead", {}, head), h("tbody", {}, ...body)),
  );
}

/** The columns of totals after the row's name. */
export const TOTAL_COLUMNS = [
  { label: "Requests", numeric: true, value: (r) => tokens(r.requests) },
  { label: "Failed", numeric: true, value: (r) => tokens(r.errors) },
  { label: "Prompt tokens", numeric: true, value: (r) => tokens(r.prompt_tokens) },
  { label: "Reply tokens", numeric: true, value: (r) => tokens(r.completion_tokens) },
  { label: "Cost", numeric: true, value: (r) => costText(r.cost_usd) },
];

/**
 * A chart of prompt and reply tokens per row, stacked; `label(row)` short, `name(row)` long;
 * `numbers`: false when a table beside it has the same rows.
 */
export function tokenChart(caption, rows, { label, name = label, heading, numbers = true }) {
  return barChart({
    caption,
    heading,
    numbers,
    labels: rows.map(label),
    names: rows.map(name),
    series: TOKEN_SERIES.map((s) => ({ ...s, values: rows.map((r) => r[s.key] ?? 0) })),
    format: tokens,
  });
}

/** Rows for every day from `days` (a list of "YYYY-MM-DD"), zero where the ledger has none. */
export function everyDay(days, rows) {
  const byDay = new Map(rows.map((r) => [r.day ?? r.key, r]));
  return days.map((day) => byDay.get(day) ?? { day, requests: 0, errors: 0, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, cost_usd: null });
}
