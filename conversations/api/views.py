"""The integration API under ``/api/``: conversations as JSON, replies as Server-Sent
Events, live subscriptions, stop.

A thin edge like the WebSocket consumer: it parses, authorises (auth.ApiAuth) and
calls the services; the live streams come from live/streams.py, framed by sse.py.
Every answer is JSON, errors included (``{"code", "detail"}``), except the event
streams. The objects are the event protocol's own (events.message_out,
events.conversation_out); schemas.py describes them for the OpenAPI document.
"""

import functools
from typing import Annotated

from channels.db import database_sync_to_async
from ninja import Query, Status

from agents import registry

from .. import errors, events, hooks, selectors, sse
from ..errors import ChatError
from ..live import streams, subscription
from ..models import Conversation
from ..services import conversations, presets, replies
from .auth import ApiAuth
from .errors import JsonAPI
from .schemas import (
    CONVERSATIONS,
    REFUSALS,
    REPLIES,
    SSE_RESPONSE,
    ConversationDetail,
    ConversationId,
    ConversationIn,
    ConversationOut,
    ConversationPage,
    ConversationPatch,
    ErrorOut,
    ExchangeOut,
    MessageOut,
    SendIn,
    StopIn,
    ToolOut,
)

# How long a stop waits for the run to save the reply before it answers.
STOP_WAIT_S = 10.0
# The furthest a list may start: past any real history, and far from the databases'
# 64-bit limit on OFFSET (a larger number is a 400, not a database error).
MAX_OFFSET = 1_000_000_000

api = JsonAPI(
    title="chatsite API",
    version="1",
    description=(
        "Conversations, replies streamed as Server-Sent Events, live subscriptions, "
        "models and presets, edits and branches, exports and imports. Authenticate with "
        "`Authorization: Bearer <API key>`: make a key in the chat from the account menu "
        "(your name at the bottom left of the sidebar) → **API keys** (`/settings/api-keys/`), "
        "or with `manage.py create_api_key USERNAME`. A key of scope `read` only reads "
        "(anything else is 403 `key_read_only`); an expired or revoked key is 401. Past a "
        "quota or rate limit a request is 429 (`quota_exceeded`, `rate_limited`, "
        "`too_many_replies`, `too_many_connections`) with `retry_after` and `Retry-After`. "
        "The event protocol is the web chat's own (docs/protocol.md).\n\n"
        "**OpenAI-compatible endpoint** (`/v1`, the same keys), for the openai SDK, "
        "LangChain's `ChatOpenAI` and anything written for OpenAI's Chat Completions:\n\n"
        "- `GET /v1/models`: the models (the names of `GET /api/models`), and "
        "`GET /v1/models/{model}`.\n"
        "- `POST /v1/chat/completions`: `model` (one of those; another is 404 "
        "`model_not_found`, naming them), `messages`, `stream` (with "
        "`stream_options.include_usage`), `max_tokens` / `max_completion_tokens`, "
        "`temperature`. Answers are OpenAI's `chat.completion` or `chat.completion.chunk` "
        'events ending with `data: [DONE]`; errors are `{"error": {message, type, param, '
        "code}}`. Unsupported parameters (tools, `n` > 1, logprobs …) are 400 "
        "`unsupported_parameter`.\n"
        "- Every exchange is saved in a conversation (source `api`), named in the response "
        "header `X-Conversation-Id`. Without that header in the request a new conversation "
        "holds the request's system messages and earlier turns; with it, only the last "
        "user message is added to that conversation, whose stored history the model sees.\n"
    ),
    urls_namespace="api",
    auth=ApiAuth(),
)


# --- helpers ----------------------------------------------------------------------------


@database_sync_to_async
def _page(user, limit: int, offset: int) -> tuple[list[Conversation], int]:
    found = selectors.conversations_for(user)
    return list(found[offset : offset + limit]), found.count()


# --- conversations ----------------------------------------------------------------------


@api.get(
    "/conversations", response=ConversationPage, summary="List conversations", tags=[CONVERSATIONS]
)
async def list_conversations(
    request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
):
    """Your conversations, the most recently active first."""
    found, count = await _page(request.auth, limit, offset)
    return {
        "items": [events.conversation_out(c) for c in found],
        "count": count,
        "limit": limit,
        "offset": offset,
    }


