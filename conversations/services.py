"""Write paths: starting, stopping and sweeping replies.

Consumers, SSE views and API views only parse and authorise, then call these. Each rule
(what a valid message is, when a conversation is busy) is written here once.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from webhooks import outbox

from . import events, llm, runs
from .errors import ChatError
from .models import Conversation, Message
from .text import check_text

log = logging.getLogger(__name__)

TITLE_CHARS = 60
CLIENT_ID_CHARS = 100


@dataclass
class Exchange:
    user_message: Message
    reply: Message
    created: bool  # False when a repeated client_id found an earlier exchange


# --- checking ---------------------------------------------------------------------------


def check_send(content: Any, client_id: Any = None) -> tuple[str, str | None]:
    """Validate a message a user wants to send; returns (content, client_id)."""
    if not isinstance(content, str):
        raise ChatError("invalid_field", "`content` must be a string.")
    if not content.strip():
        raise ChatError("empty_content", "The message is empty.")
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(content) > limit:
        raise ChatError(
            "message_too_long",
            f"The message has {len(content)} characters; the limit is {limit}.",
            status=413,
        )
    if client_id is not None and (
        not isinstance(client_id, str) or not 0 < len(client_id) <= CLIENT_ID_CHARS
    ):
        raise ChatError(
            "invalid_field", f"`client_id` must be a string of 1 to {CLIENT_ID_CHARS} characters."
        )
    if client_id is not None:
        check_text(client_id, "client_id")
    return check_text(content, "content"), client_id


async def _check_live(conversation: Conversation) -> None:
    """Refuse to start a reply nobody could watch: Redis is down."""
    if not await runs.layer_reachable(conversation.id):
        raise ChatError(
            "live_unavailable",
            "Live updates are unavailable right now (the channel layer is down); "
            "nothing was saved, try again shortly.",
            status=503,
        )


def check_streaming_limit(*, owner_id: Any, conversation: Conversation | None = None) -> None:
    """Refuse a new reply while the user already has ``CHAT_MAX_STREAMING_PER_USER``
    replies streaming elsewhere (0: no limit). A busy ``conversation`` is refused as
    busy (409) by the database, so its own reply is not counted here."""
    limit = settings.CHAT_MAX_STREAMING_PER_USER
    if not limit:
        return
    streaming = Message.objects.filter(
        conversation__owner_id=owner_id, status=Message.Status.STREAMING
    )
    if conversation is not None:
        streaming = streaming.exclude(conversation=conversation)
    if streaming.count() >= limit:
        raise ChatError(
            "too_many_replies",
            f"You have {limit} replies streaming already; wait for one to finish.",
            status=429,
        )


def title_from(content: str) -> str:
    words = " ".join(content.split())
    return words if len(words) <= TITLE_CHARS else words[: TITLE_CHARS - 1].rstrip() + "…"


# --- doing ------------------------------------------------------------------------------


@dataclass
class _Created:
    exchange: Exchange
    titled: bool = False
    turns: list[tuple[str, str]] | None = None  # the model's history before the message
    swept: list[Message] | None = None  # dead replies that stood in the way


@database_sync_to_async
def _create_exchange(
    conversation: Conversation, content: str, client_id: str | None, model: str, alive: list
) -> _Created:
    """Save the user message and the streaming reply."""
    if client_id and (found := _exchange_for_client_id(conversation, client_id)):
        return _Created(found)
    with transaction.atomic():
        swept = _sweep(Message.objects.filter(conversation=conversation), alive)
        check_streaming_limit(owner_id=conversation.owner_id, conversation=conversation)
        try:
            with transaction.atomic():
                user_message = Message.objects.create(
                    conversation=conversation,
                    role=Message.Role.USER,
                    content=content,
                    client_id=client_id,
                )
                reply = _new_reply(user_message, model)
        except IntegrityError:
            if client_id and (found := _exchange_for_client_id(conversation, client_id)):
                return _Created(found)
            raise _busy() from None
        titled = not conversation.title
        if titled:
            conversation.title = title_from(content)
        _touch(conversation, model)
        turns = _turns_before(user_message)
    return _Created(Exchange(user_message, reply, created=True), titled, turns, swept)


def _new_reply(user_message: Message, model: str) -> Message:
    """The streaming reply to a user message. The database refuses a second streaming
    reply in a conversation (IntegrityError), however the sends raced."""
    return Message.objects.create(
        conversation_id=user_message.conversation_id,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        reply_to=user_message,
        model=model,
        worker=runs.worker_id(),
    )


def _busy() -> ChatError:
    return ChatError(
        "conversation_busy",
        "A reply is still streaming in this conversation; stop it or wait.",
        status=409,
    )


def _touch(conversation: Conversation, model: str) -> None:
    conversation.model = model
    conversation.updated_at = timezone.now()
    conversation.save(update_fields=["title", "model", "updated_at"])


def _turns_before(user_message: Message) -> list[tuple[str, str]]:
    """The conversation up to a user message, as the model sees it: each user message
    followed by its latest reply (a regenerated reply replaces the earlier ones)."""
    turns: list[tuple[str, str]] = []
    for role, content in (
        Message.objects.filter(
            conversation_id=user_message.conversation_id,
            created_at__lt=user_message.created_at,
            role__in=[Message.Role.USER, Message.Role.ASSISTANT],
        )
        .exclude(pk=user_message.pk)
        .values_list("role", "content")
    ):
        if turns and role == Message.Role.ASSISTANT and turns[-1][0] == role:
            turns[-1] = (role, content)
        else:
            turns.append((role, content))
    return turns


def _exchange_for_client_id(conversation: Conversation, client_id: str) -> Exchange | None:
    user_message = Message.objects.filter(conversation=conversation, client_id=client_id).first()
    if user_message is None:
        return None
    reply = user_message.replies.order_by("-created_at").first()
    return Exchange(user_message, reply, created=False)


async def reply_start(
    *,
    conversation: Conversation,
    content: str,
    client_id: str | None = None,
    options: dict | None = None,
) -> Exchange:
    """Save the user's message and start the assistant's reply as a server-side run.

    A ``client_id`` already used in the conversation starts nothing: the earlier
    exchange is returned with ``created=False``. ``options`` (``max_tokens``,
    ``temperature``) apply to this reply's model call only.
    """
    content, client_id = check_send(content, client_id)
    await _check_live(conversation)
    created = await _create_exchange(
        conversation, content, client_id, llm.model_name(), runs.local_message_ids()
    )
    if created.exchange.created:
        await runs.publish(
            conversation.id, events.message_created(created.exchange.user_message, client_id)
        )
        await _announce_and_run(conversation, created, content, client_id, options)
    return created.exchange


async def _announce_and_run(
    conversation: Conversation,
    created: _Created,
    content: str,
    client_id: str | None = None,
    options: dict | None = None,
) -> None:
    reply = created.exchange.reply
    for message in created.swept:
        await runs.publish(conversation.id, events.message_final(message))
    await runs.publish(conversation.id, events.message_created(reply, client_id))
    if created.titled:
        await runs.publish(conversation.id, events.conversation_updated(conversation))
    inputs = llm.chain_inputs(
        system_prompt=conversation.system_prompt, turns=created.turns, content=content
    )
    runs.start_run(message=reply, inputs=inputs, chain=llm.get_chain(options))


@database_sync_to_async
def _create_regeneration(
    conversation: Conversation, message_id: str, model: str, alive: list
) -> _Created:
    with transaction.atomic():
        swept = _sweep(Message.objects.filter(conversation=conversation), alive)
        last_reply = (
            Message.objects.filter(conversation=conversation, role=Message.Role.ASSISTANT)
            .order_by("-created_at")
            .first()
        )
        if last_reply is None or str(last_reply.pk) != str(message_id):
            raise ChatError("not_regenerable", "Only the latest reply can be regenerated.")
        if last_reply.status == Message.Status.STREAMING:
            raise _busy()
        check_streaming_limit(owner_id=conversation.owner_id, conversation=conversation)
        user_message = last_reply.reply_to
        try:
            with transaction.atomic():
                reply = _new_reply(user_message, model)
        except IntegrityError:
            raise _busy() from None
        _touch(conversation, model)
        turns = _turns_before(user_message)
    return _Created(Exchange(user_message, reply, created=True), False, turns, swept)


async def reply_regenerate(*, conversation: Conversation, message_id: str) -> Exchange:
    """Answer the last user message again, in a new reply; the earlier reply is kept
    (for the record and for review) but no longer shown to the model."""
    await _check_live(conversation)
    created = await _create_regeneration(
        conversation, message_id, llm.model_name(), runs.local_message_ids()
    )
    await _announce_and_run(conversation, created, created.exchange.user_message.content)
    return created.exchange


@database_sync_to_async
def _streaming_reply(conversation: Conversation, message_id: str | None) -> Message | None:
    replies = Message.objects.filter(conversation=conversation, status=Message.Status.STREAMING)
    if message_id:
        replies = replies.filter(pk=message_id)
    return replies.first()


async def reply_stop(*, conversation: Conversation, message_id: str | None = None) -> str:
    """Stop the conversation's streaming reply, wherever it runs; returns its id.

    The run saves exactly the text its viewers were sent and announces the result with
    ``message.cancelled``.
    """
    run = runs.local_run_for_conversation(conversation.id)
    if run is not None and message_id in (None, run.message_id):
        run.stop()
        return run.message_id
    reply = await _streaming_reply(conversation, message_id)
    if reply is None:
        raise ChatError("not_streaming", "No reply is streaming in this conversation.", 409)
    try:
        await get_channel_layer().group_send(
            runs.control_group(conversation.id), {"type": "run.stop", "message": str(reply.id)}
        )
    except Exception as exc:
        raise ChatError(
            "live_unavailable", "The stop could not reach the reply's worker; try again.", 503
        ) from exc
    return str(reply.id)


# --- crash recovery ---------------------------------------------------------------------


def _sweep(replies, alive: list[str], *, stale_only: bool = True) -> list[Message]:
    """Mark streaming replies whose heartbeat went stale as interrupted (in a transaction).

    ``alive`` are the replies this process is running: never swept, however late.
    """
    stale = replies.filter(status=Message.Status.STREAMING).exclude(pk__in=alive)
    if stale_only:
        cutoff = timezone.now() - timedelta(seconds=settings.CHAT_RUN_LEASE_S)
        stale = stale.filter(updated_at__lt=cutoff)
    stale = list(stale.select_for_update())
    now = timezone.now()
    for message in stale:
        message.status = Message.Status.INTERRUPTED
        message.error = {
            "code": "interrupted",
            "detail": "The worker running this reply stopped; the text saved so far is kept.",
        }
        message.completed_at = now
        message.save(update_fields=["status", "error", "completed_at", "updated_at"])
        outbox.record_reply_final(message)
    return stale


@database_sync_to_async
def _sweep_all(alive: list[str]) -> list[Message]:
    with transaction.atomic():
        return _sweep(Message.objects.all(), alive)


async def sweep_replies() -> list[Message]:
    """End every reply whose run died, and tell its viewers."""
    swept = await _sweep_all(runs.local_message_ids())
    for message in swept:
        log.warning("reply %s interrupted: its run stopped sending heartbeats", message.id)
        await runs.publish(message.conversation_id, events.message_final(message))
    return swept


@database_sync_to_async
def _sweep_worker(worker: str) -> list[Message]:
    with transaction.atomic():
        return _sweep(Message.objects.filter(worker=worker), [], stale_only=False)


async def sweep_own_replies() -> list[Message]:
    """At a worker's start: the replies it was running when it stopped (killed, crashed)
    end now, as interrupted with what was saved, rather than when their lease expires."""
    swept = await _sweep_worker(runs.worker_id())
    for message in swept:
        log.warning("reply %s interrupted: its worker restarted", message.id)
        await runs.publish(message.conversation_id, events.message_final(message))
    return swept


# --- conversations ----------------------------------------------------------------------


def conversation_create(
    *,
    owner,
    source: str = Conversation.Source.WEB,
    title: str = "",
    system_prompt: str = "",
    turns: Sequence[tuple[str, str]] = (),
) -> Conversation:
    """A new conversation; ``turns`` (role, content) are earlier messages it starts with,
    as an integration that sends a whole chat history brings them."""
    check_text(title, "title")
    check_text(system_prompt, "system_prompt")
    if len(system_prompt) > settings.CHAT_MAX_SYSTEM_PROMPT_CHARS:
        raise ChatError(
            "system_prompt_too_long",
            f"The system prompt has {len(system_prompt)} characters; "
            f"the limit is {settings.CHAT_MAX_SYSTEM_PROMPT_CHARS}.",
        )
    for _, content in turns:
        check_text(content, "messages")
        if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise ChatError(
                "message_too_long",
                f"A message has {len(content)} characters; "
                f"the limit is {settings.CHAT_MAX_MESSAGE_CHARS}.",
                status=413,
            )
    with transaction.atomic():
        conversation = Conversation.objects.create(
            owner=owner,
            source=source,
            title=title,
            system_prompt=system_prompt,
            model=llm.model_name(),
        )
        if turns:
            messages = Message.objects.bulk_create(
                Message(conversation=conversation, role=role, content=content)
                for role, content in turns
            )
            # One clock reading can serve several rows; the history's order must not tie.
            start = messages[0].created_at
            for index, message in enumerate(messages):
                message.created_at = start + timedelta(microseconds=index)
            Message.objects.bulk_update(messages, ["created_at"])
        outbox.record_conversation_created(conversation)
    return conversation


# --- the sidebar: renaming and deleting -------------------------------------------------


async def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    """Give a conversation the title a person chose; every open viewer hears of it."""
    title = " ".join(check_text(str(title), "title").split())
    limit = Conversation._meta.get_field("title").max_length
    if not title:
        raise ChatError("empty_title", "A title cannot be empty.")
    if len(title) > limit:
        raise ChatError("title_too_long", f"A title has at most {limit} characters.")
    conversation.title = title
    # Not `updated_at`: a rename is not activity, so the history keeps its order.
    await conversation.asave(update_fields=["title"])
    await runs.publish(conversation.id, events.conversation_updated(conversation))
    return conversation


async def conversation_delete(*, conversation: Conversation) -> None:
    """Delete a conversation and its messages, stopping a reply that still streams."""
    try:
        await reply_stop(conversation=conversation)
    except ChatError:
        pass  # nothing streams, or its worker is gone: its saves then match no row
    await database_sync_to_async(_delete_recorded)(conversation)


@transaction.atomic
def _delete_recorded(conversation: Conversation) -> None:
    outbox.record_conversation_deleted(conversation)
    conversation.delete()
