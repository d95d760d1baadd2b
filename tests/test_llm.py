"""Replies from the real ChatOpenAI, over HTTP to the stub OpenAI-compatible server."""

import httpx
import pytest
from channels.db import database_sync_to_async
from django.db import connection

from conversations import db, llm
from conversations.models import Message
from tests.fakes.openai_stub import TRICKY_CHUNKS

from .helpers.ws import connect, joined_tokens, receive, receive_until_final

pytestmark = pytest.mark.django_db(transaction=True)


async def reply_to(user, conversation, content):
    ws = await connect(user, conversation.id)
    await receive(ws)
    await ws.send_json_to({"type": "message.send", "content": content})
    received = await receive_until_final(ws, timeout=30)
    await ws.disconnect()
    reply_id = received[-1]["message"]["id"]
    return received, await Message.objects.aget(pk=reply_id)


def test_the_model_is_chatopenai_when_a_server_is_configured(openai_stub):
    from langchain_openai import ChatOpenAI

    assert isinstance(llm.get_llm(), ChatOpenAI)
    assert llm.get_llm().openai_api_base == f"{openai_stub}/v1"
    assert llm.model_name() == "stub-model"


def test_the_offline_model_says_what_it_is():
    assert llm.model_name() == "offline-demo"
    assert "Offline demo model" in llm.model_label()
    assert "OPENAI_API_KEY" in llm.model_label()


async def test_tokens_arrive_in_order_and_the_saved_reply_equals_them(
    openai_stub, user, conversation
):
    received, reply = await reply_to(user, conversation, "tokens=40 gap_ms=2")
    text = joined_tokens(received, str(reply.id))
    assert text == "".join(f"t{i} " for i in range(1, 41))
    assert reply.content == text
    assert reply.status == "completed"
    assert reply.model == "stub-model"
    assert reply.usage == {"prompt_tokens": reply.usage["prompt_tokens"], "completion_tokens": 40}
    assert reply.usage["prompt_tokens"] > 0


async def test_awkward_text_survives_exactly(openai_stub, user, conversation):
    received, reply = await reply_to(user, conversation, "script=tricky")
    expected = "".join(TRICKY_CHUNKS)
    assert joined_tokens(received, str(reply.id)) == expected
    assert received[-1]["message"]["content"] == expected
    assert reply.content == expected


async def test_history_reaches_the_model(openai_stub, user, conversation):
    await reply_to(user, conversation, "first message")
    _, reply = await reply_to(user, conversation, "second message")
    # The stub counts words over every message it was sent: history makes it larger.
    assert reply.usage["prompt_tokens"] > len("second message".split()) + 5


@pytest.mark.parametrize(
    ("directive", "code", "partial"),
    [
        ("drop_after=5", "model_stream_broken", "t1 t2 t3 t4 t5 "),
        ("status=500", "model_error", ""),
        ("stall_after=3", "chunk_timeout", "t1 t2 t3 "),
    ],
)
async def test_a_model_failure_ends_the_reply_as_failed_keeping_the_text(
    settings, openai_stub, user, conversation, directive, code, partial
):
    settings.CHAT_CHUNK_TIMEOUT_S = 1
    received, reply = await reply_to(user, conversation, f"tokens=50 {directive} gap_ms=1")
    final = received[-1]
    assert final["type"] == "message.failed"
    assert final["message"]["error"]["code"] == code
    assert final["message"]["error"]["detail"]
    assert reply.status == "failed"
    assert reply.error["code"] == code
    seen = joined_tokens(received, str(reply.id))
    # Everything the model sent before it failed reached the viewer and was kept.
    assert reply.content == seen == final["message"]["content"] == partial


async def test_an_unreachable_model_server_fails_the_reply(settings, user, conversation):
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    settings.OPENAI_API_KEY = "sk-test"
    settings.CHAT_MODEL_RETRIES = 0
    received, reply = await reply_to(user, conversation, "hello?")
    assert received[-1]["type"] == "message.failed"
    assert reply.error["code"] == "model_unreachable"


async def test_the_reply_timeout_fails_a_slow_reply(settings, openai_stub, user, conversation):
    settings.CHAT_REPLY_TIMEOUT_S = 0.6
    received, reply = await reply_to(user, conversation, "tokens=400 gap_ms=10")
    assert received[-1]["type"] == "message.failed"
    assert reply.error["code"] == "reply_timeout"
    assert 0 < len(reply.content.split()) < 400


async def test_stop_closes_the_model_stream(settings, openai_stub, user, conversation):
    ws = await connect(user, conversation.id)
    await receive(ws)
    await ws.send_json_to({"type": "message.send", "content": "tokens=2000 gap_ms=5"})
    while (await receive(ws))["type"] != "token":
        pass
    await ws.send_json_to({"type": "reply.stop"})
    received = await receive_until_final(ws)
    assert received[-1]["type"] == "message.cancelled"
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"{openai_stub}/stats")).json()
    assert stats["open_streams"] == 0
    assert stats["hangups"] >= 1
    await ws.disconnect()


async def test_database_writes_are_bounded_by_the_flush_interval_not_tokens(
    settings, openai_stub, user, conversation
):
    """500 tokens from a fast model: a handful of writes, not one per token."""
    settings.CHAT_FLUSH_INTERVAL_MS = 250
    writes = []

    def count_writes(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith(("UPDATE", "INSERT")):
            writes.append(sql)
        return execute(sql, params, many, context)

    # The live path's database work runs on conversations.db's threads; watch each
    # one's connection (and the thread of Django's async ORM calls).
    def watch_all():
        db.on_every_thread(lambda: connection.execute_wrappers.append(count_writes))
        connection.execute_wrappers.append(count_writes)

    def unwatch_all():
        db.on_every_thread(lambda: connection.execute_wrappers.remove(count_writes))
        connection.execute_wrappers.remove(count_writes)

    watch = database_sync_to_async(watch_all)
    unwatch = database_sync_to_async(unwatch_all)
    ws = await connect(user, conversation.id)
    await receive(ws)
    await watch()
    try:
        await ws.send_json_to({"type": "message.send", "content": "tokens=500 gap_ms=2"})
        received = await receive_until_final(ws, timeout=30)
    finally:
        await unwatch()
    await ws.disconnect()
    reply = await Message.objects.aget(pk=received[-1]["message"]["id"])
    frames = len([e for e in received if e["type"] == "token"])
    flush_bound = reply.duration_ms / 250 + 1
    # 2 inserts (user message, reply) + the conversation's activity + flushes + final save
    assert 4 <= len(writes) <= 3 + flush_bound + 1, writes
    assert frames < 500  # chunks were coalesced into frames
    assert reply.content == "".join(f"t{i} " for i in range(1, 501))
