"""Delivery within a process, and the one channel each process holds on the layer.

Every viewer in this process — a WebSocket, an event stream, a wait for a reply's end —
subscribes here to its conversation. An event published in this process reaches them by
a function call, without a channel-layer round trip; it reaches every other process
once, through the conversation's group, which holds the channel of each process with
viewers of it (not one channel per viewer). A user's group carries, the same way, the
control messages for all of a user's connections (a credential ended). The same
channel receives what other processes ask of this process's runs (stop, fill) and the
answers to fills this process's viewers asked for. One listener reads it and is never
cancelled: cancelling a receive mid-pop can lose a message in channels_redis.

With the in-memory layer this process is the only one: nothing goes through the layer.

A subscriber gets its messages through a queue of its own, so a viewer that is busy
(reading a snapshot) never holds up the run that publishes; a queue that overflows
drops, and the viewer recovers as from any loss (a fill, a resync, the stall check).
"""

import asyncio
import itertools
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import InMemoryChannelLayer

from .. import metrics
from ..runs import registry
from . import layer

log = logging.getLogger(__name__)

# Frames a subscriber may have waiting; beyond, it drops (and recovers as from a loss).
INBOX_SIZE = 5000
# Told to every subscriber when the channel layer is lost under this process.
LOST = {"type": "live.lost"}

FRAME = "chat.frame"
STOP = "run.stop"
FILL = "run.fill"
FILLED = "run.filled"
# To every connection of a user, in any process: a credential ended, or an event for
# the user rather than for one conversation (control.py).
ENDED = "credential.ended"
USER_EVENT = "user.event"

_ids = itertools.count(1)
# How long a process trusts what it saw of other processes' viewers of a conversation.
ELSEWHERE_S = 0.25


def _recoverable(message: dict) -> bool:
    """A reply's numbered frame (not its creation, seq 0, nor its end): a viewer that
    misses it sees the gap at the next frame, or gets the whole text with the final
    event."""
    return (
        message.get("type") == FRAME and (message.get("seq") or 0) >= 1 and not message.get("final")
    )


