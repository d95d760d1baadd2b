"""The baseline relay: what a minimal streaming relay of the same model costs.

The same LangChain chain as chatsite (the same prompt template piped into ``ChatOpenAI``
with the same options), streamed with ``chain.astream()`` over a bare ASGI application:
no Django, no database, no channel layer, no fan-out, no coalescing — one WebSocket
message or SSE event per model chunk, as the chain yields it. The bench serves it with
daphne, like chatsite (``python -m daphne bench.baseline:application``).

- WebSocket ``/ws``: send ``{"content": "..."}``; receive ``{"type": "token",
  "content"}`` per chunk, then ``{"type": "message.completed"}`` (or ``message.failed``).
- ``POST /sse`` with ``{"content": "..."}``: the same events as SSE ``data:`` lines.

Configured by the same environment as chatsite: ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``,
``CHAT_MODEL``, ``CHAT_MODEL_RETRIES``.
"""

import json
import os

import httpx
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_openai import ChatOpenAI

SYSTEM_PROMPT = "You are a helpful assistant. Answer in Markdown."

PROMPT = ChatPromptTemplate.from_messages(
    [("system", "{system}"), MessagesPlaceholder("history"), ("human", "{input}")]
)
CHAIN = PROMPT | ChatOpenAI(
    model=os.environ.get("CHAT_MODEL", "stub-model"),
    api_key=os.environ.get("OPENAI_API_KEY", "unused"),
    base_url=os.environ.get("OPENAI_BASE_URL") or None,
    stream_usage=True,
    timeout=httpx.Timeout(60, connect=10),
    stream_chunk_timeout=None,
    max_retries=int(os.environ.get("CHAT_MODEL_RETRIES", "0")),
)


def _event(kind: str, **fields) -> str:
    return json.dumps({"type": kind, **fields}, ensure_ascii=False, separators=(",", ":"))


async def relay(content: str, send_text) -> None:
    """Stream the chain's reply to ``content``, one event per chunk, then the end."""
    try:
        inputs = {"system": SYSTEM_PROMPT, "history": [], "input": content}
        async for chunk in CHAIN.astream(inputs):
            if chunk.content:
                await send_text(_event("token", content=chunk.content))
    except Exception as exc:
        await send_text(_event("message.failed", detail=f"{type(exc).__name__}: {exc}"))
        return
    await send_text(_event("message.completed"))


async def websocket(scope, receive, send) -> None:
    async def send_text(text: str) -> None:
        await send({"type": "websocket.send", "text": text})

    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            await relay(json.loads(message["text"])["content"], send_text)
        elif message["type"] == "websocket.disconnect":
            return


async def http(scope, receive, send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] != "POST" or scope["path"] != "/sse":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )

    async def send_text(text: str) -> None:
        data = f"data: {text}\n\n".encode()
        await send({"type": "http.response.body", "body": data, "more_body": True})

    await relay(json.loads(body)["content"], send_text)
    await send({"type": "http.response.body", "body": b""})


async def application(scope, receive, send) -> None:
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
    elif scope["type"] == "http":
        await http(scope, receive, send)
