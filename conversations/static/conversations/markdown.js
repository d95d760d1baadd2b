// Replies rendered as Markdown, never trusted as HTML: marked renders, raw HTML in a
// reply is shown as the text it is, and DOMPurify cleans the result before it reaches
// the page (no scripts, handlers, javascript: links, images, or the page's own hooks).
//
// window.chatsite.markdown.view(body).show(text, streaming) renders into `body`. While
// a reply streams, blocks that are final (another block has started after them) are
// rendered once and kept; only the last, growing block is rendered again, so a frame
// costs the size of that block, not of the whole reply. Once the reply has ended, its
// stored text is rendered whole, once.
//
// Math ($…$, $$…$$, \(…\), \[…\]) is taken out before Markdown sees it, as elements
// holding the formula's text. Finished blocks are then dressed once (dress.js: code
// highlighted, math typeset) — in a streaming reply when a block is settled, never the
// growing last block, whose math shows as its source until it is.
(() => {
  "use strict";

  const chatsite = (window.chatsite = window.chatsite || {});
  const { marked, DOMPurify } = window;
  if (typeof marked?.lexer !== "function" || typeof DOMPurify?.sanitize !== "function") {
    console.warn("chatsite: marked/DOMPurify not built (make frontend); replies shown as text");
    chatsite.markdown = { ready: false };
    return;
  }

  const PURIFY = {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "option", "iframe",
      "frame", "object", "embed", "img", "video", "audio", "source", "picture", "link", "meta",
      "base"],
    FORBID_ATTR: ["style", "id", "name", "srcset"],
    ALLOW_DATA_ATTR: false, // the page's own hooks (data-action, data-message-id …)
    RETURN_DOM_FRAGMENT: true,
  };

  function escapeHtml(text) {
    const span = document.createElement("span");
    span.textContent = text;
    return span.innerHTML;
  }

  // Math is taken out before Markdown sees it (whose escapes would eat "\(" and "_"),
  // as elements holding the formula's text, typeset later by KaTeX.
  function mathElement(tag, display, tex) {
    return `<${tag} class="${display ? "math-display" : "math-inline"}">${escapeHtml(tex)}</${tag}>`;
  }

  const INLINE_MATH = [
    /^\$\$([^$]+?)\$\$/, // display math inside a paragraph
    /^\\\(([\s\S]+?)\\\)/,
    /^\\\[([\s\S]+?)\\\]/,
    /^\$(?![\s$])((?:\\\$|[^$\n])+?)(?<!\s)\$(?!\d)/, // not "$5 and $10"
  ];

  marked.use({
    extensions: [
      {
        name: "mathBlock",
        level: "block",
        start: (src) => src.match(/^ {0,3}(?:\$\$|\\\[)/m)?.index,
        tokenizer(src) {
          const found = /^ {0,3}(?:\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\])[ \t]*(?:\n+|$)/.exec(src);
          if (found) return { type: "mathBlock", raw: found[0], text: (found[1] ?? found[2]).trim() };
          return undefined;
        },
        renderer: (token) => mathElement("div", true, token.text),
      },
      {
        name: "mathInline",
        level: "inline",
        start: (src) => src.match(/\$|\\[([]/)?.index,
        tokenizer(src) {
          for (const [index, pattern] of INLINE_MATH.entries()) {
            const found = pattern.exec(src);
            if (found) {
              return { type: "mathInline", raw: found[0], text: found[1].trim(), display: index < 3 && index !== 1 };
            }
          }
          return undefined;
        },
        renderer: (token) => mathElement("span", token.display, token.text),
      },
    ],
  });

  marked.use({
    gfm: true,
    renderer: {
      html: ({ text }) => escapeHtml(text),
      // An image would load from wherever the model says: show a link instead.
      image: ({ href, text }) => {
        const link = document.createElement("a");
        link.setAttribute("href", href || "");
        link.textContent = `[image: ${text || href}]`;
        return link.outerHTML;
      },
    },
  });
  DOMPurify.addHook("uponSanitizeAttribute", (node, data) => {
    // Classes only for code languages and math (raw HTML never gets here: it is shown as
    // text), so a reply cannot dress up as the page.
    if (data.attrName === "class" && !/^(language-[\w+#.-]+|math-inline|math-display)$/.test(data.attrValue)) {
      data.keepAttr = false;
    }
  });
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });

  const codeTemplate = document.getElementById("code-template");

  // Sanitised DOM for marked's tokens; code blocks get a header with their language
  // (shown by CSS, so it stays out of the text) and a copy button.
  function fragmentFrom(tokens) {
    const fragment = DOMPurify.sanitize(marked.parser(tokens), PURIFY);
    for (const pre of fragment.querySelectorAll("pre")) {
      const block = codeTemplate.content.firstElementChild.cloneNode(true);
      const language = /language-([\w+#.-]+)/.exec(pre.querySelector("code")?.className || "");
      block.querySelector(".code-header").dataset.lang = language ? language[1] : "text";
      pre.replaceWith(block);
      block.append(pre);
    }
    return fragment;
  }

  const dress = chatsite.dress || ((fragment) => fragment);

  function streamPart() {
    const part = document.createElement("div");
    part.className = "stream-part";
    return part;
  }

  function view(body) {
    let rendered = null; // the text whose whole render the body shows
    let stream = null; // {settledText, settled, tail} while streaming
    let incremental = true;

    function showWhole(text) {
      if (rendered === text && !stream) return;
      body.replaceChildren(dress(fragmentFrom(marked.lexer(text))));
      rendered = text;
      stream = null;
    }

    // The reply ended: what settled while it streamed is kept (dressed already); only
    // the rest is rendered, once.
    function finish(text) {
      const tokens = marked.lexer(text.slice(stream.settledText.length));
      stream.tail.replaceChildren(dress(fragmentFrom(tokens)));
      rendered = text;
      stream = null;
    }

    function show(text, streaming) {
      // marked turns CR LF into LF, which would break the settled text's offsets.
      if (!streaming && stream && incremental && !text.includes("\r")
          && rendered === null && text.startsWith(stream.settledText)) {
        finish(text);
        return;
      }
      if (!streaming || !incremental || text.includes("\r")) {
        showWhole(text);
        return;
      }
      if (!stream || !text.startsWith(stream.settledText)) {
        stream = { settledText: "", settled: streamPart(), tail: streamPart() };
        body.replaceChildren(stream.settled, stream.tail);
      }
      const tokens = marked.lexer(text.slice(stream.settledText.length));
      let last = tokens.length - 1;
      while (last > 0 && tokens[last].type === "space") last -= 1;
      if (last > 0) {
        const done = tokens.slice(0, last);
        done.links = tokens.links;
        const settledText = stream.settledText + done.map((token) => token.raw).join("");
        if (!text.startsWith(settledText)) {
          incremental = false; // the lexer changed the text: render whole from now on
          showWhole(text);
          return;
        }
        stream.settled.append(dress(fragmentFrom(done)));
        stream.settledText = settledText;
      }
      const rest = tokens.slice(Math.max(last, 0));
      rest.links = tokens.links;
      stream.tail.replaceChildren(fragmentFrom(rest));
      rendered = null;
    }

    return { show };
  }

  chatsite.markdown = { ready: true, view };
})();
