"""Starting a ``/v1`` reply whose client offers its own tools (openai_tools.py).

Like replies.reply_start, with the same rules (written there, used from here): the
live layer must be up, a conversation streams one reply at a time, the owner's limits
(quotas/) hold. What differs is what is saved and what the
model sees: the new message may be the client's tool results (``tool`` rows) rather
than a user message, and the model sees the request's own messages, with the
client's tools bound to it.
"""

import asyncio
import functools
import uuid
from collections.abc import Callable

from django.db import IntegrityError, transaction

from .. import events, llm, selectors
from ..db import db
from ..live import control
from ..llm import catalog
from ..models import ApiKey, Conversation, Message
from ..openai_tools import ToolRequest, first_user_text
from ..runs import registry
from ..runs.client_tools import start_client_tools_run
from . import checks, replies, sweeper
from .conversations import _save_new, check_new, through
from .replies import Exchange


def _model(request: ToolRequest, options: dict, name: str):
    model = llm.get_llm(name)
    bound = {}
    if request.tools:
        bound["tools"] = request.tools
        if request.tool_choice is not None:
            bound["tool_choice"] = request.tool_choice
    options = {k: v for k, v in options.items() if k in llm.MODEL_OPTIONS and v is not None}
    return model.bind(**bound, **options) if bound or options else model


@db
def _create(
    conversation: Conversation,
    request: ToolRequest,
    model: str | None,
    alive: list,
    new: Callable[[], None] | None,
) -> tuple[Exchange, list[Message], list[Message]]:
    """Save the new message(s) and the streaming reply (and with ``new`` the
    conversation first), in one transaction; a dead reply in the way is swept, as in
    replies._create_exchange. Answers the exchange, the new rows and the swept replies."""
    swept: list[Message] = []
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                checks.check_limits(
                    owner_id=conversation.owner_id, conversation=None if new else conversation
                )
                if new is not None:
                    new()
                parent = None if new is not None else selectors.leaf(conversation.id)
                rows = []
                for role, content, more in request.inputs:
                    parent = Message.objects.create(
                        conversation=conversation,
                        role=role,
                        content=content,
                        parent=parent,
                        **more,
                    )
                    rows.append(parent)
                spec = catalog.for_reply(model or conversation.model)
                reply = replies._new_reply(rows[-1], spec)
                replies._touch(conversation, spec.name)
            return Exchange(rows[-1], reply, created=True), rows, swept
        except IntegrityError:
            if attempt == 1 and new is None:
                swept = sweeper.sweep_in_the_way(conversation, alive)
                if swept:
                    continue
            raise replies._busy() from None
    raise AssertionError("unreachable")


async def tool_exchange_start(
    *,
    owner,
    request: ToolRequest,
    conversation: Conversation | None = None,
    options: dict,
    model: str | None = None,
    api_key: ApiKey | None = None,
) -> tuple[Conversation, Exchange]:
    """Save the request's new message(s) and start the reply (watched: the exchange's
    subscription exists before the reply starts). Without ``conversation`` a new one
    holds the request's history, saved in the same transaction: a refusal leaves no
    trace. ``api_key``: the key the request came with (API traffic)."""
    new = None
    if conversation is None:
        check_new(title="", system_prompt=request.system, turns=request.history)
        conversation = Conversation(
            id=uuid.uuid4(),
            owner=owner,
            source=Conversation.Source.API,
            **through(api_key),
            title=checks.title_from(first_user_text(request)),
            system_prompt=request.system,
            model=catalog.check(model) if model is not None else catalog.default().name,
        )
        # /v1 never runs the conversation's own tools: the client's are the model's.
        new = functools.partial(_save_new, conversation, request.history, [])
    await checks.check_live(conversation)
    subscription = await replies.subscribe(conversation.id)
    try:
        exchange, rows, swept = await asyncio.shield(
            _create(conversation, request, model, registry.local_message_ids(), new)
        )
    except BaseException:
        await subscription.close()
        raise
    exchange.subscription = subscription
    await sweeper.announce(swept, "its run died and a new reply needed its place")
    for message in rows:
        await control.publish(conversation.id, events.message_created(message))
    await control.publish(conversation.id, events.message_created(exchange.reply))
    start_client_tools_run(
        message=exchange.reply,
        messages=request.messages,
        model=_model(request, options, exchange.reply.model),
    )
    return conversation, exchange
