// The chat page: the composer, and on a conversation's page its live view over
// WebSocket (event protocol v1). markdown.js renders replies; sidebar.js owns the list
// of conversations.
//
// Live state is a map of messages by id, kept by the protocol's rules (protocol.js): a
// token applies when its seq is exactly one more than what the message holds, is
// ignored when already held, and a gap asks the server for a fresh snapshot. Final
// events replace the text with the stored text; a snapshot never takes back text this
// page already shows.
(() => {
  "use strict";

  const chatsite = (window.chatsite = window.chatsite || {});
  const $ = (selector, root = document) => root.querySelector(selector);

  // --- small helpers ------------------------------------------------------------------

  const noticeEl = $("#notice");
  let noticeTimer = 0;

  function showNotice(text, ms = 7000) {
    if (!noticeEl) return;
    noticeEl.textContent = text;
    noticeEl.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { noticeEl.hidden = true; }, ms);
  }

  chatsite.notice = showNotice;
  for (const flash of document.querySelectorAll(".flash")) setTimeout(() => flash.remove(), 6000);

  function newId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    // randomUUID needs a secure context; a page served over plain HTTP has only this.
    return Array.from(crypto.getRandomValues(new Uint8Array(16)),
      (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // No Clipboard API over plain HTTP: copy from a hidden text area instead.
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.append(area);
      area.select();
      let copied = false;
      try { copied = document.execCommand("copy"); } catch { copied = false; }
      area.remove();
      return copied;
    }
  }

  async function copyFrom(button, text) {
    if (await copyText(text)) {
      button.classList.add("copied");
      setTimeout(() => button.classList.remove("copied"), 1500);
    } else {
      showNotice("Copying is not allowed here; select the text and copy it by hand.");
    }
  }

  // --- the composer -------------------------------------------------------------------

  const composer = $("#composer");
  if (!composer) return;
  const textarea = $("textarea[name=content]", composer);
  const sendButton = $("[data-action=send]", composer);
  const stopButton = $("[data-action=stop]", composer);
  const charCount = $("[data-part=char-count]", composer);
  const maxChars = Number(composer.dataset.maxChars) || Infinity;
  const titleEl = $("#conversation-title");
  const pane = $("#messages");
  let live = null; // the live view, on a conversation's page

  function autosize() {
    textarea.style.height = "auto";
    textarea.style.height = `${textarea.scrollHeight + 2}px`;
  }

  // The limit counts characters (Unicode code points) as the server does, not the
  // UTF-16 units of String.length: an emoji is one character, not two.
  function charLength(text) {
    let length = 0;
    for (const _ of text) length += 1;
    return length;
  }

  function tooLong() {
    return charLength(textarea.value) > maxChars;
  }

  function updateCount() {
    const length = charLength(textarea.value);
    charCount.hidden = length < maxChars * 0.9;
    charCount.textContent = `${length.toLocaleString()} / ${maxChars.toLocaleString()}`;
    charCount.classList.toggle("over", length > maxChars);
  }

  function updateControls() {
    if (live) {
      live.updateControls();
    } else {
      sendButton.disabled = tooLong();
    }
  }

  function setPageTitle(title) {
    const shown = title || "New chat";
    if (titleEl) titleEl.textContent = shown;
    document.title = `${shown} · chatsite`;
  }

  textarea.addEventListener("input", () => {
    autosize();
    updateCount();
    updateControls();
  });
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    } else if (event.key === "Escape" && live && live.streamingReply()) {
      event.preventDefault();
      live.stop();
    }
  });
  composer.addEventListener("submit", (event) => {
    const content = textarea.value;
    if (!content.trim() || sendButton.disabled) {
      event.preventDefault();
      return;
    }
    if (tooLong()) {
      event.preventDefault();
      showNotice(`The message has ${charLength(content)} characters; the limit is ${maxChars}.`);
      return;
    }
    if (live) {
      event.preventDefault();
      live.send(content);
      textarea.value = "";
      autosize();
      updateCount();
      return;
    }
    // The new-chat page posts the form: the server starts the conversation and its
    // reply, and this page follows to the conversation.
    setTimeout(() => { sendButton.disabled = true; }, 0);
  });

  autosize();
  if (pane) live = startLive();
  updateControls();
  // Back to the new-chat page from history: its send button works again.
  window.addEventListener("pageshow", updateControls);

  // --- the live view ------------------------------------------------------------------

  function startLive() {
    const conversationId = pane.dataset.conversation;
    const messageTemplate = $("#message-template");
    const markdown = chatsite.markdown || { ready: false };
    const protocol = chatsite.protocol;

    const messages = new Map(); // id -> {data, el, body, ...}
    const pending = new Map(); // client_id -> content: sent, not yet confirmed
    const chosenVersion = new Map(); // reply_to -> the reply the person chose to see
    const connectionEl = $("#connection");
    let socket = null;
    let attempts = 0;
    let retryTimer = 0;
    let closedForGood = false;
    let resyncing = false;
    let stopRequested = null;
    let firstSnapshot = true;
    let firstRender = true;
    let hasEarlier = false; // older messages exist than the page holds (paged snapshots)
    let loadingEarlier = false;
    const earlierButton = document.createElement("button");
    earlierButton.type = "button";
    earlierButton.className = "load-earlier";
    earlierButton.dataset.action = "load-earlier";
    earlierButton.textContent = "Load earlier messages";
    earlierButton.hidden = true;
    pane.prepend(earlierButton);

    // --- messages ----------------------------------------------------------------------

    const AUTHORS = { user: "You", assistant: "Assistant", system: "System", tool: "Tool" };
    const STATES = {
      streaming: "Writing…", failed: "Failed", cancelled: "Stopped", interrupted: "Interrupted",
    };

    function modelLabel(name) {
      return name === pane.dataset.offlineModel ? pane.dataset.offlineLabel : name;
    }

    function createMessage(data) {
      const el = messageTemplate.content.firstElementChild.cloneNode(true);
      el.dataset.messageId = data.id;
      const body = $("[data-part=body]", el);
      const m = { data, el, body, rendered: null, view: markdown.ready ? markdown.view(body) : null };
      messages.set(data.id, m);
      pane.append(el);
      return m;
    }

    function render(m) {
      const { data, el } = m;
      el.dataset.role = data.role;
      el.dataset.status = data.status;
      el.setAttribute("aria-busy", String(data.status === "streaming"));
      $("[data-part=author]", el).textContent = AUTHORS[data.role] || data.role;
      $("[data-part=model]", el).textContent =
        data.role === "assistant" && data.model ? modelLabel(data.model) : "";
      $("[data-part=state]", el).textContent = STATES[data.status] || "";
      if (data.role === "assistant" && m.view) {
        m.view.show(data.content, data.status === "streaming");
      } else if (m.rendered !== data.content) {
        m.body.classList.add("plain");
        m.body.textContent = data.content;
        m.rendered = data.content;
      }
      const error = $("[data-part=error]", el);
      const detail = data.error ? data.error.detail || data.error.code : "";
      error.textContent = detail;
      error.hidden = !detail;
      chatsite.tools?.render(m); // a reply's tool calls (tools.js)
    }

    // Versions: a regenerated reply answers the same user message (same reply_to) as
    // the replies before it. The newest is shown; the others stay one click away
    // ("‹ 1 / 2 ›"). Only the conversation's latest reply can be regenerated.
    function arrange() {
      const all = [];
      for (const el of pane.querySelectorAll(":scope > [data-message-id]")) {
        const m = messages.get(el.dataset.messageId);
        if (m) all.push(m);
      }
      const groups = new Map();
      let latest = null;
      for (const m of all) {
        if (m.data.role !== "assistant") continue;
        latest = m;
        const key = m.data.reply_to || m.data.id;
        if (!groups.has(key)) groups.set(key, []);
        groups.get(key).push(m);
      }
      const busy = streamingReply() !== null;
      for (const [key, group] of groups) {
        const chosen = group.find((m) => m.data.id === chosenVersion.get(key));
        const shown = chosen || group[group.length - 1];
        group.forEach((m, index) => {
          m.el.hidden = m !== shown;
          const versions = $("[data-part=versions]", m.el);
          versions.hidden = group.length < 2;
          $("[data-part=version-label]", versions).textContent = `${index + 1} / ${group.length}`;
          $("[data-action=older]", versions).disabled = index === 0;
          $("[data-action=newer]", versions).disabled = index === group.length - 1;
          const regenerate = $("[data-action=regenerate]", m.el);
          regenerate.hidden = m !== latest || busy;
          $("[data-part=regenerate-label]", regenerate).textContent =
            m.data.status === "completed" ? "Regenerate" : "Retry";
        });
      }
    }

    function streamingReply() {
      for (const m of messages.values()) {
        if (m.data.role === "assistant" && m.data.status === "streaming") return m.data;
      }
      return null;
    }

    function isOpen() {
      return socket !== null && socket.readyState === WebSocket.OPEN;
    }

    function updateControls() {
      const reply = streamingReply();
      const stopHadFocus = document.activeElement === stopButton;
      stopButton.hidden = reply === null;
      stopButton.disabled = reply !== null && stopRequested === reply.id;
      sendButton.disabled = reply !== null || pending.size > 0 || tooLong();
      if (reply === null) stopRequested = null;
      if (stopHadFocus && stopButton.hidden) textarea.focus();
    }

    // Renders are batched per animation frame: a fast stream costs one DOM update per
    // frame, not one per token. (A hidden tab gets no frames; the timer covers it.)
    const dirty = new Set();
    let structureChanged = false;
    let scheduled = false;

    function schedule(m) {
      if (m) dirty.add(m);
      if (scheduled) return;
      scheduled = true;
      requestAnimationFrame(flush);
      setTimeout(flush, 250);
    }

    function flush() {
      if (!scheduled) return;
      scheduled = false;
      const nearBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 120;
      for (const m of dirty) render(m);
      dirty.clear();
      if (structureChanged) arrange();
      structureChanged = false;
      updateControls();
      if (nearBottom || firstRender) pane.scrollTop = pane.scrollHeight;
      firstRender = false;
    }

    function announce(m) {
      // For add-ons (feedback buttons …): a message appeared or reached its final state.
      m.el.dispatchEvent(new CustomEvent("chatsite:message", { bubbles: true, detail: m.data }));
    }

    function upsert(data) {
      let m = messages.get(data.id);
      if (!m) {
        m = createMessage(data);
        structureChanged = true;
      } else if (protocol.isOlder(data, m.data)) {
        return;
      } else {
        if (m.data.status !== data.status) structureChanged = true;
        m.data = data;
      }
      schedule(m);
      announce(m);
    }

    // --- events from the server ---------------------------------------------------------

    // A snapshot holds the latest messages (a page of them); older ones the page
    // already shows (loaded with "Load earlier messages") stay above them.
    function applySnapshot(event) {
      resyncing = false;
      setConnection("live");
      for (const data of event.messages) upsert(data);
      for (const data of event.messages) pane.append(messages.get(data.id).el);
      if (!event.messages.length || messages.size === event.messages.length) {
        setEarlier(Boolean(event.has_more));
      }
      structureChanged = true;
      schedule(null);
      setPageTitle(event.conversation.title);
      chatsite.sidebar?.setTitle(conversationId, event.conversation.title);
      chatsite.tools?.conversationUpdated(event.conversation);
      if (!firstSnapshot) {
        // Sends the server may not have seen go again: a repeated client_id is answered
        // with what it already created, never a second reply.
        for (const [clientId, content] of pending) {
          sendFrame({ type: "message.send", content, client_id: clientId });
        }
      }
      firstSnapshot = false;
    }

    function setEarlier(more) {
      hasEarlier = more;
      earlierButton.hidden = !more;
      earlierButton.disabled = false;
      loadingEarlier = false;
    }

    function oldestShown() {
      for (const el of pane.querySelectorAll(":scope > [data-message-id]")) {
        if (messages.has(el.dataset.messageId)) return el.dataset.messageId;
      }
      return null;
    }

    function loadEarlier() {
      const before = oldestShown();
      if (!hasEarlier || loadingEarlier || !before || !isOpen()) return;
      loadingEarlier = true;
      earlierButton.disabled = true;
      sendFrame({ type: "history", before });
    }

    // A page of older messages goes above the ones shown, keeping what is in view still.
    function applyHistory(event) {
      const anchor = pane.querySelector(":scope > [data-message-id]");
      const fromBottom = pane.scrollHeight - pane.scrollTop;
      const fresh = event.messages.filter((data) => !messages.has(data.id));
      for (const data of fresh) {
        const m = createMessage(data);
        if (anchor) anchor.before(m.el);
        render(m);
        announce(m);
      }
      structureChanged = true;
      setEarlier(Boolean(event.has_more));
      flush();
      pane.scrollTop = pane.scrollHeight - fromBottom;
    }

    function requestResync() {
      if (resyncing) return;
      resyncing = true;
      sendFrame({ type: "resync" });
    }

    function applyToken(event) {
      const m = messages.get(event.message);
      const action = protocol.tokenAction(m ? m.data : null, event);
      if (action === "resync") return requestResync();
      if (action === "ignore") return;
      m.data.content += event.content;
      m.data.seq = event.seq;
      schedule(m);
    }

    // Tool events share the reply's seq with its tokens; tools.js keeps the calls.
    function applyToolEvent(event) {
      const m = messages.get(event.message);
      const action = protocol.tokenAction(m ? m.data : null, event);
      if (action === "resync") return requestResync();
      if (action === "ignore") return;
      m.data.seq = event.seq;
      chatsite.tools?.apply(m.data, event);
      schedule(m);
    }

    function applyCreated(event) {
      if (event.client_id) pending.delete(event.client_id);
      const data = event.message;
      if (data.role === "assistant" && data.reply_to) chosenVersion.delete(data.reply_to);
      upsert(data);
      if (data.role === "user") chatsite.sidebar?.bump(conversationId, data.created_at);
    }

    function applyError(event) {
      if (event.client_id && pending.has(event.client_id)) {
        // The message was refused: give the text back to the composer.
        if (!textarea.value) {
          textarea.value = pending.get(event.client_id);
          autosize();
          updateCount();
        }
        pending.delete(event.client_id);
      }
      if (event.code === "not_streaming") stopRequested = null;
      if (loadingEarlier) {
        earlierButton.disabled = false;
        loadingEarlier = false;
      }
      if (event.code === "rate_limited" && resyncing) {
        resyncing = false;
        setTimeout(requestResync, (event.retry_after || 1) * 1000);
        return;
      }
      showNotice(event.detail || event.code);
      structureChanged = true; // e.g. a refused regenerate: show its button again
      schedule(null);
    }

    const handlers = {
      snapshot: applySnapshot,
      history: applyHistory,
      token: applyToken,
      "tool.started": applyToolEvent,
      "tool.completed": applyToolEvent,
      "message.created": applyCreated,
      "message.completed": (event) => upsert(event.message),
      "message.failed": (event) => upsert(event.message),
      "message.cancelled": (event) => upsert(event.message),
      "message.interrupted": (event) => upsert(event.message),
      "conversation.updated": (event) => {
        chatsite.tools?.conversationUpdated(event.conversation);
        setPageTitle(event.conversation.title);
        chatsite.sidebar?.setTitle(conversationId, event.conversation.title);
      },
      error: applyError,
    };

    // --- the connection -----------------------------------------------------------------

    // `data-connection` on the pane: connecting, live (snapshot applied), reconnecting
    // or closed; the note in the header says so only when it matters.
    function setConnection(state, note = "") {
      pane.dataset.connection = state;
      connectionEl.textContent = note;
      connectionEl.hidden = !note;
    }

    function sendFrame(event) {
      if (isOpen()) socket.send(JSON.stringify(event));
    }

    function connect() {
      clearTimeout(retryTimer);
      if (socket || closedForGood) return;
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const ws = new WebSocket(`${scheme}://${location.host}/ws/conversations/${conversationId}/`);
      socket = ws;
      if (!attempts) setConnection("connecting");
      ws.addEventListener("open", () => {
        attempts = 0;
        updateControls();
      });
      ws.addEventListener("message", (message) => {
        let event;
        try {
          event = JSON.parse(message.data);
        } catch {
          return;
        }
        const handler = handlers[event.type];
        if (handler) handler(event);
      });
      ws.addEventListener("close", (close) => {
        if (socket !== ws) return;
        socket = null;
        resyncing = false;
        updateControls();
        if (close.code === 4401 || close.code === 4404) {
          closedForGood = true;
          setConnection("closed", "Unavailable");
          showNotice("This conversation is no longer available (deleted, or you were logged out).",
            60000);
          return;
        }
        // Exponential backoff with jitter, capped at 30 s; the snapshot on reconnect
        // brings the page up to date.
        const delay = Math.min(30000, 500 * 2 ** attempts) * (0.5 + Math.random() / 2);
        attempts += 1;
        setConnection("reconnecting", "Reconnecting…");
        retryTimer = setTimeout(connect, delay);
      });
    }

    // Back online or back in view: no need to wait for the backoff.
    window.addEventListener("online", connect);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") connect();
    });

    // --- actions ------------------------------------------------------------------------

    function send(content) {
      const clientId = newId();
      pending.set(clientId, content);
      if (isOpen()) {
        sendFrame({ type: "message.send", content, client_id: clientId });
      } else {
        showNotice("Not connected: the message goes out when the connection is back.");
      }
      updateControls();
    }

    function stop() {
      const reply = streamingReply();
      if (!reply) return;
      stopRequested = reply.id;
      sendFrame({ type: "reply.stop", message: reply.id });
      updateControls();
    }

    function showVersion(m, step) {
      const key = m.data.reply_to || m.data.id;
      const group = [...messages.values()].filter(
        (other) => other.data.role === "assistant" && (other.data.reply_to || other.data.id) === key);
      const next = group[group.indexOf(m) + step];
      if (!next) return;
      chosenVersion.set(key, next.data.id);
      structureChanged = true;
      schedule(null);
      requestAnimationFrame(() => $(`[data-action=${step < 0 ? "older" : "newer"}]`, next.el).focus());
    }

    stopButton.addEventListener("click", stop);
    earlierButton.addEventListener("click", loadEarlier);
    // Scrolled up to the oldest message shown: the next page comes by itself.
    pane.addEventListener("scroll", () => {
      if (pane.scrollTop < 80 && !firstRender) loadEarlier();
    }, { passive: true });
    pane.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      const article = button && button.closest("[data-message-id]");
      const m = article && messages.get(article.dataset.messageId);
      if (!m) return;
      const action = button.dataset.action;
      if (action === "copy") copyFrom(button, m.data.content);
      if (action === "copy-code") copyFrom(button, $("pre", button.closest(".code-block")).textContent);
      if (action === "regenerate") {
        sendFrame({ type: "reply.regenerate", message: m.data.id });
        button.hidden = true;
      }
      if (action === "older") showVersion(m, -1);
      if (action === "newer") showVersion(m, 1);
    });

    connect();
    return { send, stop, streamingReply, updateControls };
  }
})();
