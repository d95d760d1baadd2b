"""The OpenAI-compatible endpoint: ``POST /v1/chat/completions`` and ``GET /v1/models``.

It speaks exactly OpenAI's formats — ``chat.completion``, ``chat.completion.chunk``
events ending with ``data: [DONE]``, errors as ``{"error": {message, type, param,
code}}`` — so the openai SDK, LangChain's ChatOpenAI and the like work unchanged. Every
exchange is an ordinary chatsite reply, saved in a conversation (source ``api``) of the
key's owner:

- without ``X-Conversation-Id``, a new conversation holds the request's system
  messages (as its system prompt) and earlier turns, then the last user message is
  sent and answered;
- with ``X-Conversation-Id: <uuid>`` only the last user message is added to that
  conversation, and the model sees its stored history (the request's earlier
  messages are not compared or saved again).

The response names the conversation in ``X-Conversation-Id``. Refusals come before
anything is saved, so an SDK's automatic retries never start a second reply.
"""

import logging
import time
from collections.abc import AsyncIterator
from typing import Literal

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest
from pydantic import BaseModel, ConfigDict, Field

from . import events, llm, services, sse
from .api.errors import JsonAPI, field_path
from .api.views import owned_conversation, start_reply
from .apikeys import ApiAuth
from .errors import ChatError
from .models import Conversation, Message
from .text import check_text

log = logging.getLogger(__name__)

DONE = "[DONE]"
_STARTED = int(time.time())  # "created" of the models: when this worker started

_ERROR_TYPES = {401: "invalid_request_error", 403: "permission_error", 429: "requests"}
# A failed reply, answered without streaming: how it is reported.
_FAILURE_STATUS = {
    Message.Status.FAILED: 502,
    Message.Status.INTERRUPTED: 500,
    Message.Status.CANCELLED: 409,
}


class RequestRefused(ChatError):
    """A refusal that names the request's parameter at fault (OpenAI's ``param``)."""

    def __init__(self, code: str, detail: str, status: int = 400, *, param: str) -> None:
        super().__init__(code, detail, status)
        self.param = param


class OpenAIAPI(JsonAPI):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_exception_handler(
            RequestRefused,
            lambda request, exc: self.error(
                request, exc.status, exc.code, exc.detail, param=exc.param
            ),
        )

    def error(self, request: HttpRequest, status: int, code: str, detail: str, **extra):
        response = self.create_response(
            request,
            error_object(
                detail,
                code="invalid_api_key" if status == 401 else code,
                type=_ERROR_TYPES.get(
                    status, "server_error" if status >= 500 else "invalid_request_error"
                ),
                param=extra.get("param") or _param(extra.get("errors")),
            ),
            status=status,
        )
        if status == 429:
            response["Retry-After"] = "1"
        return response


def _param(errors: list[dict] | None) -> str | None:
    path = field_path(errors[0]) if errors else []
    return ".".join(path) or None


openai_api = OpenAIAPI(
    title="chatsite OpenAI-compatible API",
    version="1",
    urls_namespace="openai",
    auth=ApiAuth(),
    docs_url=None,
    openapi_url=None,
)


# --- OpenAI's objects -------------------------------------------------------------------


