"""chatsite under a real daphne process: HTTP pages and a WebSocket over TCP."""

import asyncio
import json

import httpx
import pytest
import websockets

from conversations.models import Message

from .helpers.protocol import FINAL_TYPES
from .helpers.ws import session_cookie

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
