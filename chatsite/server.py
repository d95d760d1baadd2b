"""The server a chatsite worker runs (``manage.py serve``): daphne, with two rules of
chatsite's own about what a worker sends.

- **No limit on what the server sends.** daphne's WebSocket message size limit is there
  to bound what clients send; autobahn, under daphne, applies it to what the server
  sends as well, which closed the socket (1011) of anyone opening a long conversation or
  watching a long reply. Here it bounds only what clients send.
- **A viewer that does not read is let go.** daphne writes whatever the application
  sends into the connection's buffer at once; a client that stops reading (or reads far
  slower than a reply streams) would make that buffer, and the worker's memory, grow
  without end. When a connection still holds more than ``CHAT_VIEWER_MAX_BUFFER_BYTES``
  unsent when the next message is due, it is aborted instead: the page reconnects with
  backoff and resumes from a snapshot, an event stream resumes with ``Last-Event-ID``.

Both reach into daphne's and Twisted's internals (named below); tests/test_server.py
pins each to the versions this was written against.
"""

import logging

from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings

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


class ChatServer(Server):
    # Server.run() makes its WebSocket factory and assigns it here; chatsite's protocol
    # goes in before any connection is made.
    @property
    def ws_factory(self):
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory) -> None:
        factory.protocol = ChatWebSocketProtocol
        self._ws_factory = factory

    async def handle_reply(self, protocol, message):
        if message.get("type") in _DATA_MESSAGES:
            transport = getattr(protocol, "transport", None)
            unsent = unsent_bytes(transport) if transport is not None else None
            if unsent is not None and unsent > settings.CHAT_VIEWER_MAX_BUFFER_BYTES:
                log.warning(
                    "a client fell %d bytes behind what was sent to it; disconnecting it", unsent
                )
                transport.abortConnection()
                return
        return await super().handle_reply(protocol, message)


class ChatCommandLineInterface(CommandLineInterface):
    server_class = ChatServer
