"""Read paths: who may see what, and what a viewer is shown when it joins."""

import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import Q, QuerySet

from . import events, runs
from .models import Conversation, Message


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


aconversation_for = database_sync_to_async(conversation_for)


@database_sync_to_async
def _conversation_and_messages(conversation_id) -> tuple[Conversation, list[Message]] | None:
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return None
    return conversation, list(conversation.messages.all())


async def snapshot(conversation_id) -> events.Event | None:
    """The conversation as it stands, for a viewer that joins or resyncs.

    A reply streaming in this process is shown from its run, exactly as far as its
    frames have been published; one streaming elsewhere is shown as last flushed, and
    the viewer fills the difference (see viewers.py).
    """
    found = await _conversation_and_messages(conversation_id)
    if found is None:
        return None
    conversation, messages = found
    for message in messages:
        if message.status == Message.Status.STREAMING and (run := runs.local_run(message.id)):
            message.content, message.seq = run.text(), run.seq
    return events.snapshot(conversation, messages)


def conversations_matching(user, query: str) -> QuerySet[Conversation]:
    """The sidebar search: a user's conversations whose title or any message contains
    ``query``, newest activity first.

    A plain case-insensitive ``icontains`` scan (on SQLite, case-insensitive for ASCII
    only): enough for one person's history; a full-text index would replace it here.
    """
    found = conversations_for(user)
    query = query.strip()
    if not query:
        return found
    return found.filter(
        Q(title__icontains=query) | Q(messages__content__icontains=query)
    ).distinct()
