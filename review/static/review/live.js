// A conversation's transcript in the admin, kept live over a read-only WebSocket
// (/ws/admin/conversations/<id>/, event protocol v1, the seq rules of protocol.js).
//
// Messages the server rendered (sanitised Markdown) stay as they are until they change.
// A message that streams, starts or ends here is shown as plain text (textContent):
// model output never reaches innerHTML. Reload the page to see a finished reply rendered.
(() => {
  "use strict";

  const root = document.getElementById("transcript");
  if (!root || !root.dataset.livePath || !window.WebSocket) return;
  const protocol = window.chatsite.protocol; // conversations/protocol.js
  const liveNote = document.getElementById("transcript-live");
  const messages = new Map(); // id -> {el, status, seq, content}
  const dirty = new Set();
  let frameRequested = false;
  let socket = null;
  let attempts = 0;

  for (const el of root.querySelectorAll("[data-message-id]")) {
    messages.set(el.dataset.messageId, {
      el,
      status: el.dataset.status,
      seq: Number(el.dataset.seq) || 0,
      content: el.dataset.status === "streaming" ? el.querySelector("[data-part=body]").textContent : null,
    });
  }

  const ROLE_LABELS = { user: "User", assistant: "Assistant", system: "System", tool: "Tool" };

  function span(className, text) {
    const el = document.createElement("span");
    el.className = className;
    el.textContent = text;
    return el;
  }

  function renderMeta(el, data) {
    const meta = el.querySelector(".tx-meta");
    const parts = [];
    const role = document.createElement("strong");
    role.className = "tx-role";
    role.textContent = ROLE_LABELS[data.role] || data.role;
    parts.push(role);
    const status = span(`tx-status tx-status-${data.status}`, data.status);
    status.dataset.part = "status";
    parts.push(status);
    if (data.model) parts.push(span("tx-model", data.model));
    if (data.usage) {
      parts.push(span("tx-usage", `${data.usage.prompt_tokens || 0} + ${data.usage.completion_tokens || 0} tokens`));
    }
    if (data.time_to_first_token_ms != null) parts.push(span("tx-ttft", `first token ${data.time_to_first_token_ms} ms`));
    if (data.duration_ms != null) parts.push(span("tx-duration", `took ${data.duration_ms} ms`));
    if (data.created_at) {
      const time = document.createElement("time");
      time.dateTime = data.created_at;
      time.textContent = data.created_at.replace("T", " ").slice(0, 19);
      parts.push(time);
    }
    meta.replaceChildren(...parts);
  }

  function createElement(data) {
    const el = document.createElement("article");
    el.className = `tx-message tx-${data.role}`;
    el.dataset.messageId = data.id;
    el.dataset.role = data.role;
    const meta = document.createElement("header");
    meta.className = "tx-meta";
    const body = document.createElement("div");
    body.className = "tx-body tx-plain";
    body.dataset.part = "body";
    const error = document.createElement("p");
    error.className = "tx-error";
    error.dataset.part = "error";
    error.hidden = true;
    el.append(meta, body, error);
    const empty = root.querySelector(".tx-empty");
    if (empty) empty.remove();
    root.append(el);
    return el;
  }

  // Puts a whole message (from a snapshot, message.created or a final event) on the page.
  function upsert(data) {
    let held = messages.get(data.id);
    if (held && held.status === data.status && data.status !== "streaming") return; // unchanged
    if (!held) {
      held = { el: createElement(data) };
      messages.set(data.id, held);
    }
    Object.assign(held, { status: data.status, seq: data.seq, content: data.content, data });
    renderMeta(held.el, data);
    const error = held.el.querySelector("[data-part=error]");
    error.textContent = data.error ? `${data.error.code}: ${data.error.detail}` : "";
    error.hidden = !data.error;
    schedule(data.id);
  }

  function render(id) {
    const held = messages.get(id);
    if (!held || held.content == null) return;
    held.el.dataset.status = held.status;
    held.el.dataset.seq = String(held.seq);
    const body = held.el.querySelector("[data-part=body]");
    body.className = "tx-body tx-plain";
    body.textContent = held.content;
    const status = held.el.querySelector("[data-part=status]");
    if (status) {
      status.textContent = held.status;
      status.className = `tx-status tx-status-${held.status}`;
    }
  }

  function schedule(id) {
    dirty.add(id);
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(() => {
      frameRequested = false;
      for (const each of dirty) render(each);
      dirty.clear();
    });
  }

  function applySnapshot(event) {
    // The page may be the last of several: messages before its first belong to the
    // earlier pages, not here. A copy older than what the page holds would take text
    // away: it is skipped.
    const first = event.messages.findIndex((data) => messages.has(data.id));
    for (const data of event.messages.slice(Math.max(first, 0))) {
      if (!protocol.isOlder(data, messages.get(data.id))) upsert(data);
    }
  }

  function applyToken(event) {
    const held = messages.get(event.message);
    const action = protocol.tokenAction(held && held.content != null ? held : null, event);
    if (action === "resync") return send({ type: "resync" });
    if (action === "ignore") return;
    held.content += event.content;
    held.seq = event.seq;
    schedule(event.message);
  }

  // A tool call of a streaming reply: it takes the reply's next seq, like a token, and
  // shows as a line of plain text (name, status); reload for its arguments and output.
  function applyToolEvent(event) {
    const held = messages.get(event.message);
    const action = protocol.tokenAction(held && held.content != null ? held : null, event);
    if (action === "resync") return send({ type: "resync" });
    if (action === "ignore") return;
    held.seq = event.seq;
    let list = held.el.querySelector("[data-part=tool-live]");
    if (!list) {
      list = document.createElement("ul");
      list.className = "tx-tools";
      list.dataset.part = "tool-live";
      held.el.querySelector("[data-part=body]").before(list);
    }
    let item = list.querySelector(`[data-call-id="${CSS.escape(event.call.id)}"]`);
    if (!item) {
      item = document.createElement("li");
      item.dataset.callId = event.call.id;
      list.append(item);
    }
    const status = event.type === "tool.started" ? "running" : event.call.status;
    item.textContent = `${event.call.name}: ${status}`;
    schedule(event.message);
  }

  const handlers = {
    snapshot: applySnapshot,
    token: applyToken,
    "tool.started": applyToolEvent,
    "tool.completed": applyToolEvent,
    "message.created": (e) => upsert(e.message),
    "message.completed": (e) => upsert(e.message),
    "message.failed": (e) => upsert(e.message),
    "message.cancelled": (e) => upsert(e.message),
    "message.interrupted": (e) => upsert(e.message),
  };

  function send(event) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(event));
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}${root.dataset.livePath}`);
    socket.addEventListener("open", () => {
      attempts = 0;
      if (liveNote) liveNote.hidden = false;
    });
    socket.addEventListener("message", (message) => {
      const event = JSON.parse(message.data);
      const handler = handlers[event.type];
      if (handler) handler(event);
    });
    socket.addEventListener("close", (close) => {
      if (liveNote) liveNote.hidden = true;
      if (close.code >= 4400 && close.code < 4500) return; // refused: retrying will not help
      const delay = Math.min(30000, 500 * 2 ** attempts) * (0.5 + Math.random() / 2);
      attempts += 1;
      setTimeout(connect, delay);
    });
  }

  connect();
})();
