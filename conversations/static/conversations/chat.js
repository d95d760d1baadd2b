// The chat page: the composer, and on a conversation's page its live view over
// WebSocket (event protocol v1). markdown.js renders replies; sidebar.js owns the list
// of conversations.
//
// Live state is a map of messages by id, kept by the protocol's rules (protocol.js): a
// token applies when its seq is exactly one more than what the message holds, is
// ignored when already held, and a gap asks the server for a fresh snapshot. Final
// events replace the text with the stored text; a snapshot never takes back text this
// page already shows.
//
// The page shows the conversation's active branch only: each message names the one it
// follows (`parent`) and the versions at its place (`siblings`, "‹ 2 / 3 ›"). A message
// that follows one shown earlier than the last (an edit, a regenerated reply) ends the
// branch there; a switch elsewhere (`branch.switched`) reloads the branch.
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

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  // The JSON API with this page's session (api/auth.py): its CSRF token on writes.
  async function callApi(method, url, body) {
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.detail || `The server answered ${response.status}.`);
    return answer;
  }

  chatsite.callApi = callApi;

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
  const modelPicker = $("select[name=model]", composer);
  const presetPicker = $("select[name=preset]", composer);
  const modelLabelEl = $(".model-label");
  const pane = $("#messages");
  let live = null; // the live view, on a conversation's page
  // Phones and tablets: Enter adds a line (the keyboard has no Shift+Enter to speak of);
  // the Send button sends.
  const touch = window.matchMedia("(pointer: coarse)").matches;
  if (touch) textarea.placeholder = "Message chatsite";

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
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !touch) {
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

  function showModel(name) {
    const option = modelPicker && [...modelPicker.options].find((o) => o.value === name);
    if (!option) return;
    modelPicker.value = name;
    if (modelLabelEl) {
      modelLabelEl.textContent = option.dataset.label;
      modelLabelEl.title = option.dataset.label;
      modelLabelEl.classList.toggle("offline", "offline" in option.dataset);
    }
  }

  if (presetPicker) {
    // A preset brings its model (the picker can still change it before sending).
    presetPicker.addEventListener("change", () => {
      const model = presetPicker.selectedOptions[0]?.dataset.model;
      if (model) showModel(model);
    });
  }

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

    const messages = new Map(); // id -> {data, el, body, ...}: the branch shown
    const pending = new Map(); // client_id -> content: sent, not yet confirmed
    const connectionEl = $("#connection");
    const jumpButton = $("[data-action=jump-latest]");
    const editTemplate = $("#edit-template");
    const settingsUrl = composer.dataset.settingsUrl;
    let conversation = null; // as the last snapshot or conversation.updated told it
    // Whether the page follows the newest text: true while the reader is at the bottom;
    // scrolling up stops it (and shows "Jump to latest"), sending starts it again.
    let following = true;
    let socket = null;
    let attempts = 0;
    let retryTimer = 0;
    let closedForGood = false;
    let sessionEnded = null; // the session.ended event, until the close that follows it
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

    function removeMessage(m) {
      messages.delete(m.data.id);
      m.el.remove();
      dirty.delete(m);
    }

    function shown() {
      const found = [];
      for (const el of pane.querySelectorAll(":scope > [data-message-id]")) {
        const m = messages.get(el.dataset.messageId);
        if (m) found.push(m);
      }
      return found;
    }

    // The branch goes another way after `parentId` (null: from the start): what the
    // page shows after it is no longer on the branch.
    function cutAfter(parentId) {
      const all = shown();
      const index = parentId ? all.findIndex((m) => m.data.id === parentId) : -1;
      for (const m of all.slice(index + 1)) removeMessage(m);
      structureChanged = true;
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
      // A reply that ended with no text has nothing to copy or rate.
      el.toggleAttribute("data-empty", data.status !== "streaming" && !data.content);
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

    // Versions: an edited message and a regenerated reply are siblings of what they
    // replace ("‹ 2 / 3 ›"); switching asks the server for that branch. Only the
    // branch's latest reply can be regenerated; a person's messages can be edited.
    function arrange() {
      const all = shown();
      const latest = all.length ? all[all.length - 1] : null;
      const busy = streamingReply() !== null;
      for (const m of all) {
        const siblings = m.data.siblings || [m.data.id];
        const index = Math.max(0, siblings.indexOf(m.data.id));
        const versions = $("[data-part=versions]", m.el);
        versions.hidden = siblings.length < 2;
        $("[data-part=branch-index]", versions).textContent = `${index + 1} / ${siblings.length}`;
        $("[data-action=branch-prev]", versions).disabled = index === 0 || busy;
        $("[data-action=branch-next]", versions).disabled = index === siblings.length - 1 || busy;
        $("[data-action=edit]", m.el).hidden = m.data.role !== "user" || busy || m.editing;
        const regenerate = $("[data-action=regenerate]", m.el);
        regenerate.hidden = m.data.role !== "assistant" || m !== latest || busy;
        $("[data-part=regenerate-label]", regenerate).textContent =
          m.data.status === "completed" ? "Regenerate" : "Retry";
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
      for (const m of dirty) render(m);
      dirty.clear();
      if (structureChanged) arrange();
      structureChanged = false;
      updateControls();
      // The reader scrolled up since the page last scrolled itself, and the scroll event
      // has not come yet: that still counts. Never pull them back down.
      if (following && !firstRender && pane.scrollTop < autoScrollTop - 2) following = false;
      if (following || firstRender) scrollToLatest();
      firstRender = false;
      updateJump();
    }

    function distanceFromBottom() {
      return pane.scrollHeight - pane.scrollTop - pane.clientHeight;
    }

    // Where this page last scrolled itself: its own scroll events (which arrive after
    // more text may have come) never count as the reader scrolling up.
    let autoScrollTop = 0;

    function scrollToLatest() {
      following = true;
      pane.scrollTop = pane.scrollHeight;
      autoScrollTop = pane.scrollTop;
    }

    function updateJump() {
      jumpButton.hidden = following || distanceFromBottom() < 40;
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
        // Only readers that know them send the versions; the others' copies keep them.
        if (!data.siblings && m.data.siblings) data = { ...data, siblings: m.data.siblings };
        m.data = data;
      }
      schedule(m);
      announce(m);
    }

    // --- events from the server ---------------------------------------------------------

    // A snapshot holds the latest messages (a page of them); older ones the page
    // already shows (loaded with "Load earlier messages") stay above them.
    // Held messages above it stay when they are the ones the snapshot's first message
    // follows (an older page loaded earlier); anything else held is off the branch now.
    function applySnapshot(event) {
      resyncing = false;
      setConnection("live");
      const incoming = new Set(event.messages.map((data) => data.id));
      const kept = new Set();
      const first = event.messages[0];
      if (first && first.parent === null && event.has_more) {
        // Saved without parents (by hand): one line of messages, all kept.
        for (const m of shown()) if (m.data.id !== first.id) kept.add(m.data.id); else break;
      } else {
        for (let id = first?.parent; id && messages.has(id); id = messages.get(id).data.parent) {
          kept.add(id);
        }
      }
      for (const m of shown()) {
        if (!kept.has(m.data.id) && !incoming.has(m.data.id)) removeMessage(m);
      }
      for (const data of event.messages) upsert(data);
      for (const data of event.messages) pane.append(messages.get(data.id).el);
      if (!event.messages.length || messages.size === event.messages.length) {
        setEarlier(Boolean(event.has_more));
      }
      structureChanged = true;
      schedule(null);
      applyConversation(event.conversation);
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
      const mine = event.client_id && pending.has(event.client_id);
      if (event.client_id) pending.delete(event.client_id);
      const data = event.message;
      if (!messages.has(data.id)) {
        const all = shown();
        const last = all.length ? all[all.length - 1].data.id : null;
        if (data.parent && !messages.has(data.parent)) {
          requestResync(); // the branch changed above what this page holds
          return;
        }
        if (data.parent !== last && all.length) cutAfter(data.parent);
      }
      upsert(data);
      if (mine) scrollToLatest(); // one's own message: show it and follow the reply
      if (data.role === "user") chatsite.sidebar?.bump(conversationId, data.created_at);
    }

    function applyConversation(updated) {
      conversation = updated;
      setPageTitle(updated.title);
      chatsite.sidebar?.setTitle(conversationId, updated.title);
      if (updated.model) showModel(updated.model);
      chatsite.tools?.conversationUpdated(updated);
    }

    function applyBranchSwitched(event) {
      const all = shown();
      if (all.length && all[all.length - 1].data.id === event.message) return;
      requestResync();
    }

    function applyFinal(event) {
      upsert(event.message);
      // What a reply spent counts against the quota (quotas/static/quotas/usage.js).
      document.dispatchEvent(new CustomEvent("chatsite:reply-ended"));
    }

    function untilText(seconds) {
      const at = new Date(Date.now() + seconds * 1000);
      const sameDay = at.toDateString() === new Date().toDateString();
      const options = sameDay
        ? { hour: "2-digit", minute: "2-digit", second: seconds < 120 ? "2-digit" : undefined }
        : { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" };
      return `(until ${at.toLocaleString([], options)})`;
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
      if (event.retry_after >= 5) {
        // A limit: say until when, in the person's own clock, and long enough to read.
        showNotice(`${event.detail} ${untilText(event.retry_after)}`, 20000);
      } else {
        showNotice(event.detail || event.code);
      }
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
      "message.completed": applyFinal,
      "message.failed": applyFinal,
      "message.cancelled": applyFinal,
      "message.interrupted": applyFinal,
      "conversation.updated": (event) => applyConversation(event.conversation),
      "branch.switched": applyBranchSwitched,
      "session.ended": (event) => { sessionEnded = event; },
      "conversations.changed": () => chatsite.sidebar?.reload(),
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
        if (close.code === 4401 && sessionEnded) {
          endedOrReconnect(sessionEnded);
          return;
        }
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
        // 4429: the person has too many tabs and streams open (the error event said so).
        setConnection("reconnecting",
          close.code === 4429 ? "Too many connections open; retrying…" : "Reconnecting…");
        retryTimer = setTimeout(connect, delay);
      });
    }

    // The credential the socket was opened with ended (docs/protocol.md, session.ended).
    // This browser may be logged in still — its own password change gave it a new
    // session — so ask once before saying the session ended; never reconnect in a loop.
    async function endedOrReconnect(event) {
      sessionEnded = null;
      closedForGood = true;
      setConnection("closed", "Session ended");
      const loggedIn = async () => {
        try {
          const answer = await fetch("/api/models", { credentials: "same-origin", cache: "no-store" });
          return answer.ok;
        } catch {
          return false;
        }
      };
      // Asked twice: a password change in another tab ends this socket before that
      // tab's answer has brought the browser its new session cookie.
      let stillIn = await loggedIn();
      if (!stillIn) {
        await new Promise((resolve) => setTimeout(resolve, 1500));
        stillIn = await loggedIn();
      }
      if (stillIn) {
        closedForGood = false;
        connect();
        return;
      }
      const banner = $("[data-part=session-ended]");
      $("[data-part=session-ended-detail]", banner).textContent = event.detail || "Your session ended.";
      banner.hidden = false;
      updateControls();
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
      scrollToLatest();
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
      const siblings = m.data.siblings || [];
      const next = siblings[siblings.indexOf(m.data.id) + step];
      if (!next) return;
      following = false; // the reader stays where the switcher is
      sendFrame({ type: "branch.select", message: next });
    }

    // --- editing a message: a new version, on a new branch -------------------------------

    function startEdit(m) {
      if (m.editing) return;
      const form = editTemplate.content.firstElementChild.cloneNode(true);
      const area = $("textarea[name=edit]", form);
      area.value = m.data.content;
      m.editing = form;
      m.body.hidden = true;
      m.body.after(form);
      structureChanged = true;
      schedule(null);
      area.focus();
      area.setSelectionRange(area.value.length, area.value.length);
      const close = () => {
        form.remove();
        m.editing = null;
        m.body.hidden = false;
        structureChanged = true;
        schedule(null);
      };
      $("[data-action=cancel-edit]", form).addEventListener("click", close);
      area.addEventListener("keydown", (event) => {
        if (event.key === "Escape") close();
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !touch) {
          event.preventDefault();
          form.requestSubmit();
        }
      });
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const content = area.value;
        if (!content.trim() || charLength(content) > maxChars) {
          showNotice(`A message has 1 to ${maxChars} characters.`);
          return;
        }
        const clientId = newId();
        pending.set(clientId, content);
        sendFrame({ type: "message.edit", message: m.data.id, content, client_id: clientId });
        close();
        updateControls();
      });
    }

    // --- the conversation's settings ------------------------------------------------------

    const settingsDialog = $("#settings-dialog");
    const settingsButton = $("[data-action=conversation-settings]");

    function openSettings() {
      const form = $("form", settingsDialog);
      if (conversation) {
        form.elements.system_prompt.value = conversation.system_prompt || "";
        form.elements.temperature.value = conversation.temperature ?? "";
      }
      settingsDialog.showModal();
      form.elements.system_prompt.focus();
    }

    function settingsFrom(form) {
      const temperature = form.elements.temperature.value;
      return {
        system_prompt: form.elements.system_prompt.value,
        temperature: temperature === "" ? null : Number(temperature),
      };
    }

    if (settingsDialog) {
      const form = $("form", settingsDialog);
      settingsButton.addEventListener("click", openSettings);
      $("[data-action=close-dialog]", settingsDialog).addEventListener("click", () => settingsDialog.close());
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        try {
          applyConversation(await callApi("PATCH", settingsUrl, settingsFrom(form)));
          settingsDialog.close();
          showNotice("Saved: it applies from the next reply.", 4000);
        } catch (error) {
          showNotice(error.message);
        }
      });
      $("[data-action=save-preset]", form).addEventListener("click", async () => {
        const name = form.elements.preset_name.value.trim();
        if (!name) {
          form.elements.preset_name.focus();
          return;
        }
        try {
          await callApi("POST", "/api/presets", { name, model: modelPicker.value, ...settingsFrom(form) });
          showNotice(`Preset “${name}” saved: pick it when you start a new chat.`, 4000);
          form.elements.preset_name.value = "";
        } catch (error) {
          showNotice(error.message);
        }
      });
    }

    if (modelPicker) {
      // The model of the next reply (and of a regeneration): saved at once, every tab
      // follows (conversation.updated).
      modelPicker.addEventListener("change", async () => {
        const chosen = modelPicker.value;
        try {
          applyConversation(await callApi("PATCH", settingsUrl, { model: chosen }));
        } catch (error) {
          showNotice(error.message);
          if (conversation) showModel(conversation.model);
        }
      });
    }

    stopButton.addEventListener("click", stop);
    earlierButton.addEventListener("click", loadEarlier);
    jumpButton.addEventListener("click", () => {
      scrollToLatest();
      updateJump();
      textarea.focus();
    });
    // Scrolled up to the oldest message shown: the next page comes by itself. Scrolling
    // away from the bottom stops following the reply; back at the bottom, it follows.
    pane.addEventListener("scroll", () => {
      if (pane.scrollTop < 80 && !firstRender) loadEarlier();
      if (pane.scrollTop < autoScrollTop - 2) following = false;
      else if (distanceFromBottom() < 40) following = true;
      autoScrollTop = Math.min(autoScrollTop, pane.scrollTop);
      updateJump();
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
      if (action === "branch-prev") showVersion(m, -1);
      if (action === "branch-next") showVersion(m, 1);
      if (action === "edit") startEdit(m);
    });

    connect();
    return { send, stop, streamingReply, updateControls };
  }
})();