def error_object(message: str, *, code: str | None, type: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def usage_object(usage: dict | None) -> dict:
    prompt = (usage or {}).get("prompt_tokens") or 0
    completion = (usage or {}).get("completion_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def model_object(name: str) -> dict:
    return {"id": name, "object": "model", "created": _STARTED, "owned_by": "chatsite"}


class Completion:
    """One reply seen as an OpenAI completion: its id, time and model, and the
    objects that carry it."""

    def __init__(self, reply: Message, *, max_tokens: int | None) -> None:
        self.id = f"chatcmpl-{reply.id.hex}"
        self.created = int(reply.created_at.timestamp())
        self.model = reply.model or llm.model_name()
        self.max_tokens = max_tokens

    def finish_reason(self, usage: dict | None) -> str:
        completion_tokens = (usage or {}).get("completion_tokens") or 0
        cut = self.max_tokens is not None and completion_tokens >= self.max_tokens
        return "length" if cut else "stop"

    def completion(self, reply: Message) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": self.finish_reason(reply.usage),
                }
            ],
            "usage": usage_object(reply.usage),
            "system_fingerprint": None,
        }

    def chunk(self, delta: dict, *, finish_reason: str | None = None, usage=False) -> dict:
        """A ``chat.completion.chunk``; ``usage`` False leaves the field out (the client
        did not ask for usage), None sends ``"usage": null`` as OpenAI does then."""
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if usage is not False:
            chunk["usage"] = usage
        return chunk

    def usage_chunk(self, usage: dict | None) -> dict:
        chunk = self.chunk({}, usage=usage_object(usage))
        chunk["choices"] = []
        return chunk


def failure(status: str, error: dict | None) -> tuple[int, dict]:
    """A reply that ended without completing, as an OpenAI error: (HTTP status, object)."""
    if status == Message.Status.CANCELLED:
        code, detail = "reply_cancelled", "The reply was stopped before it completed."
    else:
        code = (error or {}).get("code") or status
        detail = (error or {}).get("detail") or f"The reply ended as {status}."
    http_status = _FAILURE_STATUS.get(status, 500)
    kind = "invalid_request_error" if http_status < 500 else "server_error"
    return http_status, error_object(detail, code=code, type=kind)


# --- requests ---------------------------------------------------------------------------
# Types are strict, as OpenAI's own (``"1"`` is not a number, ``"yes"`` not a boolean).
# Parameters outside these models are kept (``extra="allow"``) only to be refused by name
# when used (any value but null): tools, functions, logprobs… (see _refuse_unsupported).


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class ContentPart(_Strict):
    type: str
    text: str | None = None


