"""One attempt over HTTP: resolve and check the address, POST, read a little of the answer.

A fresh connection every time (no keep-alive), so every attempt's address is resolved
and checked (addresses.py); the request goes to that address with the URL's name in the
``Host`` header and, over TLS, in SNI and the certificate check. Redirects are not
followed, proxies from the environment are not used, and at most ``EXCERPT_BYTES`` of
the body are read. The whole attempt is bounded by ``CHAT_WEBHOOK_TIMEOUT_S``.
"""

import asyncio
import ssl
from dataclasses import dataclass
from functools import cache

import certifi
import httpx
from django.conf import settings

from .addresses import Refused, target

EXCERPT_BYTES = 4096


@dataclass(frozen=True)
class Answer:
    status_code: int | None = None
    error: str = ""
    excerpt: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@cache
def ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())


async def post(url: str, *, headers: dict[str, str], body: bytes) -> Answer:
    timeout = settings.CHAT_WEBHOOK_TIMEOUT_S
    try:
        async with asyncio.timeout(timeout):
            return await _post(url, headers=headers, body=body)
    except TimeoutError:
        return Answer(error=f"timeout: no complete answer within {timeout:g} s")
    except Refused as exc:
        return Answer(error=str(exc))
    except httpx.HTTPError as exc:
        return Answer(error=_describe(exc))
    except OSError as exc:
        return Answer(error=f"network error: {exc}"[:300])


async def _post(url: str, *, headers: dict[str, str], body: bytes) -> Answer:
    where = await target(url)
    extensions = {"sni_hostname": where.server_name} if where.server_name else {}
    async with (
        httpx.AsyncClient(
            verify=ssl_context(),
            timeout=settings.CHAT_WEBHOOK_TIMEOUT_S,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as http,
        http.stream(
            "POST",
            where.url,
            content=body,
            headers={**headers, "host": where.host_header, "accept-encoding": "identity"},
            extensions=extensions,
        ) as response,
    ):
        return Answer(status_code=response.status_code, excerpt=await _excerpt(response))


async def _excerpt(response: httpx.Response) -> str:
    """The first EXCERPT_BYTES of the body, as text that can be stored."""
    received = bytearray()
    async for chunk in response.aiter_raw():
        received += chunk
        if len(received) >= EXCERPT_BYTES:
            break
    text = bytes(received[:EXCERPT_BYTES]).decode("utf-8", errors="replace")
    return text.replace("\x00", "\ufffd")


def _describe(exc: httpx.HTTPError) -> str:
    kind = {
        httpx.ConnectError: "could not connect",
        httpx.ConnectTimeout: "timeout connecting",
        httpx.ReadTimeout: "timeout waiting for the answer",
        httpx.WriteTimeout: "timeout sending",
        httpx.RemoteProtocolError: "invalid HTTP answer",
    }.get(type(exc), "HTTP error")
    return f"{kind}: {exc}"[:300] if str(exc) else kind
