// The chat page's sidebar: the conversations with their relative dates, the search
// over titles and message text, rename and delete (with a confirmation), the account
// menu (and importing a conversation from it), the sliding sidebar at phone width and
// Ctrl+K.
//
// window.chatsite.sidebar lets the live view keep the open conversation's entry up to
// date: setTitle(id, title) and bump(id, when) (newest activity first).
(() => {
  "use strict";

  const chatsite = (window.chatsite = window.chatsite || {});
  const $ = (selector, root = document) => root.querySelector(selector);
  const showNotice = (text) => (chatsite.notice ? chatsite.notice(text) : console.warn(text));

  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const UNITS = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400],
    ["hour", 3600], ["minute", 60]];

  function ago(date) {
    const seconds = (date.getTime() - Date.now()) / 1000;
    for (const [unit, size] of UNITS) {
      if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
    }
    return "just now";
  }

  function refreshTimes(root = document) {
    for (const time of root.querySelectorAll("time[datetime]")) {
      const date = new Date(time.dateTime);
      if (Number.isNaN(date.getTime())) continue;
      time.textContent = ago(date);
      time.title = date.toLocaleString();
    }
  }

  // --- the sidebar --------------------------------------------------------------------

  const list = $("#history");
  const searchInput = $("#search-input");
  // "API conversations": those made through API keys, left out unless asked for.
  const showApi = $("[data-part=show-api]");
  const currentId = list ? list.dataset.current || "" : "";
  let searchTicket = 0;
  let searchTimer = 0;

  function entryFor(id) {
    return list && list.querySelector(`[data-conversation-id="${CSS.escape(id)}"]`);
  }

  // The entries come from the server as an escaped HTML fragment (search view).
  async function reloadHistory({ background = false } = {}) {
    if (!list) return;
    const ticket = ++searchTicket;
    const url = new URL(list.dataset.searchUrl, location.href);
    url.searchParams.set("q", searchInput.value.trim());
    if (currentId) url.searchParams.set("current", currentId);
    if (showApi && showApi.checked) url.searchParams.set("api", "1");
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
    } catch {
      return;
    }
    if (!response.ok || response.redirected || ticket !== searchTicket) return;
    const html = await response.text();
    if (ticket !== searchTicket) return;
    // A refresh in the background never pulls the list from under the keyboard.
    if (background && list.contains(document.activeElement)) return;
    list.innerHTML = html;
    refreshTimes(list);
  }

  function setEntryTitle(id, title) {
    const entry = entryFor(id);
    if (!entry) return;
    const shown = title || "New chat";
    entry.querySelector(".history-title").textContent = shown;
    const rename = $("[data-action=rename]", entry);
    rename.dataset.title = title;
    rename.setAttribute("aria-label", `Rename “${shown}”`);
    const remove = $("[data-action=delete]", entry);
    remove.dataset.title = shown;
    remove.setAttribute("aria-label", `Delete “${shown}”`);
  }

  // Newest activity first: the conversation that just had a message moves to the top.
  function bumpEntry(id, when) {
    const entry = entryFor(id);
    if (!entry) return;
    const time = $("time", entry);
    if (time) {
      time.dateTime = when;
      refreshTimes(entry);
    }
    if (!searchInput.value.trim() && list.firstElementChild !== entry) list.prepend(entry);
  }

  if (list) {
    refreshTimes();
    setInterval(() => refreshTimes(list), 60000);
    searchInput.addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(reloadHistory, 200);
    });
    searchInput.form.addEventListener("submit", (event) => {
      event.preventDefault();
      clearTimeout(searchTimer);
      reloadHistory();
    });
    if (showApi) showApi.addEventListener("change", () => reloadHistory());
    searchInput.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && searchInput.value) {
        searchInput.value = "";
        reloadHistory();
      }
    });
    // Other tabs may have started or renamed conversations meanwhile.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") reloadHistory({ background: true });
    });
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      if (button.dataset.action === "rename") openRename(button);
      if (button.dataset.action === "delete") openDelete(button);
    });
  }

  // --- rename and delete dialogs ------------------------------------------------------

  const renameDialog = $("#rename-dialog");
  const deleteDialog = $("#delete-dialog");

  function conversationIdOf(button) {
    return button.closest("[data-conversation-id]").dataset.conversationId;
  }

  function openRename(button) {
    const form = $("form", renameDialog);
    form.action = button.dataset.url;
    form.dataset.conversation = conversationIdOf(button);
    form.elements.title.value = button.dataset.title;
    renameDialog.showModal();
    form.elements.title.select();
  }

  function openDelete(button) {
    const form = $("form", deleteDialog);
    form.action = button.dataset.url;
    form.dataset.conversation = conversationIdOf(button);
    $("[data-part=delete-title]", deleteDialog).textContent = button.dataset.title;
    deleteDialog.showModal();
  }

  async function postForm(form) {
    const response = await fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.detail || `The server answered ${response.status}.`);
    return body;
  }

  for (const dialog of [renameDialog, deleteDialog]) {
    if (!dialog) continue;
    $("[data-action=close-dialog]", dialog).addEventListener("click", () => dialog.close());
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close(); // a click on the backdrop
    });
  }

  if (renameDialog) {
    $("form", renameDialog).addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = event.target;
      try {
        const { conversation } = await postForm(form);
        setEntryTitle(conversation.id, conversation.title);
        renameDialog.close();
      } catch (error) {
        showNotice(error.message);
      }
    });
  }

  if (deleteDialog) {
    $("form", deleteDialog).addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = event.target;
      const id = form.dataset.conversation;
      try {
        await postForm(form);
      } catch (error) {
        showNotice(error.message);
        return;
      }
      deleteDialog.close();
      if (id === currentId) {
        location.assign($("[data-action=new-chat]").href);
        return;
      }
      entryFor(id)?.remove();
    });
  }

  // --- the phone layout's sliding sidebar ---------------------------------------------

  const toggle = $("[data-action=toggle-sidebar]");
  const backdrop = $(".sidebar-backdrop");

  function setSidebar(open) {
    document.body.classList.toggle("sidebar-open", open);
    if (!toggle) return;
    toggle.setAttribute("aria-expanded", String(open));
    backdrop.hidden = !open;
    if (open) searchInput.focus();
  }

  if (toggle) {
    toggle.addEventListener("click", () => {
      setSidebar(!document.body.classList.contains("sidebar-open"));
    });
    backdrop.addEventListener("click", () => setSidebar(false));
  }

  // --- keyboard shortcuts ---------------------------------------------------------------

  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "k" && searchInput) {
      event.preventDefault();
      if (window.matchMedia("(max-width: 760px)").matches) setSidebar(true);
      searchInput.focus();
      searchInput.select();
    } else if (event.key === "Escape" && document.body.classList.contains("sidebar-open")) {
      setSidebar(false);
      toggle.focus();
    }
  });

  // --- menus: the account's, a conversation's export ---------------------------------

  const menus = [...document.querySelectorAll("details.menu")];
  document.addEventListener("click", (event) => {
    for (const menu of menus) {
      // A click outside closes it, and so does a choice in it (a download stays here).
      const chosen = event.target.closest("a") && menu.contains(event.target);
      if (menu.open && (chosen || !menu.contains(event.target))) menu.open = false;
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    for (const menu of menus) {
      if (menu.open) {
        menu.open = false;
        $("summary", menu).focus();
      }
    }
  });

  // Import: a conversation's JSON export becomes a new conversation, opened at once.
  const importInput = $("input[data-action=import]");
  if (importInput) {
    importInput.addEventListener("change", async () => {
      const file = importInput.files[0];
      importInput.value = "";
      if (!file) return;
      let data;
      try {
        data = JSON.parse(await file.text());
      } catch {
        showNotice(`${file.name} is not JSON: export a conversation as JSON to import it.`);
        return;
      }
      try {
        const imported = await chatsite.callApi("POST", importInput.dataset.url, data);
        location.assign(`/c/${imported.id}/`);
      } catch (error) {
        showNotice(error.message);
      }
    });
  }

  chatsite.sidebar = {
    setTitle: setEntryTitle,
    bump: bumpEntry,
    // Another tab created, renamed or deleted a conversation (conversations.changed).
    reload: () => reloadHistory({ background: true }),
  };
})();
