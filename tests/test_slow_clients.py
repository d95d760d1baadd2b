"""Clients that do not read cannot make a worker's memory grow without bound: a viewer
that falls more than ``CHAT_VIEWER_MAX_BUFFER_BYTES`` behind is disconnected (it
reconnects and resumes), and snapshots are rate-limited per connection.

The memory test measures a real worker's resident memory (``VmRSS``) before, during
and after 20 event streams and 20 WebSockets that never read while three 2 MB replies
stream; the figures are printed (``pytest -s``) and quoted in the README.
"""

import asyncio
import base64
import os
import socket
from pathlib import Path

import httpx
import pytest
from asgiref.sync import sync_to_async
from httpx_sse import connect_sse

from conversations.models import Conversation, Message
from conversations.services.conversations import conversation_create

from .helpers.api import bearer, new_key, read_events, stub_env
from .helpers.servers import start_daphne
from .helpers.ws import connect, receive, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024
NON_READERS = 20
REPLY_CHARS = 2_000_000


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def stalled_socket(port: int, request: bytes) -> socket.socket:
    """A client that sends its request and then never reads: a small receive buffer, so
    the server's side fills up as it would over a slow network."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def sse_request(port: int, conversation_id, key: str) -> bytes:
    return (
        f"GET /api/conversations/{conversation_id}/events HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()


def ws_request(port: int, conversation_id, cookie: str) -> bytes:
    nonce = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws/conversations/{conversation_id}/ HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: http://127.0.0.1:{port}\r\nCookie: sessionid={cookie}\r\n\r\n"
    ).encode()


def was_let_go(sock: socket.socket, timeout: float = 10) -> bool:
    """Read what the server had sent until the connection ends: True when the server
    closed or reset it (it let the client go), False if it is still open."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


@pytest.fixture
def worker(django_db_setup, stub_server):
    server = start_daphne(env=stub_env(stub_server), name="slow-clients")
    yield server
    server.stop()


async def test_clients_that_do_not_read_do_not_grow_the_workers_memory(worker, user):
    conversation = await sync_to_async(conversation_create)(
        owner=user, source=Conversation.Source.API
    )
    key = await sync_to_async(new_key)(user)
    cookie = await session_cookie(user)
    pid = worker.process.pid
    # Warm up: one ordinary reply, so the worker has loaded what it needs.
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(
            f"{worker.url}/api/conversations/{conversation.id}/messages",
            headers=bearer(key),
            json={"content": "tokens=50"},
        )
        assert response.status_code == 202
    await asyncio.sleep(1)
    before = rss(pid)

    sockets = [
        stalled_socket(worker.port, sse_request(worker.port, conversation.id, key))
        for _ in range(NON_READERS)
    ] + [
        stalled_socket(worker.port, ws_request(worker.port, conversation.id, cookie))
        for _ in range(NON_READERS)
    ]
    peak = rss(pid)
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())

    def three_long_replies() -> list[str]:
        texts = []
        with httpx.Client(timeout=120) as client:
            for _ in range(3):
                with connect_sse(
                    client,
                    "POST",
                    f"{worker.url}/api/conversations/{conversation.id}/messages",
                    headers=bearer(key),
                    json={"content": f"chars={REPLY_CHARS} gap_ms=1"},
                ) as source:
                    received = read_events(source)
                texts.append(received[-1]["message"]["content"])
        return texts

    texts = await asyncio.to_thread(three_long_replies)
    await asyncio.sleep(5)  # daphne's once-a-second check lets go of the rest
    sampling = False
    await sampler
    let_go = [await asyncio.to_thread(was_let_go, sock) for sock in sockets]
    for sock in sockets:
        sock.close()
    await asyncio.sleep(2)
    after = rss(pid)

    print(
        f"\nworker RSS: {before / MiB:.0f} MiB before, {peak / MiB:.0f} MiB at most while "
        f"{2 * NON_READERS} clients did not read three {REPLY_CHARS:,}-character replies, "
        f"{after / MiB:.0f} MiB after they closed"
    )
    saved = await sync_to_async(list)(
        Message.objects.filter(conversation=conversation, role="assistant").order_by("created_at")
    )
    assert [m.status for m in saved] == ["completed"] * 4
    assert [len(t) for t in texts] == [REPLY_CHARS] * 3
    assert all(let_go), f"{let_go.count(False)} non-reading clients were never let go"
    # A non-reader holds at most twice CHAT_VIEWER_MAX_BUFFER_BYTES (1 MiB) unsent before
    # it is let go, and the replies themselves live in memory while they stream. Without
    # the limit, 20 non-reading event streams alone grew a worker by 370 MiB, and it
    # kept all of it after they closed.
    assert peak - before < 250 * MiB
    assert after - before < 64 * MiB


async def test_snapshots_are_rate_limited_per_connection(settings, user, conversation):
    settings.CHAT_RESYNC_BURST = 3
    settings.CHAT_RESYNC_INTERVAL_S = 10
    ws = await connect(user, conversation.id)
    await receive(ws)
    for _ in range(10):
        await ws.send_json_to({"type": "resync"})
    answers = [await receive(ws) for _ in range(10)]
    assert [a["type"] for a in answers].count("snapshot") == 3
    refusals = [a for a in answers if a["type"] == "error"]
    assert len(refusals) == 7
    assert {r["code"] for r in refusals} == {"rate_limited"}
    assert all(0 < r["retry_after"] <= 10 for r in refusals)
    # The connection is fine: a message still goes through.
    await ws.send_json_to({"type": "message.send", "content": "still here"})
    assert (await receive(ws))["type"] == "message.created"
    await ws.disconnect()
