// The setup page: make the first admin with the token from the link the service printed, then
// open the chat.

import { authState, setUp } from "./accounts-api.js";
import { bindForm, samePasswords } from "./forms.js";

const $ = (id) => document.getElementById(id);
const form = $("setup-form");
const token = new URLSearchParams(location.search).get("token");

function unavailable(...content) {
  form.hidden = true;
  $("setup-unavailable").replaceChildren(...content);
  $("setup-unavailable").hidden = false;
}

function loginLink() {
  const link = document.createElement("a");
  link.href = "/login";
  link.textContent = "Log in";
  return link;
}

bindForm(form, async ({ email, password }) => {
  if (!samePasswords(form, $("setup-password"), $("setup-confirm"))) return;
  await setUp(token, email, password);
  location.assign("/");
});

if (!token) {
  unavailable("This page needs the setup link the service printed when it started, with its token.");
} else {
  try {
    if (!(await authState()).setup_required) unavailable("The admin account exists already. ", loginLink(), ".");
  } catch {
    // Try anyway: the server decides.
  }
}
document.body.dataset.ready = "true";
