"""Edit and branch: a conversation is a tree, one branch of which is shown, paged, sent
to the model and read by the API; over the WebSocket (in-process, offline model) and the
JSON API (a real worker)."""

import importlib

import pytest
from asgiref.sync import sync_to_async
from django.apps import apps as django_apps

from conversations import selectors
from conversations.models import Message
from conversations.services import replies

from .helpers.api import read_events, wait_until_final
from .helpers.ws import connect, receive, receive_until_final

pytestmark = pytest.mark.django_db(transaction=True)


async def send(ws, content: str) -> list[dict]:
    await ws.send_json_to({"type": "message.send", "content": content})
    return await receive_until_final(ws)


def created(received: list[dict], role: str) -> dict:
    return next(
        e["message"]
        for e in received
        if e["type"] == "message.created" and e["message"]["role"] == role
    )


def branch(conversation) -> list[str]:
    """The active branch's contents, oldest first."""
    return list(
        Message.objects.filter(conversation=conversation, active=True)
        .order_by("created_at")
        .values_list("content", flat=True)
    )


async def test_an_edit_makes_a_new_branch_whose_reply_sees_only_it(user, conversation):
    ws = await connect(user, conversation.id)
    await receive(ws)
    await send(ws, "first question")
    second = created(await send(ws, "second question"), "user")
    await send(ws, "third question")

    await ws.send_json_to(
        {"type": "message.edit", "message": second["id"], "content": "second, edited"}
    )
    received = await receive_until_final(ws)
    edited, reply = created(received, "user"), created(received, "assistant")
    assert edited["parent"] == second["parent"]  # beside the message it replaces
    assert edited["siblings"] == [second["id"], edited["id"]]
    assert reply["parent"] == edited["id"]
    # The offline model counts the user's messages it was shown: the branch's two.
    assert "It is message number 2 from you" in received[-1]["message"]["content"]

    shown = await sync_to_async(branch)(conversation)
    assert shown[0] == "first question"
    assert shown[2] == "second, edited"
    assert len(shown) == 4
    # Nothing was lost: the old branch (second and third exchanges) is still stored.
    assert await Message.objects.filter(conversation=conversation).acount() == 8
    await ws.disconnect()


async def test_switching_branches_is_heard_by_every_tab_and_the_snapshot_follows(
    user, conversation
):
    first_tab = await connect(user, conversation.id)
    second_tab = await connect(user, conversation.id)
    await receive(first_tab)
    await receive(second_tab)
    original = created(await send(first_tab, "original"), "user")
    await receive_until_final(second_tab)
    await first_tab.send_json_to(
        {"type": "message.edit", "message": original["id"], "content": "rewritten"}
    )
    await receive_until_final(first_tab)
    await receive_until_final(second_tab)

    await first_tab.send_json_to({"type": "branch.select", "message": original["id"]})
    for tab in (first_tab, second_tab):
        switched = await receive(tab)
        assert switched["type"] == "branch.switched"
        await tab.send_json_to({"type": "resync"})
        snapshot = await receive(tab)
        assert snapshot["messages"][0]["content"] == "original"
        assert snapshot["messages"][0]["siblings"][0] == original["id"]
        assert len(snapshot["messages"][0]["siblings"]) == 2
    assert (await sync_to_async(branch)(conversation))[0] == "original"
    await first_tab.disconnect()
    await second_tab.disconnect()


async def test_edits_and_switches_are_refused_while_a_reply_streams_and_for_replies(
    user, conversation, settings
):
    settings.CHAT_OFFLINE_DELAY_MS = 50
    ws = await connect(user, conversation.id)
    await receive(ws)
    done = await send(ws, "quick")
    user_message, reply = created(done, "user"), done[-1]["message"]
    await ws.send_json_to({"type": "message.edit", "message": reply["id"], "content": "x"})
    assert (await receive(ws))["code"] == "not_editable"

    await ws.send_json_to({"type": "message.send", "content": "a slow one"})
    while (await receive(ws))["type"] != "token":
        pass
    await ws.send_json_to({"type": "message.edit", "message": user_message["id"], "content": "y"})
    await ws.send_json_to({"type": "branch.select", "message": user_message["id"]})
    codes = []
    while len(codes) < 2:
        event = await receive(ws)
        if event["type"] == "error":
            codes.append(event["code"])
    assert codes == ["conversation_busy"] * 2
    await ws.send_json_to({"type": "reply.stop"})
    await receive_until_final(ws)
    await ws.disconnect()