class Subscriber:
    """One viewer's subscription to a conversation: messages for it wait in ``inbox``.
    The owner reads them with ``receive``, or has a task hand them to a function from
    ``hand_over`` on — called once the viewer has sent its client what it starts with
    (a snapshot), so nothing reaches the client before that."""

    def __init__(self, hub: "Hub", conversation_id: str) -> None:
        self.hub = hub
        self.id = next(_ids)
        self.conversation_id = conversation_id
        self.inbox: asyncio.Queue = asyncio.Queue(INBOX_SIZE)
        self.dropped = 0
        self.task = None
        self.user_id: str | None = None  # also hears its user's control messages

    def hand_over(self, on_message: Callable[[dict], Awaitable[None]]) -> None:
        self.task = asyncio.get_running_loop().create_task(self._hand_over(on_message))

    @property
    def address(self) -> dict | None:
        """Where an answer to a fill finds this subscriber, from any process (None when
        this process is the only one)."""
        if self.hub.local_only:
            return None
        return {"reply_to": self.hub.channel, "viewer": self.id}

    def deliver(self, message: dict) -> None:
        try:
            self.inbox.put_nowait(message)
        except asyncio.QueueFull:
            metrics.FRAMES_DROPPED.inc()
            self.dropped += 1
            if self.dropped == 1:
                log.warning("a viewer of %s fell behind; dropping frames", self.conversation_id)

    async def receive(self, wait_s: float) -> dict | None:
        """The next message, or None after ``wait_s`` seconds without one."""
        try:
            async with asyncio.timeout(wait_s):
                return await self.inbox.get()
        except TimeoutError:
            return None

    async def _hand_over(self, on_message: Callable[[dict], Awaitable[None]]) -> None:
        while True:
            message = await self.inbox.get()
            try:
                await on_message(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("a viewer of %s failed on a message", self.conversation_id)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.hub.unsubscribe(self)


class Hub:
    def __init__(self) -> None:
        self.origin = uuid.uuid4().hex  # frames this process published carry it
        self.channel = ""
        self.local_only = isinstance(layer.layer(), InMemoryChannelLayer)
        self.subscribers: dict[str, dict[int, Subscriber]] = {}
        self.by_id: dict[int, Subscriber] = {}
        # Subscribers that hear their user's control messages, by user id.
        self.by_user: dict[str, dict[int, Subscriber]] = {}
        # conversation -> (until when it holds, whether another process has viewers)
        self.elsewhere: dict[str, tuple[float, bool]] = {}
        self.listener: asyncio.Task | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """The process's channel and its listener, once (again after the listener died)."""
        if self.local_only or (self.listener is not None and not self.listener.done()):
            return
        async with self._starting:
            if self.listener is not None and not self.listener.done():
                return
            self.channel = await layer.new_channel()
            self.listener = asyncio.get_running_loop().create_task(self._listen(), name="hub")

    # --- viewers ------------------------------------------------------------------------

    async def subscribe(self, conversation_id: Any) -> Subscriber:
        """Subscribe to a conversation's events (raises when the layer is down). Call it
        before reading what the client is first sent, so no event falls in between."""
        conversation_id = str(conversation_id)
        await self.start()
        subscriber = Subscriber(self, conversation_id)
        local = self.subscribers.setdefault(conversation_id, {})
        first = not local
        local[subscriber.id] = subscriber
        self.by_id[subscriber.id] = subscriber
        if first and not self.local_only:
            try:
                await layer.join(layer.viewers_group(conversation_id), self.channel)
            except BaseException:
                await subscriber.close()
                raise
        return subscriber

    async def watch_user(self, subscriber: Subscriber, user_id: Any) -> None:
        """Let a subscriber also hear its user's control messages (raises when the layer
        is down); they come through its inbox like frames."""
        user_id = str(user_id)
        local = self.by_user.setdefault(user_id, {})
        first = not local
        local[subscriber.id] = subscriber
        subscriber.user_id = user_id
        if first and not self.local_only:
            await layer.join(layer.user_group(user_id), self.channel)

    async def _unwatch_user(self, subscriber: Subscriber) -> None:
        user_id, subscriber.user_id = subscriber.user_id, None
        local = self.by_user.get(user_id, {})
        if local.pop(subscriber.id, None) is None or local:
            return
        del self.by_user[user_id]
        if not self.local_only and self.channel:
            try:
                await layer.leave(layer.user_group(user_id), self.channel)
            except Exception:
                log.warning("could not leave a group; it expires by itself")

    async def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber.user_id is not None:
            await self._unwatch_user(subscriber)
        local = self.subscribers.get(subscriber.conversation_id, {})
        self.by_id.pop(subscriber.id, None)
        if local.pop(subscriber.id, None) is None or local:
            return
        del self.subscribers[subscriber.conversation_id]
        if not self.local_only and self.channel:
            try:
                await layer.leave(layer.viewers_group(subscriber.conversation_id), self.channel)
            except Exception:
                log.warning("could not leave a group; it expires by itself")

    def deliver(self, conversation_id: str, message: dict) -> None:
        for subscriber in list(self.subscribers.get(conversation_id, {}).values()):
            subscriber.deliver(message)

    # --- sending ------------------------------------------------------------------------

    async def publish(self, conversation_id: Any, message: dict) -> None:
        """A frame for every viewer: this process's at once, other processes' through the
        layer (raises when the layer is unreachable; local viewers have it already).

        A reply's numbered frames (text, tool calls) go through the layer only while
        another process has viewers of the conversation: a group send costs four Redis round
        trips, and this process, a member of the group itself, would read its own copy
        back only to drop it. What another process learns late (a viewer there that
        subscribed within ``ELSEWHERE_S``) it notices by the next frame's ``seq`` and
        fills from the run, as after any loss; every other event always goes through."""
        conversation_id = str(conversation_id)
        self.deliver(conversation_id, message)
        if self.local_only:
            return
        if _recoverable(message) and not await self._watched_elsewhere(conversation_id):
            return
        await layer.to_viewers(conversation_id, {**message, "origin": self.origin})

    async def _watched_elsewhere(self, conversation_id: str) -> bool:
        """Whether a process other than this one is in the conversation's viewers group,
        as seen at most ``ELSEWHERE_S`` ago."""
        now = time.monotonic()
        seen = self.elsewhere.get(conversation_id)
        if seen is not None and seen[0] > now:
            return seen[1]
        members = await layer.members(layer.viewers_group(conversation_id))
        watched = any(member != self.channel for member in members)
        if len(self.elsewhere) > 10_000:
            self.elsewhere.clear()
        self.elsewhere[conversation_id] = (now + ELSEWHERE_S, watched)
        return watched

    def deliver_user(self, user_id: str, message: dict) -> None:
        for subscriber in list(self.by_user.get(user_id, {}).values()):
            subscriber.deliver(message)

    async def publish_user(self, user_id: Any, message: dict) -> None:
        """A control message for every connection of a user: this process's at once,
        other processes' through the user's group (raises when the layer is down)."""
        user_id = str(user_id)
        self.deliver_user(user_id, message)
        if not self.local_only:
            await layer.to_user(user_id, {**message, "origin": self.origin})

    async def join_runner(self, conversation_id: Any) -> None:
        """Receive what other processes ask of this conversation's run."""
        await self.start()
        if not self.local_only:
            await layer.join(layer.runner_group(conversation_id), self.channel)

    # --- the listener -------------------------------------------------------------------

    async def _listen(self) -> None:
        lost = False
        while True:
            try:
                message = await layer.layer().receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                if not lost:
                    log.warning("channel layer unreachable; live delivery retries every second")
                    for subscriber in list(self.by_id.values()):
                        subscriber.deliver(LOST)
                lost = True
                await asyncio.sleep(1)
                continue
            lost = False
            try:
                await self._handle(message)
            except Exception:
                log.exception("could not handle a %s message", message.get("type"))

    async def _handle(self, message: dict) -> None:
        kind = message.get("type")
        if kind == FRAME:
            if message.get("origin") != self.origin:  # our own were delivered at once
                self.deliver(message.get("conversation", ""), message)
        elif kind == FILLED:
            if (subscriber := self.by_id.get(message.get("viewer"))) is not None:
                subscriber.deliver(message)
        elif kind in (ENDED, USER_EVENT):
            if message.get("origin") != self.origin:
                self.deliver_user(str(message.get("user")), message)
        elif kind in (STOP, FILL):
            run = registry.local_run(message.get("message"))
            if run is None:
                return
            if kind == STOP:
                run.stop()
            else:
                from .control import filled  # control builds every message; it needs this module

                after = message["after"]
                answer = filled(
                    run.message_id,
                    after=after,
                    frames=run.frames_after(after),
                    viewer=message.get("viewer"),
                )
                await layer.to_channel(message["reply_to"], answer)


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """This process's hub (one per event loop: tests run a loop per test)."""
    loop = asyncio.get_running_loop()
    if (found := _hubs.get(loop)) is None:
        found = _hubs[loop] = Hub()
    return found
