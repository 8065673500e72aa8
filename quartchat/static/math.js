// Math in replies: $…$, $$…$$, \(…\) and \[…\]. marked finds it before its own rules run (so a
// backslash in TeX is not taken for a Markdown escape), the sanitiser passes it through as text
// in a placeholder, and KaTeX then typesets each placeholder into DOM nodes it builds itself.
// KaTeX styles its output through the CSSOM (element.style), which the page's CSP allows; it never
// goes through an HTML string. KaTeX and its stylesheet are loaded on the first formula.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

// The minified build is a UMD script (KaTeX's ES module is not minified, at twice the size):
// imported for its effect, it defines `globalThis.katex`.
const KATEX = new URL("./vendor/katex/katex.min.js", import.meta.url).href;
const KATEX_CSS = new URL("./vendor/katex/katex.min.css", import.meta.url).href;

// Model output is untrusted: no \href, \url, \html*, \includegraphics (trust: false); sizes and
// macro expansion bounded, so "\rule{1e5em}{1e5em}" or "\def\a{\a\a}\a" cannot hang or flood
// the page; unknown commands are errors (shown as the source), never console warnings.
const OPTIONS = {
  throwOnError: true,
  trust: false,
  strict: "ignore",
  maxSize: 20, // em
  maxExpand: 500,
  output: "htmlAndMathml", // the MathML is what screen readers read
  // \pmb's MathML is the one place KaTeX sets a style *attribute* (CSP refuses that); a bold
  // symbol looks the same.
  macros: { "\\pmb": "\\boldsymbol{#1}" },
};

// A formula never spans a blank line (it would end the paragraph in TeX too).
const noBlankLine = (body) => !/\n[ \t]*\n/.test(body);

// Inline: `$` needs a non-space after it, a non-space before the closing `$`, and no digit after
// the closing one, so "$5 and $10" stays money (the rule pandoc and most chat UIs follow). A
// backquote ends the search, so "US$20 … `$x$`" leaves the code span alone.
const INLINE = [
  { re: /^\$\$((?:\\[\s\S]|[^\\$`])+?)\$\$(?!\$)/, display: true },
  { re: /^\$(?![\s$])((?:\\[\s\S]|[^\\$`])+?)(?<!\s)\$(?!\d)/, display: false },
  { re: /^\\\(([\s\S]+?)\\\)/, display: false },
  { re: /^\\\[([\s\S]+?)\\\]/, display: true },
];
// Block: a formula alone on its lines, `$$ … $$` or `\[ … \]`, which may span lines; the closing
// delimiter ends its line.
const BLOCK = [
  /^ {0,3}(\$\$((?:\\[\s\S]|[^\\$]|\$(?!\$))+?)\$\$)[ \t]*(?:\n|$)/,
  /^ {0,3}(\\\[((?:\\(?!\])[\s\S]|[^\\])+?)\\\])[ \t]*(?:\n|$)/,
];

function inlineMath(src) {
  for (const { re, display } of INLINE) {
    const match = re.exec(src);
    if (match && noBlankLine(match[1])) return { type: "math", raw: match[0], source: match[0], display, block: false };
  }
  return undefined;
}

function blockMath(src) {
  for (const re of BLOCK) {
    const match = re.exec(src);
    if (match && noBlankLine(match[2])) return { type: "math", raw: match[0], source: match[1], display: true, block: true };
  }
  return undefined;
}

/** The marked extension: tokenizers for both levels and the placeholder they render to. */
export const mathExtension = {
  extensions: [
    {
      name: "math",
      level: "block",
      // No `start`: a formula does not interrupt a paragraph (one that follows a line of text is
      // display math inside that paragraph), which keeps marked's setext headings consistent.
      tokenizer: blockMath,
      renderer: (token) => placeholder(token),
    },
    {
      name: "inlineMath",
      level: "inline",
      start: (src) => src.match(/\$|\\[([]/)?.index,
      tokenizer: inlineMath,
    },
  ],
};

// Both levels make the same token type, rendered by the block extension's renderer.
function placeholder({ source, display, block }) {
  const tag = block ? "div" : "span";
  // The delimiters ($, $$, \( or \[) are 1 or 2 characters long, the same on both sides.
  const skip = source.startsWith("$$") || source.startsWith("\\") ? 2 : 1;
  return `<${tag} class="math" data-math="${display ? "display" : "inline"}" data-skip="${skip}">${escapeHtml(source)}</${tag}>${block ? "\n" : ""}`;
}

let katex = null;
let loading = null;
const waiting = new Set();

function stylesheet() {
  return new Promise((resolve) => {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = KATEX_CSS;
    link.onload = link.onerror = resolve;
    document.head.append(link);
  });
}

function load() {
  loading ??= Promise.all([import(KATEX), stylesheet()]).then(
    () => {
      katex = globalThis.katex;
      for (const el of waiting) if (el.isConnected) typesetOne(el);
      waiting.clear();
    },
    () => {
      loading = null; // offline: the formulas stay as their source; try again with the next one
      waiting.clear();
    },
  );
  return loading;
}

// Deeper nesting than any real formula has: KaTeX would recurse once per level (a stack overflow
// at a few thousand) and build as deep a DOM, which no layout handles well.
const MAX_DEPTH = 100;
const MAX_LENGTH = 20000;

function nestedTooDeep(tex) {
  let depth = 0;
  for (const [token] of tex.matchAll(/\\[{}]|\\(?:left|begin)\b|\\(?:right|end)\b|[{}]/g)) {
    if (token === "{" || token === "\\left" || token === "\\begin") depth += 1;
    else if (token === "}" || token === "\\right" || token === "\\end") depth -= 1;
    if (depth > MAX_DEPTH) return true;
  }
  return false;
}

function typesetOne(el) {
  const source = el.textContent;
  const skip = Number(el.dataset.skip) || 1;
  const display = el.dataset.math === "display";
  const tex = source.slice(skip, -skip);
  delete el.dataset.math;
  el.dir = "ltr";
  try {
    if (tex.length > MAX_LENGTH || nestedTooDeep(tex)) throw new RangeError("too deep or too long");
    katex.render(tex, el, { ...OPTIONS, macros: { ...OPTIONS.macros }, displayMode: display });
    el.classList.add(display ? "math-display" : "math-inline");
    el.removeAttribute("data-skip");
  } catch (error) {
    // A parse error, too many expansions, or too deep a nesting for the stack: show the source.
    el.textContent = source;
    el.classList.add("math-error");
    el.title = error instanceof Error && error.name === "ParseError" ? error.message : "This formula could not be shown.";
  }
  if (display && el.tagName === "DIV") el.tabIndex = 0; // a wide formula scrolls: reachable by keyboard
}

/** Typeset every formula placeholder in `root`: now if KaTeX is loaded, else once it is. */
export function typeset(root) {
  const found = root.querySelectorAll(".math[data-math]");
  if (!found.length) return;
  if (katex) {
    for (const el of found) typesetOne(el);
    return;
  }
  for (const el of found) waiting.add(el);
  load();
}

/** Resolves once KaTeX is loaded and every formula shown so far is typeset (for tests). */
export function mathReady() {
  return katex ? Promise.resolve() : load();
}
