"""The event protocol (version 1): every event any surface sends is built here.

WebSocket frames, SSE ``data:`` lines and the pages carry the same JSON objects. The
table of events is in docs/protocol.md; this module is its only implementation.
"""

import json
from typing import Any

import orjson

from .errors import ChatError
from .models import Conversation, Message

PROTOCOL_VERSION = 1

SNAPSHOT = "snapshot"
HISTORY = "history"
MESSAGE_CREATED = "message.created"
TOKEN = "token"
MESSAGE_COMPLETED = "message.completed"
MESSAGE_FAILED = "message.failed"
MESSAGE_CANCELLED = "message.cancelled"
MESSAGE_INTERRUPTED = "message.interrupted"
CONVERSATION_UPDATED = "conversation.updated"
BRANCH_SWITCHED = "branch.switched"
ERROR = "error"
# The credential this connection was opened with ended; the connection closes next.
SESSION_ENDED = "session.ended"
# One of the user's conversations was created, renamed or deleted (another tab's
# sidebar follows).
CONVERSATIONS_CHANGED = "conversations.changed"
# A reply's tool calls, numbered in the same sequence as its tokens (runs/agent.py).
TOOL_STARTED = "tool.started"
TOOL_COMPLETED = "tool.completed"
NUMBERED_TYPES = frozenset({TOKEN, TOOL_STARTED, TOOL_COMPLETED})

# Client → server.
MESSAGE_SEND = "message.send"
REPLY_STOP = "reply.stop"
REPLY_REGENERATE = "reply.regenerate"
MESSAGE_EDIT = "message.edit"
BRANCH_SELECT = "branch.select"
RESYNC = "resync"
# Client → server and server → client: a page of older messages.
HISTORY_REQUEST = HISTORY

FINAL_TYPES = {
    Message.Status.COMPLETED: MESSAGE_COMPLETED,
    Message.Status.FAILED: MESSAGE_FAILED,
    Message.Status.CANCELLED: MESSAGE_CANCELLED,
    Message.Status.INTERRUPTED: MESSAGE_INTERRUPTED,
}

FINAL_EVENT_TYPES = frozenset(FINAL_TYPES.values())

Event = dict[str, Any]


