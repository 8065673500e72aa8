// The admin page: the model provider's status (the default model, whether the provider lists it,
// its last refusal of our key), users (paged, 100 at a time; add, approve, disable and enable, change the role,
// reset the password, see and revoke their API tokens), invites (make a link, shown once;
// withdraw), policies (which models, and how many requests, tokens and dollars, per role and
// per user) and usage (by user, model or day, a chart, a CSV download). Each list owns its <ul>.

import * as api from "./accounts-api.js";
import { announce, copyText, flashCopied, h } from "./dom.js";
import { act, bindForm, blame, confirmAction, time } from "./forms.js";
import "./logout.js";
import { RowList, badge, rowButton, tokenRow } from "./rows.js";
import { dayName, daysBetween } from "./usage-format.js";
import { NO_MODEL, TOTAL_COLUMNS, dataTable, estimatedNote, everyDay, tokenChart, totalsFacts } from "./usage-report.js";

const $ = (id) => document.getElementById(id);
const me = Number(document.body.dataset.me);

// ---- the model provider ----

const upstreamPanel = $("upstream-title").closest("section");
const DEFAULT_SOURCES = {
  OPENAI_MODEL: "set by OPENAI_MODEL",
  upstream: "OPENAI_MODEL is not set: the first model the provider lists",
  MODELS_ALLOWED: "OPENAI_MODEL is not set: the first name in MODELS_ALLOWED",
  "built-in": "OPENAI_MODEL is not set and the provider lists none: the built-in default",
};

function upstreamFacts(status) {
  const model = [h("dd", {}, h("code", {}, status.default_model), ` (${DEFAULT_SOURCES[status.default_source] ?? status.default_source})`)];
  if (status.default_listed === false) {
    model.push(h("dd", { className: "warning" }, "The provider does not list this model: chats that name no model may fail. Set OPENAI_MODEL to a model it lists."));
  } else if (!status.models_fetched) {
    model.push(h("dd", { className: "warning" }, "The provider's list of models could not be read."));
  }
  const failure = status.last_auth_failure;
  const refusal = failure
    ? h("dd", { className: "warning" }, `${failure.status}: ${failure.message} (`, time(failure.at), ")")
    : h("dd", {}, "None");
  return [
    h("dt", {}, "Default model"), ...model,
    h("dt", {}, "Last refusal of the API key"), refusal,
    h("dt", {}, "Upstreams"), ...(status.upstreams ?? []).map(upstreamFact),
  ];
}

// One upstream (UPSTREAMS_FILE's or the environment's): how many models it offers, or that it is
// down (its models are left out of the picker and of /v1/models meanwhile).
function upstreamFact(upstream) {
  const name = h("code", {}, upstream.name);
  const role = upstream.default ? " (the default)" : "";
  if (!upstream.up) {
    return h("dd", { className: "warning" }, name, `${role}: down — its list of models could not be read, so its models are not offered.`);
  }
  const failure = upstream.last_auth_failure;
  const models = `${upstream.models} model${upstream.models === 1 ? "" : "s"}`;
  if (failure) {
    return h("dd", { className: "warning" }, name, `${role}: ${models}; refused the key ${failure.status}: ${failure.message} (`, time(failure.at), ")");
  }
  return h("dd", {}, name, `${role}: ${models}`);
}

async function loadUpstream() {
  await act(upstreamPanel, async () => {
    $("upstream-status").replaceChildren(...upstreamFacts(await api.upstreamStatus()));
  });
  $("upstream-status").removeAttribute("aria-busy");
}

// ---- users ----

const usersPanel = $("users-title").closest("section");
const STATUS_BADGES = { pending: ["waiting for approval", "alert"], disabled: ["disabled", "alert"] };

