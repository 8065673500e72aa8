// Auto-scroll that follows a streaming reply until the reader scrolls up, and a "jump to latest"
// button to resume. Following is decided from the scroll direction, not from the distance to the
// bottom alone: content that grows under a still reader must not count as "scrolled up".

const NEAR_BOTTOM = 48; // px: this close to the end counts as "at the end"

export class Follower {
  constructor(scroller, content, jumpButton) {
    this.scroller = scroller;
    this.jumpButton = jumpButton;
    this.following = true;
    this.lastTop = 0;
    scroller.addEventListener("scroll", () => this.#onScroll(), { passive: true });
    // Any growth (a streamed token, a re-rendered code block, an older batch) keeps the end in
    // view while following.
    new ResizeObserver(() => {
      if (this.following) this.toBottom();
      this.#updateButton();
    }).observe(content);
    jumpButton.addEventListener("click", () => this.jump());
  }

  #atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight <= NEAR_BOTTOM;
  }

  #onScroll() {
    const top = this.scroller.scrollTop;
    if (this.#atBottom()) this.following = true;
    else if (top < this.lastTop) this.following = false;
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
    this.toBottom();
    this.#updateButton();
  }

  jump() {
    this.reset();
    document.getElementById("input")?.focus({ preventScroll: true });
  }
}