@api.post(
    "/conversations",
    response={201: ConversationOut, **REFUSALS},
    summary="Create a conversation",
    tags=[CONVERSATIONS],
)
async def create_conversation(request, body: ConversationIn):
    """A `preset` gives the model, system prompt and temperature; fields given beside
    it win. An unknown `model` is 400 `model_not_found`, naming the models; `tools`
    (absent: the server's default tools) an unknown one `400 unknown_tool`."""
    conversation = await database_sync_to_async(_create)(request, body)
    return Status(201, events.conversation_out(conversation))


@api.get(
    "/conversations/{conversation_id}",
    response={200: ConversationDetail, **REFUSALS},
    summary="Read a conversation and its messages",
    tags=[CONVERSATIONS],
    exclude_unset=True,  # user messages have no assistant fields, as in the protocol
)
async def read_conversation(request, conversation_id: ConversationId):
    """A reply that is streaming shows the text saved so far (at most 250 ms old)."""
    conversation = await selectors.aowned_conversation(request.auth, conversation_id)
    snapshot = await selectors.snapshot(conversation.id, page=False)
    if snapshot is None:
        raise ChatError(errors.NOT_FOUND)
    return {**snapshot["conversation"], "messages": snapshot["messages"]}


def _create(request, body: ConversationIn) -> Conversation:
    owner = request.auth
    preset = presets.preset_for(owner, body.preset) if body.preset is not None else None
    given = body.model_dump(include={"model", "temperature"}, exclude_none=True)
    if body.system_prompt:
        given["system_prompt"] = body.system_prompt
    return conversations.conversation_create(
        owner=owner,
        source=Conversation.Source.API,
        api_key=getattr(request, "api_key", None),
        title=body.title.strip(),
        tools=body.tools,
        **{**presets.preset_settings(preset), **given},
    )


@api.patch(
    "/conversations/{conversation_id}",
    response={200: ConversationOut, **REFUSALS},
    summary="Rename a conversation, or change its model, system prompt or tools",
    tags=[CONVERSATIONS],
)
async def rename_conversation(request, conversation_id: ConversationId, body: ConversationPatch):
    """Only the fields given change; `model`, `system_prompt`, `temperature` and `tools`
    (which replaces the list; `400 unknown_tool` names one that does not exist) apply
    from the next reply. Every open tab follows (`conversation.updated`)."""
    conversation = await selectors.aowned_conversation(request.auth, conversation_id)
    if body.tools is not None:
        conversation = await conversations.conversation_set_tools(
            conversation=conversation, tools=body.tools
        )
    if body.title is not None:
        conversation = await conversations.conversation_rename(
            conversation=conversation, title=body.title
        )
    settings = body.model_dump(
        include={"model", "system_prompt", "temperature"}, exclude_unset=True
    )
    if settings.get("model", "") is None:
        raise errors.invalid_field("model", "a name from GET /api/models")
    if settings.get("system_prompt", "") is None:
        settings["system_prompt"] = ""
    conversation = await conversations.conversation_configure(conversation=conversation, **settings)
    return events.conversation_out(conversation)


@api.delete(
    "/conversations/{conversation_id}",
    response={204: None, **REFUSALS},
    summary="Delete a conversation",
    tags=[CONVERSATIONS],
)
async def delete_conversation(request, conversation_id: ConversationId):
    conversation = await selectors.aowned_conversation(request.auth, conversation_id)
    await conversations.conversation_delete(conversation=conversation)
    return Status(204, None)


@api.get("/tools", response=list[ToolOut], summary="List the tools", tags=[CONVERSATIONS])
async def list_tools(request):
    """The tools a conversation may enable (`tools` of create and update): the built-in
    ones, and those of the MCP servers staff registered."""
    return await registry.available_now()


# --- replies ----------------------------------------------------------------------------


@api.post(
    "/conversations/{conversation_id}/messages",
    response={202: ExchangeOut, **REFUSALS},
    summary="Send a message; the reply streams as SSE",
    tags=[REPLIES],
    openapi_extra={"responses": {200: SSE_RESPONSE}},
    exclude_unset=True,  # user messages have no assistant fields, as in the protocol
)
async def send_message(request, conversation_id: ConversationId, body: SendIn):
    """Saves your message and starts the reply, a server-side run: it is saved and shown
    live in every open tab whatever happens to this request.

    With `Accept: text/event-stream` the reply's events stream back (two
    `message.created`, `token`…, one final event), else the answer is 202 with both messages;
    `"wait": false` or `Prefer: respond-async` ask for the 202 whatever `Accept` says (the
    final state can come by webhook).
    Refusals (400, 404, 409 a reply is streaming, 413, 429) come before anything is
    saved; a repeated `client_id` starts nothing and answers with the earlier send.
    """
    conversation = await selectors.aowned_conversation(request.auth, conversation_id)
    prefer = request.headers.get("Prefer", "").lower()
    streamed = sse.wants_event_stream(request) and body.wait and "respond-async" not in prefer
    start = functools.partial(
        replies.reply_start,
        conversation=conversation,
        content=body.content,
        client_id=body.client_id,
        model=body.model,
    )
    return await answer_send(request, conversation, start, streamed=streamed)