const userList = new RowList(
  $("users"),
  (user) => {
    const badges = [badge(user.role === "admin" ? "admin" : "user", user.role === "admin" ? "strong" : "")];
    if (STATUS_BADGES[user.status]) badges.push(badge(...STATUS_BADGES[user.status]));
    if (user.id === me) badges.push(badge("you"));
    const actions = [];
    // Your own account: no way to lock yourself out from here (another admin can).
    if (user.id !== me) {
      if (user.status === "pending") actions.push(rowButton("Approve", `Approve: ${user.email}`, "status", () => change(user, { status: "active" }, "Approved")));
      else if (user.status === "active") actions.push(rowButton("Disable", `Disable: ${user.email}`, "status", () => disable(user), { danger: true }));
      else actions.push(rowButton("Enable", `Enable: ${user.email}`, "status", () => change(user, { status: "active" }, "Enabled")));
      const role = user.role === "admin" ? "user" : "admin";
      const label = role === "admin" ? "Make admin" : "Make user";
      actions.push(rowButton(label, `${label}: ${user.email}`, "role", () => change(user, { role }, `${label}:`)));
    }
    actions.push(rowButton("Reset password", `Reset password: ${user.email}`, "password", () => openReset(user)));
    actions.push(rowButton("API tokens", `API tokens: ${user.email}`, "tokens", () => openTokens(user)));
    actions.push(rowButton("Limits", `Limits: ${user.email}`, "limits", () => limitsOf(user)));
    return { title: user.email, badges, meta: ["since ", time(user.created_at)], actions };
  },
  { fallback: $("users-title") },
);

async function change(user, values, done) {
  await act(usersPanel, async () => {
    const changed = await api.changeUser(user.id, values);
    userList.update(changed);
    announce(`${done} ${changed.email}.`);
  });
}

async function disable(user) {
  const sure = await confirmAction(
    `Disable ${user.email}?`,
    "They are logged out at once and cannot log in, nor use their API tokens, until enabled again.",
    "Disable",
  );
  if (sure) await change(user, { status: "disabled" }, "Disabled");
}

let lastId = 0;
async function loadUsers() {
  await act(usersPanel, async () => {
    const page = await api.users(lastId);
    for (const user of page) emailOf.set(user.id, user.email);
    subjectOptions();
    if (lastId === 0) userList.replaceAll(page);
    else userList.append(page);
    if (page.length) lastId = page[page.length - 1].id;
    $("more-users").hidden = page.length < api.PAGE_SIZE;
    return page;
  });
}

$("more-users").addEventListener("click", async () => {
  const before = userList.size;
  await loadUsers();
  // Keyboard users continue where the new users begin.
  $("users").children[before]?.querySelector("button")?.focus();
  if ($("more-users").hidden) announce("All users are shown.");
});

const userForm = $("user-form");
bindForm(
  userForm,
  async ({ email, password, role }) => {
    const user = await api.createUser(email, password, role);
    userForm.reset();
    // Users are listed by id; a new one belongs at the end, so it shows once every page is in.
    if ($("more-users").hidden) userList.append([user]);
    emailOf.set(user.id, user.email);
    subjectOptions();
    announce(`Added ${user.email}.`);
    $("user-email").focus();
  },
  {
    onError(error) {
      if (error.code === "EMAIL_TAKEN") blame($("user-email"), userForm, error.message);
      else if (error.code === "WEAK_PASSWORD") blame($("user-password"), userForm, error.message);
    },
  },
);

// ---- password reset ----

const resetDialog = $("reset-dialog");
const resetForm = $("reset-form");
let resetting = null;

function openReset(user) {
  resetting = user;
  resetForm.reset();
  resetForm.querySelector(".form-error").textContent = "";
  $("reset-email").textContent = user.email;
  resetDialog.showModal();
}

bindForm(
  resetForm,
  async ({ password, revoke_tokens: revokeTokens }) => {
    const user = resetting;
    const changed = await api.changeUser(user.id, { password, revoke_tokens: revokeTokens === "on" });
    resetDialog.close();
    const revoked = changed.revoked_tokens;
    announce(`Reset the password of ${user.email}${revoked ? `; revoked ${revoked} API token${revoked === 1 ? "" : "s"}` : ""}.`);
  },
  { onError: () => $("reset-password").focus() },
);
$("reset-cancel").addEventListener("click", () => resetDialog.close());
resetDialog.addEventListener("close", () => {
  resetForm.reset();
  // Back to the button that opened it.
  $("users").querySelector(`[data-id="${resetting?.id}"] [data-slot="password"]`)?.focus();
});

