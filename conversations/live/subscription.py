"""A conversation's live events, received on a channel of this process: what every HTTP
surface streams (streams.py) and what a stop or a non-streaming ``/v1`` answer waits on.

Open it *before* reading what the client is first sent (a snapshot, a reply being
started), so no event falls in between; close it when the stream ends.
"""

import asyncio
import logging
import time

from .. import selectors
from ..models import Message
from . import layer
from .viewer import STALL_CHECK_S

log = logging.getLogger(__name__)


class Subscription:
    """A conversation's group, received on a channel of this process.

    Open it *before* reading what the client is first sent (a snapshot, a reply being
    started), so no event falls in between; close it when the stream ends.
    """

    def __init__(self, conversation_id) -> None:
        self.conversation_id = str(conversation_id)
        self.group = layer.viewers_group(conversation_id)
        self.channel = ""
        self._receiving: asyncio.Future | None = None

    @classmethod
    async def open(cls, conversation_id) -> "Subscription":
        subscription = cls(conversation_id)
        subscription.channel = await layer.new_channel()
        await layer.join(subscription.group, subscription.channel)
        return subscription

    async def receive(self, wait_s: float) -> dict | None:
        """The next message, or None after ``wait_s`` seconds without one.

        A timeout never cancels the receive (cancelling one mid-pop can lose a message,
        see control.py): the next call goes on waiting for the same one.
        """
        if self._receiving is None:
            self._receiving = asyncio.ensure_future(layer.layer().receive(self.channel))
        done, _ = await asyncio.wait({self._receiving}, timeout=wait_s)
        if not done:
            return None
        received, self._receiving = self._receiving, None
        return received.result()

    async def close(self) -> None:
        if self._receiving is not None:
            self._receiving.cancel()
        try:
            await layer.leave(self.group, self.channel)
        except Exception:
            log.warning("could not leave group %s; it expires by itself", self.group)


async def final_message(
    subscription: Subscription, message_id: str, *, patience_s: float | None = None
) -> Message | None:
    """Wait until a reply is saved in a final state; returns it as saved (still
    streaming after ``patience_s``; None if it was deleted).

    Its final event says when; the database is asked too whenever the group is quiet,
    in case the lossy layer dropped that event.
    """
    deadline = None if patience_s is None else time.monotonic() + patience_s
    quiet_s = 1.0 if patience_s is not None else STALL_CHECK_S
    layer_lost = False
    while True:
        message = None
        if layer_lost:
            await asyncio.sleep(quiet_s)
        else:
            try:
                message = await subscription.receive(quiet_s)
            except Exception:
                log.warning("channel layer lost waiting for reply %s; polling", message_id)
                layer_lost = True
        if message is None or (message.get("final") and message.get("message") == message_id):
            reply = await selectors.asaved_message(message_id)
            if reply is None or reply.is_final:
                return reply
            if deadline is not None and time.monotonic() > deadline:
                return reply
