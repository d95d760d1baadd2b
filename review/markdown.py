"""Model and user text rendered as Markdown for staff, and never trusted as HTML.

markdown-it escapes raw HTML in the source (``html=False``); nh3 then keeps only the
tags a transcript needs, absolute links to http(s) and mailto only, marks links
``noopener noreferrer nofollow``, and keeps no ``style`` or ``class`` (the pages'
Content-Security-Policy forbids inline styles anyway). Images are shown as links,
never loaded: a reply must not make a reviewer's browser fetch a remote address.

Math (``$…$``, ``$$…$$``, ``\\(…\\)``, ``\\[…\\]``, as in the chat) leaves here as
elements holding the formula's text (``math-inline``, ``math-display``), and code blocks
keep their language's class: the page typesets and highlights them with the chat's own
scripts (conversations/static/conversations/dress.js).

Whatever is stored must be visible to staff, so Markdown that would hide part of the
text is not rendered at all (``render_markdown`` answers None and the transcript shows
the text as typed): nesting deeper than markdown-it's limit (its parser drops what lies
below it) and link reference definitions (``[x]: https://… "title"`` shows nothing).
"""

import nh3
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.texmath import texmath_plugin

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_md.enable(["table", "strikethrough"]).disable("image")
# Not "$5 and $10": no space inside, no digit after the closing dollar.
dollarmath_plugin(_md, allow_space=False, allow_digits=False, double_inline=True)
texmath_plugin(_md, delimiters="brackets")


def _math(tag: str, kind: str):
    def render(self, tokens, idx, options, env) -> str:
        return f'<{tag} class="{kind}">{escape(tokens[idx].content.strip())}</{tag}>'

    return render


for _rule, _render in {
    "math_inline": _math("span", "math-inline"),
    "math_inline_double": _math("span", "math-display"),
    "math_block": _math("div", "math-display"),
    "math_block_label": _math("div", "math-display"),
    "math_block_eqno": _math("div", "math-display"),
}.items():
    _md.add_render_rule(_rule, _render)
# Tokens at this depth mean the parser reached its limit and dropped what was deeper.
_DROPPING_LEVEL = _md.options["maxNesting"] - 1

ALLOWED_TAGS = {
    "a", "p", "br", "hr", "pre", "code", "blockquote", "em", "strong", "del", "s", "span", "div",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
URL_SCHEMES = {"http", "https", "mailto"}
# Code blocks keep these languages' classes, for highlighting on the page (others are
# guessed there); math keeps its own.
LANGUAGES = {
    "bash", "c", "cpp", "csharp", "css", "diff", "go", "html", "java", "javascript", "js",
    "json", "kotlin", "markdown", "php", "python", "py", "ruby", "rust", "sh", "shell", "sql",
    "swift", "toml", "ts", "typescript", "xml", "yaml", "yml",
}  # fmt: skip
ALLOWED_CLASSES = {
    "code": {f"language-{name}" for name in LANGUAGES},
    "span": {"math-inline", "math-display"},
    "div": {"math-display"},
}


def _hides_text(tokens, env: dict) -> bool:
    if env.get("references"):
        return True
    stack = list(tokens)
    while stack:
        token = stack.pop()
        if token.level >= _DROPPING_LEVEL:
            return True
        stack.extend(token.children or ())
    return False


def render_markdown(text: str) -> SafeString | None:
    """``text`` as sanitised HTML, or None when rendering would hide part of it."""
    env: dict = {}
    tokens = _md.parse(text or "", env)
    if _hides_text(tokens, env):
        return None
    html = _md.renderer.render(tokens, _md.options, env)
    # Safe: nh3 has just cleaned it.
    return mark_safe(
        nh3.clean(
            html,
            tags=ALLOWED_TAGS,
            attributes=ALLOWED_ATTRIBUTES,
            allowed_classes=ALLOWED_CLASSES,
            url_schemes=URL_SCHEMES,
            url_relative="deny",  # a relative link would point into the admin itself
            link_rel="noopener noreferrer nofollow",
        )
    )
