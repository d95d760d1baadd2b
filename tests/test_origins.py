"""Which pages may open a WebSocket with the user's cookie: only the site's own origin
(scheme, host and port, as the server sees them) or one in CSRF_TRUSTED_ORIGINS
(chatsite/middleware.py WebSocketOriginValidator). Through the whole ASGI stack with
Channels' communicator, then against a real daphne worker."""

import asyncio

import pytest
import websockets
from channels.testing import WebsocketCommunicator

from .helpers.ws import connect, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

SITE = "http://127.0.0.1:8000"  # what tests.conftest.connect sends as Host, over ws://

FOREIGN = [
    "http://127.0.0.1:9999",  # another port of the same host
    "https://127.0.0.1",  # another scheme
    "http://[::1]:80",
    "http://localhost:8000",  # an allowed host, but not this connection's
    "http://127.0.0.1:8000.evil.example",
    "https://127.0.0.1:8000",
    "null",  # sandboxed frames, file: pages
    "http://evil.example",
]


async def test_the_sites_own_origin_is_accepted(user, conversation):
    ws = await connect(user, conversation.id, origin=SITE)
    assert ws.accepted
    await ws.disconnect()
    ws = await connect(user, conversation.id, origin="HTTP://127.0.0.1:8000/")
    assert ws.accepted
    await ws.disconnect()


@pytest.mark.parametrize("origin", FOREIGN)
async def test_another_origin_is_refused_even_with_the_users_cookie(user, conversation, origin):
    ws = await connect(user, conversation.id, origin=origin)
    assert not ws.accepted


async def test_a_handshake_without_an_origin_is_refused(user, conversation):
    ws = await connect(user, conversation.id, origin=None)
    assert not ws.accepted


async def handshake(user, conversation, *, host: str, origin: str, extra=(), path=None) -> bool:
    from chatsite.asgi import application

    headers = [
        (b"host", host.encode()),
        (b"origin", origin.encode()),
        (b"cookie", f"sessionid={await session_cookie(user)}".encode()),
        *extra,
    ]
    communicator = WebsocketCommunicator(
        application, path or f"/ws/conversations/{conversation.id}/", headers=headers
    )
    connected, _ = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return connected


async def test_a_host_outside_allowed_hosts_is_refused_whatever_the_origin(user, conversation):
    assert not await handshake(
        user, conversation, host="evil.example", origin="http://evil.example"
    )


async def test_behind_a_tls_proxy_the_https_origin_is_the_sites(settings, user, conversation):
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxied = [(b"x-forwarded-proto", b"https")]
    site = "https://chat.example.com"
    assert await handshake(user, conversation, host="chat.example.com", origin=site, extra=proxied)
    # Without the proxy's word the connection is plain http: the https page is another site.
    assert not await handshake(user, conversation, host="chat.example.com", origin=site)
    assert not await handshake(
        user, conversation, host="chat.example.com", origin="http://chat.example.com",
        extra=proxied,
    )  # fmt: skip
    # The header counts only where the settings say a proxy sets it.
    settings.SECURE_PROXY_SSL_HEADER = None
    assert not await handshake(
        user, conversation, host="chat.example.com", origin=site, extra=proxied
    )


async def test_csrf_trusted_origins_are_accepted(settings, user, conversation):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com", "https://*.example.org"]
    for origin, accepted in (
        ("https://chat.example.com", True),
        ("https://chat.example.com:443", True),
        ("http://chat.example.com", False),
        ("https://chat.example.com:8443", False),
        ("https://eu.example.org", True),
        ("https://example.org.evil.example", False),
    ):
        got = await handshake(user, conversation, host="127.0.0.1:8000", origin=origin)
        assert got is accepted, origin


async def test_the_staff_live_view_checks_origins_too(settings, user, conversation):
    path = f"/ws/admin/conversations/{conversation.id}/"
    assert not await handshake(
        user, conversation, host="127.0.0.1:8000", origin="http://127.0.0.1:9999", path=path
    )


# --- a real worker ------------------------------------------------------------------------


async def open_socket(server, cookie: str, conversation, origin: str | None):
    headers = {"Cookie": f"sessionid={cookie}"}
    if origin is not None:
        headers["Origin"] = origin
    url = f"{server.ws_url}/ws/conversations/{conversation.id}/"
    return await websockets.connect(url, additional_headers=headers, open_timeout=10)


async def test_a_real_worker_refuses_foreign_origins_at_the_handshake(
    daphne_server, user, conversation
):
    cookie = await session_cookie(user)
    own = await open_socket(daphne_server, cookie, conversation, daphne_server.url)
    assert '"snapshot"' in await asyncio.wait_for(own.recv(), 10)
    await own.close()
    port = daphne_server.port
    for origin in (
        f"http://127.0.0.1:{port + 1}",
        "https://127.0.0.1",
        f"https://127.0.0.1:{port}",
        "http://[::1]:80",
        f"http://localhost:{port}",
        None,
    ):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await open_socket(daphne_server, cookie, conversation, origin)
        assert refused.value.response.status_code == 403, origin
