// The account pages' confirmations: a form with data-confirm asks before it is sent
// (revoking an API key, deleting a preset). A script of its own: the pages'
// Content-Security-Policy allows no inline handler.
(() => {
  "use strict";

  document.addEventListener("submit", (event) => {
    const question = event.target.dataset?.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
