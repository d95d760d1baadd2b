"""Replies and live subscriptions as Server-Sent Events, over real HTTP to real daphne
workers, read with httpx + httpx-sse; replies come from the stub model server."""

import asyncio
import json
import time
import uuid

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from httpx_sse import connect_sse

from conversations import sse
from conversations.live import streams
from conversations.models import Conversation, Message
from conversations.services.conversations import conversation_create

from .fakes.openai_stub import TRICKY_CHUNKS
from .helpers.api import (
    bearer,
    new_key,
    read_events,
    stub_env,
    tokens_of,
    wait_until_final,
)
from .helpers.protocol import FINAL_TYPES
from .helpers.servers import start_daphne
from .helpers.ws import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, stub_server):
    worker = start_daphne(env=stub_env(stub_server), name="sse")
    yield worker
    worker.stop()


@pytest.fixture
def conversation_id(user):
    return str(conversation_create(owner=user, source=Conversation.Source.API).id)


def messages_url(server, conversation_id):
    return f"{server.url}/api/conversations/{conversation_id}/messages"


def events_url(server, conversation_id):
    return f"{server.url}/api/conversations/{conversation_id}/events"


def send(client, server, key, conversation_id, content, **extra):
    """POST a message and read its SSE stream to the end."""
    with connect_sse(
        client,
        "POST",
        messages_url(server, conversation_id),
        json={"content": content, **extra},
        headers=bearer(key),
    ) as source:
        assert source.response.status_code == 200
        return source.response.headers, read_events(source)


def test_a_reply_streams_as_sse_and_its_tokens_join_to_the_stored_text(
    server, key, conversation_id
):
    with httpx.Client(timeout=20) as client:
        headers, received = send(client, server, key, conversation_id, "tokens=30", client_id="c1")

    assert headers["content-type"] == "text/event-stream"
    assert "no-cache" in headers["cache-control"]
    assert headers["x-accel-buffering"] == "no"
    created = [e for e in received if e["type"] == "message.created"]
    assert [e["message"]["role"] for e in created] == ["user", "assistant"]
    assert all(e["client_id"] == "c1" for e in created)
    reply_id = created[1]["message"]["id"]
    assert created[1]["_id"] == f"{reply_id}:0"
    tokens = tokens_of(received)
    assert [t["seq"] for t in tokens] == list(range(1, len(tokens) + 1))
    assert [t["_id"] for t in tokens] == [f"{reply_id}:{t['seq']}" for t in tokens]
    final = received[-1]
    assert [e["type"] for e in received].count(final["type"]) == 1
    assert final["type"] == "message.completed"
    assert final["_id"] == f"{reply_id}:final"
    text = "".join(t["content"] for t in tokens)
    assert text == "".join(f"t{i} " for i in range(1, 31))
    assert final["message"]["content"] == text
    assert Message.objects.get(pk=reply_id).content == text


def test_chunks_with_newlines_data_lines_and_emoji_arrive_intact(server, key, conversation_id):
    with httpx.Client(timeout=20) as client:
        _, received = send(client, server, key, conversation_id, "script=tricky")
    text = "".join(t["content"] for t in tokens_of(received))
    assert text == "".join(TRICKY_CHUNKS)
    assert received[-1]["message"]["content"] == text
    assert Message.objects.get(pk=received[-1]["message"]["id"]).content == text


def test_without_accept_event_stream_the_answer_is_202_with_the_messages(
    server, key, conversation_id
):
    response = httpx.post(
        messages_url(server, conversation_id), json={"content": "tokens=3"}, headers=bearer(key)
    )
    assert response.status_code == 202
    body = response.json()
    assert body["created"] is True
    assert body["user_message"]["content"] == "tokens=3"
    assert body["reply"]["status"] == "streaming"
    assert wait_until_final(body["reply"]["id"]).content == "t1 t2 t3 "


