"""The messages between processes, built here only (live/hub.py reads them).

- ``chat.frame``: one event for every viewer of a conversation (``frame``), with what a
  viewer needs to route it: the conversation, the reply it belongs to, its ``seq``,
  whether it ends the reply.
- ``run.stop``: to the process running a reply: stop it.
- ``run.fill``: to the process running a reply: send a viewer the frames after a seq.
- ``run.filled``: the answer, to the asking viewer's process, for that viewer.
- ``credential.ended``: to every process with connections of a user: the connections
  opened with this credential end (live/credentials.py says which).
- ``user.event``: to every process with connections of a user: an event for all of them
  (``conversations.changed``).
"""

import logging
from typing import Any

from .. import events
from . import layer
from .hub import ENDED, FILL, FILLED, FRAME, STOP, USER_EVENT, hub

log = logging.getLogger(__name__)

__all__ = [
    "ENDED",
    "FILL",
    "FILLED",
    "FRAME",
    "STOP",
    "USER_EVENT",
    "ask_to_fill",
    "ask_to_stop",
    "credential_ended",
    "end_credential",
    "frame",
    "publish",
    "tell_user",
]


def frame(event: events.Event, conversation_id: Any = None) -> dict:
    """An event for every viewer, encoded once for all of them."""
    kind = event["type"]
    message_id = seq = None
    if kind in events.NUMBERED_TYPES:  # tokens and tool events share a reply's seq
        message_id, seq = event["message"], event["seq"]
    elif kind == events.MESSAGE_CREATED and event["message"]["status"] == "streaming":
        message_id, seq = event["message"]["id"], 0
    elif kind in events.FINAL_EVENT_TYPES:
        message_id = event["message"]["id"]
    return {
        "type": FRAME,
        "conversation": str(conversation_id) if conversation_id is not None else None,
        "json": events.dumps(event),
        "message": message_id,
        "seq": seq,
        "final": kind in events.FINAL_EVENT_TYPES,
    }


def filled(message_id: str, *, after: int, frames: list[str], viewer=None) -> dict:
    return {
        "type": FILLED,
        "message": message_id,
        "after": after,
        "frames": frames,
        "viewer": viewer,
    }


async def publish(conversation_id: Any, event: events.Event) -> bool:
    """Tell every viewer of a conversation, in this process and the others; False when
    the channel layer is unreachable (logged, never raised: the database holds the
    durable copy, and this process's viewers have it already)."""
    try:
        await hub().publish(conversation_id, frame(event, conversation_id))
    except Exception:
        log.warning("could not publish %s for conversation %s", event["type"], conversation_id)
        return False
    return True


async def ask_to_stop(conversation_id: Any, message_id: str) -> None:
    """Ask whichever process runs the reply to stop it (raises if the layer is down)."""
    if not hub().local_only:
        await layer.to_runner(conversation_id, {"type": STOP, "message": message_id})


async def ask_to_fill(conversation_id: Any, message_id: str, *, after: int, address: dict):
    """Ask the process running a reply for the frames after ``after``, for the viewer at
    ``address`` (Subscriber.address)."""
    await layer.to_runner(
        conversation_id, {"type": FILL, "message": message_id, "after": after, **address}
    )


def credential_ended(user_id: Any, *, reason: str, **ends) -> dict:
    """The news that a credential of a user ended: ``ends`` says which (``what`` and its
    value, see live/credentials.py), ``reason`` why (the client is told)."""
    return {"type": ENDED, "user": str(user_id), "reason": reason, "ends": ends}


async def end_credential(message: dict) -> None:
    """End every live connection opened with the credential a ``credential_ended``
    message names, in this process and the others (raises if the layer is down)."""
    await hub().publish_user(message["user"], message)


async def tell_user(user_id: Any, event: events.Event) -> None:
    """An event for every live connection of a user, wherever it is (logged, never
    raised, when the layer is down: it only saves a reload)."""
    message = {"type": USER_EVENT, "user": str(user_id), "json": events.dumps(event)}
    try:
        await hub().publish_user(user_id, message)
    except Exception:
        log.warning("could not tell user %s of %s", user_id, event["type"])
