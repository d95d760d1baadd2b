"""A conversation's live events, read by their consumer: what every HTTP surface streams
(streams.py) and what a stop or a non-streaming ``/v1`` answer waits on.

Open it *before* reading what the client is first sent (a snapshot, a reply being
started), so no event falls in between; close it when the stream ends.
"""

import asyncio
import logging
import time

from .. import selectors
from ..models import Message
from .credentials import Credential
from .hub import ENDED, LOST, USER_EVENT, hub
from .viewer import STALL_CHECK_S

log = logging.getLogger(__name__)


class LiveLost(Exception):
    """The channel layer was lost under this process: events of other processes stop."""


class CredentialEnded(Exception):
    """The credential the stream was opened with ended; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Subscription:
    """A conversation's events, for a stream that reads them itself (live/hub.py)."""

    def __init__(self, subscriber) -> None:
        self.subscriber = subscriber
        self.conversation_id = subscriber.conversation_id
        self.credential: Credential | None = None

    @property
    def address(self) -> dict | None:
        return self.subscriber.address

    @classmethod
    async def open(cls, conversation_id) -> "Subscription":
        return cls(await hub().subscribe(conversation_id))

    async def end_with(self, credential: Credential | None) -> None:
        """End the stream (CredentialEnded from ``receive``) when ``credential`` ends."""
        if credential is None:
            return
        self.credential = credential
        await hub().watch_user(self.subscriber, credential.user_id)

    async def receive(self, wait_s: float) -> dict | None:
        """The next message, or None after ``wait_s`` seconds without one; LiveLost when
        the channel layer went away, CredentialEnded when the stream's credential did."""
        deadline = time.monotonic() + wait_s
        while True:
            message = await self.subscriber.receive(max(0.0, deadline - time.monotonic()))
            if message is LOST:
                raise LiveLost()
            if message is None or message.get("type") not in (ENDED, USER_EVENT):
                return message
            if self.credential is None or message["type"] == USER_EVENT:
                continue
            self.credential = self.credential.after(message["ends"])
            if self.credential is None:
                raise CredentialEnded(message["reason"])

    async def close(self) -> None:
        await self.subscriber.close()


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
