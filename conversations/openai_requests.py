"""What ``POST /v1/chat/completions`` accepts (openai_compat.py answers it).

The request's schema, with types as strict as OpenAI's own (``"1"`` is not a number,
``"yes"`` not a boolean); what chatsite does not do, refused by name rather than
silently ignored; and the limits every other surface has, on every message of the
request. A request that passes is split into the system prompt, the earlier turns and
the new user message.
"""

from typing import Literal

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field

from . import errors
from .errors import ChatError
from .text import check_text


class RequestRefused(ChatError):
    """A refusal that names the request's parameter at fault (OpenAI's ``param``)."""

    def __init__(self, code: str, detail: str, status: int = 400, *, param: str) -> None:
        super().__init__(code, detail, status)
        self.param = param


# Parameters outside these models are kept (``extra="allow"``) only to be refused by name
# when used (any value but null): functions, logprobs… (see refuse_unsupported).


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class ContentPart(_Strict):
    type: str
    text: str | None = None


class FunctionCallIn(_Strict):
    name: str = Field(..., min_length=1, max_length=64)
    arguments: str = Field("", max_length=settings.CHAT_MAX_MESSAGE_CHARS)


class ToolCallIn(_Strict):
    """A tool call of an assistant message the client sends back (openai_tools.py)."""

    id: str = Field(..., min_length=1, max_length=100)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None  # an assistant message sent back as it was received
    tool_calls: list[ToolCallIn] | None = None  # assistant messages
    tool_call_id: str | None = Field(None, max_length=100)  # tool messages


class FunctionIn(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


class ToolIn(_Strict):
    """A tool the client offers the model; the client runs it (openai_tools.py)."""

    type: Literal["function"]
    function: FunctionIn


class StreamOptions(_Strict):
    include_usage: bool = False


class ResponseFormat(_Strict):
    type: str


class ChatCompletionIn(_Strict):
    model: str
    messages: list[ChatMessageIn] = Field(
        ..., min_length=1, max_length=settings.CHAT_MAX_REQUEST_MESSAGES
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Lowered to CHAT_MAX_COMPLETION_TOKENS, never refused for being large.
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    # Supported in their default values only.
    n: int = Field(1, ge=1)
    logprobs: bool | None = None
    response_format: ResponseFormat | None = None
    # The client's own tools (openai_tools.py): passed to the model, never run here.
    tools: list[ToolIn] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | dict | None = None
    parallel_tool_calls: bool | None = None
    # Accepted and not applied: they change neither what an answer is nor its shape.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    seed: int | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


def _unsupported(param: str, detail: str) -> ChatError:
    return RequestRefused("unsupported_parameter", detail, param=param)


def refuse_unsupported(body: ChatCompletionIn) -> None:
    """Refuse what chatsite does not do rather than silently answer something else."""
    used = [name for name, value in (body.model_extra or {}).items() if value is not None]
    if used:
        raise _unsupported(used[0], f"`{used[0]}` is not supported by this server.")
    if body.tool_choice is not None and not body.tools:
        raise _unsupported("tool_choice", "`tool_choice` is only allowed when `tools` are given.")
    if body.n != 1:
        raise _unsupported("n", "Only one choice (`n`: 1) is supported.")
    if body.logprobs:
        raise _unsupported("logprobs", "`logprobs` are not supported by this server.")
    if body.response_format is not None and body.response_format.type != "text":
        raise _unsupported(
            "response_format", 'Only `response_format` {"type": "text"} is supported.'
        )
    for index, message in enumerate(body.messages):
        used = [name for name, value in (message.model_extra or {}).items() if value is not None]
        if used:
            raise _unsupported(
                f"messages.{index}.{used[0]}",
                f"`{used[0]}` in messages is not supported by this server (text only).",
            )
        if isinstance(message.content, list):
            for part_index, part in enumerate(message.content):
                if part.type != "text":
                    raise RequestRefused(
                        "unsupported_content",
                        "Only text content is supported.",
                        param=f"messages.{index}.content.{part_index}.type",
                    )


def _text(message: ChatMessageIn) -> str:
    if isinstance(message.content, list):
        return "".join(part.text or "" for part in message.content)
    return message.content or ""


def _check_sizes(messages: list[ChatMessageIn]) -> None:
    """The limits of every other surface, on every message of the request: each within
    CHAT_MAX_MESSAGE_CHARS, the system prompt within CHAT_MAX_SYSTEM_PROMPT_CHARS."""
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    for index, message in enumerate(messages):
        text = _text(message)
        if len(text) > limit:
            raise RequestRefused(
                "message_too_long",
                f"Message {index} has {len(text)} characters; the limit is {limit}.",
                413,
                param=f"messages.{index}.content",
            )
        try:
            check_text(text, f"messages.{index}.content")
        except ChatError as refusal:
            raise RequestRefused(
                refusal.code, refusal.detail, param=f"messages.{index}.content"
            ) from None
    system = sum(len(_text(m)) for m in messages if m.role in ("system", "developer"))
    if system > settings.CHAT_MAX_SYSTEM_PROMPT_CHARS:
        raise RequestRefused(
            "system_prompt_too_long",
            f"The system messages have {system} characters; the limit is "
            f"{settings.CHAT_MAX_SYSTEM_PROMPT_CHARS}.",
            param="messages",
        )


def split(messages: list[ChatMessageIn]) -> tuple[str, list[tuple[str, str]], str]:
    """(system prompt, earlier turns, the new user message) of a request."""
    if messages[-1].role != "user":
        raise ChatError(errors.INVALID_MESSAGES)
    _check_sizes(messages)
    system = "\n\n".join(_text(m) for m in messages if m.role in ("system", "developer"))
    turns = [(m.role, _text(m)) for m in messages[:-1] if m.role in ("user", "assistant")]
    return system, turns, _text(messages[-1])


def completion_limit(body: ChatCompletionIn) -> int | None:
    """The request's max_tokens (or max_completion_tokens), lowered to
    CHAT_MAX_COMPLETION_TOKENS; None when it sets none."""
    asked = body.max_completion_tokens or body.max_tokens
    return None if asked is None else min(asked, settings.CHAT_MAX_COMPLETION_TOKENS)
