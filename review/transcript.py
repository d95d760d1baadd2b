"""A transcript page as staff see it, in bounded work whatever the conversation holds.

A conversation may hold megabytes (a 250,000-character reply, a history brought in by
``/v1``), and rendering it is CPU spent while every stream of the worker waits for the
GIL. So a page shows at most ``PAGE_MESSAGES`` messages; of each, at most
``PREVIEW_CHARS`` characters leave the database (longer ones end with a link to their
whole text, served as plain text); replies are rendered as Markdown only up to
``MARKDOWN_MAX_CHARS`` each, and only while the page has rendered less than
``MARKDOWN_PAGE_CHARS`` and spent less than ``MARKDOWN_PAGE_S`` on it (markdown-it-py
costs ~2 µs a character on prose, up to ~10 µs on hostile input: one reply at most
~0.2 s); the rest is shown as typed. A streaming reply is shown whole, so the live view
can go on from its text. Every branch is shown, in the order written, each message
marked with its version and whether it is on the branch people see.
"""

import json
import time
from dataclasses import dataclass, field

from django.core.paginator import Page, Paginator

from conversations.models import Conversation, Message
from conversations.selectors import annotate_siblings

from . import selectors
from .markdown import render_markdown

PAGE_MESSAGES = 50
PREVIEW_CHARS = 20_000
MARKDOWN_MAX_CHARS = 20_000
MARKDOWN_PAGE_CHARS = 100_000
MARKDOWN_PAGE_S = 0.15


@dataclass
class Shown:
    """How one message is shown: ``rendered`` Markdown, else ``text`` as typed (the
    first ``PREVIEW_CHARS`` when ``truncated``); ``plain_reason`` says why a reply
    is not rendered."""

    text: str
    length: int
    truncated: bool = False
    rendered: str | None = None
    plain_reason: str = ""
    # A reply's tool calls, each with its arguments as indented JSON (``args_text``).
    tool_calls: list[dict] = field(default_factory=list)


def page(conversation: Conversation, number) -> Page:
    """One page of the transcript; each message gets ``shown`` (a Shown)."""
    found = Paginator(selectors.transcript(conversation, PREVIEW_CHARS), PAGE_MESSAGES)
    current = found.get_page(number)
    budget = MARKDOWN_PAGE_CHARS
    deadline = time.perf_counter() + MARKDOWN_PAGE_S
    for message in current:
        message.shown = _shown(message, budget if time.perf_counter() < deadline else 0)
        if message.shown.rendered is not None:
            budget -= message.shown.length
    # Edits and regenerations: which version each message is, and whether it is on the
    # branch people see (the one shown in the chat, the API and to the model).
    for message in annotate_siblings(conversation.id, list(current)):
        message.version = message.siblings.index(str(message.pk)) + 1
    return current


def _calls(message: Message) -> list[dict]:
    return [
        {**call, "args_text": json.dumps(call.get("args"), indent=2, ensure_ascii=False)}
        for call in message.tool_calls or []
    ]


def _shown(message: Message, budget: int) -> Shown:
    if message.status == Message.Status.STREAMING:
        return Shown(text=message.content, length=len(message.content), tool_calls=_calls(message))
    shown = Shown(
        text=message.preview,
        length=message.length,
        truncated=message.length > len(message.preview),
        tool_calls=_calls(message),
    )
    if message.role != Message.Role.ASSISTANT:
        return shown  # people's messages are shown as typed
    if shown.length > MARKDOWN_MAX_CHARS:
        shown.plain_reason = "too long to render as Markdown"
    elif shown.length > budget:
        shown.plain_reason = "not rendered as Markdown: this page rendered enough"
    else:
        shown.rendered = render_markdown(shown.text)
        if shown.rendered is None:
            shown.plain_reason = "as stored: its Markdown would hide part of it"
    return shown
