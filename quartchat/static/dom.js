// Small DOM helpers shared by the views: element building without HTML strings, icons from the
// page's SVG sprite, clipboard, and the screen-reader announcer.

const SVG = "http://www.w3.org/2000/svg";

/** `h("button", {className: "x", type: "button"}, "text", child)`: properties, then children. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("aria-") || key === "role") el.setAttribute(key, value === true ? "true" : value);
    else el[key] = value;
  }
  el.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** An icon from the sprite in index.html; decorative, the button carries the name. */
export function icon(name) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const use = document.createElementNS(SVG, "use");
  use.setAttribute("href", `#i-${name}`);
  svg.append(use);
  return svg;
}

/** A button with an icon and a visually hidden name (shown as a tooltip too). */
export function iconButton(name, label, props = {}) {
  return h("button", { type: "button", className: "icon-btn", title: label, ...props }, icon(name), h("span", { className: "visually-hidden" }, label));
}

/**
 * Copy text. The async Clipboard API needs a secure context (https or localhost); a self-hosted
 * chat is often opened over plain http on a LAN address, so fall back to the old selection copy.
 */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Permission refused: try the fallback below.
    }
  }
  const area = h("textarea", { value: text, readOnly: true, className: "clipboard-scratch" });
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } finally {
    area.remove();
  }
  return ok;
}

/** Briefly show "Copied" on a button, keeping its accessible name otherwise unchanged. */
export function flashCopied(button, ok) {
  const target = button.querySelector(".visually-hidden") ?? button;
  const original = button.dataset.label ?? target.textContent;
  button.dataset.label = original;
  target.textContent = ok ? "Copied" : "Copy failed";
  button.classList.add("copied");
  clearTimeout(button.copyTimer);
  button.copyTimer = setTimeout(() => {
    target.textContent = original;
    button.classList.remove("copied");
  }, 1500);
}

/** Polite announcements for screen readers, through one live region in the page. */
export function announce(text) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  // A fresh text node in the next frame makes readers announce even a repeated message.
  requestAnimationFrame(() => {
    region.textContent = text;
  });
}
