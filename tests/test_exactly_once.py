"""Each event once: the final event of a reply is sent to a viewer exactly once and
nothing of the reply follows it, however the final reaches the viewer (from the run,
from the sweeper, from the database on a stall check or a resume) — and a run whose
lease expired can no longer publish or save.

The randomized campaigns of tests/test_durability.py look for the same faults by
chance; these tests provoke each one on purpose."""

import asyncio
import json
import os
import signal
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from django.utils import timezone

from conversations import events
from conversations.live import control, viewer
from conversations.models import Message
from conversations.runs import writes
from conversations.services import sweeper

from .helpers.api import bearer, new_key, stub_env
from .helpers.protocol import FINAL_TYPES, WsViewer
from .helpers.servers import start_daphne
from .helpers.ws import connect, receive, receive_until_final, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


async def events_within(ws, seconds: float) -> list[dict]:
    """The events a WebSocket receives within ``seconds`` (the consumer goes on)."""
    received = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if await ws.receive_nothing(timeout=left):
            break
        received.append(await receive(ws))
    return received


async def test_a_viewer_that_stays_connected_gets_the_final_event_once(
    monkeypatch, user, conversation
):
    monkeypatch.setattr(viewer, "STALL_CHECK_S", 0.2)
    ws = await connect(user, conversation.id)
    await receive(ws)
    await ws.send_json_to({"type": "message.send", "content": "Once, please"})
    received = await receive_until_final(ws)
    # Several stall checks later, nothing more: the final was not sent again.
    later = await events_within(ws, 1.0)
    assert received[-1]["type"] == "message.completed"
    assert later == []
    await ws.disconnect()


async def dead_reply(conversation) -> Message:
    """A reply left streaming by a worker that died an hour ago, with its text so far."""
    orphan = await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        content="kept so far",
        seq=3,
    )
    stale = timezone.now() - timedelta(hours=1)
    await Message.objects.filter(pk=orphan.pk).aupdate(updated_at=stale)
    return orphan


async def test_a_swept_reply_is_announced_to_each_viewer_once(monkeypatch, user, conversation):
    monkeypatch.setattr(viewer, "STALL_CHECK_S", 0.2)
    await dead_reply(conversation)
    ws = await connect(user, conversation.id)
    snapshot = await receive(ws)
    assert snapshot["messages"][0]["status"] == "streaming"
    await sweeper.sweep_replies()
    received = await events_within(ws, 1.0)
    assert [e["type"] for e in received] == ["message.interrupted"]
    assert received[0]["message"]["content"] == "kept so far"
    await ws.disconnect()


async def test_a_snapshot_read_while_the_reply_ends_never_follows_its_final(
    monkeypatch, settings, user, conversation
):
    """A resync reads the conversation from the database; when the reply ends while that
    read is under way, its final event waits for the snapshot: the client never gets the
    reply's end and then a copy of it still streaming."""
    from conversations import consumers

    settings.CHAT_OFFLINE_DELAY_MS = 20
    ws = await connect(user, conversation.id)
    await receive(ws)
    await ws.send_json_to({"type": "message.send", "content": "Ends during a resync"})
    received = []
    while not (received and received[-1]["type"] == "token"):
        received.append(await receive(ws))
    reply = received[-1]["message"]

    read_snapshot = consumers.selectors.snapshot

    async def snapshot_overtaken_by_the_end(conversation_id):
        snapshot = await read_snapshot(conversation_id)  # the reply still streaming
        for _ in range(500):  # until the reply's end is saved (10 s at most)
            if not await Message.objects.filter(pk=reply, status="streaming").aexists():
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # time for the final event to reach this viewer
        return snapshot

    monkeypatch.setattr(consumers.selectors, "snapshot", snapshot_overtaken_by_the_end)
    await ws.send_json_to({"type": "resync"})
    while True:
        event = await receive(ws, timeout=15)
        received.append(event)
        if event["type"] == "snapshot":
            break
    received += await events_within(ws, 1.0)
    kinds = [e["type"] for e in received]
    final_at = next(i for i, e in enumerate(received) if e["type"] in FINAL_TYPES)
    snapshot_at = kinds.index("snapshot")
    assert [m["status"] for m in received[snapshot_at]["messages"] if m["id"] == reply] == [
        "streaming"
    ]
    assert snapshot_at < final_at, kinds
    assert kinds.count("message.completed") == 1
    await ws.disconnect()


