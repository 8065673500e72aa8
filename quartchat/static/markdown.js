// Model output -> safe DOM. Markdown is parsed by marked, code is coloured by highlight.js, and
// everything passes through DOMPurify before it reaches the page. Two layers, on purpose:
// raw HTML in the model's text is shown as text (as a person would expect in a chat: "use a <br>"),
// and the sanitiser would still remove anything executable if that ever changed. After the
// sanitiser, DOM code adds what markup may not carry: code block headers, task boxes, text
// direction, and formulas (KaTeX, see math.js).
//
// The pipeline works on marked's top-level tokens, so a streaming reply (stream-render.js) can
// render one block at a time: rendering tokens one by one gives the same DOM as rendering them
// together.

import { Marked } from "./vendor/marked/marked.esm.js";
import "./vendor/dompurify/purify.min.js";
import hljs from "./vendor/highlight/highlight.min.js";
import { mathExtension, typeset } from "./math.js";

// DOMPurify's minified build is a UMD script, not a module: imported for its effect, it defines
// the global (its ES module build is three times the size, unminified).
const { DOMPurify } = globalThis;

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

// The fence's info string, reduced to something that can only be a language name.
const languageOf = (info) => (info || "").match(/^[\w#+.-]{1,30}/)?.[0]?.toLowerCase() ?? "";

const marked = new Marked({ gfm: true, async: false });
marked.use(mathExtension, {
  renderer: {
    html({ text }) {
      return escapeHtml(text);
    },
    // Remote images would be blocked by the page's CSP (img-src 'self') and could track the
    // reader; show them as links instead.
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
    },
    // A fence still streaming (`unclosed`, set by stream-render.js) is shown as plain text:
    // highlighting it again for every new line would cost more each time.
    code(token) {
      const { text, lang } = token;
      const language = languageOf(lang);
      const known = language && hljs.getLanguage(language);
      const body = known && !token.unclosed ? hljs.highlight(text, { language, ignoreIllegals: true }).value : escapeHtml(text);
      const label = known ? language : "";
      return `<pre><code class="hljs${label ? ` language-${label}` : ""}" data-language="${escapeHtml(language)}">${body}</code></pre>\n`;
    },
    // DOMPurify removes every <input>; the box is made accessible after it (see `tasks`).
    checkbox({ checked }) {
      return `<span class="task-box" data-checked="${checked ? "true" : "false"}"></span> `;
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
    block.dir = "ltr"; // code reads left to right, even in a right-to-left list
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
}

// A task list item's box: no form control (nothing to submit or toggle), but a checkbox to
// assistive technology, named by its item's text. The tick is drawn by CSS.
function tasks(fragment) {
  for (const box of fragment.querySelectorAll(".task-box")) {
    box.setAttribute("role", "checkbox");
    box.setAttribute("aria-checked", box.dataset.checked);
    box.setAttribute("aria-disabled", "true");
    box.removeAttribute("data-checked");
    let label = "";
    for (let node = box.nextSibling; node && label.length < 120; node = node.nextSibling) {
      if (node.nodeType === Node.ELEMENT_NODE && /^(UL|OL|P|DIV|PRE|BLOCKQUOTE|TABLE)$/.test(node.tagName)) break;
      label += node.textContent;
    }
    box.setAttribute("aria-label", label.trim().slice(0, 120) || "Task");
  }
}

// Right-to-left scripts (Hebrew, Arabic, Syriac, Thaana, N'Ko, ...). A letter outside these is
// taken as left-to-right, which is what the Unicode bidi algorithm does for a paragraph.
const RTL = /[\u0590-\u08FF\uFB1D-\uFDFF\uFE70-\uFEFF\u{10800}-\u{10FFF}\u{1E800}-\u{1EFFF}]/u;
const LETTER = /\p{L}/u;

/** "rtl" or "ltr" from the first letter in `el`'s text outside code and formulas, or "auto". */
function directionOf(el) {
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT, {
    acceptNode: (node) =>
      node.nodeType === Node.ELEMENT_NODE && node.matches("pre, code, .math, .code-block") ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT,
  });
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.nodeType !== Node.TEXT_NODE) continue;
    const letter = LETTER.exec(node.data);
    if (letter) return RTL.test(letter[0]) ? "rtl" : "ltr";
  }
  return "auto";
}

// Each block takes its direction from its own text, so a Hebrew or Arabic paragraph is laid out
// right to left among English ones. Leaf blocks use dir="auto"; containers cannot (a dir="auto"
// element ignores descendants that have a dir of their own), so theirs is worked out here.
function directions(fragment) {
  for (const el of fragment.querySelectorAll("p, h1, h2, h3, h4, h5, h6, li, th, td")) el.dir = "auto";
  for (const el of fragment.querySelectorAll("ul, ol, blockquote, .table-wrap, table")) el.dir = directionOf(el);
}

/** marked's top-level tokens for `text`, given the link definitions found before it. */
export function lex(text, links = null) {
  const lexer = new marked.Lexer(marked.defaults);
  if (links) Object.assign(lexer.tokens.links, links);
  return lexer.lex(text);
}

/** The source text of each top-level block of `text`, and its link definitions (block structure
 * only: no inline lexing, so this is cheap). */
export function blocksOf(text) {
  const lexer = new marked.Lexer(marked.defaults);
  const raws = lexer.blockTokens(text.replace(/\r\n?/g, "\n"), []).map((token) => token.raw);
  return { raws, links: lexer.tokens.links };
}

/** The HTML marked makes of `tokens` (not sanitised: only for `fragmentOf`). */
export function htmlOf(tokens) {
  return marked.parser(tokens);
}

/** HTML from `htmlOf` -> a sanitised, decorated DocumentFragment ready to insert. */
export function fragmentOf(html) {
  const fragment = sanitize(html);
  decorate(fragment);
  tasks(fragment);
  directions(fragment);
  typeset(fragment);
  return fragment;
}

/** Markdown text -> a sanitised, decorated DocumentFragment ready to insert. */
export function renderMarkdown(text) {
  return fragmentOf(htmlOf(lex(text)));
}

/**
 * The text of rendered Markdown as a person would read it out: a formula as its TeX source (its
 * textContent holds both KaTeX's MathML and its HTML, each a garble of the formula).
 */
export function readableText(root) {
  let text = "";
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      if (node.nodeType === Node.TEXT_NODE) return NodeFilter.FILTER_ACCEPT;
      if (!node.classList.contains("katex")) return NodeFilter.FILTER_SKIP;
      text += node.querySelector("annotation")?.textContent.trim() ?? "";
      return NodeFilter.FILTER_REJECT;
    },
  });
  while (walker.nextNode()) text += walker.currentNode.data;
  return text.trim();
}
