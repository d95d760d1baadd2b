"""The API's export and import routes: a conversation or all of yours as JSON or
Markdown, and a conversation's JSON export imported back as a new conversation."""

import json
from typing import Literal

from channels.db import database_sync_to_async
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from ninja import Status

from .. import errors, events, selectors
from ..errors import ChatError
from ..services import exports
from .schemas import CONVERSATIONS, REFUSALS, ConversationId, ConversationOut
from .views import api

Format = Literal["json", "md"]
_TYPES = {"json": "application/json", "md": "text/markdown; charset=utf-8"}
_EXPORT = {"responses": {200: {"description": "the file, as an attachment"}}}


def _attachment(response: HttpResponse, name: str, format: str) -> HttpResponse:
    response["Content-Disposition"] = f'attachment; filename="{name}.{format}"'
    response["Cache-Control"] = "no-store"
    return response


@api.get(
    "/conversations/export",
    response={**REFUSALS},
    summary="Export all your conversations",
    tags=[CONVERSATIONS],
    openapi_extra=_EXPORT,
)
async def export_all(request, format: Format = "json"):
    """Every conversation of yours: JSON (`chatsite.conversations`, every branch, as
    stored) or Markdown (each conversation's branch shown, one after the other)."""
    chunks = (
        exports.all_json(request.auth) if format == "json" else exports.all_markdown(request.auth)
    )
    name = f"chatsite-{timezone.now():%Y-%m-%d}"
    return _attachment(StreamingHttpResponse(chunks, content_type=_TYPES[format]), name, format)


@api.get(
    "/conversations/{conversation_id}/export",
    response={**REFUSALS},
    summary="Export a conversation",
    tags=[CONVERSATIONS],
    openapi_extra=_EXPORT,
)
async def export_one(request, conversation_id: ConversationId, format: Format = "json"):
    """JSON (`chatsite.conversation`: every message of every branch, as stored; import
    it back with `POST /api/conversations/import`) or Markdown (the branch shown)."""
    conversation = await selectors.aowned_conversation(request.auth, conversation_id)
    if format == "json":
        data = await database_sync_to_async(exports.conversation_json)(conversation)
        body = json.dumps(data, ensure_ascii=False, indent=1)
    else:
        body = await database_sync_to_async(exports.conversation_markdown)(conversation)
    name = f"chatsite-{conversation.id}"
    return _attachment(HttpResponse(body, content_type=_TYPES[format]), name, format)


@api.post(
    "/conversations/import",
    response={201: ConversationOut, **REFUSALS},
    summary="Import a conversation's JSON export as a new conversation",
    tags=[CONVERSATIONS],
    openapi_extra={
        "requestBody": {
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": "one conversation's JSON export (`GET …/export?format=json`)",
        }
    },
)
async def import_conversation(request):
    """A new conversation of yours with every message and branch of the export (its
    ids are new); 400 `invalid_import` saying what is wrong, and nothing saved."""
    try:
        data = json.loads(request.body)
    except ValueError:
        raise ChatError(errors.INVALID_JSON, "The body is not JSON.") from None
    conversation = await database_sync_to_async(exports.conversation_import)(
        owner=request.auth, data=data
    )
    return Status(201, events.conversation_out(conversation))


# Before /conversations/{conversation_id}, whose path would take "export" or "import" for
# a conversation's id.
_operations = api.default_router.path_operations
api.default_router.path_operations = {
    path: _operations.pop(path) for path in ("/conversations/export", "/conversations/import")
} | _operations
