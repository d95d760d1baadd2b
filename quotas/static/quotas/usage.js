// The person's tokens against their quota under the composer: read again whenever a
// reply of theirs ends (chat.js tells the document with a `chatsite:reply-ended` event).
(() => {
  "use strict";
  const line = document.querySelector("[data-part=quota-usage]");
  if (!line) return;
  let timer = null;

  async function refresh() {
    try {
      const response = await fetch(line.dataset.url, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const usage = await response.json();
      line.textContent = usage.text;
      line.hidden = !usage.text;
    } catch {
      // Offline for a moment: the next reply's end tries again.
    }
  }

  document.addEventListener("chatsite:reply-ended", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 300); // several replies ending together: one request
  });
})();
