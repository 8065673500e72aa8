// The "Log out" buttons (data-logout) of the chat page and the account pages: end this
// browser's session on the server, then show the login page.

import { logout } from "./accounts-api.js";

for (const button of document.querySelectorAll("[data-logout]")) {
  button.addEventListener("click", async () => {
    button.setAttribute("aria-busy", "true");
    try {
      await logout();
    } catch {
      // Already logged out (the session ended elsewhere): the login page is right either way.
    }
    location.assign("/login");
  });
}
