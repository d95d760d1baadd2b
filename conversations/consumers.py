"""The WebSocket surface: ``/ws/conversations/<uuid>/``.

A thin edge. ``ViewerConsumer`` is the read-only part every live view shares (the chat,
and staff's live transcript, which review/consumers.py builds on it): it authorises
the connection, subscribes, sends the snapshot, answers ``resync`` and ``history``, and
passes what the channel layer brings through a Viewer. ``ChatConsumer`` adds what the
conversation's owner may do: send, edit, stop, regenerate, switch branches — parsed here,
done by the services.
"""

import asyncio
import json
import logging
import time
import uuid

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from redis.exceptions import RedisError

from . import errors, events, hooks, metrics, selectors
from .errors import ChatError
from .live import viewer as live_viewer
from .live.credentials import Credential
from .live.hub import ENDED, LOST, USER_EVENT, hub
from .live.viewer import Viewer
from .models import Conversation
from .services import branches, replies

log = logging.getLogger(__name__)

# Close codes sent before any data (the handshake is refused with HTTP 403).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
# Closed after connecting: the channel layer was lost; the client reconnects.
CLOSE_LIVE_LOST = 4503
# Closed after an ``error`` event saying so: the user has too many live connections open.
CLOSE_TOO_MANY_CONNECTIONS = 4429
# Closed after connecting, after a ``session.ended`` event: the credential the
# connection was opened with ended (logout, password change, deactivation, deletion).
CLOSE_SESSION_ENDED = CLOSE_UNAUTHENTICATED