// ---- a user's API tokens ----

const tokensDialog = $("tokens-dialog");
let tokensOf = null;
const userTokenList = new RowList(
  $("user-tokens"),
  (token) => ({
    ...tokenRow(token),
    actions: [rowButton("Revoke", `Revoke the token ${token.name}`, "revoke", () => revokeUserToken(token), { danger: true })],
  }),
  { empty: $("no-user-tokens"), fallback: $("user-tokens-close") },
);

async function openTokens(user) {
  tokensOf = user;
  $("user-tokens-email").textContent = user.email;
  userTokenList.replaceAll([]);
  $("no-user-tokens").hidden = true; // until they are loaded
  tokensDialog.showModal();
  await act(tokensDialog, async () => {
    const listed = await api.userTokens(user.id);
    if (tokensOf === user) userTokenList.replaceAll(listed);
  });
}

async function revokeUserToken(token) {
  const user = tokensOf;
  const sure = await confirmAction(
    `Revoke “${token.name}” of ${user.email}?`,
    "Programs using this token stop working at once. This cannot be undone.",
    "Revoke",
  );
  if (!sure) return;
  await act(tokensDialog, async () => {
    await api.revokeUserToken(user.id, token.id);
    userTokenList.remove(token.id);
    announce(`Revoked the token ${token.name} of ${user.email}.`);
  });
}

$("user-tokens-close").addEventListener("click", () => tokensDialog.close());
tokensDialog.addEventListener("close", () => {
  $("users").querySelector(`[data-id="${tokensOf?.id}"] [data-slot="tokens"]`)?.focus();
});

// ---- models and limits (policies) ----

const policiesPanel = $("policies-title").closest("section");
const policyForm = $("policy-form");
const policyBySubject = new Map();
const emailOf = new Map(); // user id -> email, of the users loaded so far

function subjectName(subject) {
  if (subject === "role:user") return "Every user";
  if (subject === "role:admin") return "Every admin";
  const id = Number(subject.slice(5));
  return emailOf.get(id) ?? `User #${id}`;
}

function limitText(value, unit) {
  if (value === null) return null;
  return value === 0 ? `no limit on ${unit}` : `${value.toLocaleString()} ${unit}`;
}

function policySummary(policy) {
  const parts = [
    policy.models === null ? null : policy.models.length ? `models: ${policy.models.join(", ")}` : "no models",
    limitText(policy.requests_per_minute, "requests per minute"),
    limitText(policy.tokens_per_day, "tokens per day"),
    policy.cost_per_month === null ? null : policy.cost_per_month === 0 ? "no limit on cost" : `$${policy.cost_per_month.toFixed(2)} per month`,
  ].filter(Boolean);
  return parts.length ? parts.join(" · ") : "nothing set";
}

const policyList = new RowList(
  $("policies"),
  (policy) => {
    const name = subjectName(policy.subject);
    return {
      title: name,
      badges: [badge(policy.subject.startsWith("role:") ? "role" : "user")],
      meta: [policySummary(policy)],
      actions: [
        rowButton("Edit", `Edit the policy of ${name}`, "edit", () => editPolicy(policy)),
        rowButton("Remove", `Remove the policy of ${name}`, "remove", () => removePolicy(policy, name), { danger: true }),
      ],
    };
  },
  { empty: $("no-policies"), fallback: $("policy-subject") },
);

function subjectOptions() {
  const select = $("policy-subject");
  const chosen = select.value;
  const users = [...emailOf].map(([id, email]) => h("option", { value: `user:${id}` }, email));
  select.replaceChildren(
    h("option", { value: "role:user" }, "Every user (role)"),
    h("option", { value: "role:admin" }, "Every admin (role)"),
    ...users,
  );
  select.value = chosen || "role:user";
}

function fillPolicyForm(subject) {
  const policy = policyBySubject.get(subject);
  const show = (value) => (value === null || value === undefined ? "" : String(value));
  $("policy-models").value = policy?.models ? policy.models.join(", ") : "";
  $("policy-rpm").value = show(policy?.requests_per_minute);
  $("policy-tokens").value = show(policy?.tokens_per_day);
  $("policy-cost").value = show(policy?.cost_per_month);
}

