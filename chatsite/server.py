"""The server a chatsite worker runs (``manage.py serve``): daphne, with two rules of
chatsite's own about what a worker sends.

- **No limit on what the server sends.** daphne's WebSocket message size limit is there
  to bound what clients send; autobahn, under daphne, applies it to what the server
  sends as well, which closed the socket (1011) of anyone opening a long conversation or
  watching a long reply. Here it bounds only what clients send.
- **A viewer that does not read is let go.** daphne writes whatever the application
  sends into the connection's buffer at once; a client that stops reading (or reads far
  slower than a reply streams) would make that buffer, and the worker's memory, grow
  without end. A connection that holds more than ``CHAT_VIEWER_MAX_BUFFER_BYTES``
  unsent and has not drained any of it for ``CHAT_VIEWER_STALL_S`` seconds (looked at
  whenever something is sent to it, and every second) is aborted instead: the page
  reconnects with backoff and resumes from a snapshot, an event stream resumes with
  ``Last-Event-ID``. A client that is reading, however slowly, drains and is kept.

Both reach into daphne's and Twisted's internals (named below); tests/test_pins.py
pins each to the versions this was written against.
"""

import ctypes
import logging
import time
from dataclasses import dataclass

from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings

from conversations import metrics

log = logging.getLogger("conversations.server")

# ASGI messages that carry data to a client.
_DATA_MESSAGES = frozenset({"websocket.send", "http.response.body"})


class ChatWebSocketProtocol(WebSocketProtocol):
    def sendMessage(self, payload, *args, **kwargs):
        # autobahn's WebSocketProtocol.sendMessage refuses a payload over
        # maxMessagePayloadSize; that limit is meant for what the client sends.
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            return super().sendMessage(payload, *args, **kwargs)
        finally:
            self.maxMessagePayloadSize = limit


def unsent_bytes(transport) -> int | None:
    """Bytes written to a connection that the kernel has not taken yet, or None for a
    transport of another kind. Twisted's FileDescriptor keeps them in ``dataBuffer``
    (from ``offset`` on) and ``_tempDataBuffer`` (``_tempDataLen`` bytes)."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except (AttributeError, TypeError):
        return None


@dataclass
class _Behind:
    """A connection over the unsent limit, as last looked at."""

    unsent: int
    progress_at: float
    written: int = 0  # bytes handed to it since that look


def _size(message: dict) -> int:
    data = message.get("bytes") or message.get("text") or message.get("body") or b""
    if isinstance(data, str):
        return len(data) if data.isascii() else len(data.encode())
    return len(data)


def _release_free_memory() -> None:
    """Give the memory of freed buffers back to the system (glibc keeps it otherwise)."""
    if _libc is not None:
        _libc.malloc_trim(0)


try:
    _libc = ctypes.CDLL("libc.so.6")
    _libc.malloc_trim  # noqa: B018 - glibc only
except (OSError, AttributeError):
    _libc = None


def discard_unsent(transport) -> None:
    """Drop what an aborted connection still held: the transport may live on a while in
    a reference cycle (until the garbage collector's next full pass), its buffer need not."""
    if unsent_bytes(transport) is not None:
        transport.dataBuffer, transport.offset = b"", 0
        transport._tempDataBuffer, transport._tempDataLen = [], 0


class ChatServer(Server):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.behind: dict = {}  # protocol → _Behind
        self.gone: set = set()  # connections let go, until daphne forgets them
        self.connection_count = 0
        self.released_at = time.monotonic()

    def run(self):
        # The worker's background tasks (the sweeper, webhook deliveries) start with the
        # server, not with its first request.
        from twisted.internet import reactor

        reactor.callLater(0, self.start_worker_tasks)
        super().run()

    @staticmethod
    def start_worker_tasks() -> None:
        from conversations.worker import start_worker_tasks

        start_worker_tasks()

    # Server.run() makes its WebSocket factory and assigns it here; chatsite's protocol
    # goes in before any connection is made.
    @property
    def ws_factory(self):
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory) -> None:
        factory.protocol = ChatWebSocketProtocol
        self._ws_factory = factory

    def let_go_if_behind(self, protocol) -> bool:
        """Abort a connection too far behind; True if it was aborted. Far behind: over
        the limit and taking nothing for CHAT_VIEWER_STALL_S, or over twice the limit."""
        if protocol in self.gone:
            return True
        transport = getattr(protocol, "transport", None)
        unsent = unsent_bytes(transport) if transport is not None else None
        limit = settings.CHAT_VIEWER_MAX_BUFFER_BYTES
        if unsent is None or unsent <= limit:
            self.behind.pop(protocol, None)
            return False
        now = time.monotonic()
        state = self.behind.get(protocol)
        if state is None:
            self.behind[protocol] = _Behind(unsent=unsent, progress_at=now)
            return False
        if unsent < state.unsent + state.written:
            state.progress_at = now  # the network took some of it since the last look
        state.unsent, state.written = unsent, 0
        stalled = now - state.progress_at
        if unsent <= 2 * limit and stalled < settings.CHAT_VIEWER_STALL_S:
            return False
        log.warning(
            "a client fell %d bytes behind what was sent to it (%.1f s without reading); "
            "disconnecting it",
            unsent,
            stalled,
        )
        del self.behind[protocol]
        self.gone.add(protocol)
        metrics.VIEWERS_LET_GO.inc()
        transport.abortConnection()
        discard_unsent(transport)
        return True

    async def handle_reply(self, protocol, message):
        if message.get("type") not in _DATA_MESSAGES:
            return await super().handle_reply(protocol, message)
        if self.let_go_if_behind(protocol):
            return None
        await super().handle_reply(protocol, message)
        if (state := self.behind.get(protocol)) is not None:
            state.written += _size(message)
        return None

    def application_checker(self):
        # daphne calls this every second. A client that stopped reading after a large
        # event (a long reply's final) is let go even if nothing more is sent to it.
        for protocol in list(self.behind):
            if protocol not in self.connections:
                del self.behind[protocol]
        self.gone.intersection_update(self.connections)
        for protocol in list(self.connections):
            self.let_go_if_behind(protocol)
        super().application_checker()
        # Connections ended: what their buffers held goes back to the system.
        now = time.monotonic()
        if len(self.connections) < self.connection_count and now - self.released_at > 2:
            self.released_at = now
            _release_free_memory()
        self.connection_count = len(self.connections)


class ChatCommandLineInterface(CommandLineInterface):
    server_class = ChatServer
