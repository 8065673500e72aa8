// The invite page: see what the invite is for, choose a password (and the email, unless the
// invite names one), then open the chat, logged in.

import { acceptInvite, invitation } from "./accounts-api.js";
import { bindForm, samePasswords } from "./forms.js";

const $ = (id) => document.getElementById(id);
const form = $("invite-form");
const email = $("invite-email");
const token = new URLSearchParams(location.search).get("token");

function unavailable(message) {
  $("invite-loading").hidden = true;
  form.hidden = true;
  $("invite-unavailable").textContent = message;
  $("invite-unavailable").hidden = false;
}

bindForm(form, async ({ password }) => {
  if (!samePasswords(form, $("invite-password"), $("invite-confirm"))) return;
  // A fixed email is the invite's own; the server takes it from the invite, not from here.
  await acceptInvite(token, email.readOnly ? null : email.value, password);
  location.assign("/");
});

if (!token) {
  unavailable("This page needs the invite link you were sent, with its token.");
} else {
  try {
    const invite = await invitation(token);
    $("invite-loading").hidden = true;
    if (invite.role === "admin") $("invite-what").textContent = "Make your account (an administrator's): choose the password you will log in with.";
    if (invite.email) {
      email.value = invite.email;
      email.readOnly = true;
    }
    form.hidden = false;
    (invite.email ? $("invite-password") : email).focus();
  } catch (error) {
    unavailable(error.message);
  }
}
document.body.dataset.ready = "true";
