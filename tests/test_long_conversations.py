"""Long conversations, long replies, hostile model output and odd frames, against a
real daphne worker (whose WebSocket limits come from ``manage.py serve``) and the real
``ChatOpenAI`` talking to the stub model server."""

import asyncio
import json
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.utils import timezone

from conversations.models import Conversation, Message

from .helpers.api import stub_env
from .helpers.protocol import FINAL_TYPES
from .helpers.servers import start_daphne
from .helpers.ws import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

LONG_REPLY = 250_000


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, stub_server):
    worker = start_daphne(env=stub_env(stub_server), name="long")
    yield worker
    worker.stop()


def with_history(user, *, exchanges: int, reply_chars: int) -> Conversation:
    """A conversation of ``exchanges`` saved exchanges, each reply ``reply_chars`` long."""
    conversation = Conversation.objects.create(owner=user, title="long")
    start = timezone.now() - timedelta(hours=1)
    for number in range(exchanges):
        asked = Message.objects.create(
            conversation=conversation, role="user", content=f"question {number}"
        )
        answer = Message.objects.create(
            conversation=conversation,
            role="assistant",
            reply_to=asked,
            status="completed",
            content=f"answer {number} " + "x" * reply_chars,
        )
        # Distinct, increasing times, as a real history has.
        Message.objects.filter(pk=asked.pk).update(created_at=start + timedelta(seconds=2 * number))
        Message.objects.filter(pk=answer.pk).update(
            created_at=start + timedelta(seconds=2 * number + 1)
        )
    return conversation


async def open_ws(server, cookie, conversation_id):
    return await websockets.connect(
        f"{server.ws_url}/ws/conversations/{conversation_id}/",
        additional_headers={"Cookie": f"sessionid={cookie}", "Origin": server.url},
        max_size=None,
    )


async def next_event(ws, timeout: float = 30) -> tuple[dict, int]:
    """The next event and the size of its frame in bytes."""
    async with asyncio.timeout(timeout):
        raw = await ws.recv()
    return json.loads(raw), len(raw.encode() if isinstance(raw, str) else raw)


async def send_and_follow(ws, content: str) -> tuple[list[dict], dict]:
    """Send a message; its reply's tokens and final event."""
    await ws.send(json.dumps({"type": "message.send", "content": content}))
    tokens, final = [], None
    while final is None:
        event, _ = await next_event(ws)
        if event["type"] == "token":
            tokens.append(event)
        elif event["type"] in FINAL_TYPES:
            final = event
    return tokens, final


async def test_a_long_conversation_opens_a_page_at_a_time_and_its_pages_add_up(
    server, user, settings
):
    conversation = await sync_to_async(with_history)(user, exchanges=8, reply_chars=LONG_REPLY)
    saved = await sync_to_async(list)(conversation.messages.order_by("created_at"))
    assert sum(len(m.content) for m in saved) > 2_000_000
    ws = await open_ws(server, await session_cookie(user), conversation.id)
    snapshot, size = await next_event(ws)
    assert snapshot["type"] == "snapshot"
    assert snapshot["has_more"] is True
    # The latest exchange, whatever its size, and no more than a page beyond it.
    assert [m["id"] for m in snapshot["messages"]] == [str(m.id) for m in saved[-2:]]
    assert size < 2 * (LONG_REPLY + 10_000)
    shown = snapshot["messages"]
    more = snapshot["has_more"]
    while more:
        await ws.send(json.dumps({"type": "history", "before": shown[0]["id"]}))
        page, size = await next_event(ws)
        if page["type"] == "error" and page["code"] == "rate_limited":
            await asyncio.sleep(page["retry_after"])  # as the page does
            continue
        assert page["type"] == "history"
        assert size < 2 * (LONG_REPLY + 10_000)
        shown = page["messages"] + shown
        more = page["has_more"]
    assert [m["id"] for m in shown] == [str(m.id) for m in saved]
    assert [m["content"] for m in shown] == [m.content for m in saved]

    # And the conversation goes on: a reply of 250,000 characters streams to its end.
    tokens, final = await send_and_follow(ws, f"chars={LONG_REPLY}")
    await ws.close()
    reply = await Message.objects.aget(pk=final["message"]["id"])
    assert final["type"] == "message.completed"
    assert len(reply.content) == LONG_REPLY
    assert "".join(t["content"] for t in tokens) == reply.content == final["message"]["content"]
    assert [t["seq"] for t in tokens] == list(range(1, len(tokens) + 1))


