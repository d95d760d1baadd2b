// Finished Markdown, dressed once: code blocks highlighted (highlight.js) and math typeset
// (KaTeX), in the chat's replies (markdown.js) and in staff's transcript in the admin.
//
// window.chatsite.dress(root) dresses what `root` holds: `pre code` blocks (in the
// language of their `language-…` class, or a guessed one for short blocks that name
// none) and `.math-inline` / `.math-display` elements holding a formula's text. Both run
// after the sanitiser, on its output: highlight.js escapes the code's text and adds
// classes; KaTeX builds its DOM itself from the formula's text, setting its styles
// through the CSSOM, which the pages' Content-Security-Policy (no inline style) allows.
// In the admin, a `[data-dress]` container is dressed when the page loads.
(() => {
  "use strict";

  const chatsite = (window.chatsite = window.chatsite || {});
  const { katex, hljs } = window;

  // Guessing a language tries every one: only for short blocks.
  const GUESS_MAX_CHARS = 2000;
  const KATEX = { throwOnError: false, output: "htmlAndMathml", maxExpand: 1000, maxSize: 20 };

  function highlight(code) {
    const language = /language-([\w+#.-]+)/.exec(code.className)?.[1];
    const text = code.textContent;
    let result = null;
    if (language && hljs.getLanguage(language)) {
      result = hljs.highlight(text, { language, ignoreIllegals: true });
    } else if (!language && text.length <= GUESS_MAX_CHARS) {
      result = hljs.highlightAuto(text);
    }
    if (result) {
      code.innerHTML = result.value; // highlight.js escapes the text: its spans only
      code.classList.add("hljs");
    }
  }

  function typeset(el) {
    const tex = el.textContent;
    katex.render(tex, el, { ...KATEX, displayMode: el.classList.contains("math-display") });
    el.dataset.tex = tex;
  }

  function dress(root) {
    if (hljs) for (const code of root.querySelectorAll("pre code")) highlight(code);
    if (katex) for (const el of root.querySelectorAll(".math-inline, .math-display")) typeset(el);
    return root;
  }

  chatsite.dress = dress;
  for (const root of document.querySelectorAll("[data-dress]")) dress(root);
})();
