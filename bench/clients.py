"""Benchmark clients: WebSocket and SSE viewers that time every model token.

chatsite coalesces model tokens into numbered frames, and the baseline relay sends one
message per model chunk; both are counted in *model tokens*. The stub answers
``tokens=N`` with ``"t1 t2 … tN "``, so a frame's model tokens are the words of its
text, and each of them arrives when its frame does.

A :class:`Reply` keeps (arrival, tokens) per frame; time to first token runs from the
moment the client sent its request to the first frame with text. Clients are plain
asyncio (``websockets`` and a minimal HTTP/1.1 reader), cheap per frame, so the
machine's two cores go to the servers.
"""

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import websockets

FINAL_TYPES = {"message.completed", "message.failed", "message.cancelled", "message.interrupted"}
# No reply in the bench should take longer; a hung one is recorded as an error.
REPLY_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 30.0


@dataclass
class Reply:
    """What one viewer saw of one reply."""

    sent_at: float
    frames: list[tuple[float, int]] = field(default_factory=list)  # (arrival, model tokens)
    error: str | None = None
    done: bool = False

    def add(self, text: str, at: float | None = None) -> None:
        words = len(text.split())
        if words:
            self.frames.append((time.perf_counter() if at is None else at, words))

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self.frames)

    def ttft_ms(self) -> float | None:
        return (self.frames[0][0] - self.sent_at) * 1000 if self.frames else None

    def token_gaps_ms(self) -> list[float]:
        """The gap before every model token but the first: 0 inside a frame."""
        gaps: list[float] = []
        previous = None
        for at, n in self.frames:
            if previous is not None:
                gaps.append((at - previous) * 1000)
            gaps.extend([0.0] * (n - 1))
            previous = at
        return gaps

    def frame_gaps_ms(self) -> list[float]:
        return [(b[0] - a[0]) * 1000 for a, b in zip(self.frames, self.frames[1:], strict=False)]

    def arrivals(self) -> list[float]:
        """The arrival time of every model token, in order."""
        out: list[float] = []
        for at, n in self.frames:
            out.extend([at] * n)
        return out


@dataclass
class Sample:
    """Replies of one measurement, pooled."""

    replies: list[Reply] = field(default_factory=list)

    def ttfts_ms(self) -> list[float]:
        return [t for r in self.replies if (t := r.ttft_ms()) is not None]

    def token_gaps_ms(self) -> list[float]:
        return [g for r in self.replies for g in r.token_gaps_ms()]

    def frame_gaps_ms(self) -> list[float]:
        return [g for r in self.replies for g in r.frame_gaps_ms()]

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.replies)

    @property
    def errors(self) -> int:
        return sum(1 for r in self.replies if r.error or not r.done)


# --- WebSocket ----------------------------------------------------------------------------


async def ws_connect(url: str, headers: dict | None = None):
    return await asyncio.wait_for(
        websockets.connect(
            url,
            additional_headers=headers or {},
            compression=None,
            max_size=2**24,
            open_timeout=CONNECT_TIMEOUT_S,
            ping_interval=None,
        ),
        CONNECT_TIMEOUT_S,
    )


class ChatsiteViewer:
    """A browser tab on one conversation: ``/ws/conversations/<uuid>/``."""

    def __init__(self, port: int, session: str, conversation_id: str):
        self.url = f"ws://127.0.0.1:{port}/ws/conversations/{conversation_id}/"
        self.headers = {"Cookie": f"sessionid={session}", "Origin": f"http://127.0.0.1:{port}"}
        self.ws = None

    async def open(self) -> "ChatsiteViewer":
        self.ws = await ws_connect(self.url, self.headers)
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            while json.loads(await self.ws.recv())["type"] != "snapshot":
                pass
        return self

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def send(self, content: str) -> Reply:
        """Send a message and follow its reply to the final event."""
        reply = Reply(sent_at=time.perf_counter())
        await self.ws.send(json.dumps({"type": "message.send", "content": content}))
        await self.follow(reply)
        return reply

    async def watch(self) -> Reply:
        """Follow the next reply another viewer starts."""
        reply = Reply(sent_at=time.perf_counter())
        await self.follow(reply)
        return reply

    async def follow(self, reply: Reply) -> None:
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                while True:
                    text = await self.ws.recv()
                    at = time.perf_counter()
                    event = json.loads(text)
                    kind = event["type"]
                    if kind == "token":
                        reply.add(event["content"], at)
                    elif kind in FINAL_TYPES:
                        reply.done = kind == "message.completed"
                        if not reply.done:
                            reply.error = kind
                        return
                    elif kind == "error":
                        reply.error = event.get("code", "error")
                        return
        except Exception as exc:
            reply.error = type(exc).__name__


