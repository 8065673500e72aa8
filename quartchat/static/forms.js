// What every account page does with its forms: check the fields, send, show the server's message
// in the form's alert region, and keep focus where a keyboard or screen-reader user expects it.
// Also the confirmation dialog, and dates.

import { ApiError } from "./accounts-api.js";
import { h } from "./dom.js";

function labelOf(field) {
  return field.labels?.[0]?.textContent.trim() || field.name;
}

/** The first field the browser's own checks refuse, with what to tell the user. */
function firstProblem(form) {
  for (const field of form.querySelectorAll("input:not([type=hidden]):not([hidden]), select")) {
    const { validity } = field;
    if (validity.valid) continue;
    const name = labelOf(field);
    if (validity.valueMissing) return [field, `Fill in “${name}”.`];
    if (validity.typeMismatch) return [field, `“${name}” needs an email address, like name@example.com.`];
    if (validity.tooShort) return [field, `“${name}” needs at least ${field.minLength} characters.`];
    return [field, `Check “${name}”.`];
  }
  return null;
}

/** Show a message in a region's alert (role=alert: screen readers read it at once). */
export function showError(region, message) {
  region.querySelector(".form-error").textContent = message;
}

export function clearError(region) {
  const box = region.querySelector(".form-error");
  if (box) box.textContent = "";
}

/** Mark a field as the one at fault, and take the user there. */
export function blame(field, form, message) {
  field.setAttribute("aria-invalid", "true");
  showError(form, message);
  field.focus();
  field.select?.();
}

/**
 * Submit `form` through `handler(values)`: fields are checked first; while the request runs a
 * second submit is ignored; an ApiError's message is shown in the form. The submit button is not
 * disabled (that would drop the focus of someone who clicked it); the form is aria-busy instead.
 * `onError(error)` may pick the field to focus.
 */
export function bindForm(form, handler, { onError } = {}) {
  form.addEventListener("input", (event) => event.target.removeAttribute("aria-invalid"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (form.getAttribute("aria-busy") === "true") return;
    clearError(form);
    form.querySelector(".form-done")?.replaceChildren();
    const problem = firstProblem(form);
    if (problem) {
      blame(problem[0], form, problem[1]);
      return;
    }
    form.setAttribute("aria-busy", "true");
    try {
      await handler(Object.fromEntries(new FormData(form)));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showError(form, error.message);
      onError?.(error);
    } finally {
      form.removeAttribute("aria-busy");
    }
  });
}

/** Whether the two password fields agree; if not, says so at the second one. */
export function samePasswords(form, password, again) {
  if (password.value === again.value) return true;
  blame(again, form, "The two passwords differ: type the same password twice.");
  return false;
}

/** Run `action` from a button, showing a failure in `region`'s alert. */
export async function act(region, action) {
  clearError(region);
  try {
    return await action();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showError(region, error.message);
    return undefined;
  }
}

/** Ask before something that cannot be undone; resolves true when the user agrees. */
export function confirmAction(title, text, actionLabel) {
  const dialog = document.getElementById("confirm");
  dialog.querySelector("#confirm-title").textContent = title;
  dialog.querySelector("#confirm-text").textContent = text;
  dialog.querySelector("#confirm-ok").textContent = actionLabel;
  dialog.returnValue = "";
  const opener = document.activeElement;
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        if (dialog.returnValue !== "ok" && opener?.isConnected) opener.focus();
        resolve(dialog.returnValue === "ok");
      },
      { once: true },
    );
  });
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** A <time> for an ISO timestamp, in the reader's locale and time zone. */
export function time(iso) {
  if (!iso) return h("span", {}, "never");
  return h("time", { dateTime: iso }, dateFormat.format(new Date(iso)));
}

/** A path on this site to go to after logging in: never somewhere else (an open redirect). */
export function sameSitePath(target) {
  const path = String(target || "/");
  try {
    const url = new URL(path, location.origin);
    if (url.origin === location.origin && path.startsWith("/")) return url.pathname + url.search + url.hash;
  } catch {
    // Not a URL at all.
  }
  return "/";
}
