// How the page writes usage: token counts, US dollars, and what a reply cost at a model's price
// (prices come with GET /api/models as {model: {input_per_million, output_per_million}}).

const count = new Intl.NumberFormat();
// Costs of a reply are fractions of a cent: two significant digits say enough of them.
const small = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumSignificantDigits: 2 });
const large = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2 });

/** "1,234". */
export const tokens = (n) => count.format(n ?? 0);

/** "$0.00042", "$0.12", "$12.30"; "$0" for nothing. */
export function dollars(usd) {
  if (!usd) return "$0";
  return usd < 1 ? small.format(usd) : large.format(usd);
}

/** The prices of `raw` (the models list's `prices`) that are well formed: model -> price. */
export function readPrices(raw) {
  const prices = new Map();
  if (!raw || typeof raw !== "object") return prices;
  const fine = (n) => typeof n === "number" && Number.isFinite(n) && n >= 0;
  for (const [model, price] of Object.entries(raw)) {
    if (price && fine(price.input_per_million) && fine(price.output_per_million)) prices.set(model, price);
  }
  return prices;
}

/**
 * A reply's model's price. A reply names the model the upstream says answered, which for OpenAI
 * is the dated snapshot of the model asked for ("gpt-4o-mini-2024-07-18" for "gpt-4o-mini"):
 * without a price of its own, it costs what the undated model costs.
 */
export function priceOf(prices, model) {
  if (!model) return null;
  return prices.get(model) ?? prices.get(model.replace(/-\d{4}-\d{2}-\d{2}$/, "")) ?? null;
}

/** What `usage` ({prompt_tokens, completion_tokens}) costs at `price`, in US dollars. */
export function costOf(usage, price) {
  return (usage.prompt_tokens * price.input_per_million + usage.completion_tokens * price.output_per_million) / 1e6;
}

/** "May 2025" for "2025-05". */
export function monthName(month) {
  const [year, number] = month.split("-").map(Number);
  return new Date(Date.UTC(year, number - 1, 1)).toLocaleDateString(undefined, { month: "long", year: "numeric", timeZone: "UTC" });
}

/** "3 May" for "2025-05-03" (the day as the server counts it, in UTC). */
export function dayName(day, options = { day: "numeric", month: "short" }) {
  return new Date(`${day}T00:00:00Z`).toLocaleDateString(undefined, { ...options, timeZone: "UTC" });
}

/** Every day from `from` to `to` ("YYYY-MM-DD"), both included. */
export function daysBetween(from, to) {
  const days = [];
  for (let at = Date.parse(`${from}T00:00:00Z`), end = Date.parse(`${to}T00:00:00Z`); at <= end && days.length < 400; at += 86400000) {
    days.push(new Date(at).toISOString().slice(0, 10));
  }
  return days;
}
