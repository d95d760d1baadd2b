"""Quotas in a real browser (Chromium via Playwright, the chat page's browser fixtures):
the person sees their tokens against their quota, updated as replies end, and a refusal
that says which limit and until when."""

import re

from playwright.sync_api import expect

from conversations.models import Message
from quotas.models import UserQuota

from . import test_browser as browser
from .test_browser import context, server  # noqa: F401
from .test_browser import pytestmark as browser_marks

pytestmark = browser_marks


def test_the_chat_shows_tokens_against_the_quota_and_why_a_send_is_refused(
    context,  # noqa: F811
    user,
    conversation,
):
    UserQuota.objects.create(user=user, tokens_per_day=20)
    browser.logged_in(context, user)
    page = browser.open_conversation(context, conversation)
    usage = page.locator("[data-part=quota-usage]")
    expect(usage).to_have_text("0 of 20 tokens today")

    browser.send(page, "Spend my day's tokens")
    expect(browser.last_reply(page)).to_have_attribute(
        "data-status", "completed", timeout=browser.REPLY_TIMEOUT_MS
    )
    reply = Message.objects.get(conversation=conversation, role="assistant")
    spent = reply.usage["prompt_tokens"] + reply.usage["completion_tokens"]
    assert spent >= 20
    expect(usage).to_have_text(f"{spent:,} of 20 tokens today")

    browser.send(page, "One more?")
    notice = page.locator("#notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text(f"You have used {spent:,} of your 20 tokens today")
    expect(notice).to_contain_text(re.compile(r"\(until .+\)"))
    expect(page.locator("textarea[name=content]")).to_have_value("One more?")
    assert Message.objects.filter(conversation=conversation).count() == 2
