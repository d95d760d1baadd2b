"""Tools without a server process: the built-in tools' safety, choosing a
conversation's tools through the API, and the offline model calling the calculator
over the WebSocket consumer."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from langchain_core.tools import ToolException

from agents import builtin
from agents.models import McpServer
from conversations.models import Conversation, Message
from conversations.services.conversations import conversation_create

from .helpers.api import bearer
from .helpers.ws import connect, receive, receive_until_final

pytestmark = pytest.mark.django_db(transaction=True)


# --- the built-in tools -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1234 * 5678", "7006652"),
        ("(2 + 3) * 4 - 10 / 4", "17.5"),
        ("2 ** 10 % 1000", "24"),
        ("2^8", "256"),
        ("sqrt(16) + log10(1000)", "7"),
        ("-7 // 2", "-4"),
        ("round(pi, 4)", "3.1416"),
    ],
)
def test_the_calculator_computes_arithmetic(expression, value):
    assert builtin.calculate(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('id')",
        "().__class__.__bases__",
        "open('/etc/passwd').read()",
        "[x for x in range(10**9)]",
        "lambda: 1",
        "9 ** 9 ** 9",  # would take minutes and gigabytes
        "factorial(100000)",
        "1 / 0",
        "x + 1",
        "2" * 600,
    ],
)
def test_the_calculator_refuses_anything_but_bounded_arithmetic(expression):
    with pytest.raises(ToolException):
        builtin.calculate(expression)


def test_current_time_takes_an_iana_zone_and_refuses_others():
    assert "Europe/Paris" in builtin.current_time("Europe/Paris")
    with pytest.raises(ToolException):
        builtin.current_time("Mars/Olympus_Mons")


def test_search_finds_only_the_asking_users_messages(user, other_user):
    mine = conversation_create(owner=user, title="Trip plans")
    theirs = conversation_create(owner=other_user, title="Secret")
    Message.objects.create(conversation=mine, role="user", content="the zeppelin leaves at 9")
    Message.objects.create(conversation=theirs, role="user", content="zeppelin password 1234")

    found = json.loads(builtin.search_messages(user.pk, "ZEPPELIN"))["results"]
    assert [(r["conversation_id"], r["conversation_title"]) for r in found] == [
        (str(mine.id), "Trip plans")
    ]
    assert "password" not in json.dumps(found)


# --- choosing tools through the API -----------------------------------------------------


@pytest.fixture
def api(key):
    client = Client(headers=bearer(key))

    def call(method, path, body=None):
        return getattr(client, method)(
            f"/api{path}",
            data=json.dumps(body) if body is not None else None,
            content_type="application/json",
        )

    return call


def test_the_tools_are_listed_with_their_source(api):
    McpServer.objects.create(
        name="files",
        transport="stdio",
        command="true",
        tools=[{"name": "read", "description": "Read a file", "input_schema": {}}],
        listed_at="2999-01-01T00:00:00Z",  # fresh: not asked again
    )
    McpServer.objects.create(name="off", transport="stdio", command="true", enabled=False)
    listed = api("get", "/tools").json()
    assert {t["name"]: t["source"] for t in listed} == {
        "calculator": "builtin",
        "current_time": "builtin",
        "search_conversations": "builtin",
        "files__read": "mcp:files",
    }


def test_a_conversation_is_created_with_tools_and_they_can_be_changed(api, settings):
    settings.CHAT_DEFAULT_TOOLS = ["current_time"]
    default = api("post", "/conversations", {"title": "a"}).json()
    assert default["tools"] == ["current_time"]
    chosen = api("post", "/conversations", {"tools": ["calculator", "calculator"]}).json()
    assert chosen["tools"] == ["calculator"]

    changed = api("patch", f"/conversations/{chosen['id']}", {"tools": []})
    assert changed.status_code == 200 and changed.json()["tools"] == []
    assert Conversation.objects.get(pk=chosen["id"]).tools == []
    assert Conversation.objects.get(pk=chosen["id"]).title == ""  # only the tools changed


def test_an_unknown_tool_is_refused_and_nothing_changes(api):
    refused = api("post", "/conversations", {"tools": ["calculator", "rm_rf"]})
    assert refused.status_code == 400
    assert refused.json()["code"] == "unknown_tool"
    assert "rm_rf" in refused.json()["detail"]
    assert not Conversation.objects.exists()

    made = api("post", "/conversations", {"tools": ["calculator"]}).json()
    patched = api("patch", f"/conversations/{made['id']}", {"tools": ["nope__tool"]})
    assert (patched.status_code, patched.json()["code"]) == (400, "unknown_tool")
    assert Conversation.objects.get(pk=made["id"]).tools == ["calculator"]


# --- the offline model calls the calculator ---------------------------------------------


async def test_the_offline_model_calls_the_calculator_and_answers_with_the_result(user):
    conversation = await sync_to_async(conversation_create)(owner=user, tools=["calculator"])
    ws = await connect(user, conversation.id)
    await receive(ws)
    await ws.send_json_to({"type": "message.send", "content": "what is 1234 * 5678?"})
    received = await receive_until_final(ws, timeout=30)

    reply_id = received[-1]["message"]["id"]
    numbered = [e for e in received if e.get("seq") and e["message"] == reply_id]
    assert [e["seq"] for e in numbered] == list(range(1, len(numbered) + 1))
    assert [e["type"] for e in numbered][:2] == ["tool.started", "tool.completed"]
    assert numbered[0]["call"]["args"] == {"expression": "1234 * 5678"}
    assert numbered[1]["call"]["output"] == "7006652"
    final = received[-1]["message"]
    assert "7006652" in final["content"]
    assert final["content"] == "".join(e["content"] for e in numbered if e["type"] == "token")

    # A reload: the snapshot shows the call exactly as the live viewer ended with it.
    await ws.disconnect()
    again = await connect(user, conversation.id)
    snapshot = await receive(again)
    await again.disconnect()
    shown = next(m for m in snapshot["messages"] if m["id"] == reply_id)
    assert shown["tool_calls"] == final["tool_calls"] == [numbered[1]["call"]]


async def test_without_tools_the_offline_model_answers_as_always(user, conversation):
    ws = await connect(user, conversation.id)
    await receive(ws)
    await ws.send_json_to({"type": "message.send", "content": "what is 1234 * 5678?"})
    received = await receive_until_final(ws)
    await ws.disconnect()
    assert not [e for e in received if e["type"].startswith("tool.")]
    assert received[-1]["message"]["tool_calls"] == []
    assert "offline demo model" in received[-1]["message"]["content"]
