"""Tools in staff review: the transcript shows each call (hostile output as inert text),
the conversation list filters on tool use, the usage overview counts calls per user,
and only superusers register MCP servers."""

import pytest
from django.urls import reverse

from agents.models import McpServer
from conversations.models import Message

from .fakes.mcp_server import HOSTILE
from .helpers import review as build
from .helpers.review import READ

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:conversations_conversation_changelist"


def call(name: str, status: str = "completed", **fields) -> dict:
    return {
        "id": f"call_{name}_{status}",
        "name": name,
        "args": {"q": "x"},
        "status": status,
        "output": "ok" if status == "completed" else None,
        "error": None if status == "completed" else {"code": "tool_failed", "detail": "boom"},
        "duration_ms": 12,
        **fields,
    }


def reply(conversation, *calls, **fields) -> Message:
    asked = Message.objects.create(conversation=conversation, role="user", content="hi")
    return Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="answer",
        reply_to=asked,
        tool_calls=list(calls),
        **fields,
    )


@pytest.fixture
def reader_client(client, db):
    client.force_login(build.staff("reader", READ))
    return client


def test_the_transcript_shows_each_call_and_hostile_output_stays_text(reader_client, user):
    conversation = build.conversation(user, "Tools")
    reply(
        conversation,
        call("web__hostile", output=HOSTILE, args={"html": "<b>x</b>"}),
        call("web__fail", "failed"),
    )
    page = reader_client.get(
        reverse("admin:conversations_conversation_change", args=[conversation.pk])
    )
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-call-id="call_web__hostile_completed"' in html
    assert "took 12 ms" in html
    assert "tool_failed: boom" in html
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__pwned=2&lt;/script&gt;" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html  # arguments too


def test_the_list_filters_on_tool_use_and_failed_calls(reader_client, user):
    plain = build.conversation(user, "Plain")
    reply(plain)
    used = build.conversation(user, "Used tools")
    reply(used, call("calculator"))
    failed = build.conversation(user, "Failed call")
    reply(failed, call("calculator"), call("web__slow", "failed"))
    # A failure mentioned inside an output is not a failed call.
    mention = build.conversation(user, "Mentions failure")
    reply(mention, call("web__echo", output='{"status": "failed"}'))

    def titles(value):
        response = reader_client.get(reverse(CHANGELIST), {"tools": value})
        return {c.title for c in response.context["cl"].result_list}

    assert titles("used") == {"Used tools", "Failed call", "Mentions failure"}
    assert titles("failed") == {"Failed call"}


def test_usage_counts_tool_calls_per_user(reader_client, user, other_user):
    reply(build.conversation(user, "a"), call("calculator"), call("current_time"))
    reply(build.conversation(user, "b"), call("calculator"))
    reply(build.conversation(other_user, "c"))
    page = reader_client.get(reverse("admin:conversations_conversation_usage"))
    rows = {row["username"]: row["tool_calls"] for row in page.context["by_user_day"]}
    assert rows == {"alice": 3, "bob": 0}
    assert page.context["total"]["tool_calls"] == 3


def test_only_superusers_see_and_register_mcp_servers(client, db):
    url = reverse("admin:agents_mcpserver_add")
    client.force_login(build.staff("reader", READ))
    assert client.get(url).status_code == 403
    boss = build.staff("boss")
    boss.is_superuser = True
    boss.save()
    client.force_login(boss)
    response = client.post(
        url,
        {
            "name": "gone",
            "transport": "streamable_http",
            "url": "http://127.0.0.1:9/mcp",
            "args": "[]",
            "headers": "{}",
            "enabled": "on",
        },
        follow=True,
    )
    assert response.status_code == 200
    server = McpServer.objects.get(name="gone")
    assert "could not be reached" in server.last_error  # listed at once, in-band
    assert b"could not be reached" in response.content