async def answer_send(request, conversation: Conversation, start, *, streamed: bool):
    """Start a reply (``start``, a service called with ``watch``) and answer: its events
    as SSE (``streamed``: the stream takes a place among the caller's connections
    first), else 202 with both messages."""
    release = await live_connection(request) if streamed else None
    try:
        exchange = await start(watch=streamed)
    except BaseException:
        if release is not None:
            await release()
        raise
    return await exchange_answer(request, conversation, exchange, release=release)


async def live_connection(request):
    """A place for one more event stream of the caller's, or a refusal (429
    ``too_many_connections``); returns what frees it when the stream ends."""
    return await hooks.open_connection(request.auth.pk, "sse")


def closing(*closers):
    """What ends a stream: each of ``closers`` (None: none), in order."""

    async def close() -> None:
        for closer in closers:
            if closer is not None:
                await closer()

    return close


async def exchange_answer(
    request, conversation: Conversation, exchange: replies.Exchange, *, release=None
):
    """A send's answer: its events as SSE (with ``release``, the stream's place among the
    caller's connections; the stream ends with the request's credential), else 202 with
    both messages."""
    if release is None:
        return Status(
            202,
            {
                "conversation": conversation.id,
                "user_message": events.message_out(exchange.user_message),
                "reply": events.message_out(exchange.reply),
                "created": exchange.created,
            },
        )
    watching = exchange.subscription
    await watching.end_with(getattr(request, "credential", None))
    return sse.response(
        sse.framed(
            streams.follow_reply(watching, exchange), on_close=closing(watching.close, release)
        )
    )


@api.get(
    "/conversations/{conversation_id}/events",
    response={**REFUSALS},
    summary="Subscribe to a conversation's live events (SSE)",
    tags=[REPLIES],
    openapi_extra={"responses": {200: SSE_RESPONSE}},
)
async def conversation_events(request, conversation_id: ConversationId):
    """A `snapshot`, then every event of the conversation as it happens, from whichever
    worker runs the reply. Reconnect with `Last-Event-ID: <reply>:<seq>` to go on right
    after that token (no duplicate, no gap), or get the final event of a reply that
    ended meanwhile."""
    conversation = await selectors.aowned_conversation(request.auth, conversation_id)
    release = await live_connection(request)
    try:
        watching = await replies.subscribe(conversation.id)  # before the snapshot is read
    except BaseException:
        await release()
        raise
    await watching.end_with(getattr(request, "credential", None))
    resume = sse.parse_last_event_id(request.headers.get("Last-Event-ID"))
    return sse.response(
        sse.framed(streams.live_events(watching, resume), on_close=closing(watching.close, release))
    )


@api.post(
    "/conversations/{conversation_id}/stop",
    response={200: MessageOut, **REFUSALS, 504: ErrorOut},
    summary="Stop the streaming reply",
    tags=[REPLIES],
    exclude_unset=True,  # user messages have no assistant fields, as in the protocol
)
async def stop_reply(request, conversation_id: ConversationId, body: StopIn | None = None):
    """Stops the conversation's streaming reply (or the one named) wherever it runs,
    and answers with it as saved. 409 when nothing is streaming."""
    conversation = await selectors.aowned_conversation(request.auth, conversation_id)
    watching = await replies.subscribe(conversation.id)  # before the stop: the final is heard
    try:
        message_id = await replies.reply_stop(
            conversation=conversation,
            message_id=str(body.message) if body and body.message else None,
        )
        reply = await subscription.final_message(watching, message_id, patience_s=STOP_WAIT_S)
    finally:
        await watching.close()
    if reply is None or not reply.is_final:
        raise ChatError(errors.STOP_PENDING)
    return events.message_out(reply)
