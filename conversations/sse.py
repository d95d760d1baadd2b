"""Live events over HTTP: Server-Sent Events framing, and the subscription behind every
HTTP stream (the SSE views of the API and the OpenAI-compatible stream).

Framing (DESIGN.md): ``event: <type>``, ``id:`` where a client can resume from the
event, ``data: <the event's JSON>``, and a ``: ping`` comment after 15 s of silence.
The ids are ``<reply>:<seq>`` on a reply's ``message.created`` (seq 0) and on its
tokens, and ``<reply>:final`` on its final event, so a ``Last-Event-ID`` always says
whether the client still lacks the final event. The events come from events.py as they
are; a stream is a Viewer (viewers.py) of the conversation's group, like a WebSocket.
"""

import asyncio
import copy
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.http import StreamingHttpResponse

from . import events, runs, selectors, viewers
from .models import Message
from .services import Exchange

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/event-stream"
# no-transform and X-Accel-Buffering keep proxies (nginx) from buffering or compressing.
HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
HEARTBEAT_S = 15.0
PING = ": ping\n\n"
# Sent first: daphne sends the response head with the first bytes of the body, and a
# client should know at once that it is subscribed, even before any event.
OPENING = ": ok\n\n"
FINAL_MARK = "final"

# Characters str.splitlines() breaks lines at although SSE does not. JSON may escape
# them, so a client that reads lines the Python way never sees an event cut in two.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


# --- framing ------------------------------------------------------------------------------


def frame(data: str, *, event: str | None = None, id: str | None = None) -> str:
    """One SSE message whose data is one line of JSON (or OpenAI's ``[DONE]``)."""
    head = (f"event: {event}\n" if event else "") + (f"id: {id}\n" if id else "")
    return f"{head}data: {data.translate(_LINE_BREAKS)}\n\n"


def event_id(event: events.Event) -> str | None:
    """The ``id:`` of an event a client can resume after, else None."""
    kind = event["type"]
    if kind == events.TOKEN:
        return f"{event['message']}:{event['seq']}"
    if kind == events.MESSAGE_CREATED and event["message"]["status"] == "streaming":
        return f"{event['message']['id']}:{event['message']['seq']}"
    if kind in events.FINAL_EVENT_TYPES:
        return f"{event['message']['id']}:{FINAL_MARK}"
    return None


def encode(text: str, event: events.Event) -> str:
    return frame(text, event=event["type"], id=event_id(event))


# A seq has at most this many digits; a longer one is not an id this server sent.
SEQ_DIGITS = 9


def parse_last_event_id(value: str | None) -> tuple[str, int | None] | None:
    """``<message>:<seq>`` → (message, seq); ``<message>:final`` → (message, None); None
    for anything else, which the stream treats as no Last-Event-ID (a fresh snapshot)."""
    message_id, _, mark = (value or "").strip().rpartition(":")
    try:
        message_id = str(uuid.UUID(message_id))
    except ValueError:
        return None
    if mark == FINAL_MARK:
        return message_id, None
    if mark.isascii() and mark.isdigit() and len(mark) <= SEQ_DIGITS:
        return message_id, int(mark)
    return None


def wants_event_stream(request) -> bool:
    return CONTENT_TYPE in request.headers.get("Accept", "")


def response(chunks: AsyncIterator[str], *, headers: dict | None = None) -> StreamingHttpResponse:
    """A streamed response, each chunk written as it comes.

    It must be an async iterator: under ASGI Django buffers a sync one whole. It says
    what it is (``text/event-stream``, no-transform) so that no middleware or proxy
    compresses or buffers it.
    """
    return StreamingHttpResponse(
        chunks, content_type=CONTENT_TYPE, headers={**HEADERS, **(headers or {})}
    )


# --- the subscription ---------------------------------------------------------------------


class Subscription:
    """A conversation's group, received on a channel of this process.

    Open it *before* reading what the client is first sent (a snapshot, a reply being
    started), so no event falls in between; close it when the stream ends.
    """

    def __init__(self, conversation_id) -> None:
        self.conversation_id = str(conversation_id)
        self.group = runs.group_name(conversation_id)
        self.layer = get_channel_layer()
        self.channel = ""
        self._receiving: asyncio.Future | None = None

    @classmethod
    async def open(cls, conversation_id) -> "Subscription":
        subscription = cls(conversation_id)
        # The default prefix: channels_redis receives all of a process's channels
        # through one pop on it.
        subscription.channel = await subscription.layer.new_channel()
        await subscription.layer.group_add(subscription.group, subscription.channel)
        return subscription

    async def receive(self, wait_s: float) -> dict | None:
        """The next message, or None after ``wait_s`` seconds without one.

        A timeout never cancels the receive (cancelling one mid-pop can lose a message,
        see runs.py): the next call goes on waiting for the same one.
        """
        if self._receiving is None:
            self._receiving = asyncio.ensure_future(self.layer.receive(self.channel))
        done, _ = await asyncio.wait({self._receiving}, timeout=wait_s)
        if not done:
            return None
        received, self._receiving = self._receiving, None
        return received.result()

    async def close(self) -> None:
        if self._receiving is not None:
            self._receiving.cancel()
        try:
            await self.layer.group_discard(self.group, self.channel)
        except Exception:
            log.warning("could not leave group %s; it expires by itself", self.group)


