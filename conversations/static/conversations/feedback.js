// Thumbs up / down on the assistant's replies, with an optional comment; changeable,
// and withdrawn by pressing the same thumb again. Staff see the ratings in the admin.
//
// A separate script from chat.js: it finds replies by the chat page's stable hooks
// ([data-message-id][data-role=assistant][data-status]) and watches for new ones, so
// either script can change without the other. Talks to /feedback/ (review/views.py).
(() => {
  "use strict";

  const pane = document.getElementById("messages");
  if (!pane || !pane.dataset.conversation) return;
  const conversationId = pane.dataset.conversation;
  const ENDPOINT = "/feedback/";
  const ratings = new Map(); // message id -> {rating, comment}

  // Its styles sit beside it (feedback.css), loaded from here: the page's
  // Content-Security-Policy allows stylesheets from this origin, not inline ones.
  const script = document.currentScript;
  if (script && script.src) {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = script.src.replace(/feedback\.js(\?.*)?$/, "feedback.css");
    document.head.append(link);
  }

  const SVG = "http://www.w3.org/2000/svg";
  const ICONS = {
    // Feather's thumbs-up and thumbs-down (MIT).
    up: "M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3",
    down: "M10 15v4a3 3 0 0 0 3 3l4-9V2H5.72a2 2 0 0 0-2 1.7l-1.38 9a2 2 0 0 0 2 2.3zm7-13h2.67A2.31 2.31 0 0 1 22 4v7a2.31 2.31 0 0 1-2.33 2H17",
  };

  function icon(name) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", ICONS[name]);
    svg.append(path);
    return svg;
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function button(action, label, iconName) {
    const el = document.createElement("button");
    el.type = "button";
    el.className = "icon";
    el.dataset.action = action;
    el.setAttribute("aria-label", label);
    el.setAttribute("aria-pressed", "false");
    el.title = label;
    el.append(icon(iconName));
    return el;
  }

  // The thumbs go with the reply's other actions; the comment form below them, full width.
  function buildControl(messageId) {
    const box = document.createElement("span");
    box.className = "feedback";
    box.dataset.part = "feedback";
    box.dataset.for = messageId;
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "Rate this reply");
    const up = button("rate-up", "Good reply", "up");
    const down = button("rate-down", "Bad reply", "down");
    const status = document.createElement("span");
    status.dataset.part = "feedback-status";
    status.setAttribute("role", "status");
    box.append(up, down, status);

    const form = document.createElement("form");
    form.className = "feedback-comment";
    form.dataset.part = "feedback-comment";
    form.dataset.for = messageId;
    form.hidden = true;
    const comment = document.createElement("textarea");
    comment.name = "comment";
    comment.maxLength = 2000;
    comment.rows = 1;
    comment.placeholder = "What was good or bad about this reply? (optional)";
    comment.setAttribute("aria-label", "Comment on this reply");
    const save = document.createElement("button");
    save.type = "submit";
    save.textContent = "Save";
    form.append(comment, save);

    up.addEventListener("click", () => rate(messageId, box, 1));
    down.addEventListener("click", () => rate(messageId, box, -1));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const held = ratings.get(messageId);
      if (held) send(messageId, box, held.rating, comment.value, "Thanks for the comment.");
    });
    comment.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    return [box, form];
  }

  function commentForm(box) {
    const article = box.closest("[data-message-id]");
    return article && article.querySelector(`[data-part=feedback-comment][data-for="${box.dataset.for}"]`);
  }

  function show(box, messageId) {
    const held = ratings.get(messageId);
    const rating = held ? held.rating : null;
    box.querySelector("[data-action=rate-up]").setAttribute("aria-pressed", String(rating === 1));
    box.querySelector("[data-action=rate-down]").setAttribute("aria-pressed", String(rating === -1));
    const form = commentForm(box);
    if (!form) return;
    const textarea = form.querySelector("textarea");
    if (document.activeElement !== textarea) textarea.value = held ? held.comment : "";
    form.hidden = rating === null;
  }

  function rate(messageId, box, rating) {
    const held = ratings.get(messageId);
    if (held && held.rating === rating) {
      send(messageId, box, null, "", "Rating removed.");
    } else {
      send(messageId, box, rating, held ? held.comment : "", "Thanks! Add a comment if you like.");
    }
  }

  async function send(messageId, box, rating, comment, done) {
    const status = box.querySelector("[data-part=feedback-status]");
    status.textContent = "Saving…";
    try {
      const response = await fetch(`${ENDPOINT}${messageId}/`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify({ rating, comment }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        status.textContent = body.detail || "Could not save the rating.";
        return;
      }
      if (body.rating === null) ratings.delete(messageId);
      else ratings.set(messageId, { rating: body.rating, comment: body.comment });
      status.textContent = done;
      show(box, messageId);
    } catch (error) {
      status.textContent = "Could not save the rating; check the connection.";
    }
  }

  // Every finished assistant reply gets the control once; a streaming one has none.
  function scan() {
    for (const article of pane.querySelectorAll("[data-message-id][data-role=assistant]")) {
      const messageId = article.dataset.messageId;
      if (!messageId) continue;
      let box = article.querySelector("[data-part=feedback]");
      let form = article.querySelector("[data-part=feedback-comment]");
      if (box ? box.dataset.for !== messageId || !form : form) {
        // The element was reused for another message, or half rebuilt: start again.
        if (box) box.remove();
        if (form) form.remove();
        box = form = null;
      }
      const streaming = !article.dataset.status || article.dataset.status === "streaming";
      if (streaming) {
        if (box) box.hidden = form.hidden = true;
        continue;
      }
      if (!box) {
        [box, form] = buildControl(messageId);
        (article.querySelector(".message-actions") || article).append(box);
        article.append(form);
        show(box, messageId);
      } else if (box.hidden) {
        box.hidden = false;
        show(box, messageId);
      }
    }
  }

  let scanQueued = false;
  function queueScan() {
    if (scanQueued) return;
    scanQueued = true;
    queueMicrotask(() => {
      scanQueued = false;
      scan();
    });
  }

  new MutationObserver(queueScan).observe(pane, {
    childList: true,
    subtree: true,
    attributes: true,
    attributeFilter: ["data-status", "data-message-id", "data-role"],
  });

  async function load() {
    try {
      const response = await fetch(`${ENDPOINT}?conversation=${encodeURIComponent(conversationId)}`, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) return;
      const body = await response.json();
      for (const [messageId, held] of Object.entries(body.ratings || {})) {
        ratings.set(messageId, { rating: held.rating, comment: held.comment });
      }
      for (const box of pane.querySelectorAll("[data-part=feedback]")) show(box, box.dataset.for);
    } catch (error) {
      // Ratings already given just don't show as pressed; giving one still works.
    }
  }

  scan();
  load();
})();
