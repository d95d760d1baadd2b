"""API traffic in a real browser (Chromium via Playwright, the chat page's browser
fixtures): conversations made through a key stay out of the sidebar until the person
asks for them."""

from playwright.sync_api import expect

from conversations.services.apikeys import create_api_key
from conversations.services.conversations import conversation_create

from . import test_browser as browser
from .test_browser import context, server  # noqa: F401
from .test_browser import pytestmark as browser_marks

pytestmark = browser_marks


def test_the_sidebar_shows_api_conversations_only_when_asked(context, user):  # noqa: F811
    key, _ = create_api_key(owner=user, name="bot")
    typed = conversation_create(owner=user, title="Typed here")
    by_key = conversation_create(owner=user, title="Made by the bot", api_key=key)
    browser.logged_in(context, user)
    page = context.new_page()
    page.goto("/")
    expect(page.locator(f"[data-conversation-id='{typed.id}']")).to_be_visible()
    expect(page.locator(f"[data-conversation-id='{by_key.id}']")).to_have_count(0)
    page.get_by_label("Show API conversations").check()
    expect(page.locator(f"[data-conversation-id='{by_key.id}']")).to_be_visible()
    page.get_by_label("Show API conversations").uncheck()
    expect(page.locator(f"[data-conversation-id='{by_key.id}']")).to_have_count(0)
