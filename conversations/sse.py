"""Server-Sent Events framing (docs/protocol.md): ``event: <type>``, ``id:`` where a
client can resume from the event, ``data: <the event's JSON>``, and a ``: ping`` comment
after 15 s of silence.

The ids are ``<reply>:<seq>`` on a reply's ``message.created`` (seq 0) and on its
tokens, and ``<reply>:final`` on its final event, so a ``Last-Event-ID`` always says
whether the client still lacks the final event. What is framed comes from
live/streams.py: the event protocol's objects, as they are.
"""

import logging
import uuid
from collections.abc import AsyncIterator

from django.http import StreamingHttpResponse

from . import events, metrics

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/event-stream"
# no-transform and X-Accel-Buffering keep proxies (nginx) from buffering or compressing.
HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
PING = ": ping\n\n"
# Sent first: daphne sends the response head with the first bytes of the body, and a
# client should know at once that it is subscribed, even before any event.
OPENING = ": ok\n\n"
FINAL_MARK = "final"

# Characters str.splitlines() breaks lines at although SSE does not. JSON may escape
# them, so a client that reads lines the Python way never sees an event cut in two.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


# --- framing ------------------------------------------------------------------------------


def frame(data: str, *, event: str | None = None, id: str | None = None) -> str:
    """One SSE message whose data is one line of JSON (or OpenAI's ``[DONE]``)."""
    head = (f"event: {event}\n" if event else "") + (f"id: {id}\n" if id else "")
    return f"{head}data: {data.translate(_LINE_BREAKS)}\n\n"


def event_id(event: events.Event) -> str | None:
    """The ``id:`` of an event a client can resume after, else None."""
    kind = event["type"]
    if kind in events.NUMBERED_TYPES:  # tokens and tool events
        return f"{event['message']}:{event['seq']}"
    if kind == events.MESSAGE_CREATED and event["message"]["status"] == "streaming":
        return f"{event['message']['id']}:{event['message']['seq']}"
    if kind in events.FINAL_EVENT_TYPES:
        return f"{event['message']['id']}:{FINAL_MARK}"
    return None


def encode(text: str, event: events.Event) -> str:
    return frame(text, event=event["type"], id=event_id(event))


# A seq has at most this many digits; a longer one is not an id this server sent.
SEQ_DIGITS = 9


def parse_last_event_id(value: str | None) -> tuple[str, int | None] | None:
    """``<message>:<seq>`` → (message, seq); ``<message>:final`` → (message, None); None
    for anything else, which the stream treats as no Last-Event-ID (a fresh snapshot)."""
    message_id, _, mark = (value or "").strip().rpartition(":")
    try:
        message_id = str(uuid.UUID(message_id))
    except ValueError:
        return None
    if mark == FINAL_MARK:
        return message_id, None
    if mark.isascii() and mark.isdigit() and len(mark) <= SEQ_DIGITS:
        return message_id, int(mark)
    return None


def wants_event_stream(request) -> bool:
    return CONTENT_TYPE in request.headers.get("Accept", "")


def response(chunks: AsyncIterator[str], *, headers: dict | None = None) -> StreamingHttpResponse:
    """A streamed response, each chunk written as it comes.

    It must be an async iterator: under ASGI Django buffers a sync one whole. It says
    what it is (``text/event-stream``, no-transform) so that no middleware or proxy
    compresses or buffers it.
    """
    return StreamingHttpResponse(
        chunks, content_type=CONTENT_TYPE, headers={**HEADERS, **(headers or {})}
    )


async def framed(items, *, on_close) -> AsyncIterator[str]:
    """A live stream's items (live/streams.py) as SSE text: the opening comment, then each
    event and ping. ``on_close`` runs when it ends, also when the client hangs up: that
    detaches this viewer only; the reply goes on."""
    metrics.CONNECTIONS.labels("sse").inc()
    try:
        yield OPENING
        async for item in items:
            yield encode(item.text, item.event) if item.event else PING
    finally:
        metrics.CONNECTIONS.labels("sse").dec()
        await on_close()
