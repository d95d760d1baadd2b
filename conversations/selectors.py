"""Every read: who may see what, what a viewer is shown when it joins (a snapshot, a
page of history), whether replies have ended, where an SSE stream resumes, and the
sidebar's search."""

import uuid
from collections import defaultdict
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.db.models.functions import Length

from . import errors, events
from .db import db
from .errors import ChatError
from .models import ApiKey, Conversation, Message
from .runs import registry


def conversations_for(user) -> QuerySet[Conversation]:
    """The conversations a user may see: their own. The rule lives only here."""
    if not user.is_authenticated:
        return Conversation.objects.none()
    return Conversation.objects.filter(owner=user)


def conversation_for(user, conversation_id: Any) -> Conversation | None:
    try:
        conversation_id = uuid.UUID(str(conversation_id))
    except ValueError:
        return None
    return conversations_for(user).filter(pk=conversation_id).first()


aconversation_for = db(conversation_for)


async def aowned_conversation(user, conversation_id: Any) -> Conversation:
    """The user's conversation, or ChatError not_found: another user's conversation looks
    exactly like one that does not exist."""
    conversation = await aconversation_for(user, conversation_id)
    if conversation is None:
        raise ChatError(errors.NOT_FOUND)
    return conversation


def latest_messages(conversation_id, *, before: Message | None = None) -> tuple[list, bool]:
    """A page of a conversation's active branch, the newest first chosen, returned
    oldest first: at most ``CHAT_PAGE_MESSAGES`` messages and, beyond the first two (the
    latest exchange, whatever its size), no more than ``CHAT_PAGE_CHARS`` characters of
    text. Each message knows its ``siblings``. Returns (messages, whether older ones
    exist)."""
    newest_first = Message.objects.filter(conversation_id=conversation_id, active=True).order_by(
        "-created_at", "-pk"
    )
    if before is not None:
        newest_first = newest_first.filter(created_at__lt=before.created_at)
    limit = settings.CHAT_PAGE_MESSAGES
    sizes = list(
        newest_first.annotate(size=Length("content")).values_list("pk", "size")[: limit + 1]
    )
    chosen, total = [], 0
    for pk, size in sizes[:limit]:
        total += size or 0
        if len(chosen) >= 2 and total > settings.CHAT_PAGE_CHARS:
            break
        chosen.append(pk)
    messages = list(Message.objects.filter(pk__in=chosen).order_by("created_at", "pk"))
    annotate_siblings(conversation_id, messages)
    return messages, len(sizes) > len(chosen)


@db
def _conversation_and_messages(conversation_id, *, page: bool):
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return None
    if not page:
        messages = list(conversation.messages.filter(active=True))
        return conversation, annotate_siblings(conversation_id, messages), False
    return conversation, *latest_messages(conversation_id)


def _as_published(messages: list[Message]) -> None:
    """A reply streaming in this process is shown from its run, exactly as far as its
    frames have been published; one streaming elsewhere is shown as last flushed, and
    the viewer fills the difference (see live/viewer.py)."""
    for message in messages:
        if message.status == Message.Status.STREAMING and (run := registry.local_run(message.id)):
            message.content, message.seq = run.text(), run.seq
            for name, value in run.saved_fields().items():  # an agent's tool calls
                setattr(message, name, value)


async def snapshot(conversation_id, *, page: bool = True) -> events.Event | None:
    """The conversation as it stands, for a viewer that joins or resyncs: its latest
    messages (a page of them; ``page=False``: all)."""
    found = await _conversation_and_messages(conversation_id, page=page)
    if found is None:
        return None
    conversation, messages, has_more = found
    _as_published(messages)
    return events.snapshot(conversation, messages, has_more=has_more)


@db
def _older(conversation_id, before_id) -> tuple[list, bool] | None:
    before = Message.objects.filter(conversation_id=conversation_id, pk=before_id).first()
    if before is None:
        return None
    return latest_messages(conversation_id, before=before)


async def history(conversation_id, before_id: uuid.UUID) -> events.Event | None:
    """The page of messages before one a client holds; None if that message is not one
    of the conversation's."""
    found = await _older(conversation_id, before_id)
    if found is None:
        return None
    messages, has_more = found
    _as_published(messages)
    return events.history(str(conversation_id), messages, has_more=has_more)


