"""chatsite under a real daphne process: HTTP pages and a WebSocket over TCP."""

import asyncio
import json

import httpx
import pytest
import websockets

from conversations.models import Message

from .conftest import FINAL_TYPES, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def test_pages_require_a_login(daphne_server):
    response = httpx.get(f"{daphne_server.url}/", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"].startswith("/login/")
    assert httpx.get(f"{daphne_server.url}/login/").status_code == 200


async def test_a_reply_streams_over_a_real_websocket(daphne_server, user, conversation):
    cookie = await session_cookie(user)
    async with websockets.connect(
        f"{daphne_server.ws_url}/ws/conversations/{conversation.id}/",
        additional_headers={"Cookie": f"sessionid={cookie}", "Origin": daphne_server.url},
    ) as ws:
        snapshot = json.loads(await ws.recv())
        assert snapshot["type"] == "snapshot"
        await ws.send(json.dumps({"type": "message.send", "content": "over TCP"}))
        tokens, final = [], None
        async with asyncio.timeout(20):
            while final is None:
                event = json.loads(await ws.recv())
                if event["type"] == "token":
                    tokens.append(event)
                elif event["type"] in FINAL_TYPES:
                    final = event
    assert [t["seq"] for t in tokens] == list(range(1, len(tokens) + 1))
    text = "".join(t["content"] for t in tokens)
    assert final["type"] == "message.completed"
    assert final["message"]["content"] == text
    saved = await Message.objects.aget(pk=final["message"]["id"])
    assert saved.content == text


async def test_an_oversized_frame_is_refused_by_daphne_not_the_app(
    daphne_server, user, conversation, settings
):
    cookie = await session_cookie(user)
    async with websockets.connect(
        f"{daphne_server.ws_url}/ws/conversations/{conversation.id}/",
        additional_headers={"Cookie": f"sessionid={cookie}", "Origin": daphne_server.url},
        max_size=None,
    ) as ws:
        await ws.recv()
        huge = "x" * (settings.CHAT_MAX_MESSAGE_CHARS * 12 + 10_000)
        await ws.send(json.dumps({"type": "message.send", "content": huge}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
    # daphne drops the connection (or closes it with 1009, "message too big").
    assert closed.value.rcvd is None or closed.value.rcvd.code == 1009
    assert await Message.objects.acount() == 0


# --- what chatsite/server.py relies on in daphne, autobahn and Twisted -------------------
# Written against daphne 4.2.3, autobahn 26.10.2 and Twisted 26.10.0. When an upgrade
# changes one of these, the test says which, and chatsite/server.py needs a look.


def test_daphne_assigns_its_websocket_factory_and_checks_applications_every_second():
    import inspect

    from daphne.server import Server

    run = inspect.getsource(Server.run)
    assert "self.ws_factory = WebSocketFactory(" in run, "daphne's Server.run changed"
    assert "callLater(1, self.application_checker)" in inspect.getsource(
        Server.application_checker
    ), "daphne no longer checks its applications every second"
    assert inspect.iscoroutinefunction(Server.handle_reply), "daphne's handle_reply changed"


def test_autobahn_applies_the_message_size_limit_to_sends():
    import inspect

    from autobahn.websocket.protocol import WebSocketProtocol

    source = inspect.getsource(WebSocketProtocol.sendMessage)
    assert "self.maxMessagePayloadSize" in source, (
        "autobahn's sendMessage no longer reads maxMessagePayloadSize: "
        "ChatWebSocketProtocol.sendMessage may no longer be needed"
    )


def test_twisted_keeps_unsent_bytes_where_chatsite_reads_them():
    from twisted.internet import abstract

    from chatsite.server import discard_unsent, unsent_bytes

    transport = abstract.FileDescriptor()
    assert unsent_bytes(transport) == 0
    transport._tempDataBuffer.append(b"x" * 10)
    transport._tempDataLen += 10
    assert unsent_bytes(transport) == 10, "Twisted's FileDescriptor buffers changed"
    discard_unsent(transport)
    assert unsent_bytes(transport) == 0
