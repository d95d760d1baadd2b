"""Replies: starting a reply (saving the user's message and the
streaming reply, then the run), editing a message (a new branch and its reply),
regenerating the latest reply, and stopping one wherever it runs.

Consumers, SSE views and API views only parse and authorise, then call these. Each rule
(what a valid message is, when a conversation is busy) is written here once.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import errors, events, llm, metrics, selectors
from ..db import db
from ..errors import ChatError
from ..live import control
from ..live.subscription import Subscription
from ..llm import catalog
from ..models import Conversation, Message
from ..runs import registry
from ..runs.agent import start_agent_run
from ..runs.run import start_run
from . import branches, checks, sweeper

log = logging.getLogger(__name__)


@dataclass
class Exchange:
    user_message: Message
    reply: Message
    created: bool  # False when a repeated client_id found an earlier exchange
    # The conversation's events, when the caller asked to watch (reply_start).
    subscription: Subscription | None = None


# --- doing ------------------------------------------------------------------------------


@dataclass
class _Created:
    exchange: Exchange
    titled: bool = False
    turns: list[tuple[str, str]] | None = None  # the model's history before the message
    swept: list[Message] | None = None  # dead replies that stood in the way


@db
def _create_exchange(
    conversation: Conversation,
    content: str,
    client_id: str | None,
    model: str | None,
    alive: list,
    edited: str | None = None,
    new: Callable[[], None] | None = None,
) -> _Created:
    """Save the user message and the streaming reply: one trip to a database thread, one
    transaction — the owner's limits, both rows (at the end of the active branch, or for
    an ``edited`` message beside it, on a new branch that becomes the active one), the
    conversation's activity and the history the model sees. With ``new`` the
    conversation itself is saved first, in the same transaction. ``model``: the one
    people chose for this reply on (None: the conversation's). A streaming reply in the
    way (the database refuses a second one per conversation) is swept if its run died,
    and then only."""
    if new is None and client_id and (found := _exchange_for_client_id(conversation, client_id)):
        return _Created(found)
    swept: list[Message] = []
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                checks.check_limits(
                    owner_id=conversation.owner_id, conversation=None if new else conversation
                )
                if new is not None:
                    new()
                else:
                    # What the settings panel or another tab changed since this surface
                    # read it.
                    conversation.refresh_from_db(
                        fields=["title", "model", "system_prompt", "temperature", "tools"]
                    )
                parent = (
                    _edited(conversation, edited).parent
                    if edited
                    else selectors.leaf(conversation.id)
                )
                user_message = Message.objects.create(
                    conversation=conversation,
                    role=Message.Role.USER,
                    content=content,
                    client_id=client_id,
                    parent=parent,
                )
                reply = _new_reply(user_message, catalog.for_reply(model or conversation.model))
                if edited:
                    branches.activate(conversation.id, reply)
                    selectors.annotate_siblings(conversation.id, [user_message])
                else:
                    user_message.siblings = [str(user_message.pk)]  # a new leaf: only child
                reply.siblings = [str(reply.pk)]
                titled = not conversation.title
                if titled:
                    conversation.title = checks.title_from(content)
                _touch(conversation, reply.model)
                turns = _turns_before(user_message)
            return _Created(Exchange(user_message, reply, created=True), titled, turns, swept)
        except IntegrityError:
            if client_id and (found := _exchange_for_client_id(conversation, client_id)):
                return _Created(found)
            if attempt == 1 and new is None:
                swept = sweeper.sweep_in_the_way(conversation, alive)
                if swept:
                    continue
            raise _busy() from None
    raise AssertionError("unreachable")


def _edited(conversation: Conversation, message_id: str) -> Message:
    """The user message an edit replaces (it stays, on its own branch)."""
    message = Message.objects.filter(conversation=conversation, pk=message_id).first()
    if message is None:
        raise errors.no_such_message()
    if message.role != Message.Role.USER:
        raise ChatError(errors.NOT_EDITABLE)
    return message


def _new_reply(user_message: Message, model: catalog.ChatModel) -> Message:
    """The streaming reply to a user message. The database refuses a second streaming
    reply in a conversation (IntegrityError), however the sends raced."""
    return Message.objects.create(
        conversation_id=user_message.conversation_id,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        reply_to=user_message,
        parent=user_message,
        model=model.name,
        worker=registry.worker_id(),
    )


def _busy() -> ChatError:
    return ChatError(errors.CONVERSATION_BUSY)


def _touch(conversation: Conversation, model: str) -> None:
    conversation.model = model
    conversation.updated_at = timezone.now()
    conversation.save(update_fields=["title", "model", "updated_at"])


def _turns_before(user_message: Message) -> list[tuple[str, str]]:
    """The active branch up to a user message, as the model sees it (two replies in a
    row, from data saved by hand, count as the latest one)."""
    turns: list[tuple[str, str]] = []
    for role, content in (
        Message.objects.filter(
            conversation_id=user_message.conversation_id,
            active=True,
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
    watch: bool = False,
    model: str | None = None,
    edited: str | None = None,
    new: Callable[[], None] | None = None,
) -> Exchange:
    """Save the user's message and start the assistant's reply as a server-side run.

    A ``client_id`` already used in the conversation starts nothing: the earlier
    exchange is returned with ``created=False``. ``options`` (``max_tokens``,
    ``temperature``) apply to this reply's model call only. ``model`` (a catalog name)
    answers this reply and the conversation's next ones. ``edited`` (a user message's
    id): the message replaces that one on a new branch (see reply_edit). With
    ``watch``, the conversation's events are subscribed to first
    (``exchange.subscription``), so the caller misses none of the reply's. ``new`` saves
    a conversation that does not exist yet, in the same transaction
    (services.conversations.conversation_start).
    """
    content, client_id = checks.check_send(content, client_id)
    if model is not None:
        catalog.check(model)
    await checks.check_live(conversation)
    subscription = await subscribe(conversation.id) if watch else None
    try:
        # Shielded: a client that hangs up mid-call must not cut a send in half.
        exchange = await asyncio.shield(
            _start(conversation, content, client_id, options, model, edited, new)
        )
    except BaseException:
        if subscription is not None:
            await subscription.close()
        raise
    exchange.subscription = subscription
    return exchange


async def subscribe(conversation_id) -> Subscription:
    """A subscription to a conversation's events, or ChatError when the layer is down."""
    try:
        return await Subscription.open(conversation_id)
    except Exception as exc:
        raise ChatError(errors.LIVE_UNAVAILABLE) from exc


