"""In-process WebSocket clients through the whole ASGI stack (session auth, origin
check), and reading what they receive."""

import asyncio
import json

from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from .protocol import FINAL_TYPES


async def session_cookie(user) -> str:
    client = AsyncClient()
    await client.aforce_login(user)
    return client.cookies["sessionid"].value


async def connect(user, conversation_id, *, origin="http://127.0.0.1:8000"):
    """A WebSocket client through the whole ASGI stack (session auth, origin check)."""
    from chatsite.asgi import application

    headers = [(b"host", b"127.0.0.1:8000")]
    if origin:
        headers.append((b"origin", origin.encode()))
    if user is not None:
        headers.append((b"cookie", f"sessionid={await session_cookie(user)}".encode()))
    communicator = WebsocketCommunicator(
        application, f"/ws/conversations/{conversation_id}/", headers=headers
    )
    connected, code = await communicator.connect(timeout=5)
    communicator.close_code = code
    communicator.accepted = connected
    if not connected:
        await communicator.disconnect()  # as the server would: the consumer ends
    return communicator


async def receive(communicator, timeout: float = 5) -> dict:
    return json.loads(await communicator.receive_from(timeout=timeout))


async def receive_until_final(communicator, timeout: float = 15) -> list[dict]:
    """Every event up to and including the first final event."""
    received = []
    async with asyncio.timeout(timeout):
        while True:
            event = await receive(communicator, timeout=timeout)
            received.append(event)
            if event["type"] in FINAL_TYPES:
                return received


def joined_tokens(received: list[dict], message_id: str, after: int = 0) -> str:
    tokens = [e for e in received if e["type"] == "token" and e["message"] == message_id]
    seqs = [e["seq"] for e in tokens]
    assert seqs == list(range(after + 1, after + 1 + len(tokens))), f"gap or repeat: {seqs}"
    return "".join(e["content"] for e in tokens)