/** The form, set to the user's policy (the user's row's "Limits" button). */
function limitsOf(user) {
  emailOf.set(user.id, user.email);
  subjectOptions();
  editPolicy({ subject: `user:${user.id}` });
}

function editPolicy(policy) {
  $("policy-subject").value = policy.subject;
  fillPolicyForm(policy.subject);
  $("policy-subject").focus();
}

async function removePolicy(policy, name) {
  const sure = await confirmAction(`Remove the policy of ${name}?`, "The role's policy, or the defaults, apply again.", "Remove");
  if (!sure) return;
  await act(policiesPanel, async () => {
    await api.deletePolicy(policy.subject);
    policyBySubject.delete(policy.subject);
    policyList.remove(policy.subject);
    announce(`Removed the policy of ${name}.`);
  });
}

function showPolicy(policy) {
  const row = { ...policy, id: policy.subject };
  if (policyBySubject.has(policy.subject)) policyList.update(row);
  else policyList.append([row]);
  policyBySubject.set(policy.subject, policy);
}

$("policy-subject").addEventListener("change", (event) => fillPolicyForm(event.target.value));

function wholeNumber(text) {
  return text.trim() === "" ? null : Number(text);
}

bindForm(policyForm, async (values) => {
  const models = values.models.split(",").map((m) => m.trim()).filter(Boolean);
  const fields = {
    models: values.models.trim() === "" ? null : models,
    requests_per_minute: wholeNumber(values.requests_per_minute),
    tokens_per_day: wholeNumber(values.tokens_per_day),
    cost_per_month: wholeNumber(values.cost_per_month),
  };
  const saved = await api.putPolicy(values.subject, fields);
  showPolicy(saved);
  const done = `Saved the policy of ${subjectName(saved.subject)}.`;
  policyForm.querySelector(".form-done").textContent = done;
  announce(done);
});

function defaultsText(defaults) {
  const limits = [
    limitText(defaults.requests_per_minute, "requests per minute"),
    limitText(defaults.tokens_per_day, "tokens per day"),
    defaults.cost_per_month === null ? null : `$${defaults.cost_per_month.toFixed(2)} per month`,
  ].filter(Boolean);
  const said = limits.length ? `the settings' limits (${limits.join(", ")})` : "no limits (the settings set none)";
  return `Everyone may use every model, with ${said}, unless a policy says otherwise. A user's policy overrides their role's.`;
}

async function loadPolicies() {
  await act(policiesPanel, async () => {
    const listed = await api.policies();
    $("policy-defaults").textContent = defaultsText(listed.defaults);
    policyBySubject.clear();
    for (const policy of listed.policies) policyBySubject.set(policy.subject, policy);
    policyList.replaceAll(listed.policies.map((policy) => ({ ...policy, id: policy.subject })));
    fillPolicyForm($("policy-subject").value);
  });
}

// ---- usage ----

const usageForm = $("usage-form");
const CHART_BARS = 30; // by user or model, the chart shows the largest; the table has them all
const GROUPS = {
  user: { heading: "User", of: "by user", name: (r) => r.email ?? (r.user_id ? `user ${r.user_id}` : "no account") },
  model: { heading: "Model", of: "by model", name: (r) => r.key || NO_MODEL },
  day: { heading: "Day", of: "by day", name: (r) => r.key },
};

{
  // This month so far, as the ledger counts days (UTC).
  const today = new Date().toISOString().slice(0, 10);
  $("usage-from").value = `${today.slice(0, 8)}01`;
  $("usage-to").value = today;
}

