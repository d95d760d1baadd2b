"""Exports of conversations with their transcripts, streamed as JSON and as CSV.

Both read the conversations a chunk at a time (with their messages and ratings) and
send each as soon as it is encoded, so an export of any size holds one chunk in memory.
They are async iterators: under ASGI, Django would read a synchronous one whole into
memory before sending a byte.

JSON (exact, the format for programs)::

    {"format": "chatsite.conversations", "version": 1, "exported_at": "…",
     "conversations": [{"id", "title", "owner": {"id", "username"}, "source", "model",
       "system_prompt", "created_at", "updated_at", "flagged", "reviewed_by",
       "reviewed_at", "review_notes", "messages": [{"id", "role", "content", "status",
       "seq", "model", "usage", "error", "time_to_first_token_ms", "duration_ms",
       "reply_to", "parent", "active", "client_id", "created_at", "completed_at",
       "feedback": [{"user", "rating", "comment", "created_at", "updated_at"}]}]}]}

CSV (for spreadsheets): one row per message, ``CSV_COLUMNS``, a conversation without
messages as one row with empty message columns. A cell starting with ``= + - @``, tab or
carriage return gets a leading ``'`` so a spreadsheet shows it instead of running it as
a formula (user and model text is untrusted); the JSON export keeps every byte.
"""

import csv
import json
from collections.abc import AsyncIterator
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from conversations.models import Conversation, Message

from .models import Feedback

CHUNK = 100  # conversations per database round trip

CSV_COLUMNS = [
    "conversation_id",
    "conversation_title",
    "owner",
    "source",
    "conversation_model",
    "conversation_created_at",
    "conversation_updated_at",
    "flagged",
    "reviewed_by",
    "reviewed_at",
    "review_notes",
    "message_id",
    "role",
    "status",
    "model",
    "content",
    "prompt_tokens",
    "completion_tokens",
    "time_to_first_token_ms",
    "duration_ms",
    "error_code",
    "error_detail",
    "created_at",
    "completed_at",
    "thumbs_up",
    "thumbs_down",
]

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _with_transcripts(conversations: QuerySet[Conversation]) -> QuerySet[Conversation]:
    # A fresh queryset over the selection's ids: the admin's list annotations are not
    # needed here, and the subquery keeps a selection of any size out of the parameters.
    return (
        Conversation.objects.filter(pk__in=conversations.order_by().values("pk"))
        .select_related("owner", "reviewed_by")
        .prefetch_related(
            Prefetch("messages", queryset=Message.objects.order_by("created_at", "pk")),
            Prefetch(
                "messages__feedback",
                queryset=Feedback.objects.select_related("user").order_by("created_at", "pk"),
            ),
        )
        .order_by("created_at", "pk")
    )


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def message_record(message: Message) -> dict[str, Any]:
    return {
        "id": str(message.id),
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "seq": message.seq,
        "model": message.model,
        "usage": message.usage,
        "error": message.error,
        "time_to_first_token_ms": message.time_to_first_token_ms,
        "duration_ms": message.duration_ms,
        "reply_to": str(message.reply_to_id) if message.reply_to_id else None,
        "parent": str(message.parent_id) if message.parent_id else None,
        "active": message.active,
        "client_id": message.client_id,
        "created_at": _iso(message.created_at),
        "completed_at": _iso(message.completed_at),
        "feedback": [
            {
                "user": feedback.user.get_username(),
                "rating": feedback.rating,
                "comment": feedback.comment,
                "created_at": _iso(feedback.created_at),
                "updated_at": _iso(feedback.updated_at),
            }
            for feedback in message.feedback.all()
        ],
    }


def conversation_record(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "owner": {"id": conversation.owner_id, "username": conversation.owner.get_username()},
        "source": conversation.source,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "flagged": conversation.flagged,
        "reviewed_by": (
            conversation.reviewed_by.get_username() if conversation.reviewed_by else None
        ),
        "reviewed_at": _iso(conversation.reviewed_at),
        "review_notes": conversation.review_notes,
        "messages": [message_record(m) for m in conversation.messages.all()],
    }


async def json_chunks(conversations: QuerySet[Conversation]) -> AsyncIterator[str]:
    head = {
        "format": "chatsite.conversations",
        "version": 1,
        "exported_at": timezone.now().isoformat(),
    }
    # The header object without its closing brace, then the array, one item at a time.
    yield json.dumps(head, ensure_ascii=False)[:-1] + ', "conversations": ['
    separator = "\n"
    async for conversation in _with_transcripts(conversations).aiterator(chunk_size=CHUNK):
        yield separator + json.dumps(conversation_record(conversation), ensure_ascii=False)
        separator = ",\n"
    yield "\n]}\n"


def csv_cell(value: Any) -> Any:
    """A spreadsheet-safe cell: text that would start a formula is quoted with '."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _csv_rows(conversation: Conversation) -> list[list[Any]]:
    record = conversation_record(conversation)
    head = [
        record["id"],
        record["title"],
        record["owner"]["username"],
        record["source"],
        record["model"],
        record["created_at"],
        record["updated_at"],
        record["flagged"],
        record["reviewed_by"],
        record["reviewed_at"],
        record["review_notes"],
    ]
    rows = []
    for message in record["messages"] or [None]:
        if message is None:
            rows.append(head + [None] * (len(CSV_COLUMNS) - len(head)))
            continue
        usage, error = message["usage"] or {}, message["error"] or {}
        ratings = [f["rating"] for f in message["feedback"]]
        rows.append(
            [
                *head,
                message["id"],
                message["role"],
                message["status"],
                message["model"],
                message["content"],
                usage.get("prompt_tokens"),
                usage.get("completion_tokens"),
                message["time_to_first_token_ms"],
                message["duration_ms"],
                error.get("code"),
                error.get("detail"),
                message["created_at"],
                message["completed_at"],
                ratings.count(Feedback.Rating.UP),
                ratings.count(Feedback.Rating.DOWN),
            ]
        )
    return [[csv_cell(value) for value in row] for row in rows]


class _Echo:
    """The file csv.writer writes to: it hands each encoded row back."""

    def write(self, value: str) -> str:
        return value


async def csv_chunks(conversations: QuerySet[Conversation]) -> AsyncIterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    async for conversation in _with_transcripts(conversations).aiterator(chunk_size=CHUNK):
        yield "".join(writer.writerow(row) for row in _csv_rows(conversation))


def _attachment(chunks: AsyncIterator[str], content_type: str, extension: str):
    response = StreamingHttpResponse(chunks, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="conversations-{stamp}.{extension}"'
    response["Cache-Control"] = "no-store"
    return response


def json_response(conversations: QuerySet[Conversation]) -> StreamingHttpResponse:
    return _attachment(json_chunks(conversations), "application/json; charset=utf-8", "json")


def csv_response(conversations: QuerySet[Conversation]) -> StreamingHttpResponse:
    return _attachment(csv_chunks(conversations), "text/csv; charset=utf-8", "csv")
