// The chat page: one conversation's live view over WebSocket (event protocol v1).
//
// State is a list of messages by id. A token applies when its seq is exactly one more
// than what the message holds, is ignored when already held, and a gap asks the server
// for a fresh snapshot. Final events replace the text with the stored text.
(() => {
  "use strict";

  const pane = document.getElementById("messages");
  if (!pane) return;
  const conversationId = pane.dataset.conversation;
  const composer = document.getElementById("composer");
  const textarea = composer.querySelector("textarea[name=content]");
  const sendButton = composer.querySelector("[data-action=send]");
  const stopButton = composer.querySelector("[data-action=stop]");
  const connectionNote = document.getElementById("connection");
  const titleEl = document.getElementById("conversation-title");

  const messages = new Map(); // id -> {data, el}
  let socket = null;
  let attempts = 0;
  let dirty = new Set(); // message ids to re-render on the next animation frame
  let frameRequested = false;

  function streamingReply() {
    for (const m of messages.values()) {
      if (m.data.role === "assistant" && m.data.status === "streaming") return m.data;
    }
    return null;
  }

  function updateControls() {
    const busy = streamingReply() !== null;
    stopButton.hidden = !busy;
    sendButton.disabled = busy || !socket || socket.readyState !== WebSocket.OPEN;
  }

  function messageElement(data) {
    const el = document.createElement("article");
    el.className = "message";
    el.dataset.messageId = data.id;
    const meta = document.createElement("header");
    meta.className = "message-meta";
    const body = document.createElement("div");
    body.className = "message-body";
    body.dataset.part = "body";
    const error = document.createElement("p");
    error.className = "message-error";
    error.dataset.part = "error";
    el.append(meta, body, error);
    pane.append(el);
    return el;
  }

  function render(id) {
    const m = messages.get(id);
    if (!m) return;
    const { data, el } = m;
    el.dataset.role = data.role;
    el.dataset.status = data.status;
    el.querySelector("[data-part=body]").textContent = data.content;
    const role = data.role === "assistant" ? "Assistant" : data.role === "user" ? "You" : data.role;
    const status = data.status === "completed" ? "" : ` · ${data.status}`;
    el.querySelector(".message-meta").textContent = role + status;
    const error = el.querySelector("[data-part=error]");
    error.textContent = data.error ? data.error.detail : "";
    error.hidden = !data.error;
  }

  // Renders are batched per animation frame, so a fast stream costs one DOM update per
  // frame, not one per token.
  function scheduleRender(id) {
    dirty.add(id);
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(() => {
      frameRequested = false;
      const nearBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 80;
      for (const each of dirty) render(each);
      dirty = new Set();
      if (nearBottom) pane.scrollTop = pane.scrollHeight;
      updateControls();
    });
  }

  function upsert(data) {
    let m = messages.get(data.id);
    if (!m) {
      m = { data, el: messageElement(data) };
      messages.set(data.id, m);
    } else {
      m.data = data;
    }
    scheduleRender(data.id);
  }

  function applySnapshot(event) {
    // A snapshot older than what this page holds would take text away: ignore it.
    for (const data of event.messages) {
      const held = messages.get(data.id);
      if (held && held.data.status === "streaming" && data.status === "streaming" &&
          held.data.seq > data.seq) {
        return;
      }
    }
    const ids = new Set(event.messages.map((d) => d.id));
    for (const [id, m] of messages) {
      if (!ids.has(id)) {
        m.el.remove();
        messages.delete(id);
      }
    }
    for (const data of event.messages) upsert(data);
    // Keep DOM order equal to the snapshot's order.
    for (const data of event.messages) pane.append(messages.get(data.id).el);
    setTitle(event.conversation.title);
  }

  function applyToken(event) {
    const m = messages.get(event.message);
    if (!m) return send({ type: "resync" });
    if (event.seq <= m.data.seq) return; // already held
    if (event.seq !== m.data.seq + 1) return send({ type: "resync" });
    m.data.content += event.content;
    m.data.seq = event.seq;
    scheduleRender(event.message);
  }

  function setTitle(title) {
    titleEl.textContent = title || "New chat";
    const entry = document.querySelector(`[data-conversation-id="${conversationId}"] .history-title`);
    if (entry) entry.textContent = title || "New chat";
  }

  const handlers = {
    snapshot: applySnapshot,
    token: applyToken,
    "message.created": (e) => upsert(e.message),
    "message.completed": (e) => upsert(e.message),
    "message.failed": (e) => upsert(e.message),
    "message.cancelled": (e) => upsert(e.message),
    "message.interrupted": (e) => upsert(e.message),
    "conversation.updated": (e) => setTitle(e.conversation.title),
    error: (e) => showError(e.detail),
  };

  function showError(detail) {
    connectionNote.textContent = detail;
    connectionNote.hidden = false;
    setTimeout(() => { if (socket && socket.readyState === WebSocket.OPEN) connectionNote.hidden = true; }, 5000);
  }

  function send(event) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(event));
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/ws/conversations/${conversationId}/`);
    socket.addEventListener("open", () => {
      attempts = 0;
      connectionNote.hidden = true;
      updateControls();
    });
    socket.addEventListener("message", (message) => {
      const event = JSON.parse(message.data);
      const handler = handlers[event.type];
      if (handler) handler(event);
    });
    socket.addEventListener("close", (close) => {
      updateControls();
      if (close.code === 4401 || close.code === 4404) {
        showError("This conversation is not available. Log in again or pick another one.");
        return;
      }
      // Exponential backoff with jitter, capped at 30 s.
      const delay = Math.min(30000, 500 * 2 ** attempts) * (0.5 + Math.random() / 2);
      attempts += 1;
      connectionNote.textContent = "Reconnecting…";
      connectionNote.hidden = false;
      setTimeout(connect, delay);
    });
  }

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const content = textarea.value;
    if (!content.trim() || sendButton.disabled) return;
    const clientId = (crypto.randomUUID && crypto.randomUUID()) || String(Date.now() + Math.random());
    send({ type: "message.send", content, client_id: clientId });
    textarea.value = "";
  });
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  stopButton.addEventListener("click", () => {
    const reply = streamingReply();
    send(reply ? { type: "reply.stop", message: reply.id } : { type: "reply.stop" });
  });

  connect();
})();
