// A streaming reply, rendered incrementally. marked splits Markdown into top-level blocks; every
// block but the last is finished (nothing that can still arrive changes how it reads) and keeps
// its DOM, so a selection in it survives and its code and formulas are typeset once. Each render
// lexes only the text after the last finished block, so its cost does not grow with the reply.
// Renders are paced by what they cost, and a fence still open is shown as plain text until it
// closes. When the reply ends, the DOM is what rendering the whole text from scratch would give.

import { blocksOf, fragmentOf, htmlOf, lex } from "./markdown.js";

// After a render of t ms the next waits PACE × t (and at least a frame): streaming then takes at
// most 1 / (1 + PACE) of the main thread, however big the open block gets.
const PACE = 6;

const CURSOR = "stream-cursor";
const BLOCK = /^(P|UL|OL|LI|BLOCKQUOTE|TABLE|THEAD|TBODY|TR|TH|TD|H[1-6]|DL|DT|DD|DETAILS)$/;

/** Whether a code token's fence has its closing line (an indented block has none to wait for). */
function fenceClosed(token) {
  if (token.codeBlockStyle === "indented") return true;
  const raw = token.raw.replace(/\n+$/, "");
  const opening = /^ {0,3}(`{3,}|~{3,})/.exec(raw);
  const newline = raw.lastIndexOf("\n");
  if (!opening || newline < 0) return false;
  const closing = /^ {0,3}(`{3,}|~{3,})[ \t]*$/.exec(raw.slice(newline + 1));
  return !!closing && closing[1][0] === opening[1][0] && closing[1].length >= opening[1].length;
}

/** Flag the fence the text ends in, if it is still open: the deepest last token of the block. */
function markUnclosed(token) {
  let last = token;
  while (last.type === "list" || last.type === "list_item" || last.type === "blockquote") {
    const next = (last.type === "list" ? last.items : last.tokens).findLast((t) => t.type !== "space");
    if (!next) return;
    last = next;
  }
  if (last.type === "code" && !fenceClosed(last)) last.unclosed = true;
}

const frameEnd = new MessageChannel();
const afterFrameQueue = [];
frameEnd.port1.onmessage = () => afterFrameQueue.shift()?.();

/** Call `callback` in a task of its own: posted from a frame's callback, after its rendering. */
function afterFrame(callback) {
  afterFrameQueue.push(callback);
  frameEnd.port2.postMessage(null);
}

/**
 * How many of `tokens`, lexed from `lines` (whole lines), are finished: all but the last block.
 * Only whole lines are judged, as a line still arriving can change how the lines before it read
 * ("1" after a list may become "1. …", an item of that list; "-" may underline a heading).
 */
export function finishedCount(tokens, lines) {
  let open = tokens.length - 1;
  while (open >= 0 && tokens[open].type === "space") open--;
  if (open <= 0) return 0;
  // The tokens tile the text they came from; should they ever not, nothing is called finished.
  return lines.startsWith(tokens.slice(0, open).map((t) => t.raw).join("")) ? open : 0;
}

/**
 * While the first line of the last block is still arriving, the block before it (`tokens`: the
 * open blocks, lexed with that line) is finished too if nothing on that line can join it: a blank
 * line lies between them, and it is no list (or the line cannot start an item or an indented
 * continuation of one). A paragraph above the one streaming is then kept as it is.
 */
export function finishedEarly(tokens) {
  const blocks = tokens.flatMap((token, i) => (token.type === "space" ? [] : [i]));
  if (blocks.length !== 2 || blocks[0] !== 0) return 0;
  const [first, last] = [tokens[0], tokens[blocks[1]]];
  const between = tokens.slice(1, blocks[1]).map((t) => t.raw).join("");
  if (!/\n[ \t]*\n/.test(first.raw.slice(-1) + between) || last.raw.includes("\n")) return 0;
  if (first.type === "list" && !/^[^\s*+\-\d]/.test(last.raw)) return 0;
  return blocks[1];
}

