// Auto-scroll that follows a streaming reply until the reader scrolls up, and a "jump to latest"
// button to resume. Following is decided from the scroll direction, not from the distance to the
// bottom alone: content that grows under a still reader must not count as "scrolled up". Nor
// does a scroll the reader did not make: drawing a conversation moves the scroll position by
// itself (older messages drawn above, off-screen messages measured as they come into view, the
// message box growing), so only after the reader's own wheel, touch, key or pointer does a
// scroll up stop following; until then an opened conversation stays at its end.

const USER_SCROLL = ["wheel", "touchmove", "keydown", "pointerdown"];

const NEAR_BOTTOM = 48; // px: this close to the end counts as "at the end"

export class Follower {
  constructor(scroller, content, jumpButton) {
    this.scroller = scroller;
    this.jumpButton = jumpButton;
    this.following = true;
    this.lastTop = 0;
    this.userScrolled = false; // the reader scrolled (or may have) since the last reset()
    scroller.addEventListener("scroll", () => this.#onScroll(), { passive: true });
    for (const type of USER_SCROLL) scroller.addEventListener(type, () => (this.userScrolled = true), { passive: true });
    // Any growth (a streamed token, a re-rendered code block, an older batch) or a smaller
    // window (the message box grew) keeps the end in view while following.
    const resized = new ResizeObserver(() => {
      if (this.following) this.toBottom();
      this.#updateButton();
    });
    resized.observe(content);
    resized.observe(scroller);
    jumpButton.addEventListener("click", () => this.jump());
  }

  #atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight <= NEAR_BOTTOM;
  }

  #onScroll() {
    const top = this.scroller.scrollTop;
    if (this.#atBottom()) this.following = true;
    else if (top < this.lastTop && this.userScrolled) this.following = false;
    this.lastTop = top;
    this.#updateButton();
  }

  #updateButton() {
    this.jumpButton.hidden = this.following || this.#atBottom();
  }

  toBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.lastTop = this.scroller.scrollTop;
  }

  /** Follow again from the end (a new message sent, a conversation opened). */
  reset() {
    this.following = true;
    this.userScrolled = false;
    this.toBottom();
    this.#updateButton();
  }

  /** Stay where the view was put (a search result's message, shown mid-conversation). */
  hold() {
    this.following = false;
    this.lastTop = this.scroller.scrollTop;
    this.#updateButton();
  }

  jump() {
    this.reset();
    document.getElementById("input")?.focus({ preventScroll: true });
  }
}