class Refused(Exception):
    """A connection refused before any data, with the close code to send."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class TokenBucket:
    """``burst`` requests at once, then one more every ``interval_s`` seconds."""

    def __init__(self, *, burst: int, interval_s: float):
        self.burst = burst
        self.interval_s = interval_s
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> float:
        """0 when a request may go ahead (and takes its token), else the seconds to wait."""
        now = time.monotonic()
        if self.interval_s > 0:
            self.tokens = min(self.burst, self.tokens + (now - self.at) / self.interval_s)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return round((1 - self.tokens) * self.interval_s, 1)


def message_id_field(request: dict, name: str = "message", *, required: bool) -> str | None:
    """A field of a request that names a message: its id (a UUID), or absent when that
    is allowed."""
    value = request.get(name)
    if value is None and not required:
        return None
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise errors.invalid_field(name, "a message id")


class ViewerConsumer(AsyncWebsocketConsumer):
    """A read-only live view of one conversation."""

    conversation = None
    viewer: Viewer | None = None
    watchdog: asyncio.Task | None = None
    subscriber = None
    credential: Credential | None = None
    counted = False  # in the open-connections gauge
    release = None  # frees this connection's place among its user's (hooks.open_connection)
    # Snapshots and history pages cost a database read and a large frame each.
    expensive: TokenBucket | None = None
    # Held while one thing speaks to the client about the live state: a snapshot (read
    # from the database) must not be overtaken by a final event the hub delivers while
    # it is read, or the client would get a reply's end and then a copy still streaming.
    speaking: asyncio.Lock

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        except (RedisError, OSError):
            # The channel layer went away under the receive loop. Close, so the page
            # reconnects (and resyncs) instead of staying open with no live events.
            log.warning("channel layer lost; closing a viewer so it reconnects")
            await send({"type": "websocket.close", "code": CLOSE_LIVE_LOST})
        finally:
            if self.counted:
                metrics.CONNECTIONS.labels("websocket").dec()
            if self.watchdog is not None:
                self.watchdog.cancel()
            if self.subscriber is not None:
                await self.subscriber.close()
            if self.release is not None:
                await self.release()

    async def find_conversation(self, user, conversation_id) -> Conversation:
        """The conversation this user may watch, or Refused: their own."""
        conversation = await selectors.aconversation_for(user, conversation_id)
        if conversation is None:
            # Another user's conversation looks exactly like one that does not exist.
            raise Refused(CLOSE_NOT_FOUND)
        return conversation

    async def connect(self) -> None:
        user = self.scope["user"]
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        try:
            if not user.is_authenticated:
                raise Refused(CLOSE_UNAUTHENTICATED)
            self.conversation = await self.find_conversation(user, conversation_id)
        except Refused as refused:
            await self.close(code=refused.code)
            return
        self.speaking = asyncio.Lock()
        try:
            self.release = await hooks.open_connection(user.pk, "websocket")
        except ChatError as refused:
            # Said before closing, so the page can tell why it is not live.
            await self.accept()
            await self.send_event(events.refusal(refused))
            await self.close(code=CLOSE_TOO_MANY_CONNECTIONS)
            return
        self.viewer = Viewer(
            conversation_id=self.conversation.id,
            emit=self.send_json_text,
            resync=self.send_snapshot,
        )
        self.expensive = TokenBucket(
            burst=settings.CHAT_RESYNC_BURST, interval_s=settings.CHAT_RESYNC_INTERVAL_S
        )
        await self.accept()
        self.counted = True
        metrics.CONNECTIONS.labels("websocket").inc()
        self.credential = Credential.of_session(user, self.scope.get("session"))
        try:
            # Subscribe before reading the snapshot, so no frame falls between the two.
            self.subscriber = await hub().subscribe(self.conversation.id)
            # The user's control messages come the same way: this connection ends with
            # the session it was opened with.
            await hub().watch_user(self.subscriber, user.pk)
        except Exception:
            # Show what is saved, then close: the page reconnects with backoff and is
            # live again once the layer is back, rather than open and silently stale.
            log.warning(
                "channel layer unreachable; viewer of %s told to retry", self.conversation.id
            )
            await self.send_event(events.refusal(errors.live_retrying()))
            await self.send_snapshot()
            await self.close(code=CLOSE_LIVE_LOST)
            return
        self.viewer.address = self.subscriber.address
        await self.send_snapshot()
        # Frames that came meanwhile waited; those the snapshot covers are dropped now.
        self.subscriber.hand_over(self.on_live)
        self.watchdog = asyncio.create_task(self.watch_stalls())

    async def watch_stalls(self) -> None:
        while True:
            await asyncio.sleep(live_viewer.STALL_CHECK_S)
            try:
                async with self.speaking:
                    await self.viewer.check_stalled()
            except Exception:
                log.warning("stall check failed for a viewer of %s", self.conversation.id)

    async def disconnect(self, code: int) -> None:
        # Leaving never stops a reply: the run belongs to the server, not the socket.
        if self.subscriber is not None:
            await self.subscriber.close()

    # --- client → server ----------------------------------------------------------------

    def handlers(self) -> dict:
        """What this consumer answers, by event type."""
        return {events.RESYNC: self.on_resync, events.HISTORY_REQUEST: self.on_history}

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        client_id = None
        try:
            request = json.loads(text_data) if text_data is not None else None
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            request = None
        try:
            if request is None:
                raise ChatError(errors.INVALID_JSON)
            if isinstance(request.get("client_id"), str):
                client_id = request["client_id"]
            handler = self.handlers().get(request.get("type"))
            if handler is None:
                raise errors.unknown_type(request.get("type"))
            await handler(request)
        except ChatError as exc:
            await self.send_event(events.refusal(exc, client_id))

    def check_rate(self) -> None:
        wait = self.expensive.take()
        if wait:
            raise errors.rate_limited(wait)

    async def on_resync(self, request: dict) -> None:
        self.check_rate()
        async with self.speaking:
            await self.send_snapshot()

    async def on_history(self, request: dict) -> None:
        before = message_id_field(request, "before", required=True)
        self.check_rate()
        page = await selectors.history(self.conversation.id, before)
        if page is None:
            raise errors.no_such_message()
        await self.send_event(page)

    # --- server → client ----------------------------------------------------------------

    async def send_snapshot(self) -> None:
        snapshot = await selectors.snapshot(self.conversation.id)
        if snapshot is None:
            await self.send_event(events.refusal(errors.deleted()))
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.viewer.reset(snapshot)
        await self.send_event(snapshot)

    async def send_event(self, event: events.Event) -> None:
        await self.send(text_data=events.dumps(event))

    async def send_json_text(self, text: str) -> None:
        await self.send(text_data=text)

    # --- live events → client -----------------------------------------------------------

    async def on_live(self, message: dict) -> None:
        """What the hub brings this viewer: frames, fill answers, its user's control
        messages — or the news that the channel layer is gone, when the page must
        reconnect to be live again."""
        if message is LOST:
            log.warning("channel layer lost; closing a viewer so it reconnects")
            await self.close(code=CLOSE_LIVE_LOST)
            return
        async with self.speaking:
            if message.get("type") == USER_EVENT:
                await self.send_json_text(message["json"])
            elif message.get("type") == ENDED:
                await self.on_credential_ended(message)
            else:
                await self.viewer.on_message(message)

    async def on_credential_ended(self, message: dict) -> None:
        """A credential of this user ended: if it is this connection's, say so and close;
        if this connection's session changed the password, follow it to its new key."""
        if self.credential is None:
            return
        self.credential = self.credential.after(message["ends"])
        if self.credential is None:
            await self.send_event(events.session_ended(message["reason"]))
            await self.close(code=CLOSE_SESSION_ENDED)

    async def dispatch(self, message: dict) -> None:
        # Channels closes stale database connections before it dispatches any message:
        # a hop to the one ORM thread per message from the client, queued behind every
        # ORM call of the process. Every ORM call of this consumer goes through
        # database_sync_to_async, which closes stale connections itself, so messages are
        # handled directly.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)