class ChatMessageIn(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None  # an assistant message sent back as it was received


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


def _refuse_unsupported(body: ChatCompletionIn) -> None:
    """Refuse what chatsite does not do rather than silently answer something else."""
    used = [name for name, value in (body.model_extra or {}).items() if value is not None]
    if used:
        raise _unsupported(used[0], f"`{used[0]}` is not supported by this server.")
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
        if message.role == "tool":
            raise _unsupported(f"messages.{index}.role", "Tool messages are not supported.")
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


def _model(name: str) -> str:
    if name != llm.model_name():
        raise ChatError(
            "model_not_found",
            f"The model `{name}` does not exist or you do not have access to it.",
            404,
        )
    return name


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


def _split(messages: list[ChatMessageIn]) -> tuple[str, list[tuple[str, str]], str]:
    """(system prompt, earlier turns, the new user message) of a request."""
    if messages[-1].role != "user":
        raise ChatError("invalid_messages", "The last message must be the user's.")
    _check_sizes(messages)
    system = "\n\n".join(_text(m) for m in messages if m.role in ("system", "developer"))
    turns = [(m.role, _text(m)) for m in messages[:-1] if m.role in ("user", "assistant")]
    return system, turns, _text(messages[-1])


def _max_tokens(body: ChatCompletionIn) -> int | None:
    asked = body.max_completion_tokens or body.max_tokens
    return None if asked is None else min(asked, settings.CHAT_MAX_COMPLETION_TOKENS)


@database_sync_to_async
def _new_conversation(owner, system: str, turns: list, content: str) -> Conversation:
    services.check_streaming_limit(owner_id=owner.pk)
    first = next((text for role, text in turns if role == "user"), content)
    return services.conversation_create(
        owner=owner,
        source=Conversation.Source.API,
        title=services.title_from(first),
        system_prompt=system,
        turns=turns,
    )


# --- endpoints --------------------------------------------------------------------------


@openai_api.get("/models")
async def list_models(request):
    return {"object": "list", "data": [model_object(llm.model_name())]}


@openai_api.get("/models/{model}")
async def retrieve_model(request, model: str):
    return model_object(_model(model))


@openai_api.post("/chat/completions")
async def chat_completions(request, body: ChatCompletionIn):
    _refuse_unsupported(body)
    _model(body.model)
    system, turns, content = _split(body.messages)
    max_tokens = _max_tokens(body)
    options = {"max_tokens": max_tokens, "temperature": body.temperature}
    services.check_send(content)
    if conversation_id := request.headers.get("X-Conversation-Id"):
        conversation, created = await owned_conversation(request, conversation_id), False
    else:
        conversation, created = await _new_conversation(request.auth, system, turns, content), True
    try:
        subscription, exchange = await start_reply(
            conversation, watch=True, content=content, options=options
        )
    except ChatError:
        if created:  # a refusal saves nothing: not even the new conversation
            await services.conversation_delete(conversation=conversation)
        raise
    completion = Completion(exchange.reply, max_tokens=max_tokens)
    named = {"X-Conversation-Id": str(conversation.id)}  # where the exchange is saved
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = _stream(subscription, exchange, completion, include_usage)
        return sse.response(chunks, headers=named)
    try:
        reply = await sse.final_message(subscription, str(exchange.reply.id))
    finally:
        await subscription.close()
    if reply is None:
        raise ChatError("not_found", "The conversation was deleted meanwhile.", 404)
    if reply.status == Message.Status.COMPLETED:
        response = openai_api.create_response(request, completion.completion(reply), status=200)
    else:
        status, error = failure(reply.status, reply.error)
        response = openai_api.create_response(request, error, status=status)
        response["x-should-retry"] = "false"  # the exchange is saved: a retry repeats it
    response["X-Conversation-Id"] = named["X-Conversation-Id"]
    return response


def _data(payload: dict | str) -> str:
    return sse.frame(payload if isinstance(payload, str) else events.dumps(payload))


async def _stream(
    subscription: sse.Subscription,
    exchange: services.Exchange,
    completion: Completion,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The reply as ``chat.completion.chunk`` events.

    Text is sent as the difference between what the client has and what the reply
    holds, from tokens, a snapshot after a loss, and the final event, so the client
    ends with exactly the saved text.
    """
    reply_id = str(exchange.reply.id)
    usage = None if include_usage else False
    sent = ""
    try:
        yield _data(completion.chunk({"role": "assistant", "content": ""}, usage=usage))
        async for item in sse.follow_reply(subscription, exchange):
            event = item.event
            if event is None:
                yield sse.PING
                continue
            text = _reply_text(event, reply_id, sent)
            if text is not None and text != sent:
                if text.startswith(sent):
                    yield _data(completion.chunk({"content": text[len(sent) :]}, usage=usage))
                    sent = text
                else:
                    log.warning("reply %s changed under its OpenAI stream", reply_id)
            if event["type"] in events.FINAL_EVENT_TYPES:
                final = event["message"]
                if final["status"] != Message.Status.COMPLETED:
                    yield _data(failure(final["status"], final["error"])[1])
                    return
                reason = completion.finish_reason(final["usage"])
                yield _data(completion.chunk({}, finish_reason=reason, usage=usage))
                if include_usage:
                    yield _data(completion.usage_chunk(final["usage"]))
                yield _data(DONE)
                return
        # The stream ended with no final event (the conversation was deleted): say so.
        ended = error_object(
            "The reply's conversation was deleted.", code="not_found", type="server_error"
        )
        yield _data(ended)
    finally:
        await subscription.close()


def _reply_text(event: events.Event, reply_id: str, sent: str) -> str | None:
    """The reply's whole text as far as an event tells it, or None."""
    kind = event["type"]
    if kind == events.TOKEN and event["message"] == reply_id:
        return sent + event["content"]
    if kind == events.SNAPSHOT:
        return next((m["content"] for m in event["messages"] if m["id"] == reply_id), None)
    if kind in events.FINAL_EVENT_TYPES and event["message"]["id"] == reply_id:
        return event["message"]["content"]
    return None
