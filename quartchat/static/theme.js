// Runs before the page is painted (a classic, blocking script: modules run too late), so a chosen
// light or dark theme shows from the first frame instead of flashing the system one.
try {
  const theme = localStorage.getItem("quartchat.theme");
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
} catch {
  // Storage blocked: follow the system theme.
}