def conversations_matching(user, query: str, *, api: bool = False) -> QuerySet[Conversation]:
    """The sidebar search: a user's conversations whose title or any message contains
    ``query``, newest activity first; those made through API keys only with ``api``.

    A plain case-insensitive ``icontains`` scan (on SQLite, case-insensitive for ASCII
    only): enough for one person's history; a full-text index would replace it here.
    """
    found = conversations_for(user)
    if not api:
        found = found.filter(api_traffic=False)
    query = query.strip()
    if not query:
        return found
    return found.filter(
        Q(title__icontains=query) | Q(messages__content__icontains=query)
    ).distinct()


# --- branches (services/branches.py) ---------------------------------------------------------


def leaf(conversation_id: Any) -> Message | None:
    """The last message of the active branch: what a new message follows."""
    return (
        Message.objects.filter(conversation_id=conversation_id, active=True)
        .order_by("-created_at", "-pk")
        .first()
    )


def annotate_siblings(conversation_id: Any, messages: list[Message]) -> list[Message]:
    """Give each message ``siblings``: the ids of the messages at its place (itself
    included), oldest first. One query for a page of messages.

    The first messages of a conversation's branches have no parent; an active one's
    siblings are the inactive ones (each earlier edit of the first message): messages
    saved without a parent by hand all stay on the branch and are no one's siblings.
    """
    if not messages:
        return messages
    parents = {m.parent_id for m in messages if m.parent_id}
    roots = [m for m in messages if m.parent_id is None]
    found = Message.objects.filter(conversation_id=conversation_id, parent_id__in=parents)
    by_parent: dict = defaultdict(list)
    for pk, parent_id in found.order_by("created_at", "pk").values_list("pk", "parent_id"):
        by_parent[parent_id].append(str(pk))
    if roots:
        edited_roots = list(
            Message.objects.filter(conversation_id=conversation_id, parent=None, active=False)
            .order_by("created_at", "pk")
            .values_list("pk", "created_at")
        )
    for message in messages:
        if message.parent_id:
            message.siblings = by_parent.get(message.parent_id) or [str(message.pk)]
        else:
            own = (
                []
                if message.pk in {pk for pk, _ in edited_roots}
                else [(message.pk, message.created_at)]
            )
            rows = [*edited_roots, *own] if edited_roots else []
            rows.sort(key=lambda row: (row[1], str(row[0])))
            message.siblings = [str(pk) for pk, _ in rows] or [str(message.pk)]
    return messages


# --- whether replies ended -----------------------------------------------------------------


def ended_replies(message_ids: list[str]) -> list[Message]:
    """Those of the replies that are no longer streaming (in a final state)."""
    return list(Message.objects.filter(pk__in=message_ids).exclude(status=Message.Status.STREAMING))


aended_replies = db(ended_replies)


def saved_message(message_id: Any) -> Message | None:
    """A message as the database holds it now (None once deleted)."""
    return Message.objects.filter(pk=message_id).first()


asaved_message = db(saved_message)


@db
def astreaming_reply(conversation: Conversation, message_id: str | None) -> Message | None:
    """The conversation's streaming reply (the one named, if any)."""
    replies = Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING)
    if message_id:
        replies = replies.filter(pk=message_id)
    return replies.first()


@db
def aresume_point(conversation_id: Any, message_id: str) -> tuple[Message, bool] | None:
    """The reply an SSE ``Last-Event-ID`` names, and whether anything came after it."""
    try:
        message_id = uuid.UUID(message_id)
    except ValueError:
        return None
    reply = Message.objects.filter(
        pk=message_id, conversation_id=conversation_id, role=Message.Role.ASSISTANT
    ).first()
    if reply is None:
        return None
    newer = Message.objects.filter(
        conversation_id=conversation_id, created_at__gt=reply.created_at
    ).exists()
    return reply, newer


# --- API keys --------------------------------------------------------------------------------


def keys_for(owner) -> list[ApiKey]:
    return list(ApiKey.objects.filter(owner=owner))