async def reply_edit(
    *,
    conversation: Conversation,
    message_id: str,
    content: str,
    client_id: str | None = None,
    watch: bool = False,
    model: str | None = None,
) -> Exchange:
    """Edit one of the user's messages: the new text is a new message beside it, on a
    new branch that becomes the active one, and its reply streams; the old branch is
    kept, one ``< 1 / 2 >`` away. Refused (409) while a reply streams."""
    return await reply_start(
        conversation=conversation,
        content=content,
        client_id=client_id,
        watch=watch,
        model=model,
        edited=message_id,
    )


async def _start(conversation, content, client_id, options, model, edited, new) -> Exchange:
    asked = time.monotonic()
    created = await _create_exchange(
        conversation, content, client_id, model, registry.local_message_ids(), edited, new
    )
    metrics.SEND_DB_SECONDS.observe(time.monotonic() - asked)
    if created.exchange.created:
        await control.publish(
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
    await sweeper.announce(created.swept or [], "its run died and a new reply needed its place")
    await control.publish(conversation.id, events.message_created(reply, client_id))
    if created.titled:
        await control.publish(conversation.id, events.conversation_updated(conversation))
    inputs = llm.chain_inputs(
        system_prompt=conversation.system_prompt, turns=created.turns, content=content
    )
    # The conversation's temperature, unless this reply's own options set one.
    given = {k: v for k, v in (options or {}).items() if v is not None}
    options = {"temperature": conversation.temperature, **given}
    if conversation.tools:  # the agent's path; without tools, the plain one unchanged
        start_agent_run(
            message=reply,
            inputs=inputs,
            tools=conversation.tools,
            owner_id=conversation.owner_id,
            model=llm.get_llm(reply.model),
            options=options,
        )
        return
    start_run(message=reply, inputs=inputs, chain=llm.get_chain(options, model=reply.model))


@db
def _create_regeneration(
    conversation: Conversation, message_id: str, model: str | None, alive: list
) -> _Created:
    with transaction.atomic():
        # First, as every start: the owner's limits lock before any reply's row does.
        checks.check_limits(owner_id=conversation.owner_id, conversation=conversation)
        conversation.refresh_from_db(
            fields=["title", "model", "system_prompt", "temperature", "tools"]
        )
        swept = sweeper.sweep_stale(Message.objects.filter(conversation=conversation), alive)
        last_reply = (
            Message.objects.filter(
                conversation=conversation, role=Message.Role.ASSISTANT, active=True
            )
            .order_by("-created_at")
            .first()
        )
        if last_reply is None or str(last_reply.pk) != str(message_id):
            raise ChatError(errors.NOT_REGENERABLE)
        if last_reply.status == Message.Status.STREAMING:
            raise _busy()
        user_message = last_reply.reply_to
        try:
            with transaction.atomic():
                reply = _new_reply(user_message, catalog.for_reply(model or conversation.model))
        except IntegrityError:
            raise _busy() from None
        branches.activate(conversation.id, reply)
        selectors.annotate_siblings(conversation.id, [reply])
        _touch(conversation, reply.model)
        turns = _turns_before(user_message)
    return _Created(Exchange(user_message, reply, created=True), False, turns, swept)


async def reply_regenerate(
    *, conversation: Conversation, message_id: str, model: str | None = None
) -> Exchange:
    """Answer the last user message again, in a new reply (by ``model`` when given,
    which then answers the conversation's next replies too); the earlier reply is kept,
    a sibling off the active branch, no longer shown to the model."""
    if model is not None:
        catalog.check(model)
    await checks.check_live(conversation)
    created = await _create_regeneration(
        conversation, message_id, model, registry.local_message_ids()
    )
    await _announce_and_run(conversation, created, created.exchange.user_message.content)
    return created.exchange


async def reply_stop(*, conversation: Conversation, message_id: str | None = None) -> str:
    """Stop the conversation's streaming reply, wherever it runs; returns its id.

    The run saves exactly the text its viewers were sent and announces the result with
    ``message.cancelled``.
    """
    run = registry.local_run_for_conversation(conversation.id)
    if run is not None and message_id in (None, run.message_id):
        run.stop()
        return run.message_id
    reply = await selectors.astreaming_reply(conversation, message_id)
    if reply is None:
        raise ChatError(errors.NOT_STREAMING)
    try:
        await control.ask_to_stop(conversation.id, str(reply.id))
    except Exception as exc:
        raise errors.stop_unreachable() from exc
    return str(reply.id)
