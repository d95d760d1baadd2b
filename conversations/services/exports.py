"""A person's data: a conversation, or all of theirs, as JSON (every branch, exactly as
stored) or Markdown (the active branch, to read); and a conversation's JSON export
imported back as a new conversation.

The JSON of one conversation: ``{"format": "chatsite.conversation", "version": 1,
"exported_at", "conversation": {"id", "title", "model", "system_prompt", "temperature",
"source", "created_at", "updated_at", "messages": [{"id", "parent", "active", "role",
"content", "status", "model", "usage", "error", "created_at", "completed_at"}]}}``; all
of a person's: ``{"format": "chatsite.conversations", "version": 1, "exported_at",
"conversations": [<conversation>, …]}``, written one conversation at a time.
"""

import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .. import errors, events, selectors
from ..llm import catalog
from ..models import Conversation, Message
from ..text import check_text
from . import branches
from .conversations import check_system_prompt

FORMAT_ONE = "chatsite.conversation"
FORMAT_ALL = "chatsite.conversations"
VERSION = 1
# An import holds at most this many messages (its body is bounded by
# CHAT_MAX_REQUEST_BYTES too).
MAX_IMPORT_MESSAGES = 10_000

_AUTHORS = {"user": "You", "assistant": "Assistant", "system": "System", "tool": "Tool"}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _message(message: Message) -> dict:
    return {
        "id": str(message.id),
        "parent": str(message.parent_id) if message.parent_id else None,
        "active": message.active,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "model": message.model,
        "usage": message.usage,
        "error": events.public_error(message.error),
        "created_at": _iso(message.created_at),
        "completed_at": _iso(message.completed_at),
    }


def conversation_data(conversation: Conversation) -> dict:
    """One conversation (the protocol's object) with every message of every branch, in
    the order written."""
    messages = conversation.messages.order_by("created_at", "pk")
    return {
        **events.conversation_out(conversation),
        "messages": [_message(m) for m in messages.iterator()],
    }


def conversation_json(conversation: Conversation) -> dict:
    return {
        "format": FORMAT_ONE,
        "version": VERSION,
        "exported_at": _iso(timezone.now()),
        "conversation": conversation_data(conversation),
    }


def conversation_markdown(conversation: Conversation) -> str:
    """The active branch, to read: a heading per message, its text as written."""
    lines = [f"# {conversation.title or 'New chat'}", ""]
    lines.append(f"- Model: {conversation.model or catalog.default().name}")
    lines.append(f"- Started: {_iso(conversation.created_at)}")
    if conversation.system_prompt:
        quoted = "\n".join(f"> {line}" for line in conversation.system_prompt.splitlines())
        lines += ["- System prompt:", "", quoted]
    for message in conversation.messages.filter(active=True).order_by("created_at", "pk"):
        author = _AUTHORS.get(message.role, message.role)
        if message.role == Message.Role.ASSISTANT and message.model:
            author += f" ({message.model})"
        if message.status not in (Message.Status.COMPLETED, Message.Status.STREAMING):
            author += f" — {message.status}"
        lines += ["", f"## {author}", "", message.content]
    return "\n".join(lines).rstrip() + "\n"


async def all_json(owner) -> AsyncIterator[str]:
    """Every conversation of a person as one JSON document, a conversation at a time."""
    head = {"format": FORMAT_ALL, "version": VERSION, "exported_at": _iso(timezone.now())}
    yield json.dumps(head, ensure_ascii=False)[:-1] + ', "conversations": ['
    first = True
    async for conversation in _conversations(owner):
        data = await database_sync_to_async(conversation_data)(conversation)
        yield ("" if first else ",") + json.dumps(data, ensure_ascii=False)
        first = False
    yield "]}\n"


async def all_markdown(owner) -> AsyncIterator[str]:
    """Every conversation of a person as Markdown, one after the other."""
    first = True
    async for conversation in _conversations(owner):
        text = await database_sync_to_async(conversation_markdown)(conversation)
        yield ("" if first else "\n---\n\n") + text
        first = False


async def _conversations(owner) -> AsyncIterator[Conversation]:
    ids = await database_sync_to_async(
        lambda: list(selectors.conversations_for(owner).values_list("pk", flat=True))
    )()
    for pk in ids:
        conversation = await Conversation.objects.filter(pk=pk).afirst()
        if conversation is not None:  # deleted meanwhile
            yield conversation


# --- import -----------------------------------------------------------------------------------


def _field(data: dict, name: str, kind: type | tuple, where: str, default=None):
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise errors.invalid_import(f"{where}{name} has the wrong type")
    return value


