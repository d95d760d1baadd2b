"""Model and user text rendered as Markdown for staff, and never trusted as HTML.

markdown-it escapes raw HTML in the source (``html=False``); nh3 then keeps only the
tags a transcript needs, absolute links to http(s) and mailto only, marks links
``noopener noreferrer nofollow``, and keeps no ``style`` or ``class`` (the pages'
Content-Security-Policy forbids inline styles anyway). Images are shown as links,
never loaded: a reply must not make a reviewer's browser fetch a remote address.
"""

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_md.enable(["table", "strikethrough"]).disable("image")

ALLOWED_TAGS = {
    "a", "p", "br", "hr", "pre", "code", "blockquote", "em", "strong", "del", "s",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
URL_SCHEMES = {"http", "https", "mailto"}


def render_markdown(text: str) -> SafeString:
    html = _md.render(text or "")
    # Safe: nh3 has just cleaned it.
    return mark_safe(
        nh3.clean(
            html,
            tags=ALLOWED_TAGS,
            attributes=ALLOWED_ATTRIBUTES,
            url_schemes=URL_SCHEMES,
            url_relative="deny",  # a relative link would point into the admin itself
            link_rel="noopener noreferrer nofollow",
        )
    )
