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

``model`` picks the catalog model that answers (llm/catalog.py; ``GET /v1/models``
lists them), and then writes that conversation's next replies too. The response names
the conversation in ``X-Conversation-Id``. Refusals come before
anything is saved, so an SDK's automatic retries never start a second reply.
"""

import logging
import time
from collections.abc import AsyncIterator

from django.http import HttpRequest

from . import errors, events, hooks, llm, openai_tools, selectors, sse
from .api.auth import ApiAuth
from .api.errors import JsonAPI, field_path, with_headers
from .errors import ChatError
from .live import streams, subscription
from .llm import catalog
from .models import Conversation, Message
from .openai_requests import (
    ChatCompletionIn,
    RequestRefused,
    completion_limit,
    refuse_unsupported,
    split,
)
from .services import conversations, replies, tool_exchanges

log = logging.getLogger(__name__)

DONE = "[DONE]"
RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
_STARTED = int(time.time())  # "created" of the models: when this worker started

_ERROR_TYPES = {401: "invalid_request_error", 403: "permission_error", 429: "requests"}
# A failed reply, answered without streaming: how it is reported.
_FAILURE_STATUS = {
    Message.Status.FAILED: 502,
    Message.Status.INTERRUPTED: 500,
    Message.Status.CANCELLED: 409,
}


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
        return with_headers(response, status, extra.get("retry_after"))

    def refuse(self, request: HttpRequest, exc: ChatError):
        # OpenAI's SDKs read one code for every limit (and back off on Retry-After).
        code = RATE_LIMIT_EXCEEDED if exc.status == 429 else exc.code
        return self.error(request, exc.status, code, exc.detail, retry_after=exc.retry_after)


def _param(errors: list[dict] | None) -> str | None:
    path = field_path(errors[0]) if errors else []
    return ".".join(path) or None


openai_api = OpenAIAPI(
    title="chatsite OpenAI-compatible API",
    version="1",
    urls_namespace="openai",
    auth=ApiAuth(reads_only_allowed=False),
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

    def finish_reason(self, usage: dict | None, tool_calls: list | None = None) -> str:
        if openai_tools.requested(tool_calls):
            return "tool_calls"
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
                    "message": self.message(reply),
                    "logprobs": None,
                    "finish_reason": self.finish_reason(reply.usage, reply.tool_calls),
                }
            ],
            "usage": usage_object(reply.usage),
            "system_fingerprint": None,
        }

    def message(self, reply: Message) -> dict:
        message = {"role": "assistant", "content": reply.content, "refusal": None}
        if calls := openai_tools.requested(reply.tool_calls):
            message["tool_calls"] = openai_tools.tool_calls_out(calls)
            message["content"] = reply.content or None
        return message

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


def _model(name: str) -> str:
    if catalog.find(name) is None:
        raise errors.model_not_found(name, catalog.names())
    return name


# --- endpoints --------------------------------------------------------------------------


@openai_api.get("/models")
async def list_models(request):
    return {"object": "list", "data": [model_object(name) for name in catalog.names()]}


@openai_api.get("/models/{model}")
async def retrieve_model(request, model: str):
    return model_object(_model(model))


@openai_api.post("/chat/completions")
async def chat_completions(request, body: ChatCompletionIn):
    refuse_unsupported(body)
    model = _model(body.model)
    max_tokens = completion_limit(body)
    options = {"max_tokens": max_tokens, "temperature": body.temperature}
    conversation_id = request.headers.get("X-Conversation-Id")
    # A stream takes a place among the caller's live connections before anything starts.
    release = await hooks.open_connection(request.auth.pk, "sse") if body.stream else None
    try:
        conversation, exchange = await _start(request, body, model, options, conversation_id)
    except BaseException:
        if release is not None:
            await release()
        raise
    watching = exchange.subscription
    completion = Completion(exchange.reply, max_tokens=max_tokens)
    named = {"X-Conversation-Id": str(conversation.id)}  # where the exchange is saved
    if body.stream:
        await watching.end_with(getattr(request, "credential", None))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = _stream(watching, exchange, completion, include_usage, release)
        return sse.response(chunks, headers=named)
    try:
        reply = await subscription.final_message(watching, str(exchange.reply.id))
    finally:
        await watching.close()
    if reply is None:
        raise errors.deleted()
    if reply.status == Message.Status.COMPLETED:
        response = openai_api.create_response(request, completion.completion(reply), status=200)
    else:
        status, error = failure(reply.status, reply.error)
        response = openai_api.create_response(request, error, status=status)
        response["x-should-retry"] = "false"  # the exchange is saved: a retry repeats it
    response["X-Conversation-Id"] = named["X-Conversation-Id"]
    return response


async def _start(request, body: ChatCompletionIn, model: str, options: dict, conversation_id):
    """The exchange a request asks for: with the client's tools, in a conversation it
    names, or in a new one (watched: the subscription exists before the reply starts)."""
    if openai_tools.uses_tools(body):  # the client's own tools: openai_tools.py
        found = openai_tools.read(body)
        continued = None
        if conversation_id:
            continued = await selectors.aowned_conversation(request.auth, conversation_id)
        conversation, exchange = await tool_exchanges.tool_exchange_start(
            owner=request.auth,
            request=found,
            conversation=continued,
            options=options,
            model=model,
            api_key=getattr(request, "api_key", None),
        )
    elif conversation_id:
        system, turns, content = split(body.messages)
        conversation = await selectors.aowned_conversation(request.auth, conversation_id)
        exchange = await replies.reply_start(
            conversation=conversation, content=content, options=options, watch=True, model=model
        )
    else:
        system, turns, content = split(body.messages)
        conversation, exchange = await conversations.conversation_start(
            owner=request.auth,
            source=Conversation.Source.API,
            api_key=getattr(request, "api_key", None),
            system_prompt=system,
            turns=turns,
            content=content,
            options=options,
            watch=True,
            model=model,
        )
    return conversation, exchange


def _data(payload: dict | str) -> str:
    return sse.frame(payload if isinstance(payload, str) else events.dumps(payload))


async def _stream(
    watching: subscription.Subscription,
    exchange: replies.Exchange,
    completion: Completion,
    include_usage: bool,
    release,
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
        async for item in streams.follow_reply(watching, exchange):
            event = item.event
            if event is None:
                yield sse.PING
                continue
            if event["type"] == events.SESSION_ENDED:
                ended = error_object(
                    event["detail"], code="invalid_api_key", type="invalid_request_error"
                )
                yield _data(ended)
                return
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
                if calls := openai_tools.requested(final.get("tool_calls")):
                    deltas = openai_tools.tool_call_deltas(calls)
                    yield _data(completion.chunk({"tool_calls": deltas}, usage=usage))
                reason = completion.finish_reason(final["usage"], final.get("tool_calls"))
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
        await watching.close()
        if release is not None:
            await release()


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
