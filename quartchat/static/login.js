// The login page: log in, or (where the sign-up policy allows) create an account; while there is
// no account at all, point to the setup link the service printed instead.

import { authState, login, signUp } from "./accounts-api.js";
import { bindForm, samePasswords, sameSitePath } from "./forms.js";

const $ = (id) => document.getElementById(id);
// The server checked it already; checked again here, since this is where the browser goes.
const next = sameSitePath(document.body.dataset.next);

function showOnly(id, focus) {
  for (const section of ["setup-needed", "login", "signup", "signup-pending"]) $(section).hidden = section !== id;
  focus?.focus();
}

bindForm(
  $("login-form"),
  async ({ email, password }) => {
    await login(email, password);
    location.assign(next);
  },
  {
    onError(error) {
      // A wrong password is retyped; an unknown email may be a typo, but the server won't say.
      if (error.code === "INVALID_CREDENTIALS") $("login-password").select();
    },
  },
);

bindForm($("signup-form"), async ({ email, password }) => {
  if (!samePasswords($("signup-form"), $("signup-password"), $("signup-confirm"))) return;
  const answer = await signUp(email, password);
  if (answer.pending) {
    $("signup-form").reset();
    showOnly("signup-pending", $("pending-title"));
  } else location.assign(next);
});

$("show-signup").addEventListener("click", () => showOnly("signup", $("signup-email")));
$("show-login").addEventListener("click", () => showOnly("login", $("login-email")));
$("pending-login").addEventListener("click", () => showOnly("login", $("login-email")));

try {
  const state = await authState();
  if (state.setup_required) showOnly("setup-needed");
  const signupOpen = state.signup === "open" || state.signup === "approval";
  $("signup-offer").hidden = !signupOpen;
  $("signup-approval").hidden = state.signup !== "approval";
} catch {
  // The login form works without knowing the policy.
}
document.body.dataset.ready = "true";
