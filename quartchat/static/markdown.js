// Model output -> safe DOM. Markdown is parsed by marked, code is coloured by highlight.js, and
// everything passes through DOMPurify before it reaches the page. Two layers, on purpose:
// raw HTML in the model's text is shown as text (as a person would expect in a chat: "use a <br>"),
// and the sanitiser would still remove anything executable if that ever changed.

import { Marked } from "./vendor/marked/marked.esm.js";
import DOMPurify from "./vendor/dompurify/purify.es.js";
import hljs from "./vendor/highlight/highlight.min.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

// The fence's info string, reduced to something that can only be a language name.
const languageOf = (info) => (info || "").match(/^[\w#+.-]{1,30}/)?.[0]?.toLowerCase() ?? "";

const marked = new Marked({ gfm: true, async: false });
marked.use({
  renderer: {
    html({ text }) {
      return escapeHtml(text);
    },
    // Remote images would be blocked by the page's CSP (img-src 'self') and could track the
    // reader; show them as links instead.
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
    },
    code({ text, lang }) {
      const language = languageOf(lang);
      const known = language && hljs.getLanguage(language);
      const body = known ? hljs.highlight(text, { language, ignoreIllegals: true }).value : escapeHtml(text);
      const label = known ? language : "";
      return `<pre><code class="hljs${label ? ` language-${label}` : ""}" data-language="${escapeHtml(language)}">${body}</code></pre>\n`;
    },
  },
});

const PURIFY = {
  USE_PROFILES: { html: true }, // no SVG or MathML at all
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "option", "img", "video", "audio", "source", "picture", "dialog"],
  FORBID_ATTR: ["style", "srcset", "action", "formaction", "target"],
  ALLOWED_URI_REGEXP: /^(?:https?|mailto):/i, // only absolute http(s) and mailto links survive
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** Sanitise an HTML string into a DocumentFragment (never inserted as a string). */
export function sanitize(html) {
  return DOMPurify.sanitize(html, PURIFY);
}

function decorate(fragment) {
  // Code blocks get a header with their language and a copy button; tables scroll sideways
  // instead of widening the page on a phone.
  for (const pre of fragment.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    const block = document.createElement("div");
    block.className = "code-block";
    const header = document.createElement("div");
    header.className = "code-header";
    const label = document.createElement("span");
    label.textContent = code?.dataset.language || "text";
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy-code";
    copy.dataset.action = "copy-code";
    copy.textContent = "Copy code";
    header.append(label, copy);
    pre.tabIndex = 0; // long lines scroll sideways: keyboard users must be able to scroll too
    pre.replaceWith(block);
    block.append(header, pre);
  }
  for (const table of fragment.querySelectorAll("table")) {
    const wrap = document.createElement("div");
    wrap.className = "table-wrap";
    wrap.tabIndex = 0; // a scrollable region must be reachable by keyboard
    table.replaceWith(wrap);
    wrap.append(table);
  }
  return fragment;
}

/** Markdown text -> a sanitised, decorated DocumentFragment ready to insert. */
export function renderMarkdown(text) {
  return decorate(sanitize(marked.parse(text)));
}
