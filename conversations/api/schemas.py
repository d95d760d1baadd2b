"""The API's schemas: the event protocol's objects (events.message_out,
events.conversation_out) described for the OpenAPI document, and the requests."""

import uuid
from typing import Annotated

from django.conf import settings
from ninja import Field, Path, Schema

IsoTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
# A string, not a UUID: a malformed id names no conversation (404), like an unknown one.
ConversationId = Annotated[
    str, Path(description="The conversation's id (a UUID).", example=str(uuid.UUID(int=1)))
]


class ConversationOut(Schema):
    id: uuid.UUID
    title: str
    model: str = Field(description="the model of the next reply: a name from GET /api/models")
    system_prompt: str = Field(description="empty: the server's default")
    temperature: float | None = None
    source: str
    tools: list[str] = Field([], description="the tools its model may call (GET /api/tools)")
    created_at: IsoTime | None
    updated_at: IsoTime | None


class ErrorOut(Schema):
    code: str
    detail: str
    # A limit (429): the seconds until the request may succeed (also in Retry-After).
    retry_after: float | None = None


class UsageOut(Schema):
    prompt_tokens: int
    completion_tokens: int


class ToolCallOut(Schema):
    id: str
    name: str
    args: dict
    status: str = Field(
        description="running, completed or failed; cancelled or interrupted when the reply "
        "ended under it; requested for an OpenAI client's own tools (/v1)"
    )
    output: str | None = None
    error: ErrorOut | None = None
    duration_ms: int | None = None


class ToolOut(Schema):
    name: str
    description: str
    source: str = Field(description="builtin, or mcp:<server>")


class MessageOut(Schema):
    id: uuid.UUID
    role: str
    content: str
    status: str = Field(description="streaming, completed, failed, cancelled or interrupted")
    seq: int = Field(description="the number of the last token event the content includes")
    created_at: IsoTime | None
    parent: uuid.UUID | None = Field(
        None, description="the message this one follows on its branch (null: the first)"
    )
    siblings: list[uuid.UUID] | None = Field(
        None,
        description=(
            "the versions at this place (edits, regenerated replies), itself included, "
            "oldest first; POST /branch with one of them to show its branch"
        ),
    )
    # Assistant replies only:
    model: str | None = None
    usage: UsageOut | None = None
    error: ErrorOut | None = None
    reply_to: uuid.UUID | None = None
    time_to_first_token_ms: int | None = None
    duration_ms: int | None = None
    completed_at: IsoTime | None = None
    tool_calls: list[ToolCallOut] | None = Field(None, description="a reply's tool calls, in order")
    # Tool messages only (an OpenAI client's tool results, /v1):
    tool_call_id: str | None = None


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]


class ConversationPage(Schema):
    items: list[ConversationOut]
    count: int
    limit: int
    offset: int


class ConversationIn(Schema):
    title: str = Field("", max_length=200)
    system_prompt: str = Field("", max_length=settings.CHAT_MAX_SYSTEM_PROMPT_CHARS)
    model: str | None = Field(None, description="a name from GET /api/models; none: the default")
    temperature: float | None = Field(None, ge=0, le=2)
    preset: int | None = Field(
        None, description="a preset's id: its model, system prompt and temperature"
    )
    tools: list[str] | None = Field(
        None, description="tool names (GET /api/tools); absent: the server's default tools"
    )


class ConversationPatch(Schema):
    """Only the fields given change."""

    title: str | None = None
    model: str | None = Field(None, description="the model of the next replies")
    system_prompt: str | None = Field(None, description="applies from the next reply")
    temperature: float | None = Field(None, ge=0, le=2)
    tools: list[str] | None = Field(None, description="tool names: replaces the list")


class ModelOut(Schema):
    name: str = Field(description="what the API, /v1 and the chat call it")
    label: str = Field(description="what the chat shows")
    default: bool


class BranchIn(Schema):
    message: uuid.UUID = Field(description="a message of the branch to show")


class PresetIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    model: str = Field("", description="a name from GET /api/models; empty: the default")
    system_prompt: str = Field("", max_length=settings.CHAT_MAX_SYSTEM_PROMPT_CHARS)
    temperature: float | None = Field(None, ge=0, le=2)


class PresetOut(PresetIn):
    id: int
    shared: bool = Field(description="defined by staff for everyone (read-only here)")


class SendIn(Schema):
    content: str
    client_id: str | None = Field(
        None, description="your id for this send: a retry with the same id starts nothing new"
    )
    wait: bool = Field(True, description="false: answer 202 at once, even to text/event-stream")
    model: str | None = Field(
        None, description="the model of this reply and the next ones (GET /api/models)"
    )


class ExchangeOut(Schema):
    conversation: uuid.UUID
    user_message: MessageOut
    reply: MessageOut
    created: bool = Field(description="false when client_id named an earlier send")


class StopIn(Schema):
    message: uuid.UUID | None = None


CONVERSATIONS, REPLIES = "conversations", "replies"
SSE_RESPONSE = {
    "description": (
        "Server-Sent Events: `event: <type>`, `id: <reply>:<seq>` (resume with "
        "`Last-Event-ID`), `data: <event JSON>`, and `: ping` every 15 s."
    ),
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}
REFUSALS = {status: ErrorOut for status in (400, 401, 403, 404, 409, 413, 429)}