function usageReport(usage) {
  const group = GROUPS[usage.group] ?? GROUPS.model;
  const range = `${dayName(usage.from, { dateStyle: "medium" })} to ${dayName(usage.to, { dateStyle: "medium" })}`;
  if (!usage.total.requests) return [h("p", { className: "hint" }, `No use from ${range}.`)];
  const caption = `Tokens ${group.of}, ${range}`;
  let chart;
  if (usage.group === "day") {
    const days = everyDay(daysBetween(usage.from, usage.to), usage.rows.map((r) => ({ ...r, day: r.key })));
    chart = tokenChart(caption, days, { heading: "Day", label: (r) => String(Number(r.day.slice(8))), name: (r) => dayName(r.day), numbers: false });
  } else {
    const largest = [...usage.rows].sort((a, b) => b.total_tokens - a.total_tokens).slice(0, CHART_BARS);
    const shown = largest.length < usage.rows.length ? `${caption} (the ${CHART_BARS} largest)` : caption;
    chart = tokenChart(shown, largest, { heading: group.heading, label: (r) => group.name(r).split("@")[0], name: group.name, numbers: false });
  }
  const first = { label: group.heading, value: (r) => (usage.group === "day" ? dayName(r.key, { dateStyle: "medium" }) : group.name(r)) };
  return [totalsFacts(usage.total), estimatedNote(usage.total), chart, dataTable(`Usage ${group.of}, ${range}`, [first, ...TOTAL_COLUMNS], usage.rows)].filter(Boolean);
}

let usageShown = false; // the first report comes with the page; later ones are announced

bindForm(
  usageForm,
  async ({ from, to, group }) => {
    if (from > to) {
      blame($("usage-to"), usageForm, "“To” must be on or after “From”.");
      return;
    }
    $("usage-report").setAttribute("aria-busy", "true");
    try {
      const usage = await api.usage(from, to, group);
      $("usage-report").replaceChildren(...usageReport(usage));
      $("usage-csv").href = api.usageCsvUrl(from, to, group);
      $("usage-csv").download = `quartchat-usage-${from}-${to}-by-${group}.csv`;
      $("usage-csv").hidden = false;
      if (usageShown) announce(`Usage ${GROUPS[group].of}: ${usage.rows.length} ${usage.rows.length === 1 ? "row" : "rows"}.`);
      usageShown = true;
    } finally {
      $("usage-report").removeAttribute("aria-busy");
    }
  },
  {
    onError() {
      $("usage-report").replaceChildren(); // not the numbers of another range under its error
      $("usage-csv").hidden = true;
    },
  },
);

// ---- invites ----

const invitesPanel = $("invites-title").closest("section");
const inviteList = new RowList(
  $("invites"),
  (invite) => {
    const who = invite.email ?? "anyone with the link";
    return {
      title: who,
      badges: [badge(invite.role)],
      meta: ["made ", time(invite.created_at), " · expires ", time(invite.expires_at)],
      actions: [rowButton("Withdraw", `Withdraw the invite for ${who}`, "withdraw", () => withdraw(invite, who), { danger: true })],
    };
  },
  { empty: $("no-invites"), fallback: $("invite-email") },
);

async function withdraw(invite, who) {
  const sure = await confirmAction("Withdraw this invite?", `The link for ${who} stops working.`, "Withdraw");
  if (!sure) return;
  await act(invitesPanel, async () => {
    await api.withdrawInvite(invite.id);
    inviteList.remove(invite.id);
    announce(`Withdrew the invite for ${who}.`);
  });
}

const inviteForm = $("invite-form");
bindForm(inviteForm, async ({ email, role }) => {
  const made = await api.createInvite(email.trim() || null, role);
  inviteForm.reset();
  inviteList.append([made]);
  $("new-invite-value").value = api.inviteLink(made.token);
  $("new-invite").hidden = false;
  $("new-invite-value").focus();
  $("new-invite-value").select();
});

$("copy-invite").addEventListener("click", async (event) => {
  flashCopied(event.currentTarget, await copyText($("new-invite-value").value));
});
$("hide-invite").addEventListener("click", () => {
  $("new-invite-value").value = "";
  $("new-invite").hidden = true;
  $("invite-email").focus();
});

async function loadInvites() {
  await act(invitesPanel, async () => inviteList.replaceAll(await api.invites()));
}

usageForm.requestSubmit(); // this month, by user
await Promise.all([loadUpstream(), loadUsers(), loadInvites()]);
await loadPolicies(); // after the users: a user's policy is named by their email
document.body.dataset.ready = "true";