async def test_regenerating_keeps_the_earlier_reply_as_a_sibling_off_the_branch(user, conversation):
    ws = await connect(user, conversation.id)
    await receive(ws)
    first = (await send(ws, "Say it twice"))[-1]["message"]
    await ws.send_json_to({"type": "reply.regenerate", "message": first["id"]})
    received = await receive_until_final(ws)
    second = created(received, "assistant")
    assert second["siblings"] == [first["id"], second["id"]]
    await ws.send_json_to({"type": "resync"})
    snapshot = await receive(ws)
    assert [m["id"] for m in snapshot["messages"]][1] == second["id"]
    assert len(snapshot["messages"]) == 2
    await ws.disconnect()


def test_the_model_sees_the_branch_shown(user, conversation):
    def add(role, content, parent):
        return Message.objects.create(
            conversation=conversation, role=role, content=content, parent=parent
        )

    question = add("user", "q1", None)
    old = add("assistant", "old answer", question)
    new = add("assistant", "new answer", question)
    Message.objects.filter(pk=old.pk).update(active=False)
    follow_up = add("user", "q2", new)
    assert replies._turns_before(follow_up) == [("user", "q1"), ("assistant", "new answer")]


def test_existing_conversations_become_one_branch(user, conversation):
    """The data migration: a linear history, regenerated replies as siblings."""
    question = Message.objects.create(conversation=conversation, role="user", content="q1")
    first = Message.objects.create(
        conversation=conversation, role="assistant", content="a1", reply_to=question
    )
    second = Message.objects.create(
        conversation=conversation, role="assistant", content="a1 again", reply_to=question
    )
    follow_up = Message.objects.create(conversation=conversation, role="user", content="q2")
    migration = importlib.import_module("conversations.migrations.0004_branches_presets")
    migration.link_linear_histories(django_apps, None)

    rows = {m.pk: m for m in Message.objects.all()}
    assert rows[question.pk].parent_id is None
    assert rows[first.pk].parent_id == rows[second.pk].parent_id == question.pk
    assert rows[follow_up.pk].parent_id == second.pk
    assert [rows[m.pk].active for m in (question, first, second, follow_up)] == [
        True,
        False,
        True,
        True,
    ]
    messages, _ = selectors.latest_messages(conversation.id)
    assert [m.content for m in messages] == ["q1", "a1 again", "q2"]
    assert messages[1].siblings == [str(first.pk), str(second.pk)]


# --- the JSON API ---------------------------------------------------------------------------


def test_the_api_edits_reads_the_branch_shown_and_switches(api):
    conversation_id = api.post("/conversations", json={}).json()["id"]
    sent = api.post(f"/conversations/{conversation_id}/messages", json={"content": "v1"}).json()
    wait_until_final(sent["reply"]["id"])
    original = sent["user_message"]["id"]

    with api.stream(
        "POST",
        f"/conversations/{conversation_id}/messages/{original}/edit",
        json={"content": "v2", "client_id": "edit-1"},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        from httpx_sse import EventSource

        received = read_events(EventSource(response))
    assert received[-1]["type"] == "message.completed"
    edited = received[0]["message"]
    assert edited["content"] == "v2"

    detail = api.get(f"/conversations/{conversation_id}").json()
    assert detail["messages"][0]["content"] == "v2"
    assert detail["messages"][0]["siblings"] == [original, edited["id"]]

    switched = api.post(f"/conversations/{conversation_id}/branch", json={"message": original})
    assert switched.status_code == 200, switched.text
    assert switched.json()["messages"][0]["content"] == "v1"
    assert len(switched.json()["messages"]) == 2
    assert api.get(f"/conversations/{conversation_id}").json() == switched.json()

    # A repeated client_id starts nothing new; a reply is not editable; unknown ids 404.
    again = api.post(
        f"/conversations/{conversation_id}/messages/{original}/edit",
        json={"content": "v2", "client_id": "edit-1"},
    )
    assert again.status_code == 202 and again.json()["created"] is False
    reply = detail["messages"][1]["id"]
    refused = api.post(
        f"/conversations/{conversation_id}/messages/{reply}/edit", json={"content": "no"}
    )
    assert refused.status_code == 400 and refused.json()["code"] == "not_editable"
    for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000001"):
        missing = api.post(
            f"/conversations/{conversation_id}/messages/{bad}/edit", json={"content": "x"}
        )
        assert missing.status_code == 404, missing.text
    missing = api.post(
        f"/conversations/{conversation_id}/branch",
        json={"message": "00000000-0000-0000-0000-000000000001"},
    )
    assert missing.status_code == 404
