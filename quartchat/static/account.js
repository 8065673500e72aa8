// The account page: change the password, see and end sessions, log out everywhere (revoking the
// API tokens with it unless told not to), make API tokens (an expiry; the password) and revoke
// them, and see my usage month by month. The page's state is the server's; each list below owns
// its own <ul>.

import * as api from "./accounts-api.js";
import { announce, copyText, flashCopied, h } from "./dom.js";
import { act, bindForm, blame, confirmAction, samePasswords, time } from "./forms.js";
import "./logout.js";
import { RowList, badge, rowButton, tokenRow } from "./rows.js";
import { daysBetween, dayName, monthName } from "./usage-format.js";
import { NO_MODEL, TOTAL_COLUMNS, dataTable, estimatedNote, everyDay, tokenChart, totalsFacts } from "./usage-report.js";

const $ = (id) => document.getElementById(id);

/** "Firefox on Windows": enough to recognise a browser, from its User-Agent. */
export function describeBrowser(userAgent) {
  const ua = userAgent || "";
  const browser =
    [
      [/Edg\//, "Edge"],
      [/OPR\//, "Opera"],
      [/Firefox\//, "Firefox"],
      [/Chrom(e|ium)\//, "Chrome"],
      [/Safari\//, "Safari"],
      [/curl\//, "curl"],
    ].find(([pattern]) => pattern.test(ua))?.[1] ?? "A browser";
  const system =
    [
      [/Android/, "Android"],
      [/iPhone|iPad/, "iOS"],
      [/Windows/, "Windows"],
      [/Mac OS X|Macintosh/, "macOS"],
      [/CrOS/, "ChromeOS"],
      [/Linux/, "Linux"],
    ].find(([pattern]) => pattern.test(ua))?.[1] ?? null;
  return system ? `${browser} on ${system}` : browser;
}

// ---- sessions ----

const sessionsPanel = $("sessions-title").closest("section");
const sessionList = new RowList(
  $("sessions"),
  (session) => {
    const name = describeBrowser(session.user_agent);
    const where = session.ip || "unknown address";
    return {
      title: name,
      badges: session.current ? [badge("This browser", "strong")] : [],
      meta: [`${where} · last active `, time(session.last_seen_at), " · since ", time(session.created_at)],
      actions: session.current
        ? []
        : [rowButton("End", `End the session of ${name}, ${where}`, "end", () => endSession(session, name))],
    };
  },
  { fallback: $("sessions-title") },
);

async function endSession(session, name) {
  await act(sessionsPanel, async () => {
    await api.endSession(session.id);
    sessionList.remove(session.id);
    announce(`Ended the session of ${name}.`);
  });
}

async function loadSessions() {
  await act(sessionsPanel, async () => sessionList.replaceAll(await api.sessions()));
}

const everywhereDialog = $("everywhere-dialog");
$("logout-everywhere").addEventListener("click", () => {
  $("everywhere-tokens").checked = true; // the safe choice, every time
  everywhereDialog.returnValue = "";
  everywhereDialog.showModal();
});
everywhereDialog.addEventListener("close", async () => {
  if (everywhereDialog.returnValue !== "ok") {
    $("logout-everywhere").focus();
    return;
  }
  await act(sessionsPanel, async () => {
    await api.logoutEverywhere($("everywhere-tokens").checked);
    location.assign("/login");
  });
});

// ---- password ----

const passwordForm = $("password-form");
bindForm(
  passwordForm,
  async (values) => {
    if (!samePasswords(passwordForm, $("new-password"), $("confirm-password"))) return;
    const { revoked_tokens: revoked } = await api.changePassword(values.current, values.new);
    passwordForm.reset();
    const tokens = revoked === 1 ? "your API token was revoked" : `your ${revoked} API tokens were revoked`;
    passwordForm.querySelector(".form-done").textContent =
      `Password changed. Every other browser was logged out${revoked ? ` and ${tokens}` : ""}.`;
    await Promise.all([loadSessions(), loadTokens()]);
  },
  {
    onError(error) {
      if (error.code === "INVALID_CREDENTIALS") blame($("current-password"), passwordForm, error.message);
      else if (error.code === "WEAK_PASSWORD") blame($("new-password"), passwordForm, error.message);
    },
  },
);

// ---- API tokens ----

const tokensPanel = $("tokens-title").closest("section");
const tokenList = new RowList(
  $("tokens"),
  (token) => ({
    ...tokenRow(token),
    actions: [rowButton("Revoke", `Revoke the token ${token.name}`, "revoke", () => revokeToken(token), { danger: true })],
  }),
  { empty: $("no-tokens"), fallback: $("token-name") },
);

async function revokeToken(token) {
  const sure = await confirmAction(
    `Revoke “${token.name}”?`,
    "Programs using this token stop working at once. This cannot be undone.",
    "Revoke",
  );
  if (!sure) return;
  await act(tokensPanel, async () => {
    await api.revokeToken(token.id);
    tokenList.remove(token.id);
    announce(`Revoked the token ${token.name}.`);
  });
}

const tokenForm = $("token-form");
bindForm(
  tokenForm,
  async ({ name, expiry, password }) => {
    const made = await api.createToken(name.trim(), expiry ? Number(expiry) : null, password || null);
    tokenForm.reset();
    tokenList.append([made]);
    $("new-token-value").value = made.token;
    $("new-token").hidden = false;
    $("new-token-value").focus();
    $("new-token-value").select();
  },
  {
    onError(error) {
      if (["PASSWORD_REQUIRED", "INVALID_CREDENTIALS"].includes(error.code)) {
        blame($("token-password"), tokenForm, error.message);
      }
    },
  },
);

$("copy-token").addEventListener("click", async (event) => {
  flashCopied(event.currentTarget, await copyText($("new-token-value").value));
});
$("hide-token").addEventListener("click", () => {
  // Shown once: gone from the page as soon as the user is done with it.
  $("new-token-value").value = "";
  $("new-token").hidden = true;
  $("token-name").focus();
});

async function loadTokens() {
  await act(tokensPanel, async () => tokenList.replaceAll(await api.tokens()));
}

// ---- my usage ----

const usagePanel = $("usage-title").closest("section");
const thisMonth = () => new Date().toISOString().slice(0, 7); // the ledger's days are UTC days

/** The month `step` months from `month` ("YYYY-MM"). */
function monthFrom(month, step) {
  const [year, number] = month.split("-").map(Number);
  return new Date(Date.UTC(year, number - 1 + step, 1)).toISOString().slice(0, 7);
}

const asked = new URLSearchParams(location.search).get("month");
let usageMonth = /^\d{4}-(0[1-9]|1[0-2])$/.test(asked ?? "") && asked <= thisMonth() ? asked : thisMonth();

function usageReport(usage) {
  const name = monthName(usage.month);
  if (!usage.total.requests) return [h("p", { className: "hint" }, `No use in ${name}.`)];
  const [year, number] = usage.month.split("-").map(Number);
  const last = new Date(Date.UTC(year, number, 0)).toISOString().slice(0, 10);
  const days = everyDay(daysBetween(`${usage.month}-01`, last), usage.by_day);
  return [
    totalsFacts(usage.total),
    estimatedNote(usage.total),
    h("h3", {}, "By day"),
    tokenChart(`Tokens by day, ${name}`, days, { heading: "Day", label: (r) => String(Number(r.day.slice(8))), name: (r) => dayName(r.day) }),
    h("h3", {}, "By model"),
    dataTable(`By model, ${name}`, [{ label: "Model", value: (r) => r.model || NO_MODEL }, ...TOTAL_COLUMNS], usage.by_model),
  ].filter(Boolean);
}

async function loadUsage() {
  const month = usageMonth;
  $("usage-month").textContent = monthName(month);
  const next = $("usage-next");
  next.disabled = month >= thisMonth();
  if (next.disabled && document.activeElement === next) $("usage-prev").focus(); // not lost to the page
  $("usage-report").setAttribute("aria-busy", "true");
  const usage = await act(usagePanel, () => api.myUsage(month));
  if (month !== usageMonth) return; // another month was asked for meanwhile
  $("usage-report").replaceChildren(...(usage ? usageReport(usage) : []));
  $("usage-report").removeAttribute("aria-busy");
}

for (const [id, step] of [["usage-prev", -1], ["usage-next", 1]]) {
  $(id).addEventListener("click", () => {
    usageMonth = monthFrom(usageMonth, step);
    // The address keeps the month, so a reload (or a link) shows the same one.
    const address = new URL(location.href);
    address.searchParams.set("month", usageMonth);
    history.replaceState(null, "", address);
    loadUsage();
  });
}

await Promise.all([loadSessions(), loadTokens(), loadUsage()]);
document.body.dataset.ready = "true";
