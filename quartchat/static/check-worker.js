// Checks stored conversations the way the page reads them (schema.js), off the page's main
// thread: at the start every stored conversation is checked (store.js, problems()), and parsing
// a few megabytes on the main thread would stall whatever the page is drawing meanwhile.
// Answers the entries that failed.

import { problemOf } from "./schema.js";

self.addEventListener("message", ({ data: entries }) => {
  const found = [];
  for (const [id, raw] of entries) {
    const problem = problemOf(id, raw);
    if (problem) found.push({ id, ...problem });
  }
  self.postMessage(found);
});