def dumps(event: Event) -> str:
    """One event as compact JSON text (UTF-8 kept as is, not escaped).

    Every frame of every reply is encoded here once: orjson does it in a twentieth of
    the standard library's time, with the same text. What orjson refuses (a lone
    surrogate, which the live path never carries; a type it does not know) is encoded
    as before."""
    try:
        return orjson.dumps(event).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def loads(text: str) -> Event:
    """An event back from ``dumps`` text (orjson, else the standard library for what
    orjson refuses)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def message_out(message: Message) -> Event:
    out = {
        "id": str(message.id),
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "seq": message.seq,
        "created_at": _iso(message.created_at),
        "parent": str(message.parent_id) if message.parent_id else None,
    }
    # The versions at this message's place, where the reader knows them
    # (services/branches.annotate_siblings); a client keeps what it holds otherwise.
    if (siblings := getattr(message, "siblings", None)) is not None:
        out["siblings"] = siblings
    if message.role == Message.Role.ASSISTANT:
        out.update(
            model=message.model,
            usage=message.usage,
            error=public_error(message.error),
            reply_to=str(message.reply_to_id) if message.reply_to_id else None,
            time_to_first_token_ms=message.time_to_first_token_ms,
            duration_ms=message.duration_ms,
            completed_at=_iso(message.completed_at),
            tool_calls=message.tool_calls or [],
        )
    elif message.role == Message.Role.TOOL:
        out["tool_call_id"] = message.tool_call_id
    return out


def public_error(error: dict | None) -> dict | None:
    """A reply's error as users see it: its code and detail; what the model server said
    (``upstream``) is for staff only."""
    if not error:
        return None
    return {"code": error.get("code"), "detail": error.get("detail")}


def conversation_out(conversation: Conversation) -> Event:
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt,
        "temperature": conversation.temperature,
        "source": conversation.source,
        "tools": conversation.tools or [],
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
    }


def snapshot(conversation: Conversation, messages: list[Message], *, has_more: bool) -> Event:
    """The conversation as it stands: its latest messages (oldest first); ``has_more``
    when older ones exist, which a client asks for with ``history``."""
    return {
        "type": SNAPSHOT,
        "version": PROTOCOL_VERSION,
        "conversation": conversation_out(conversation),
        "messages": [message_out(m) for m in messages],
        "has_more": has_more,
    }


def history(conversation_id: str, messages: list[Message], *, has_more: bool) -> Event:
    """A page of messages older than the ones a client holds (oldest first)."""
    return {
        "type": HISTORY,
        "conversation": conversation_id,
        "messages": [message_out(m) for m in messages],
        "has_more": has_more,
    }


def message_created(message: Message, client_id: str | None = None) -> Event:
    event = {
        "type": MESSAGE_CREATED,
        "conversation": str(message.conversation_id),
        "message": message_out(message),
    }
    if client_id:
        event["client_id"] = client_id
    return event


def reply_started(message: Message, client_id: str | None = None) -> Event:
    """``message.created`` of a reply as it was when it started (empty, seq 0), for a
    client that asks again: it holds at least this much already, or gets the rest as
    tokens."""
    started = {**message_out(message), "content": "", "seq": 0, "status": "streaming"}
    event = {
        "type": MESSAGE_CREATED,
        "conversation": str(message.conversation_id),
        "message": started,
    }
    if client_id:
        event["client_id"] = client_id
    return event


def token(conversation_id: str, message_id: str, seq: int, content: str) -> Event:
    return {
        "type": TOKEN,
        "conversation": conversation_id,
        "message": message_id,
        "seq": seq,
        "content": content,
    }


def tool_started(conversation_id: str, message_id: str, seq: int, call: dict) -> Event:
    """A tool call began: ``call`` is ``{id, name, args}``."""
    return {
        "type": TOOL_STARTED,
        "conversation": conversation_id,
        "message": message_id,
        "seq": seq,
        "call": {"id": call["id"], "name": call["name"], "args": call["args"]},
    }


def tool_completed(conversation_id: str, message_id: str, seq: int, call: dict) -> Event:
    """A tool call ended: ``call`` is the whole call as saved (``status`` completed or
    failed, ``output``, ``error``)."""
    return {
        "type": TOOL_COMPLETED,
        "conversation": conversation_id,
        "message": message_id,
        "seq": seq,
        "call": call,
    }


def message_final(message: Message) -> Event:
    """The one event that ends a reply, carrying the saved message."""
    return {
        "type": FINAL_TYPES[message.status],
        "conversation": str(message.conversation_id),
        "message": message_out(message),
    }


def conversation_updated(conversation: Conversation) -> Event:
    return {"type": CONVERSATION_UPDATED, "conversation": conversation_out(conversation)}


def branch_switched(conversation_id, leaf_id: str) -> Event:
    """Another branch is shown: its last message is ``message``; viewers reload it."""
    return {"type": BRANCH_SWITCHED, "conversation": str(conversation_id), "message": leaf_id}


def refusal(refused: ChatError, client_id: str | None = None) -> Event:
    """The ``error`` event of a ChatError."""
    return error(refused.code, refused.detail, client_id, retry_after=refused.retry_after)


def error(
    code: str, detail: str, client_id: str | None = None, *, retry_after: float | None = None
) -> Event:
    event = {"type": ERROR, "code": code, "detail": detail}
    if client_id:
        event["client_id"] = client_id
    if retry_after is not None:
        event["retry_after"] = retry_after
    return event


def conversations_changed(conversation_id, change: str) -> Event:
    """To every live connection of the owner: ``change`` is ``created``, ``updated``
    or ``deleted``."""
    return {"type": CONVERSATIONS_CHANGED, "conversation": str(conversation_id), "change": change}


# Why a connection's credential ended, as session.ended says it.
_ENDED_WORDING = {
    "logged_out": "You logged out. Log in again.",
    "password_changed": "The password was changed. Log in again.",
    "deactivated": "The account was deactivated.",
    "deleted": "The account was deleted.",
    "key_revoked": "The API key was revoked.",
}


def session_ended(reason: str) -> Event:
    """The last event of a connection whose credential ended (then it closes)."""
    detail = _ENDED_WORDING.get(reason, "Your session ended. Log in again.")
    return {"type": SESSION_ENDED, "reason": reason, "detail": detail}
