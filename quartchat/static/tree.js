// A conversation's messages form a tree: each message has a `parentId` (null for a first
// message), regenerating a reply adds a sibling reply, and editing a question adds a sibling
// question with its own reply. The conversation's `leafId` picks the path shown and sent.
// Pure functions over the messages array; siblings are ordered by creation.

const byCreation = (a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** Lookups for one conversation's messages: by id, and each parent's children in order. */
export class Tree {
  constructor(messages) {
    this.byId = new Map();
    this.children = new Map(); // parent id, or "" for first messages -> [message]
    for (const message of messages) {
      this.byId.set(message.id, message);
      const key = message.parentId ?? "";
      const siblings = this.children.get(key);
      if (siblings) siblings.push(message);
      else this.children.set(key, [message]);
    }
    for (const siblings of this.children.values()) if (siblings.length > 1) siblings.sort(byCreation);
  }

  /** The messages from a first message down to `leafId` (empty when it is unknown). */
  path(leafId) {
    const path = [];
    const seen = new Set();
    for (let message = this.byId.get(leafId); message && !seen.has(message.id); message = this.byId.get(message.parentId)) {
      seen.add(message.id);
      path.push(message);
    }
    return path.reverse();
  }

  siblings(message) {
    return this.children.get(message.parentId ?? "") ?? [message];
  }

  /** Which version a message is among its siblings: {index (from 1), count}. */
  version(message) {
    const siblings = this.siblings(message);
    return { index: siblings.indexOf(message) + 1, count: siblings.length };
  }

  /** The leaf reached from a message by following the newest child at each step. */
  leafUnder(messageId) {
    let message = this.byId.get(messageId);
    const seen = new Set();
    while (message && !seen.has(message.id)) {
      seen.add(message.id);
      const children = this.children.get(message.id);
      if (!children) break;
      message = children[children.length - 1];
    }
    return message?.id ?? null;
  }
}

/** The path shown for a conversation: root to its leaf. */
export function pathOf(conversation) {
  return new Tree(conversation.messages).path(conversation.leafId);
}