async def test_a_message_of_the_full_length_in_emoji_is_accepted_as_escaped_json(
    server, user, conversation, settings
):
    """An emoji is one character, 12 bytes as a JSON escape (two \\uXXXX): a message
    of CHAT_MAX_MESSAGE_CHARS of them fits in a frame; one more is refused in words."""
    ws = await open_ws(server, await session_cookie(user), conversation.id)
    await next_event(ws)
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    frame = json.dumps({"type": "message.send", "content": "😀" * (limit + 1)})  # ASCII
    await ws.send(frame)
    refusal, _ = await next_event(ws)
    assert refusal["type"] == "error"
    assert refusal["code"] == "message_too_long"
    await ws.send(json.dumps({"type": "message.send", "content": "😀" * limit}))
    created, _ = await next_event(ws)
    assert created["type"] == "message.created"
    assert created["message"]["content"] == "😀" * limit
    await ws.close()


async def test_an_unknown_websocket_path_is_refused_at_the_handshake(server, user):
    cookie = await session_cookie(user)
    for path in ("/ws/conversations/not-a-uuid/", "/ws/nothing/", "/ws/"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(
                f"{server.ws_url}{path}",
                additional_headers={"Cookie": f"sessionid={cookie}", "Origin": server.url},
            )
        assert refused.value.response.status_code == 403


async def test_hostile_model_output_is_kept_readable_and_the_reply_completes(
    server, user, conversation
):
    """The model sends NUL and an unpaired surrogate (as JSON escapes): each becomes
    U+FFFD as it arrives; viewers stay connected and the reply completes with its text."""
    ws = await open_ws(server, await session_cookie(user), conversation.id)
    await next_event(ws)
    tokens, final = await send_and_follow(ws, "script=hostile")
    expected = "before nul\ufffdhere lone\ufffdsurrogate pair😀ok after"
    assert final["type"] == "message.completed"
    assert final["message"]["content"] == expected
    assert "".join(t["content"] for t in tokens) == expected
    reply = await Message.objects.aget(pk=final["message"]["id"])
    assert (reply.status, reply.content) == ("completed", expected)
    # The socket is fine: the conversation goes on.
    await ws.send(json.dumps({"type": "message.send", "content": "and now?"}))
    assert (await next_event(ws))[0]["type"] == "message.created"
    await ws.close()


async def test_a_model_servers_error_body_is_for_staff_not_users(server, user, conversation):
    ws = await open_ws(server, await session_cookie(user), conversation.id)
    await next_event(ws)
    await ws.send(json.dumps({"type": "message.send", "content": "status=500"}))
    final = None
    while final is None:
        event, _ = await next_event(ws)
        if event["type"] in FINAL_TYPES:
            final = event
    await ws.close()
    error = final["message"]["error"]
    assert final["type"] == "message.failed"
    assert error["code"] == "model_error"
    assert "500" in error["detail"]
    assert "stub error" not in json.dumps(final)  # what the model server said
    reply = await Message.objects.aget(pk=final["message"]["id"])
    assert "stub error 500" in reply.error["upstream"]  # kept for staff


async def test_the_chat_opens_a_two_megabyte_conversation_page_by_page(server, user):
    """Timed for the README (printed), not asserted: benchmarks live in bench/."""
    pytest.importorskip("playwright")
    conversation = await sync_to_async(with_history)(user, exchanges=8, reply_chars=LONG_REPLY)
    # The browser part runs in a thread: Playwright's sync API wants no running loop.
    shown, earlier, seconds = await asyncio.to_thread(
        browse_long_conversation, server, user, conversation
    )
    print(f"\na conversation of 2.0 MB opened in the browser in {seconds:.2f} s")
    assert shown == 2  # the latest exchange first
    assert earlier >= 2  # then older ones, on request


def browse_long_conversation(server, user, conversation) -> tuple[int, int, float]:
    from .test_browser import CHROMIUM, CHROMIUM_ARGS, logged_in

    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    cookies = []
    logged_in(SimpleNamespace(add_cookies=cookies.extend), user)  # before Playwright's loop
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=server.url, viewport={"width": 1200, "height": 850})
        context.add_cookies(cookies)
        page = context.new_page()
        started = time.monotonic()
        page.goto(f"/c/{conversation.id}/")
        messages = page.locator("#messages > [data-message-id]")
        expect(messages).to_have_count(2, timeout=15_000)
        expect(page.locator("#messages [data-status=completed]").last).to_be_visible()
        seconds = time.monotonic() - started
        page.locator("[data-action=load-earlier]").click()
        expect(messages).not_to_have_count(2, timeout=15_000)
        earlier = messages.count() - 2
        browser.close()
    return 2, earlier, seconds