def test_resuming_mid_reply_with_last_event_id_ends_with_the_stored_text(
    server, key, conversation_id
):
    with httpx.Client(timeout=20) as client:
        with connect_sse(
            client,
            "POST",
            messages_url(server, conversation_id),
            json={"content": "tokens=120 gap_ms=8"},
            headers=bearer(key),
        ) as source:
            before = read_events(source, stop_after_tokens=5)
        last_id = before[-1]["_id"]
        reply_id, seq = last_id.split(":")
        with connect_sse(
            client,
            "GET",
            events_url(server, conversation_id),
            headers={**bearer(key), "Last-Event-ID": last_id},
        ) as source:
            after = read_events(source)

    assert Message.objects.get(pk=reply_id).status == "completed"
    assert after[0]["type"] == "token"  # no snapshot: it goes on right after the token
    resumed = tokens_of(after)
    assert [t["seq"] for t in resumed] == list(range(int(seq) + 1, int(seq) + 1 + len(resumed)))
    text = "".join(t["content"] for t in tokens_of(before) + resumed)
    assert text == after[-1]["message"]["content"]
    assert text == Message.objects.get(pk=reply_id).content
    assert text == "".join(f"t{i} " for i in range(1, 121))


def test_resuming_after_the_reply_ended_gives_its_final_event_once(server, key, conversation_id):
    with httpx.Client(timeout=httpx.Timeout(20, read=1.5)) as client:
        with connect_sse(
            client,
            "POST",
            messages_url(server, conversation_id),
            json={"content": "tokens=40 gap_ms=5"},
            headers=bearer(key),
        ) as source:
            before = read_events(source, stop_after_tokens=2)
        reply_id = before[-1]["message"]
        saved = wait_until_final(reply_id)

        def listen(last_event_id):
            received = []
            with connect_sse(
                client,
                "GET",
                events_url(server, conversation_id),
                headers={**bearer(key), "Last-Event-ID": last_event_id},
            ) as source:
                try:
                    for event in source.iter_sse():
                        received.append((event.event, event.id, json.loads(event.data)))
                except httpx.ReadTimeout:
                    pass  # quiet: nothing more is coming
            return received

        after_token = listen(before[-1]["_id"])
        after_final = listen(f"{reply_id}:final")

    assert [(kind, event_id) for kind, event_id, _ in after_token] == [
        ("message.completed", f"{reply_id}:final")
    ]
    assert after_token[0][2]["message"]["content"] == saved.content
    assert after_final == []  # it has everything: nothing is sent twice


def test_a_live_subscription_starts_with_a_snapshot_and_follows_the_conversation(
    server, key, conversation_id
):
    with httpx.Client(timeout=20) as client:
        with connect_sse(
            client, "GET", events_url(server, conversation_id), headers=bearer(key)
        ) as source:
            events = source.iter_sse()
            snapshot = json.loads(next(events).data)
            assert snapshot["type"] == "snapshot"
            assert snapshot["messages"] == []
            started = client.post(
                messages_url(server, conversation_id),
                json={"content": "tokens=10"},
                headers=bearer(key),
            )
            assert started.status_code == 202
            received = []
            for event in events:
                received.append(json.loads(event.data))
                if received[-1]["type"] in FINAL_TYPES:
                    break
    reply_id = started.json()["reply"]["id"]
    assert [e["type"] for e in received if e["type"] == "message.created"] == [
        "message.created"
    ] * 2
    text = "".join(t["content"] for t in tokens_of(received))
    assert text == received[-1]["message"]["content"] == Message.objects.get(pk=reply_id).content