/** The link definitions in a block, also those inside its lists and quotes. */
function* definitions(token) {
  if (token.type === "def") yield token;
  if (token.type === "list") for (const item of token.items) yield* definitions(item);
  if (token.type === "list_item" || token.type === "blockquote") for (const child of token.tokens) yield* definitions(child);
}

/** The element whose ::after is the cursor: the deepest last block, so it follows the last text. */
function cursorHost(root) {
  let host = root;
  for (;;) {
    let last = host.lastChild;
    while (last && last.nodeType === Node.TEXT_NODE && !last.data.trim()) last = last.previousSibling;
    if (!last || last.nodeType !== Node.ELEMENT_NODE) return host;
    if (last.classList.contains("code-block")) return last.querySelector("code") ?? host;
    if (last.classList.contains("table-wrap") || BLOCK.test(last.tagName)) host = last;
    else return host;
  }
}

export class StreamRenderer {
  #el;
  #blocks = []; // finished blocks: {raw, html, nodes}; spaces and definitions have no nodes
  #prefix = ""; // the text of the finished blocks
  #judged = 0; // how much of the text (whole lines) has been looked at for finished blocks
  #links = Object.create(null); // link definitions in finished blocks
  #open = { html: "", nodes: [] }; // the last block, rendered again as it grows
  #cursor = null;
  #text = ""; // the latest text given to update()
  #shown = null; // the text last rendered
  #scheduled = false;
  #timer = 0;
  #frame = 0;
  #nextAt = 0;
  #epoch = 0; // bumped by cancel(): callbacks of an earlier epoch do nothing

  constructor(container) {
    this.#el = container;
    container.replaceChildren();
  }

