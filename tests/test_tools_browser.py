"""Tools in a real browser (Chromium via Playwright, the chat page's browser fixtures):
enabling the calculator in the composer's tools menu and watching the offline model
call it; a reload mid-call; hostile tool output staying text; the admin transcript."""

import re

import pytest
from playwright.sync_api import expect

from conversations.models import Conversation, Message
from conversations.services.conversations import conversation_create

from .fakes.mcp_server import HOSTILE
from .helpers import review as build
from .helpers.api import stub_env
from .helpers.review import READ
from .helpers.servers import start_daphne
from .test_agents import mcp_http, web  # noqa: F401
from .test_browser import context, logged_in, server  # noqa: F401
from .test_browser import pytestmark as browser_marks

pytestmark = browser_marks


@pytest.fixture(scope="module")
def stub_worker(django_db_setup, django_db_blocker, stub_server):
    """A worker whose model is the stub server, for calls to the test MCP server."""
    worker = start_daphne(env=stub_env(stub_server), name="tools-browser")
    yield worker
    worker.stop()


def ask(context, worker, user, tool: str, content: str):  # noqa: F811
    """A conversation with one tool, open on ``worker``'s chat page, and a message sent."""
    conversation = conversation_create(owner=user, tools=[tool])
    logged_in(context, user)
    page = context.new_page()
    page.goto(f"{worker.url}/c/{conversation.id}/")
    expect(page.locator("#messages")).to_have_attribute("data-connection", "live")
    page.locator("textarea[name=content]").fill(content)
    page.locator("textarea[name=content]").press("Enter")
    return page


def test_enable_the_calculator_watch_the_call_and_read_the_answer(context, user):  # noqa: F811
    logged_in(context, user)
    page = context.new_page()
    page.goto("/")
    page.locator("[data-action=tools]").click()
    page.locator("input[data-tool=calculator]").check()
    expect(page.locator("[data-part=tools-count]")).to_have_text("1")
    page.locator("textarea[name=content]").fill("what is 1234 * 5678?")
    page.locator("textarea[name=content]").press("Enter")

    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    conversation = Conversation.objects.get()
    assert conversation.tools == ["calculator"]
    reply = page.locator("[data-role=assistant]").last
    call = reply.locator(".tool-call[data-tool-name=calculator]")
    expect(call).to_be_visible()
    expect(call).to_have_attribute("data-tool-status", "completed", timeout=30_000)
    expect(reply).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(reply.locator("[data-part=body]")).to_contain_text("7006652")
    call.locator("summary").click()
    expect(call.locator("[data-part=tool-output]")).to_have_text("7006652")
    expect(call.locator(".tool-args")).to_contain_text('"expression": "1234 * 5678"')

    page.reload()  # the same after a reload
    call = page.locator("[data-role=assistant]").last.locator(".tool-call")
    expect(call).to_have_attribute("data-tool-status", "completed")
    expect(page.locator("[data-role=assistant]").last).to_contain_text("7006652")

    # The menu shows the conversation's tools; unticking saves at once.
    page.locator("[data-action=tools]").click()
    expect(page.locator("input[data-tool=calculator]")).to_be_checked()
    page.locator("input[data-tool=calculator]").uncheck()
    expect(page.locator("[data-part=tools-count]")).to_have_text("")
    page.wait_for_function("1")  # let the PATCH land
    for _ in range(50):
        conversation.refresh_from_db()
        if conversation.tools == []:
            break
        page.wait_for_timeout(100)
    assert conversation.tools == []

    # Staff see the call in the admin transcript.
    logged_in(context, build.staff("reader", READ))
    admin = context.new_page()
    admin.goto(f"/admin/conversations/conversation/{conversation.pk}/change/")
    shown = admin.locator("#transcript [data-part=tool-calls] li")
    expect(shown).to_have_attribute("data-tool-status", "completed")
    expect(shown.locator("[data-part=tool-output]")).to_have_text("7006652")


def test_a_reload_mid_call_shows_it_running_then_completed(web, context, stub_worker, user):  # noqa: F811
    page = ask(context, stub_worker, user, "web__slow", 'call=web__slow{"seconds":4}')
    call = page.locator("[data-role=assistant] .tool-call[data-tool-name=web__slow]")
    expect(call).to_have_attribute("data-tool-status", "running")

    page.reload()
    call = page.locator("[data-role=assistant] .tool-call[data-tool-name=web__slow]")
    expect(call).to_have_attribute("data-tool-status", "running")
    expect(call).to_have_attribute("data-tool-status", "completed", timeout=20_000)
    reply = page.locator("[data-role=assistant]").last
    expect(reply).to_have_attribute("data-status", "completed")
    stored = Message.objects.get(role="assistant")
    assert stored.tool_calls[0]["status"] == "completed"
    call.locator("summary").click()
    expect(call.locator("[data-part=tool-output]")).to_have_text("slept 4 s")


def test_hostile_tool_output_is_shown_as_text(web, context, stub_worker, user):  # noqa: F811
    page = ask(context, stub_worker, user, "web__hostile", "call=web__hostile")
    call = page.locator("[data-role=assistant] .tool-call")
    expect(call).to_have_attribute("data-tool-status", "completed", timeout=20_000)
    call.locator("summary").click()
    expect(call.locator("[data-part=tool-output]")).to_have_text(HOSTILE)
    assert call.locator("img, script, strong").count() == 0
    assert page.evaluate("window.__pwned") is None