class ChatConsumer(ViewerConsumer):
    """The owner's live view, from which they also send, stop and regenerate."""

    def handlers(self) -> dict:
        return {
            **super().handlers(),
            events.MESSAGE_SEND: self.on_send,
            events.REPLY_STOP: self.on_stop,
            events.REPLY_REGENERATE: self.on_regenerate,
            events.MESSAGE_EDIT: self.on_edit,
            events.BRANCH_SELECT: self.on_branch_select,
        }

    async def on_send(self, request: dict) -> None:
        exchange = await replies.reply_start(
            conversation=self.conversation,
            content=request.get("content"),
            client_id=request.get("client_id"),
            model=request.get("model"),
        )
        await self.answer_repeat(request, exchange)

    async def on_edit(self, request: dict) -> None:
        exchange = await replies.reply_edit(
            conversation=self.conversation,
            message_id=message_id_field(request, required=True),
            content=request.get("content"),
            client_id=request.get("client_id"),
            model=request.get("model"),
        )
        await self.answer_repeat(request, exchange)

    async def answer_repeat(self, request: dict, exchange: replies.Exchange) -> None:
        if not exchange.created:
            # A retry of a send that already happened: answer with what it created, as
            # far as this client does not hold it already.
            client_id = request["client_id"]
            async with self.speaking:
                await self.send_event(events.message_created(exchange.user_message, client_id))
                reply = exchange.reply
                if reply is None or self.viewer.has_ended(str(reply.id)):
                    return
                if reply.is_final:
                    final = events.dumps(events.message_final(reply))
                    await self.viewer.emit_final(final, str(reply.id))
                else:
                    await self.send_event(events.reply_started(reply, client_id))

    async def on_stop(self, request: dict) -> None:
        message_id = message_id_field(request, required=False)
        await replies.reply_stop(conversation=self.conversation, message_id=message_id)

    async def on_regenerate(self, request: dict) -> None:
        message_id = message_id_field(request, required=True)
        await replies.reply_regenerate(
            conversation=self.conversation, message_id=message_id, model=request.get("model")
        )

    async def on_branch_select(self, request: dict) -> None:
        message_id = message_id_field(request, required=True)
        await branches.branch_select(conversation=self.conversation, message_id=message_id)


class NoSuchPath(AsyncWebsocketConsumer):
    """Any other WebSocket path: refused at the handshake (HTTP 403), like a
    conversation that does not exist, instead of an error in the router."""

    async def connect(self) -> None:
        await self.close(code=CLOSE_NOT_FOUND)
