// Tools on the chat page: the composer's tools menu (which tools the conversation's
// model may call), and each reply's tool calls shown inline (name, arguments, output,
// status), live and after a reload.
//
// chat.js calls three hooks: `apply(data, event)` for a tool.started / tool.completed
// it accepted by the protocol's seq rules, `render(m)` when it renders a message, and
// `conversationUpdated(conversation)`. Tool arguments and outputs are untrusted text:
// they are only ever set with textContent, never as HTML.
(() => {
  "use strict";

  const chatsite = (window.chatsite = window.chatsite || {});
  const $ = (selector, root = document) => root.querySelector(selector);

  // Its styles sit beside it, loaded from here (no inline styles under the page's CSP).
  const script = document.currentScript;
  if (script && script.src) {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = script.src.replace(/tools\.js(\?.*)?$/, "tools.css");
    document.head.append(link);
  }

  const STATUS_LABELS = {
    running: "running…", completed: "done", failed: "failed", cancelled: "stopped",
    interrupted: "interrupted", requested: "requested",
  };

  // --- a reply's calls ----------------------------------------------------------------

  function apply(data, event) {
    const calls = (data.tool_calls = data.tool_calls || []);
    let call = event.call;
    if (event.type === "tool.started") {
      call = { ...call, status: "running", output: null, error: null };
    }
    const index = calls.findIndex((held) => held.id === call.id);
    if (index >= 0) calls[index] = call;
    else calls.push(call);
  }

  function text(tag, className, value) {
    const el = document.createElement(tag);
    el.className = className;
    el.textContent = value;
    return el;
  }

  function pretty(args) {
    try {
      return JSON.stringify(args, null, 2);
    } catch {
      return String(args);
    }
  }

  function renderCall(el, call) {
    const status = call.status || "running";
    const key = JSON.stringify([status, call.output, call.error]);
    if (el.dataset.key === key) return;
    el.dataset.key = key;
    el.dataset.toolStatus = status;
    const summary = document.createElement("summary");
    summary.append(
      text("span", "tool-name", call.name),
      text("span", "tool-status", STATUS_LABELS[status] || status),
    );
    if (call.duration_ms != null) summary.append(text("span", "tool-duration", `${call.duration_ms} ms`));
    const parts = [summary, text("span", "tool-label", "Arguments"), text("pre", "tool-args", pretty(call.args))];
    if (call.output != null) {
      parts.push(text("span", "tool-label", "Output"));
      const output = text("pre", "tool-output", call.output);
      output.dataset.part = "tool-output";
      parts.push(output);
    }
    if (call.error) {
      const error = text("p", "tool-error", call.error.detail || call.error.code);
      error.dataset.part = "tool-error";
      parts.push(error);
    }
    el.replaceChildren(...parts);
  }

  // The calls go above the reply's text, in the order they were made.
  function render(m) {
    const calls = m.data.tool_calls || [];
    let box = $("[data-part=tool-calls]", m.el);
    if (!calls.length) {
      if (box) box.remove();
      return;
    }
    if (!box) {
      box = document.createElement("div");
      box.className = "tool-calls";
      box.dataset.part = "tool-calls";
      m.body.before(box);
    }
    const shown = new Map([...box.children].map((el) => [el.dataset.callId, el]));
    for (const call of calls) {
      let el = shown.get(call.id);
      if (!el) {
        el = document.createElement("details");
        el.className = "tool-call";
        el.dataset.callId = call.id;
        el.dataset.toolName = call.name;
        box.append(el);
      }
      renderCall(el, call);
    }
  }

  // --- the composer's tools menu ------------------------------------------------------

  const menu = $("[data-part=tools-menu]");
  const list = menu && $("[data-part=tools-list]", menu);
  const count = menu && $("[data-part=tools-count]", menu);
  const pane = $("#messages");
  const conversationId = pane ? pane.dataset.conversation : null;
  let enabled = menu ? (menu.dataset.enabled || "").split(",").filter(Boolean) : [];

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function showEnabled() {
    if (!menu) return;
    count.textContent = enabled.length ? String(enabled.length) : "";
    for (const box of list.querySelectorAll("input[type=checkbox]")) {
      box.checked = enabled.includes(box.value);
    }
  }

  async function save(names) {
    const before = enabled;
    enabled = names;
    showEnabled();
    try {
      const response = await fetch(`/api/conversations/${conversationId}`, {
        method: "PATCH",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify({ tools: names }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(body.detail || "Could not change the tools.");
      enabled = body.tools;
    } catch (error) {
      enabled = before;
      chatsite.notice?.(error.message || "Could not change the tools; check the connection.");
    }
    showEnabled();
  }

  async function load() {
    let tools = [];
    try {
      const response = await fetch("/api/tools", { credentials: "same-origin" });
      if (response.ok) tools = await response.json();
    } catch {
      tools = [];
    }
    list.replaceChildren();
    if (!tools.length) list.append(text("li", "tools-empty", "No tools are available."));
    for (const tool of tools) {
      const item = document.createElement("li");
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = tool.name;
      box.dataset.tool = tool.name;
      // On the new-chat page the form posts the choice with the first message.
      if (!conversationId) box.name = "tools";
      label.append(box, text("span", "tool-name", tool.name));
      label.title = tool.description;
      const source = tool.source === "builtin" ? "built-in" : tool.source.replace(/^mcp:/, "MCP: ");
      item.append(label, text("span", "tool-source", source));
      list.append(item);
    }
    showEnabled();
    list.dataset.loaded = "true";
  }

  if (menu) {
    list.addEventListener("change", (event) => {
      const box = event.target.closest("input[type=checkbox]");
      if (!box) return;
      const names = [...list.querySelectorAll("input[type=checkbox]:checked")].map((b) => b.value);
      if (conversationId) save(names);
      else {
        enabled = names;
        showEnabled();
      }
    });
    menu.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && menu.open) {
        menu.open = false;
        $("summary", menu).focus();
      }
    });
    load();
  }

  function conversationUpdated(conversation) {
    if (!menu || !Array.isArray(conversation.tools)) return;
    enabled = conversation.tools;
    showEnabled();
  }

  chatsite.tools = { apply, render, conversationUpdated };
})();
