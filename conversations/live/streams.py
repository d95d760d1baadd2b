"""What an HTTP surface streams: a Viewer of the conversation whose events queue up until
the response's generator yields them — one exchange (``follow_reply``: the reply to a
send, then the end) or everything (``live_events``: a snapshot, or a resume after
``Last-Event-ID``, then every event as it happens). Framing is sse.py's."""

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import errors, events, selectors
from ..models import Message
from .subscription import CredentialEnded, Subscription
from .viewer import STALL_CHECK_S, Viewer

if TYPE_CHECKING:
    from ..services.replies import Exchange

log = logging.getLogger(__name__)

# A stream silent this long gets a ping (an SSE comment), so proxies keep it open.
HEARTBEAT_S = 15.0


@dataclass
class Item:
    """What a stream yields: an event (its JSON text and the parsed object), or a ping
    when ``event`` is None."""

    text: str = ""
    event: events.Event | None = None


class _Stream:
    """A Viewer whose events queue up here until the stream's generator yields them."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.conversation_id = subscription.conversation_id
        self.queue: list[str] = []
        self.viewer = Viewer(
            conversation_id=self.conversation_id,
            emit=self.emit,
            resync=self.resync,
        )
        self.viewer.address = subscription.address
        self.written_at = time.monotonic()
        self.ended = False

    async def emit(self, text: str) -> None:
        self.queue.append(text)

    def send(self, event: events.Event) -> None:
        self.queue.append(events.dumps(event))

    async def send_final(self, reply: Message) -> None:
        """A reply's final event as the database holds it; once, like every final."""
        await self.viewer.emit_final(events.dumps(events.message_final(reply)), str(reply.id))

    async def resync(self) -> None:
        snapshot = await selectors.snapshot(self.conversation_id)
        if snapshot is None:
            self.send(events.refusal(errors.deleted()))
            self.ended = True
            return
        self.viewer.reset(snapshot)
        self.send(snapshot)

    def end(self, reason: str) -> None:
        """The stream's credential ended: say so, and end the stream."""
        self.send(events.session_ended(reason))
        self.ended = True

    def drain(self) -> list[Item]:
        items = [Item(text, events.loads(text)) for text in self.queue]
        self.queue.clear()
        if items:
            self.written_at = time.monotonic()
        return items

    async def wait(self) -> Item | None:
        """Take in what the group sends for up to a stall-check period; a ping when the
        client has been sent nothing for HEARTBEAT_S."""
        message = await self.subscription.receive(STALL_CHECK_S)
        if message is None:
            await self.viewer.check_stalled()
        else:
            await self.viewer.on_message(message)
        if not self.queue and time.monotonic() - self.written_at >= HEARTBEAT_S:
            self.written_at = time.monotonic()
            return Item()
        return None


async def follow_reply(subscription: Subscription, exchange: "Exchange") -> AsyncIterator[Item]:
    """The events of one exchange — its two ``message.created``, the reply's tokens and
    its one final event — then the end. Pings when idle.

    A retried send (``exchange.created`` False) gets the same: the reply is sent from
    its first token again, or with its final event if it ended.
    """
    stream = _Stream(subscription)
    reply_id = str(exchange.reply.id)
    ours = {str(exchange.user_message.id), reply_id}
    client_id = exchange.user_message.client_id
    if not exchange.created:
        stream.send(events.message_created(exchange.user_message, client_id))
        reply = await selectors.asaved_message(reply_id)
        if reply is None or reply.is_final:
            await _send_end(stream, reply)
        else:
            placeholder = copy.copy(reply)
            placeholder.content, placeholder.seq = "", 0  # the reply as it was created
            stream.send(events.message_created(placeholder, client_id))
            stream.viewer.resume(reply_id, 0)
            await stream.viewer.catch_up(reply_id)
    layer_lost = False
    while True:
        for item in stream.drain():
            if _concerns(item.event, ours):
                yield item
            if (
                item.event["type"] in events.FINAL_EVENT_TYPES
                and item.event["message"]["id"] == reply_id
            ):
                return
        if stream.ended:
            return
        if layer_lost:
            # No live events: the database tells when the reply ends.
            await asyncio.sleep(1)
            reply = await selectors.asaved_message(reply_id)
            if reply is None or reply.is_final:
                await _send_end(stream, reply)
            elif time.monotonic() - stream.written_at >= HEARTBEAT_S:
                stream.written_at = time.monotonic()
                yield Item()
            continue
        try:
            ping = await stream.wait()
        except CredentialEnded as ended:
            stream.end(ended.reason)
            continue
        except Exception:
            log.warning("channel layer lost under a stream of reply %s; polling", reply_id)
            layer_lost = True
            continue
        if ping is not None:
            yield ping


async def _send_end(stream: _Stream, reply: Message | None) -> None:
    if reply is None:
        stream.send(events.refusal(errors.deleted()))
        stream.ended = True
    else:
        await stream.send_final(reply)


def _concerns(event: events.Event, ours: set[str]) -> bool:
    """Whether an event of the conversation belongs in one exchange's stream."""
    kind = event["type"]
    if kind in events.NUMBERED_TYPES:
        return event["message"] in ours
    if kind == events.MESSAGE_CREATED or kind in events.FINAL_EVENT_TYPES:
        return event["message"]["id"] in ours
    return True  # conversation.updated, a snapshot after a loss, an error


async def live_events(
    subscription: Subscription, resume: tuple[str, int | None] | None = None
) -> AsyncIterator[Item]:
    """Every event of a conversation, for as long as the client listens.

    It starts with a snapshot; with a Last-Event-ID it starts right after that event
    instead: the rest of a streaming reply's tokens, or the final event of one that
    ended meanwhile (a snapshot follows when more happened since).
    """
    stream = _Stream(subscription)
    if not await _resume(stream, resume):
        await stream.resync()
    while True:
        for item in stream.drain():
            yield item
        if stream.ended:
            return
        try:
            ping = await stream.wait()
        except CredentialEnded as ended:
            stream.end(ended.reason)
            continue
        except Exception:
            log.warning("channel layer lost under a live stream; the client reconnects")
            stream.send(events.refusal(errors.live_lost()))
            stream.ended = True
            continue
        if ping is not None:
            yield ping


async def _resume(stream: _Stream, resume: tuple[str, int | None] | None) -> bool:
    if resume is None:
        return False
    message_id, seq = resume
    found = await selectors.aresume_point(stream.conversation_id, message_id)
    if found is None:
        return False
    reply, newer = found
    if reply.is_final:
        if seq is not None:  # the client has not had the final event
            await stream.send_final(reply)
        else:
            stream.viewer.ended.add(message_id)  # it has: nothing more of this reply
        if newer:
            await stream.resync()
        return True
    if seq is None:
        return False
    stream.viewer.resume(message_id, seq)
    await stream.viewer.catch_up(message_id)
    return True