# --- streams ------------------------------------------------------------------------------


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
        self.viewer = viewers.Viewer(
            conversation_id=self.conversation_id,
            channel_name=subscription.channel,
            emit=self.emit,
            resync=self.resync,
        )
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
            self.send(events.error("not_found", "This conversation was deleted."))
            self.ended = True
            return
        self.viewer.reset(snapshot)
        self.send(snapshot)

    def drain(self) -> list[Item]:
        items = [Item(text, json.loads(text)) for text in self.queue]
        self.queue.clear()
        if items:
            self.written_at = time.monotonic()
        return items

    async def wait(self) -> Item | None:
        """Take in what the group sends for up to a stall-check period; a ping when the
        client has been sent nothing for HEARTBEAT_S."""
        message = await self.subscription.receive(viewers.STALL_CHECK_S)
        if message is None:
            await self.viewer.check_stalled()
        elif message["type"] == "chat.frame":
            await self.viewer.on_frame(message)
        elif message["type"] == "run.filled":
            await self.viewer.on_filled(message)
        if not self.queue and time.monotonic() - self.written_at >= HEARTBEAT_S:
            self.written_at = time.monotonic()
            return Item()
        return None


@database_sync_to_async
def _saved(message_id: str) -> Message | None:
    return Message.objects.filter(pk=message_id).first()


async def final_message(
    subscription: Subscription, message_id: str, *, patience_s: float | None = None
) -> Message | None:
    """Wait until a reply is saved in a final state; returns it as saved (still
    streaming after ``patience_s``; None if it was deleted).

    Its final event says when; the database is asked too whenever the group is quiet,
    in case the lossy layer dropped that event.
    """
    deadline = None if patience_s is None else time.monotonic() + patience_s
    quiet_s = 1.0 if patience_s is not None else viewers.STALL_CHECK_S
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
        if message is None or (message.get("final") and message_id in message["json"]):
            reply = await _saved(message_id)
            if reply is None or reply.is_final:
                return reply
            if deadline is not None and time.monotonic() > deadline:
                return reply


async def follow_reply(subscription: Subscription, exchange: Exchange) -> AsyncIterator[Item]:
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
        reply = await _saved(reply_id)
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
            reply = await _saved(reply_id)
            if reply is None or reply.is_final:
                await _send_end(stream, reply)
            elif time.monotonic() - stream.written_at >= HEARTBEAT_S:
                stream.written_at = time.monotonic()
                yield Item()
            continue
        try:
            ping = await stream.wait()
        except Exception:
            log.warning("channel layer lost under a stream of reply %s; polling", reply_id)
            layer_lost = True
            continue
        if ping is not None:
            yield ping


async def _send_end(stream: _Stream, reply: Message | None) -> None:
    if reply is None:
        stream.send(events.error("not_found", "This conversation was deleted."))
        stream.ended = True
    else:
        await stream.send_final(reply)


def _concerns(event: events.Event, ours: set[str]) -> bool:
    """Whether an event of the conversation belongs in one exchange's stream."""
    kind = event["type"]
    if kind == events.TOKEN:
        return event["message"] in ours
    if kind == events.MESSAGE_CREATED or kind in events.FINAL_EVENT_TYPES:
        return event["message"]["id"] in ours
    return True  # conversation.updated, a snapshot after a loss, an error


@database_sync_to_async
def _resume_point(conversation_id: str, message_id: str) -> tuple[Message, bool] | None:
    """The reply a Last-Event-ID names, and whether anything was added after it."""
    try:
        message_id = uuid.UUID(message_id)
    except ValueError:
        return None
    reply = Message.objects.filter(
        pk=message_id, conversation_id=conversation_id, role=Message.Role.ASSISTANT
    ).first()
    if reply is None:
        return None
    newer = Message.objects.filter(
        conversation_id=conversation_id, created_at__gt=reply.created_at
    ).exists()
    return reply, newer


async def live_events(
    subscription: Subscription, last_event_id: str | None = None
) -> AsyncIterator[Item]:
    """Every event of a conversation, for as long as the client listens.

    It starts with a snapshot; with a Last-Event-ID it starts right after that event
    instead: the rest of a streaming reply's tokens, or the final event of one that
    ended meanwhile (a snapshot follows when more happened since).
    """
    stream = _Stream(subscription)
    if not await _resume(stream, parse_last_event_id(last_event_id)):
        await stream.resync()
    while True:
        for item in stream.drain():
            yield item
        if stream.ended:
            return
        try:
            ping = await stream.wait()
        except Exception:
            log.warning("channel layer lost under a live stream; the client reconnects")
            stream.send(
                events.error("live_unavailable", "Live updates broke off; reconnect to resume.")
            )
            stream.ended = True
            continue
        if ping is not None:
            yield ping


async def _resume(stream: _Stream, resume: tuple[str, int | None] | None) -> bool:
    if resume is None:
        return False
    message_id, seq = resume
    found = await _resume_point(stream.conversation_id, message_id)
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
