"""The API's edit and branch routes: editing a sent message (a new branch, its reply
streamed like a send's) and choosing which branch a conversation shows."""

import uuid

from .. import errors, selectors, sse
from ..errors import ChatError
from ..services import branches, replies
from .schemas import (
    REFUSALS,
    REPLIES,
    SSE_RESPONSE,
    BranchIn,
    ConversationDetail,
    ConversationId,
    ExchangeOut,
    SendIn,
)
from .views import api, exchange_answer, read_conversation


def _message_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise errors.no_such_message() from None


@api.post(
    "/conversations/{conversation_id}/messages/{message_id}/edit",
    response={202: ExchangeOut, **REFUSALS},
    summary="Edit a message you sent; the new branch's reply streams as SSE",
    tags=[REPLIES],
    openapi_extra={"responses": {200: SSE_RESPONSE}},
    exclude_unset=True,
)
async def edit_message(request, conversation_id: ConversationId, message_id: str, body: SendIn):
    """Saves the new text as a new message beside the one edited — a new branch, now
    the one shown — and starts its reply; the old branch is kept (see `siblings` and
    `POST …/branch`). Answers like a send: SSE with `Accept: text/event-stream`, else
    202. 409 while a reply streams; 400 `not_editable` for a reply."""
    conversation = await selectors.aowned_conversation(request.auth, conversation_id)
    streamed = sse.wants_event_stream(request)
    exchange = await replies.reply_edit(
        conversation=conversation,
        message_id=_message_id(message_id),
        content=body.content,
        client_id=body.client_id,
        watch=streamed,
        model=body.model,
    )
    return await exchange_answer(request, conversation, exchange, streamed=streamed)


@api.post(
    "/conversations/{conversation_id}/branch",
    response={200: ConversationDetail, **REFUSALS},
    summary="Show the branch holding a message",
    tags=[REPLIES],
    exclude_unset=True,
)
async def select_branch(request, conversation_id: ConversationId, body: BranchIn):
    """Makes the branch holding `message` the one shown (below it, the newest version at
    each place) and answers with the conversation as `GET` now reads it. Every open tab
    follows (`branch.switched`). 409 while a reply streams."""
    conversation = await selectors.aowned_conversation(request.auth, conversation_id)
    await branches.branch_select(conversation=conversation, message_id=str(body.message))
    found = await read_conversation(request, conversation_id)
    if found is None:
        raise ChatError(errors.NOT_FOUND)
    return found