  /** Show `text` (the reply so far) soon: in a later frame, paced by what renders cost. */
  update(text) {
    this.#text = text;
    if (this.#scheduled) return;
    this.#scheduled = true;
    const epoch = this.#epoch;
    const frame = () => {
      this.#frame = requestAnimationFrame(() => {
        if (this.#text === this.#shown) {
          this.#scheduled = false;
          return;
        }
        const start = performance.now();
        this.render(this.#text);
        // What a render costs is its script and the style, layout and paint of the frame it
        // changes, which run after this callback: a message posted now arrives after them.
        afterFrame(() => {
          if (epoch !== this.#epoch) return; // cancelled or finished meanwhile
          const end = performance.now();
          this.#nextAt = end + PACE * (end - start);
          this.#scheduled = false;
          if (this.#text !== this.#shown) this.update(this.#text);
        });
      });
    };
    const wait = this.#nextAt - performance.now();
    if (wait > 0) this.#timer = setTimeout(frame, wait);
    else frame();
  }

  /** The reply is complete: render the rest now, as a from-scratch render would. */
  finish(text) {
    this.cancel();
    this.render(text, true);
    const { raws, links } = blocksOf(text);
    const sameLinks = (a, b) => Object.keys(a).every((tag) => b[tag]?.href === a[tag].href && b[tag].title === a[tag].title);
    const same =
      raws.length === this.#blocks.length &&
      raws.every((raw, i) => raw === this.#blocks[i].raw) &&
      sameLinks(links, this.#links) &&
      sameLinks(this.#links, links);
    // Never expected (finished blocks are final by construction), but if a block boundary moved
    // after all, the whole text is rendered again rather than left wrong.
    if (!same) {
      console.warn("quartchat: a block finished while streaming changed; the reply was rendered again");
      this.#restart(text);
    }
    this.#setCursor(null);
  }

  cancel() {
    this.#epoch += 1;
    clearTimeout(this.#timer);
    cancelAnimationFrame(this.#frame);
    this.#scheduled = false;
  }

  /** Render `text` now; `final`: nothing more will come, so every block is finished. */
  render(text, final = false) {
    this.#shown = text;
    if (text.includes("\r")) text = text.replace(/\r\n?/g, "\n"); // as marked's lexer does
    if (!text.startsWith(this.#prefix)) this.#reset(); // not a continuation (an edit): start over
    if (final) {
      this.#commit(lex(text.slice(this.#prefix.length), this.#links));
    } else {
      // Blocks can only be finished by a new whole line: lex the whole lines again only then.
      const complete = text.lastIndexOf("\n") + 1;
      if (complete > this.#judged) {
        const lines = text.slice(this.#prefix.length, complete);
        const tokens = lex(lines, this.#links);
        const finished = finishedCount(tokens, lines);
        this.#commit(tokens.slice(0, finished));
        this.#judged = complete;
      }
    }
    let open = final ? [] : lex(text.slice(this.#prefix.length), this.#links);
    const early = final ? 0 : finishedEarly(open);
    if (early) {
      this.#commit(open.slice(0, early));
      open = open.slice(early);
    }
    this.#showOpen(open);
    if (!final) this.#setCursor(cursorHost(this.#el));
  }

  #commit(tokens) {
    let adopt = true; // only the first block can be the one shown as open so far
    for (const token of tokens) {
      const html = htmlOf([token]);
      let nodes;
      if (adopt && html && html === this.#open.html) {
        nodes = this.#open.nodes; // the open block is finished as it was last shown
        this.#open = { html: "", nodes: [] };
      } else if (html) {
        const fragment = fragmentOf(html);
        nodes = [...fragment.childNodes];
        this.#el.insertBefore(fragment, this.#open.nodes[0] ?? null);
      } else {
        nodes = []; // a blank line or a link definition
      }
      if (token.type !== "space") adopt = false;
      this.#blocks.push({ raw: token.raw, html, nodes });
      this.#prefix += token.raw;
      let defined = false;
      for (const def of definitions(token)) {
        if (def.tag in this.#links) continue; // the first definition of a label counts
        this.#links[def.tag] = { href: def.href, title: def.title };
        defined = true;
      }
      if (defined) this.#relink();
    }
  }

  // A link definition came after text that may use it ("see [docs]" ... "[docs]: https://…"):
  // the finished blocks that could are rendered again (rare; most replies have no definitions).
  #relink() {
    for (const block of this.#blocks) {
      if (!block.nodes.length || !block.raw.includes("[")) continue;
      const html = htmlOf(lex(block.raw, this.#links));
      if (html === block.html) continue;
      const fragment = fragmentOf(html);
      const nodes = [...fragment.childNodes];
      block.nodes[0].before(fragment);
      for (const node of block.nodes) node.remove();
      Object.assign(block, { html, nodes });
    }
  }

  #showOpen(tokens) {
    const last = tokens.findLast((t) => t.type !== "space");
    if (last) markUnclosed(last);
    const html = tokens.length ? htmlOf(tokens) : "";
    if (html === this.#open.html) return; // nothing visible changed (say, only a space arrived)
    for (const node of this.#open.nodes) node.remove();
    const fragment = html ? fragmentOf(html) : null;
    const nodes = fragment ? [...fragment.childNodes] : [];
    if (fragment) this.#el.append(fragment);
    this.#open = { html, nodes };
  }

  #setCursor(host) {
    if (host === this.#cursor) return;
    if (this.#cursor) {
      this.#cursor.classList.remove(CURSOR);
      if (!this.#cursor.classList.length) this.#cursor.removeAttribute("class");
    }
    this.#cursor = host;
    host?.classList.add(CURSOR);
  }

  #reset() {
    this.#setCursor(null);
    this.#el.replaceChildren();
    this.#blocks = [];
    this.#prefix = "";
    this.#judged = 0;
    this.#links = Object.create(null);
    this.#open = { html: "", nodes: [] };
  }

  #restart(text) {
    this.#reset();
    this.render(text, true);
  }
}