class BaselineViewer:
    """A client of the baseline relay's WebSocket: one message per model chunk."""

    def __init__(self, port: int):
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.ws = None

    async def open(self) -> "BaselineViewer":
        self.ws = await ws_connect(self.url)
        return self

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def send(self, content: str) -> Reply:
        reply = Reply(sent_at=time.perf_counter())
        await self.ws.send(json.dumps({"content": content}))
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                while True:
                    text = await self.ws.recv()
                    at = time.perf_counter()
                    event = json.loads(text)
                    if event["type"] == "token":
                        reply.add(event["content"], at)
                    else:
                        reply.done = event["type"] == "message.completed"
                        reply.error = None if reply.done else event.get("detail", "failed")
                        return reply
        except Exception as exc:
            reply.error = type(exc).__name__
        return reply


# --- HTTP streams (SSE) ------------------------------------------------------------------


async def http_stream(
    port: int,
    path: str,
    body: dict,
    headers: dict,
    on_data: Callable[[str, float], bool],
) -> None:
    """POST ``body`` and hand every SSE ``data:`` payload to ``on_data`` with its arrival
    time, until it returns True or the stream ends. Decodes chunked transfer encoding;
    raises on a non-200 answer."""
    payload = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n{head}\r\n"
            ).encode()
            + payload
        )
        response = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = response.split(" ", 2)[1]
        if status != "200":
            raise RuntimeError(f"HTTP {status}")
        chunked = "transfer-encoding: chunked" in response.lower()
        buffer = b""
        while True:
            if chunked:
                size = int((await reader.readline()).strip() or b"0", 16)
                if size == 0:
                    return
                data = (await reader.readexactly(size + 2))[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    return
            at = time.perf_counter()
            buffer += data
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if line.startswith(b"data: ") and on_data(line[6:].decode(), at):
                        return
    finally:
        writer.close()


async def _sse_reply(port: int, path: str, body: dict, headers: dict, parse) -> Reply:
    reply = Reply(sent_at=time.perf_counter())

    def on_data(data: str, at: float) -> bool:
        return parse(reply, data, at)

    try:
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            await http_stream(port, path, body, headers, on_data)
    except Exception as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
    if not reply.done and reply.error is None:
        reply.error = "stream ended early"
    return reply


def _protocol_event(reply: Reply, data: str, at: float) -> bool:
    event = json.loads(data)
    kind = event["type"]
    if kind == "token":
        reply.add(event["content"], at)
        return False
    if kind in FINAL_TYPES or kind == "error":
        reply.done = kind == "message.completed"
        if not reply.done:
            reply.error = kind
        return True
    return False


async def chatsite_sse(port: int, api_key: str, conversation_id: str, content: str) -> Reply:
    """``POST /api/conversations/<id>/messages`` with ``Accept: text/event-stream``."""
    return await _sse_reply(
        port,
        f"/api/conversations/{conversation_id}/messages",
        {"content": content},
        {"Authorization": f"Bearer {api_key}", "Accept": "text/event-stream"},
        _protocol_event,
    )


async def baseline_sse(port: int, content: str) -> Reply:
    return await _sse_reply(
        port, "/sse", {"content": content}, {"Accept": "text/event-stream"}, _protocol_event
    )


def _openai_chunk(reply: Reply, data: str, at: float) -> bool:
    if data.startswith("[DONE]"):
        reply.done = True
        return True
    for choice in json.loads(data).get("choices") or ():
        reply.add((choice.get("delta") or {}).get("content") or "", at)
    return False


async def chatsite_v1(port: int, api_key: str, content: str) -> Reply:
    """``POST /v1/chat/completions`` streamed, as the openai SDK would: a new
    conversation per request."""
    return await _sse_reply(
        port,
        "/v1/chat/completions",
        {"model": "stub-model", "stream": True, "messages": [{"role": "user", "content": content}]},
        {"Authorization": f"Bearer {api_key}", "Accept": "text/event-stream"},
        _openai_chunk,
    )


async def metrics(port: int) -> dict[str, float]:
    """A worker's /metrics (it answers its own host), as {sample name with labels: value}."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        raw = (await reader.read()).decode()
    finally:
        writer.close()
    found = {}
    for line in raw.split("\r\n\r\n", 1)[-1].splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                found[name] = float(value)
            except ValueError:
                pass
    return found


async def stub_direct(port: int, content: str, model: str = "stub-model") -> Reply:
    """The stub's own latency: its stream read straight, with no relay in between."""
    return await _sse_reply(
        port,
        "/v1/chat/completions",
        {"model": model, "stream": True, "messages": [{"role": "user", "content": content}]},
        {"Accept": "text/event-stream"},
        _openai_chunk,
    )
