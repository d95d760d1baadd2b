"""Refusals: the one error type, its codes, and what each says — written once here.

A ChatError carries a ``code`` clients act on, a ``detail`` people read, and the HTTP
status it maps to. Every surface turns it into its own shape, built here too:
``{"code", "detail"}`` on every HTTP surface of chatsite (``as_json``), an ``error``
event on the WebSocket (events.error), and OpenAI's error object on ``/v1``
(openai_compat.py). Codes whose detail depends on the case (a length, a limit) have a
function here that words it.
"""

from django.http import JsonResponse

# Codes, with their status and their wording where it is always the same.
NOT_FOUND = "not_found"
LIVE_UNAVAILABLE = "live_unavailable"
CONVERSATION_BUSY = "conversation_busy"
NOT_STREAMING = "not_streaming"
NOT_REGENERABLE = "not_regenerable"
STOP_PENDING = "stop_pending"
EMPTY_CONTENT = "empty_content"
EMPTY_TITLE = "empty_title"
INVALID_FIELD = "invalid_field"
INVALID_JSON = "invalid_json"
INVALID_CHARACTERS = "invalid_characters"
MESSAGE_TOO_LONG = "message_too_long"
SYSTEM_PROMPT_TOO_LONG = "system_prompt_too_long"
TITLE_TOO_LONG = "title_too_long"
TOO_MANY_REPLIES = "too_many_replies"
RATE_LIMITED = "rate_limited"
# Quotas (quotas/): a token budget spent, too many connections open at once.
QUOTA_EXCEEDED = "quota_exceeded"
TOO_MANY_CONNECTIONS = "too_many_connections"
# API keys: a key that may only read, sent to write.
KEY_READ_ONLY = "key_read_only"
READ_ONLY = "read_only"
UNKNOWN_TYPE = "unknown_type"
MODEL_NOT_FOUND = "model_not_found"
INVALID_MESSAGES = "invalid_messages"
NOT_EDITABLE = "not_editable"
INVALID_IMPORT = "invalid_import"
# Agents (agents/): a tool name nobody offers; and, in a reply's or a call's own
# ``error`` rather than as refusals, the step limit and a call's time limit.
UNKNOWN_TOOL = "unknown_tool"
AGENT_STEP_LIMIT = "agent_step_limit"
TOOL_TIMEOUT = "tool_timeout"
TOOL_FAILED = "tool_failed"

_STATUS = {
    NOT_FOUND: 404,
    LIVE_UNAVAILABLE: 503,
    CONVERSATION_BUSY: 409,
    NOT_STREAMING: 409,
    STOP_PENDING: 504,
    MESSAGE_TOO_LONG: 413,
    TOO_MANY_REPLIES: 429,
    RATE_LIMITED: 429,
    QUOTA_EXCEEDED: 429,
    TOO_MANY_CONNECTIONS: 429,
    READ_ONLY: 403,
    KEY_READ_ONLY: 403,
    MODEL_NOT_FOUND: 404,
}

_WORDING = {
    NOT_FOUND: "No such conversation.",
    LIVE_UNAVAILABLE: (
        "Live updates are unavailable right now (the channel layer is down); "
        "nothing was saved, try again shortly."
    ),
    CONVERSATION_BUSY: "A reply is still streaming in this conversation; stop it or wait.",
    NOT_STREAMING: "No reply is streaming in this conversation.",
    NOT_REGENERABLE: "Only the latest reply can be regenerated.",
    STOP_PENDING: "The reply is stopping but was not saved yet.",
    EMPTY_CONTENT: "The message is empty.",
    EMPTY_TITLE: "A title cannot be empty.",
    INVALID_JSON: "Send one JSON object per frame.",
    READ_ONLY: "Staff watch conversations; they never write in them.",
    KEY_READ_ONLY: (
        "This API key may only read (its scope is `read`); use a key with the `chat` "
        "scope to send, stop or call /v1."
    ),
    INVALID_MESSAGES: "The last message must be the user's.",
    NOT_EDITABLE: "Only your own messages can be edited.",
    AGENT_STEP_LIMIT: (
        "The model kept calling tools past the number of steps a reply may take; "
        "the text so far is kept."
    ),
}


class ChatError(Exception):
    """A refusal: ``code``, ``detail`` (the code's own wording unless given), the HTTP
    ``status`` (the code's own unless given), and for a rate limit, ``retry_after``
    (seconds)."""

    def __init__(
        self,
        code: str,
        detail: str | None = None,
        status: int | None = None,
        *,
        retry_after: float | None = None,
    ):
        detail = detail if detail is not None else _WORDING.get(code, code.replace("_", " "))
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status if status is not None else _STATUS.get(code, 400)
        self.retry_after = retry_after

    def as_json(self) -> dict:
        found = {"code": self.code, "detail": self.detail}
        if self.retry_after is not None:
            found["retry_after"] = self.retry_after
        return found


def json_refusal(error: ChatError) -> JsonResponse:
    """A refusal as the JSON every HTTP surface answers with."""
    return JsonResponse(error.as_json(), status=error.status)