@pytest.mark.parametrize("surface", ["websocket", "v1 with tools"])
async def test_a_dead_reply_swept_out_of_a_sends_way_is_announced_at_once(
    surface, openai_stub, user, conversation
):
    """A reply whose worker died stands in the way of a new send: it is swept, and its
    viewers are told it ended before the new reply starts, not by a stall check later."""
    key = await sync_to_async(new_key)(user)
    orphan = await dead_reply(conversation)
    watcher = await connect(user, conversation.id)
    await receive(watcher)
    if surface == "websocket":
        await watcher.send_json_to({"type": "message.send", "content": "tokens=3"})
    else:
        tool = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
        response = await AsyncClient().post(
            "/v1/chat/completions",
            {
                "model": "stub-model",
                "messages": [{"role": "user", "content": 'call=get_time{"zone":"UTC"}'}],
                "tools": [tool],
            },
            content_type="application/json",
            headers={**bearer(key), "X-Conversation-Id": str(conversation.id)},
        )
        assert response.status_code == 200, response.content
    seen = [await receive(watcher)]
    while not (
        seen[-1]["type"] == "message.created" and seen[-1]["message"]["role"] == "assistant"
    ):
        seen.append(await receive(watcher))
    ended = [e["message"] for e in seen if e["type"] == "message.interrupted"]
    assert [(m["id"], m["content"]) for m in ended] == [(str(orphan.id), "kept so far")]
    await watcher.disconnect()


class EventStream:
    """An in-process SSE response, read for a while at a time without cancelling it (a
    cancelled read would close the stream)."""

    def __init__(self, response) -> None:
        self.chunks = aiter(response.streaming_content)
        self.reading: asyncio.Future | None = None

    async def events_within(self, seconds: float) -> list[dict]:
        found = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.reading is None:
                self.reading = asyncio.ensure_future(anext(self.chunks))
            done, _ = await asyncio.wait({self.reading}, timeout=left)
            if not done:
                break
            chunk, self.reading = self.reading.result(), None
            for block in chunk.decode().split("\n\n"):
                data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
                if data:
                    found.append(json.loads(data[0]))
        return found

    def close(self) -> None:
        if self.reading is not None:
            self.reading.cancel()


async def ended_reply(conversation, *, seq: int = 7) -> Message:
    user_message = await Message.objects.acreate(
        conversation=conversation, role=Message.Role.USER, content="hi"
    )
    return await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        reply_to=user_message,
        status=Message.Status.COMPLETED,
        content="".join(f"t{i} " for i in range(1, seq + 1)),
        seq=seq,
    )


@pytest.mark.parametrize("last_event_id", ["{reply}:4", "{reply}:final"])
async def test_a_resume_near_the_end_gets_no_token_and_no_second_final(
    user, conversation, last_event_id
):
    """The reply ended (seq 7); frames of it still in flight from the worker that ran it
    reach this stream after it resumed: the final once (or not at all when the client
    holds it), and no token after it."""
    reply = await ended_reply(conversation)
    key = await sync_to_async(new_key)(user)
    response = await AsyncClient().get(
        f"/api/conversations/{conversation.id}/events",
        headers={**bearer(key), "Last-Event-ID": last_event_id.format(reply=reply.id)},
    )
    stream = EventStream(response)
    first = await stream.events_within(0.5)
    for seq in (5, 6, 7):
        token = events.token(str(conversation.id), str(reply.id), seq, f"t{seq} ")
        await control.publish(conversation.id, token)
    await control.publish(conversation.id, events.message_final(reply))
    later = await stream.events_within(0.5)
    stream.close()
    received = first + later
    finals = [e for e in received if e["type"] in FINAL_TYPES]
    expected = 0 if last_event_id.endswith("final") else 1
    assert len(finals) == expected
    assert [e for e in received if e["type"] == "token"] == []
    if finals:
        assert finals[0]["message"]["content"] == reply.content