async def test_a_reply_started_over_the_api_streams_live_to_a_websocket_viewer(
    server, user, conversation_id
):
    key = await sync_to_async(new_key)(user)
    cookie = await session_cookie(user)
    async with websockets.connect(
        f"{server.ws_url}/ws/conversations/{conversation_id}/",
        additional_headers={"Cookie": f"sessionid={cookie}", "Origin": server.url},
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "snapshot"
        async with httpx.AsyncClient(timeout=20) as client:
            started = await client.post(
                messages_url(server, conversation_id),
                json={"content": "tokens=40 gap_ms=3"},
                headers=bearer(key),
            )
        assert started.status_code == 202
        received = []
        async with asyncio.timeout(20):
            while not received or received[-1]["type"] not in FINAL_TYPES:
                received.append(json.loads(await ws.recv()))
    reply_id = started.json()["reply"]["id"]
    created = [e["message"]["id"] for e in received if e["type"] == "message.created"]
    assert created == [started.json()["user_message"]["id"], reply_id]
    tokens = tokens_of(received)
    assert [t["seq"] for t in tokens] == list(range(1, len(tokens) + 1))
    text = "".join(t["content"] for t in tokens)
    assert text == "".join(f"t{i} " for i in range(1, 41))
    assert (await Message.objects.aget(pk=reply_id)).content == text


def test_a_client_that_hangs_up_mid_reply_still_gets_the_whole_reply_saved(
    server, key, conversation_id
):
    with httpx.Client(timeout=20) as client:
        with connect_sse(
            client,
            "POST",
            messages_url(server, conversation_id),
            json={"content": "tokens=150 gap_ms=5"},
            headers=bearer(key),
        ) as source:
            before = read_events(source, stop_after_tokens=3)
    saved = wait_until_final(before[-1]["message"])
    assert saved.status == "completed"
    assert saved.content == "".join(f"t{i} " for i in range(1, 151))


def test_a_retried_send_streams_the_same_reply_from_its_start(server, key, conversation_id):
    payload = {"content": "tokens=80 gap_ms=8", "client_id": "retry-1"}
    with httpx.Client(timeout=20) as client:
        with connect_sse(
            client, "POST", messages_url(server, conversation_id), json=payload, headers=bearer(key)
        ) as source:
            first = read_events(source, stop_after_tokens=3)  # then the connection drops
        _, retried = send(client, server, key, conversation_id, **payload)
        _, again = send(client, server, key, conversation_id, **payload)  # after it ended

    created = [e["message"]["id"] for e in first if e["type"] == "message.created"]
    assert [e["message"]["id"] for e in retried if e["type"] == "message.created"] == created
    tokens = tokens_of(retried)
    assert [t["seq"] for t in tokens] == list(range(1, len(tokens) + 1))
    text = "".join(t["content"] for t in tokens)
    assert text == retried[-1]["message"]["content"] == Message.objects.get(pk=created[1]).content
    assert [e["type"] for e in again] == ["message.created", "message.completed"]
    assert again[-1]["message"]["content"] == text
    assert Message.objects.filter(conversation_id=conversation_id).count() == 2


def test_event_streams_are_neither_compressed_nor_buffered(server, key, conversation_id):
    with httpx.Client(timeout=20, headers={"Accept-Encoding": "gzip"}) as client:
        with connect_sse(
            client,
            "POST",
            messages_url(server, conversation_id),
            json={"content": "tokens=40 gap_ms=25"},
            headers=bearer(key),
        ) as source:
            assert "content-encoding" not in source.response.headers
            arrivals = []
            for event in source.iter_sse():
                arrivals.append((event.event, time.monotonic()))
                if event.event in FINAL_TYPES:
                    break
    first_token = next(at for kind, at in arrivals if kind == "token")
    # The reply takes about a second; its first token came long before its end.
    assert arrivals[-1][1] - first_token > 0.5


def test_stop_answers_with_the_final_saved_reply(server, key, conversation_id):
    headers = bearer(key)
    with httpx.Client(timeout=20, headers=headers) as client:
        started = client.post(
            messages_url(server, conversation_id), json={"content": "tokens=400 gap_ms=10"}
        )
        reply_id = started.json()["reply"]["id"]
        time.sleep(0.3)
        stopped = client.post(f"{server.url}/api/conversations/{conversation_id}/stop")
        again = client.post(f"{server.url}/api/conversations/{conversation_id}/stop")
    assert stopped.status_code == 200
    body = stopped.json()
    assert body["id"] == reply_id
    assert body["status"] == "cancelled"
    saved = Message.objects.get(pk=reply_id)
    assert saved.status == "cancelled"
    assert body["content"] == saved.content
    assert 0 < len(saved.content) < len("".join(f"t{i} " for i in range(1, 401)))
    assert again.status_code == 409
    assert again.json()["code"] == "not_streaming"


# --- in-process: the framing and the heartbeat ------------------------------------------


def test_frames_escape_what_some_line_readers_take_for_line_breaks():
    text = json.dumps({"content": "a\u2028b\u2029c\x85d"}, ensure_ascii=False)
    lines = sse.frame(text, event="token", id="m:1").splitlines()
    assert lines[:2] == ["event: token", "id: m:1"]
    assert lines[3:] == [""]  # the data stayed on one line, then the blank line
    assert json.loads(lines[2].removeprefix("data: ")) == json.loads(text)


def test_last_event_ids_are_parsed_strictly():
    reply = str(uuid.uuid4())
    assert sse.parse_last_event_id(f"{reply}:12") == (reply, 12)
    assert sse.parse_last_event_id(f"{reply}:final") == (reply, None)
    for bad in (None, "", "abc:12", reply, ":3", f"{reply}:-1", f"{reply}:x", f"{reply}:١٢"):
        assert sse.parse_last_event_id(bad) is None
    # A seq no server sends (Python refuses to parse an int of over 4,300 digits).
    assert sse.parse_last_event_id(f"{reply}:{'9' * 5000}") is None


async def test_an_idle_stream_sends_a_ping(monkeypatch, user, conversation):
    from django.test import AsyncClient

    monkeypatch.setattr(streams, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(streams, "STALL_CHECK_S", 0.1)
    key = await sync_to_async(new_key)(user)
    response = await AsyncClient().get(
        f"/api/conversations/{conversation.id}/events", headers=bearer(key)
    )
    assert response.status_code == 200
    chunks = aiter(response.streaming_content)
    assert await anext(chunks) == sse.OPENING.encode()
    assert (await anext(chunks)).startswith(b"event: snapshot\n")
    started = time.monotonic()
    assert await anext(chunks) == b": ping\n\n"
    assert time.monotonic() - started >= 0.15
    await chunks.aclose()


# --- two workers sharing Redis ----------------------------------------------------------


@pytest.fixture(scope="module")
def worker_pair(django_db_setup, django_db_blocker, stub_server, redis_url):
    env = stub_env(
        stub_server, REDIS_URL=redis_url, CHANNEL_PREFIX=f"chatsite-sse-{uuid.uuid4().hex[:8]}"
    )
    a = start_daphne(env=env, name="sse-a")
    b = start_daphne(env=env, name="sse-b")
    yield a, b
    a.stop()
    b.stop()


def test_a_reply_running_on_one_worker_streams_and_resumes_on_another(
    worker_pair, key, conversation_id
):
    a, b = worker_pair
    with httpx.Client(timeout=20, headers=bearer(key)) as client:
        with connect_sse(client, "GET", events_url(b, conversation_id)) as live:
            live_events = live.iter_sse()
            assert next(live_events).event == "snapshot"
            with connect_sse(
                client,
                "POST",
                messages_url(a, conversation_id),
                json={"content": "tokens=120 gap_ms=8"},
            ) as source:
                before = read_events(source, stop_after_tokens=5)
            last_id = before[-1]["_id"]
            with connect_sse(
                client, "GET", events_url(b, conversation_id), headers={"Last-Event-ID": last_id}
            ) as resumed:
                after = read_events(resumed)
            followed = read_events(live_events)

    reply_id = last_id.split(":")[0]
    stored = Message.objects.get(pk=reply_id).content
    assert stored == "".join(f"t{i} " for i in range(1, 121))
    resumed_tokens = tokens_of(after)
    assert resumed_tokens[0]["seq"] == int(last_id.split(":")[1]) + 1
    assert "".join(t["content"] for t in tokens_of(before) + resumed_tokens) == stored
    live_tokens = tokens_of(followed)
    assert [t["seq"] for t in live_tokens] == list(range(1, len(live_tokens) + 1))
    assert "".join(t["content"] for t in live_tokens) == stored
