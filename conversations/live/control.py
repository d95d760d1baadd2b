"""The messages between processes, built and read here only, and the one listener that
answers them.

- ``chat.frame``: one event for every viewer of a conversation (``frame``), with what a
  viewer needs to route it: the reply it belongs to, its ``seq``, whether it ends it.
- ``run.stop``: to the process running a reply: stop it.
- ``run.fill``: to the process running a reply: send a viewer the frames after a seq.
- ``run.filled``: the answer, to that viewer's channel.

The listener: one per process, never cancelled. channels_redis receives all of a
process's channels through one blocking pop, and cancelling a receive mid-pop can lose
a message meant for another channel of the process (a viewer's frame). Each run adds
the process's channel to its conversation's runner group; memberships are kept
(group_expiry drops them), so two runs of one conversation in a row never race on a
discard.
"""

import asyncio
import logging
from typing import Any

from .. import events
from ..runs import registry
from . import layer

log = logging.getLogger(__name__)

FRAME = "chat.frame"
STOP = "run.stop"
FILL = "run.fill"
FILLED = "run.filled"


# --- building ---------------------------------------------------------------------------------


def frame(event: events.Event) -> dict:
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
        "json": events.dumps(event),
        "message": message_id,
        "seq": seq,
        "final": kind in events.FINAL_EVENT_TYPES,
    }


def stop(message_id: str) -> dict:
    return {"type": STOP, "message": message_id}


def fill(message_id: str, *, after: int, reply_to: str) -> dict:
    return {"type": FILL, "message": message_id, "after": after, "reply_to": reply_to}


def filled(message_id: str, *, after: int, frames: list[str]) -> dict:
    return {"type": FILLED, "message": message_id, "after": after, "frames": frames}


# --- sending ----------------------------------------------------------------------------------


async def publish(conversation_id: Any, event: events.Event) -> bool:
    """Tell every viewer of a conversation; False when the channel layer is unreachable
    (logged, never raised: the database holds the durable copy)."""
    try:
        await layer.to_viewers(conversation_id, frame(event))
    except Exception:
        log.warning("could not publish %s for conversation %s", event["type"], conversation_id)
        return False
    return True


async def ask_to_stop(conversation_id: Any, message_id: str) -> None:
    """Ask whichever process runs the reply to stop it (raises if the layer is down)."""
    await layer.to_runner(conversation_id, stop(message_id))


async def ask_to_fill(conversation_id: Any, message_id: str, *, after: int, reply_to: str):
    await layer.to_runner(conversation_id, fill(message_id, after=after, reply_to=reply_to))


# --- the listener -----------------------------------------------------------------------------

_control: dict = {"loop": None, "channel": None, "task": None}


async def runner_channel() -> str:
    """This process's channel for runner groups, its listener started on first use."""
    loop = asyncio.get_running_loop()
    if _control["loop"] is not loop or _control["task"].done():
        channel = await layer.new_channel()
        _control.update(
            loop=loop,
            channel=channel,
            task=loop.create_task(_listen(channel), name="run-control"),
        )
    return _control["channel"]


async def _listen(channel: str) -> None:
    """Answer other processes: stop a run, or resend frames a viewer missed."""
    while True:
        try:
            request = await layer.layer().receive(channel)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("channel layer unreachable; control listener retries in 1 s")
            await asyncio.sleep(1)
            continue
        run = registry.local_run(request.get("message"))
        if run is None:
            continue
        if request["type"] == STOP:
            run.stop()
        elif request["type"] == FILL:
            after = request["after"]
            answer = filled(run.message_id, after=after, frames=run.frames_after(after))
            try:
                await layer.to_channel(request["reply_to"], answer)
            except Exception:
                log.warning("could not answer a fill for reply %s", run.message_id)