# --- a run whose lease expired -------------------------------------------------------------

LEASE_S = 5


@pytest.fixture
def two_workers(django_db_setup, redis_url, stub_server):
    env = stub_env(
        stub_server,
        REDIS_URL=redis_url,
        CHANNEL_PREFIX=f"chatsite-lease-{os.getpid()}",
        CHAT_RUN_LEASE_S=str(LEASE_S),
    )
    a = start_daphne(env=env, name="lease-a")
    b = start_daphne(env=env, name="lease-b")
    yield a, b
    a.stop()
    b.stop()


async def test_a_run_paused_past_its_lease_publishes_and_saves_nothing_more(
    two_workers, user, conversation
):
    """Worker A runs a reply and stops answering (SIGSTOP) for longer than the lease;
    worker B's sweeper ends the reply as interrupted with the text A last flushed. When A
    wakes up, its run learns it lost the reply: viewers get nothing after the final, and
    what they show is what the database holds."""
    a, b = two_workers
    cookie = await session_cookie(user)
    on_b = await WsViewer(b, cookie, conversation.id).open()
    on_a = await WsViewer(a, cookie, conversation.id).open()
    await on_a.send({"type": "message.send", "content": "tokens=600 gap_ms=20"})
    reply_id = await on_b.reply_started()
    await on_b.until(lambda e: e["type"] == "token" and e["seq"] >= 10)
    os.kill(a.process.pid, signal.SIGSTOP)
    try:
        final = await on_b.until_final(reply_id, timeout=LEASE_S * 4)
    finally:
        os.kill(a.process.pid, signal.SIGCONT)
    assert final["type"] == "message.interrupted"
    # A is back: whatever its run still held, no viewer receives any of it.
    after = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(3):
            while True:
                after.append(await on_b.next_event())
    assert [e for e in after if e.get("message") in (reply_id, {"id": reply_id})] == []
    saved = await Message.objects.aget(pk=reply_id)
    await asyncio.sleep(1)  # long enough for A's run to have tried to flush or save
    again = await Message.objects.aget(pk=reply_id)
    assert (again.status, again.content, again.seq) == (saved.status, saved.content, saved.seq)
    assert saved.status == "interrupted"
    assert final["message"]["content"] == saved.content
    assert on_b.state.text_of(reply_id) == saved.content
    # A's own viewer, paused with it, converges on the same text.
    await on_a.until_final(reply_id, timeout=10)
    assert on_a.state.text_of(reply_id) == saved.content
    await on_a.close()
    await on_b.close()


async def test_a_reply_is_never_published_past_the_lease_window(settings, user, conversation):
    """In one process: the run's database writes are held up past its lease window (as
    when the one ORM thread is busy); the run holds its frames back until a flush renews
    the lease, instead of publishing what it may no longer own."""
    settings.CHAT_RUN_LEASE_S = 1.5  # a window of 0.5 s
    settings.CHAT_OFFLINE_DELAY_MS = 20
    ws = await connect(user, conversation.id)
    await receive(ws)
    real_save = writes.save_texts
    held = asyncio.Event()

    async def slow_save(texts):
        await held.wait()
        return await real_save(texts)

    writes.save_texts = slow_save
    try:
        await ws.send_json_to({"type": "message.send", "content": "hold on"})
        started = time.monotonic()
        received = await events_within(ws, 2.0)
        tokens = [e for e in received if e["type"] == "token"]
        assert tokens, "the run published before its window closed"
        assert time.monotonic() - started >= 2.0
        assert not [e for e in received if e["type"] in FINAL_TYPES]
        count = len(tokens)
        held.set()  # the database answers again: the lease is renewed, frames flow
        rest = await receive_until_final(ws)
    finally:
        writes.save_texts = real_save
    assert [e for e in rest if e["type"] == "token"], "frames resumed after the flush"
    reply = await Message.objects.aget(role="assistant")
    assert reply.status == "completed"
    assert count < reply.seq
    await ws.disconnect()
