"""The WebSocket consumer, through the whole ASGI stack, on the offline model."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Message

from .helpers.ws import connect, joined_tokens, receive, receive_until_final

pytestmark = pytest.mark.django_db(transaction=True)


async def send_and_collect(ws, content="Hello there", **extra):
    await ws.send_json_to({"type": "message.send", "content": content, **extra})
    return await receive_until_final(ws)


async def test_connect_sends_a_snapshot(user, conversation):
    ws = await connect(user, conversation.id)
    snapshot = await receive(ws)
    assert snapshot["type"] == "snapshot"
    assert snapshot["conversation"]["id"] == str(conversation.id)
    assert snapshot["messages"] == []
    await ws.disconnect()


async def test_a_reply_streams_in_numbered_tokens_and_is_saved(user, conversation):
    ws = await connect(user, conversation.id)
    await receive(ws)
    received = await send_and_collect(ws, "Tell me about streaming", client_id="c-1")

    created = [e for e in received if e["type"] == "message.created"]
    assert [e["message"]["role"] for e in created] == ["user", "assistant"]
    assert created[0]["message"]["content"] == "Tell me about streaming"
    assert created[1]["message"]["status"] == "streaming"
    assert created[1]["message"]["seq"] == 0
    assert all(e["client_id"] == "c-1" for e in created)

    reply_id = created[1]["message"]["id"]
    text = joined_tokens(received, reply_id)
    final = received[-1]
    assert final["type"] == "message.completed"
    assert final["message"]["content"] == text
    assert "offline demo model" in text

    reply = await Message.objects.aget(pk=reply_id)
    assert reply.status == "completed"
    assert reply.content == text
    assert reply.seq == final["message"]["seq"]
    assert reply.usage["completion_tokens"] > 10
    assert reply.time_to_first_token_ms is not None
    assert reply.duration_ms >= reply.time_to_first_token_ms
    await ws.disconnect()


async def test_the_first_message_titles_the_conversation(user, conversation):
    ws = await connect(user, conversation.id)
    await receive(ws)
    received = await send_and_collect(ws, "Plan a trip to Lisbon")
    updated = [e for e in received if e["type"] == "conversation.updated"]
    assert updated[0]["conversation"]["title"] == "Plan a trip to Lisbon"
    await conversation.arefresh_from_db()
    assert conversation.title == "Plan a trip to Lisbon"
    await ws.disconnect()


async def test_stop_mid_reply_saves_exactly_what_the_viewer_got(settings, user, conversation):
    settings.CHAT_OFFLINE_DELAY_MS = 15
    ws = await connect(user, conversation.id)
    await receive(ws)
    await ws.send_json_to({"type": "message.send", "content": "Talk for a while"})
    received = []
    while len([e for e in received if e["type"] == "token"]) < 2:
        received.append(await receive(ws))
    await ws.send_json_to({"type": "reply.stop"})
    received += await receive_until_final(ws)

    final = received[-1]
    assert final["type"] == "message.cancelled"
    reply_id = final["message"]["id"]
    seen = joined_tokens(received, reply_id)
    assert final["message"]["content"] == seen
    reply = await Message.objects.aget(pk=reply_id)
    assert reply.status == "cancelled"
    assert reply.content == seen
    assert "restart chatsite" not in seen  # it really stopped before the end
    await ws.disconnect()


async def test_a_viewer_joining_mid_reply_ends_with_the_same_text(settings, user, conversation):
    settings.CHAT_OFFLINE_DELAY_MS = 10
    first = await connect(user, conversation.id)
    await receive(first)
    await first.send_json_to({"type": "message.send", "content": "Hello"})
    first_events = []
    while len([e for e in first_events if e["type"] == "token"]) < 3:
        first_events.append(await receive(first))

    second = await connect(user, conversation.id)
    snapshot = await receive(second)
    reply = next(m for m in snapshot["messages"] if m["role"] == "assistant")
    assert reply["status"] == "streaming"
    assert reply["seq"] >= 3
    second_events = await receive_until_final(second)
    first_events += await receive_until_final(first)

    joined = reply["content"] + joined_tokens(second_events, reply["id"], after=reply["seq"])
    final_text = second_events[-1]["message"]["content"]
    assert joined == final_text
    assert joined_tokens(first_events, reply["id"]) == final_text
    saved = await Message.objects.aget(pk=reply["id"])
    assert saved.content == final_text
    await first.disconnect()
    await second.disconnect()


async def test_a_disconnect_mid_reply_does_not_stop_it(settings, user, conversation):
    settings.CHAT_OFFLINE_DELAY_MS = 5
    ws = await connect(user, conversation.id)
    await receive(ws)
    await ws.send_json_to({"type": "message.send", "content": "Keep going"})
    while (await receive(ws))["type"] != "token":
        pass
    await ws.disconnect()

    reply = await Message.objects.aget(role="assistant")
    for _ in range(200):
        await reply.arefresh_from_db()
        if reply.status != "streaming":
            break
        await asyncio.sleep(0.05)
    assert reply.status == "completed"
    assert reply.content.endswith("then restart chatsite.")


async def test_a_repeated_client_id_starts_nothing_new(user, conversation):
    ws = await connect(user, conversation.id)
    await receive(ws)
    await send_and_collect(ws, "Once only", client_id="same-id")
    await ws.send_json_to({"type": "message.send", "content": "Once only", "client_id": "same-id"})
    # The send is acknowledged; its reply, which this client holds whole, is not repeated.
    again = await receive(ws)
    assert again["type"] == "message.created"
    assert again["message"]["role"] == "user"
    assert again["client_id"] == "same-id"
    assert await Message.objects.acount() == 2
    assert await ws.receive_nothing(timeout=0.3)
    await ws.disconnect()


async def test_a_repeated_client_id_while_streaming_answers_without_error(
    settings, user, conversation
):
    settings.CHAT_OFFLINE_DELAY_MS = 10
    ws = await connect(user, conversation.id)
    await receive(ws)
    await ws.send_json_to({"type": "message.send", "content": "Hi", "client_id": "retry-me"})
    await ws.send_json_to({"type": "message.send", "content": "Hi", "client_id": "retry-me"})
    received = await receive_until_final(ws)
    assert not [e for e in received if e["type"] == "error"]
    created = [e for e in received if e["type"] == "message.created"]
    assert len({e["message"]["id"] for e in created}) == 2  # the same two messages
    assert await Message.objects.acount() == 2
    await ws.disconnect()


async def test_a_second_send_while_streaming_is_refused_as_busy(settings, user, conversation):
    settings.CHAT_OFFLINE_DELAY_MS = 10
    ws = await connect(user, conversation.id)
    await receive(ws)
    await ws.send_json_to({"type": "message.send", "content": "First"})
    await ws.send_json_to({"type": "message.send", "content": "Second", "client_id": "b"})
    received = await receive_until_final(ws)
    errors = [e for e in received if e["type"] == "error"]
    assert errors == [
        {
            "type": "error",
            "code": "conversation_busy",
            "client_id": "b",
            "detail": errors[0]["detail"],
        }
    ]
    assert await Message.objects.acount() == 2
    await ws.disconnect()


async def test_anonymous_connections_are_refused(conversation):
    ws = await connect(None, conversation.id)
    assert not ws.accepted


async def test_another_users_conversation_is_refused(other_user, conversation):
    ws = await connect(other_user, conversation.id)
    assert not ws.accepted
    assert ws.close_code == 4404


async def test_an_unknown_conversation_is_refused(user):
    ws = await connect(user, "00000000-0000-0000-0000-000000000000")
    assert not ws.accepted


async def test_a_foreign_origin_is_refused(user, conversation):
    ws = await connect(user, conversation.id, origin="http://evil.example")
    assert not ws.accepted


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"type": "message.bogus"}', "unknown_type"),
        ('{"type": "message.send"}', "invalid_field"),
        ('{"type": "message.send", "content": 42}', "invalid_field"),
        ('{"type": "message.send", "content": "   \\n "}', "empty_content"),
        ('{"type": "message.send", "content": "hi", "client_id": 7}', "invalid_field"),
        ('{"type": "reply.stop"}', "not_streaming"),
        ('{"type": "reply.stop", "message": "not-a-uuid"}', "invalid_field"),
        ('{"type": "reply.stop", "message": 12}', "invalid_field"),
        ('{"type": "reply.regenerate", "message": "nope"}', "invalid_field"),
        ('{"type": "history"}', "invalid_field"),
        ('{"type": "history", "before": "nope"}', "invalid_field"),
        ('{"type": "history", "before": "00000000-0000-0000-0000-000000000001"}', "not_found"),
        ('{"type": "message.send", "content": "a\\u0000b"}', "invalid_characters"),
        ('{"type": "message.send", "content": "a\\ud800b"}', "invalid_characters"),
        ('{"type": "message.send", "content": "hi", "client_id": "\\u0000"}', "invalid_characters"),
    ],
)
async def test_bad_input_gets_an_error_and_the_socket_stays_usable(user, conversation, frame, code):
    ws = await connect(user, conversation.id)
    await receive(ws)
    await ws.send_to(text_data=frame)
    error = await receive(ws)
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["detail"]
    received = await send_and_collect(ws, "still here?")
    assert received[-1]["type"] == "message.completed"
    await ws.disconnect()


async def test_message_size_limit_is_exact(settings, user, conversation):
    settings.CHAT_MAX_MESSAGE_CHARS = 50
    ws = await connect(user, conversation.id)
    await receive(ws)
    await ws.send_json_to({"type": "message.send", "content": "x" * 51})
    error = await receive(ws)
    assert error["code"] == "message_too_long"
    received = await send_and_collect(ws, "y" * 50)
    assert received[0]["message"]["content"] == "y" * 50
    await ws.disconnect()


async def test_resync_answers_with_a_snapshot(user, conversation):
    ws = await connect(user, conversation.id)
    await receive(ws)
    await send_and_collect(ws, "hello")
    await ws.send_json_to({"type": "resync"})
    snapshot = await receive(ws)
    assert snapshot["type"] == "snapshot"
    saved = await sync_to_async(list)(Message.objects.order_by("created_at"))
    assert [m["content"] for m in snapshot["messages"]] == [m.content for m in saved]
    await ws.disconnect()


async def test_regenerate_answers_the_last_message_again(user, conversation):
    ws = await connect(user, conversation.id)
    await receive(ws)
    first = (await send_and_collect(ws, "Say it twice"))[-1]["message"]
    await ws.send_json_to({"type": "reply.regenerate", "message": first["id"]})
    received = await receive_until_final(ws)
    created = [e for e in received if e["type"] == "message.created"]
    assert [e["message"]["role"] for e in created] == ["assistant"]
    second = received[-1]["message"]
    assert second["id"] != first["id"]
    assert second["reply_to"] == first["reply_to"]
    assert second["content"] == first["content"]  # the offline model is deterministic
    assert await Message.objects.acount() == 3
    await ws.disconnect()


async def test_only_the_latest_reply_can_be_regenerated(user, conversation):
    ws = await connect(user, conversation.id)
    await receive(ws)
    first = (await send_and_collect(ws, "one"))[-1]["message"]
    await send_and_collect(ws, "two")
    await ws.send_json_to({"type": "reply.regenerate", "message": first["id"]})
    error = await receive(ws)
    assert error["code"] == "not_regenerable"
    await ws.disconnect()