def _time(value) -> datetime | None:
    try:
        found = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        return None
    if found is not None and timezone.is_naive(found):
        found = timezone.make_aware(found, UTC)
    return found


def _times(raw: list[dict]) -> list[datetime]:
    """The messages' own times when they are valid and in order, else now onwards (the
    order of the export is what the branches rely on)."""
    parsed = [_time(m.get("created_at")) for m in raw]
    if all(parsed) and all(a < b for a, b in itertools.pairwise(parsed)):
        return parsed
    start = timezone.now()
    return [start + timedelta(microseconds=index) for index in range(len(raw))]


def _checked_messages(raw) -> list[dict]:
    if not isinstance(raw, list):
        raise errors.invalid_import("conversation.messages must be a list")
    if len(raw) > MAX_IMPORT_MESSAGES:
        raise errors.invalid_import(f"more than {MAX_IMPORT_MESSAGES:,} messages")
    seen: set[str] = set()
    for index, message in enumerate(raw):
        where = f"messages[{index}]."
        if not isinstance(message, dict):
            raise errors.invalid_import(f"messages[{index}] is not an object")
        ident = _field(message, "id", str, where)
        if not ident or ident in seen:
            raise errors.invalid_import(f"{where}id is missing or repeated")
        parent = _field(message, "parent", str, where)
        if parent is not None and parent not in seen:
            raise errors.invalid_import(f"{where}parent names no earlier message")
        seen.add(ident)
        if message.get("role") not in {"user", "assistant", "system"}:
            raise errors.invalid_import(f"{where}role must be user, assistant or system")
        content = _field(message, "content", str, where, "")
        check_text(content, f"{where}content")
        if message["role"] == "user" and len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise errors.too_long("message", len(content), settings.CHAT_MAX_MESSAGE_CHARS)
        if message.get("status", "completed") not in Message.Status.values:
            raise errors.invalid_import(f"{where}status is not one of {Message.Status.values}")
        check_text(_field(message, "model", str, where, ""), f"{where}model")
        _field(message, "usage", dict, where)
        _field(message, "error", dict, where)
        _field(message, "active", bool, where)
    return raw


@transaction.atomic
def conversation_import(*, owner, data) -> Conversation:
    """A conversation's JSON export, saved as a new conversation of ``owner``: every
    branch, the active one as exported. Nothing is saved unless all of it is valid."""
    if not isinstance(data, dict) or data.get("format") != FORMAT_ONE:
        raise errors.invalid_import(f'"format" must be "{FORMAT_ONE}"')
    if data.get("version") != VERSION:
        raise errors.invalid_import(f'"version" must be {VERSION}')
    conversation = data.get("conversation")
    if not isinstance(conversation, dict):
        raise errors.invalid_import('"conversation" must be an object')
    title = check_text(_field(conversation, "title", str, "conversation.", ""), "title")
    title = title[: Conversation._meta.get_field("title").max_length]
    system_prompt = check_system_prompt(
        _field(conversation, "system_prompt", str, "conversation.", "")
    )
    temperature = _field(conversation, "temperature", (int, float), "conversation.")
    model = _field(conversation, "model", str, "conversation.", "")
    raw = _checked_messages(conversation.get("messages", []))

    created = Conversation.objects.create(
        owner=owner,
        title=title,
        system_prompt=system_prompt,
        temperature=temperature,
        model=catalog.for_reply(model).name,
        source=Conversation.Source.WEB,
    )
    ids = {m["id"]: uuid.uuid4() for m in raw}
    messages = [
        Message(
            id=ids[m["id"]],
            conversation=created,
            parent_id=ids.get(m.get("parent")),
            role=m["role"],
            content=m.get("content", ""),
            # A reply that was streaming when exported will never go on.
            status=Message.Status.INTERRUPTED
            if m.get("status") == Message.Status.STREAMING
            else m.get("status", Message.Status.COMPLETED),
            model=m.get("model") or "",
            usage=m.get("usage"),
            error=m.get("error"),
            reply_to_id=ids.get(m.get("parent")) if m["role"] == "assistant" else None,
            active=False,
        )
        for m in raw
    ]
    Message.objects.bulk_create(messages)
    for message, at in zip(messages, _times(raw), strict=True):
        message.created_at = at
    Message.objects.bulk_update(messages, ["created_at"], batch_size=500)
    if messages:
        marked = [m for m, r in zip(messages, raw, strict=True) if r.get("active", True)]
        branches.activate(created.id, (marked or messages)[-1])
    return created