# --- codes worded by their case -------------------------------------------------------------


def deleted() -> ChatError:
    return ChatError(NOT_FOUND, "This conversation was deleted.")


def no_such_message() -> ChatError:
    return ChatError(NOT_FOUND, "No such message in this conversation.")


def live_lost() -> ChatError:
    """Said on an open stream when the channel layer goes away under it."""
    return ChatError(LIVE_UNAVAILABLE, "Live updates broke off; reconnect to resume.")


def live_retrying() -> ChatError:
    """Said to a WebSocket that connected while the channel layer is down."""
    return ChatError(LIVE_UNAVAILABLE, "Live updates are unavailable right now; retrying.")


def stop_unreachable() -> ChatError:
    return ChatError(LIVE_UNAVAILABLE, "The stop could not reach the reply's worker; try again.")


def too_long(what: str, length: int, limit: int) -> ChatError:
    code = {"message": MESSAGE_TOO_LONG, "system prompt": SYSTEM_PROMPT_TOO_LONG}[what]
    return ChatError(
        code, f"The {what} has {length} characters; the limit is {limit}.", _STATUS.get(code)
    )


def title_too_long(limit: int) -> ChatError:
    return ChatError(TITLE_TOO_LONG, f"A title has at most {limit} characters.")


def invalid_field(name: str, expected: str) -> ChatError:
    return ChatError(INVALID_FIELD, f"`{name}` must be {expected}.")


def invalid_characters(field: str) -> ChatError:
    return ChatError(
        INVALID_CHARACTERS,
        f"`{field}` contains a character that cannot be stored "
        "(NUL or an unpaired UTF-16 surrogate).",
    )


# A refusal whose end nobody can tell (a reply or a connection must end first) says to
# try again after this many seconds.
RETRY_SOON_S = 1


def too_many_replies(limit: int) -> ChatError:
    return ChatError(
        TOO_MANY_REPLIES,
        f"You have {limit} replies streaming already; wait for one to finish.",
        retry_after=RETRY_SOON_S,
    )


def quota_exceeded(period: str, used: int, limit: int, retry_after: float) -> ChatError:
    """A token budget (``period``: "today" or "this month") spent; ``retry_after``: the
    seconds until it starts again."""
    return ChatError(
        QUOTA_EXCEEDED,
        f"You have used {used:,} of your {limit:,} tokens {period}; "
        f"more are available in {_duration(retry_after)}.",
        retry_after=retry_after,
    )


def requests_limited(limit: int, retry_after: float) -> ChatError:
    """The replies a person may start per minute."""
    return ChatError(
        RATE_LIMITED,
        f"You may start {limit} replies a minute; try again in {_duration(retry_after)}.",
        retry_after=retry_after,
    )


def too_many_connections(limit: int) -> ChatError:
    return ChatError(
        TOO_MANY_CONNECTIONS,
        f"You have {limit} live connections open already (tabs and event streams); "
        "close one and try again.",
        retry_after=RETRY_SOON_S,
    )


def _duration(seconds: float) -> str:
    seconds = max(1, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h".replace(".0 h", " h")


def rate_limited(retry_after: float) -> ChatError:
    return ChatError(
        RATE_LIMITED,
        f"Too many snapshot or history requests; try again in {retry_after:g} s.",
        retry_after=retry_after,
    )


def key_attempts_throttled(retry_after: float) -> ChatError:
    return ChatError(
        RATE_LIMITED,
        f"Too many failed API key attempts from this address; try again in {retry_after:g} s.",
        retry_after=retry_after,
    )


def unknown_type(kind) -> ChatError:
    return ChatError(UNKNOWN_TYPE, f"Unknown event type {kind!r}.")


def model_not_found(name: str, valid: list[str] | None = None) -> ChatError:
    known = f" The models are: {', '.join(valid)}." if valid else ""
    return ChatError(
        MODEL_NOT_FOUND,
        f"The model `{name}` does not exist or you do not have access to it.{known}",
    )


def unknown_model(name, valid: list[str]) -> ChatError:
    """A model named in a request that is not configured: 400 with the valid names
    (``/v1`` answers 404, as OpenAI does)."""
    refused = model_not_found(str(name), valid)
    refused.status = 400
    return refused


def invalid_import(reason: str) -> ChatError:
    return ChatError(INVALID_IMPORT, f"Not a conversation exported by chatsite: {reason}")


def unknown_tool(name) -> ChatError:
    return ChatError(UNKNOWN_TOOL, f"There is no tool named {str(name)[:100]!r}.")


def tool_timeout(seconds: float) -> dict:
    """A tool call's ``error`` when it ran past CHAT_TOOL_TIMEOUT_S."""
    return {"code": TOOL_TIMEOUT, "detail": f"The tool did not answer within {seconds:g} s."}


def tool_failed(detail: str) -> dict:
    """A tool call's ``error`` when the tool raised or said it failed."""
    return {"code": TOOL_FAILED, "detail": detail}
