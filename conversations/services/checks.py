"""Checking a reply's start before anything of it is saved: the message a user sends,
whether anyone could watch it (the channel layer), the owner's limits (in the
transaction that would start it), and the title a first message gives a conversation.
Every surface's start goes through these (services/replies.py, conversations.py,
tool_exchanges.py): each rule is written here once.
"""

from typing import Any

from django.conf import settings

from .. import errors, hooks
from ..errors import ChatError
from ..live import layer
from ..models import Conversation
from ..text import check_text

CLIENT_ID_CHARS = 100
TITLE_CHARS = 60


def check_send(content: Any, client_id: Any = None) -> tuple[str, str | None]:
    """Validate a message a user wants to send; returns (content, client_id)."""
    if not isinstance(content, str):
        raise errors.invalid_field("content", "a string")
    if not content.strip():
        raise ChatError(errors.EMPTY_CONTENT)
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise errors.too_long("message", len(content), settings.CHAT_MAX_MESSAGE_CHARS)
    if client_id is not None and (
        not isinstance(client_id, str) or not 0 < len(client_id) <= CLIENT_ID_CHARS
    ):
        raise errors.invalid_field("client_id", f"a string of 1 to {CLIENT_ID_CHARS} characters")
    if client_id is not None:
        check_text(client_id, "client_id")
    return check_text(content, "content"), client_id


async def check_live(conversation: Conversation) -> None:
    """Refuse to start a reply nobody could watch: Redis is down."""
    if not await layer.reachable(conversation.id):
        raise ChatError(errors.LIVE_UNAVAILABLE)


def check_limits(*, owner_id: Any, conversation: Conversation | None = None) -> None:
    """Refuse a new reply past one of its owner's limits (quotas/: tokens, replies per
    minute, replies streaming at once), in the transaction that would start it, before
    anything of it is saved. ``conversation``: the one the reply would stream in (None:
    a new one); a busy one is refused as busy (409) by the database, so its own reply
    is not counted."""
    hooks.run(hooks.reply_starting, owner_id, conversation)


def title_from(content: str) -> str:
    words = " ".join(content.split())
    return words if len(words) <= TITLE_CHARS else words[: TITLE_CHARS - 1].rstrip() + "…"
