// The event protocol's rules for a client (docs/protocol.md), in one place for every
// page that shows a conversation live: the chat (chat.js) and staff's live transcript
// (review/live.js).
(() => {
  "use strict";

  const chatsite = (window.chatsite = window.chatsite || {});

  const FINAL_TYPES = new Set([
    "message.completed", "message.failed", "message.cancelled", "message.interrupted",
  ]);

  // What to do with a token, given the reply as held ({status, seq}; null when this
  // page does not hold it): "apply" it (its seq is one more), "ignore" it (held already,
  // or the reply has ended here), or "resync" (a gap, or a reply never seen start).
  function tokenAction(held, event) {
    if (!held) return "resync";
    if (held.status !== "streaming" || event.seq <= held.seq) return "ignore";
    return event.seq === held.seq + 1 ? "apply" : "resync";
  }

  // Whether an incoming copy of a message (from a snapshot or a repeated
  // message.created) is older than the one held: it would take text back, so it is
  // ignored. Final copies are never older: they carry the stored text.
  function isOlder(incoming, held) {
    if (!held || incoming.status !== "streaming") return false;
    return held.status !== "streaming" || incoming.seq < held.seq;
  }

  chatsite.protocol = { FINAL_TYPES, tokenAction, isOlder };
})();
