"""Starting a ``/v1`` reply whose client offers its own tools (openai_tools.py).

Like replies.reply_start, with the same rules (written there, used from here): the
live layer must be up, a conversation streams one reply at a time, a user streams at
most CHAT_MAX_STREAMING_PER_USER replies. What differs is what is saved and what the
model sees: the new message may be the client's tool results (``tool`` rows) rather
than a user message, and the model sees the request's own messages, with the
client's tools bound to it.
"""

import asyncio

from channels.db import database_sync_to_async
from django.db import IntegrityError, transaction

from .. import events, llm
from ..errors import ChatError
from ..live import control
from ..models import Conversation, Message
from ..openai_tools import ToolRequest, first_user_text
from ..runs import registry
from ..runs.client_tools import start_client_tools_run
from . import replies, sweeper
from .conversations import conversation_create
from .replies import Exchange


def _model(request: ToolRequest, options: dict):
    model = llm.get_llm()
    bound = {}
    if request.tools:
        bound["tools"] = request.tools
        if request.tool_choice is not None:
            bound["tool_choice"] = request.tool_choice
    options = {k: v for k, v in options.items() if k in llm.MODEL_OPTIONS and v is not None}
    return model.bind(**bound, **options) if bound or options else model


@database_sync_to_async
def _create(
    conversation: Conversation, request: ToolRequest, alive: list
) -> tuple[Exchange, list[Message]]:
    """Save the new message(s) and the streaming reply, in one transaction."""
    with transaction.atomic():
        sweeper.sweep_stale(Message.objects.filter(conversation=conversation), alive)
        replies.check_streaming_limit(owner_id=conversation.owner_id, conversation=conversation)
        try:
            with transaction.atomic():
                rows = [
                    Message.objects.create(
                        conversation=conversation, role=role, content=content, **more
                    )
                    for role, content, more in request.inputs
                ]
                reply = replies._new_reply(rows[-1], llm.model_name())
        except IntegrityError:
            raise replies._busy() from None
        replies._touch(conversation, llm.model_name())
    return Exchange(rows[-1], reply, created=True), rows


async def tool_exchange_start(
    *,
    owner,
    request: ToolRequest,
    conversation: Conversation | None = None,
    options: dict,
) -> tuple[Conversation, Exchange]:
    """Save the request's new message(s) and start the reply (watched: the exchange's
    subscription exists before the reply starts). Without ``conversation`` a new one
    holds the request's history; a refusal deletes it again."""
    made = conversation is None
    if made:
        await database_sync_to_async(replies.check_streaming_limit)(owner_id=owner.pk)
        conversation = await database_sync_to_async(conversation_create)(
            owner=owner,
            source=Conversation.Source.API,
            title=replies.title_from(first_user_text(request)),
            system_prompt=request.system,
            turns=request.history,
            tools=[],
        )
    subscription = None
    try:
        await replies._check_live(conversation)
        subscription = await replies.subscribe(conversation.id)
        exchange, rows = await asyncio.shield(
            _create(conversation, request, registry.local_message_ids())
        )
    except BaseException as exc:
        if subscription is not None:
            await subscription.close()
        if made and isinstance(exc, ChatError):
            await conversation.adelete()
        raise
    exchange.subscription = subscription
    for message in rows:
        await control.publish(conversation.id, events.message_created(message))
    await control.publish(conversation.id, events.message_created(exchange.reply))
    start_client_tools_run(
        message=exchange.reply, messages=request.messages, model=_model(request, options)
    )
    return conversation, exchange
