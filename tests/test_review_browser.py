"""Staff review in a real browser: a user rates a reply on the chat page and staff see
it in the admin; staff watch a reply stream live on its admin page.

Uses the chat page's browser fixtures (tests/test_browser.py): Debian's Chromium
against a real daphne worker.
"""

import re

from playwright.sync_api import expect

from conversations.models import Message
from review.models import Feedback

from .helpers import review as build
from .helpers.review import READ
from .test_browser import context, logged_in, open_conversation, send, server  # noqa: F401
from .test_browser import pytestmark as browser_marks

pytestmark = browser_marks


def finished_reply(page):
    reply = page.locator("[data-role=assistant]:not([hidden])").last
    expect(reply).not_to_have_attribute("data-status", "streaming", timeout=30_000)
    expect(reply).to_have_attribute("data-status", re.compile(r"\w+"))
    return reply


def test_a_rating_given_in_the_chat_shows_up_in_the_admin(context, user, conversation):  # noqa: F811
    logged_in(context, user)
    page = open_conversation(context, conversation)
    send(page, "Rate me")
    reply = finished_reply(page)
    feedback = reply.locator("[data-part=feedback]")
    down = feedback.locator("[data-action=rate-down]")
    down.click()
    expect(down).to_have_attribute("aria-pressed", "true")
    reply.locator("textarea[name=comment]").fill("Too long-winded.")
    reply.get_by_role("button", name="Save").click()
    expect(feedback.locator("[data-part=feedback-status]")).to_have_text("Thanks for the comment.")
    saved = Feedback.objects.get()
    assert (saved.user, saved.rating, saved.comment) == (user, -1, "Too long-winded.")
    assert saved.message.role == Message.Role.ASSISTANT

    page.reload()  # the rating is shown again, and can be changed
    reply = finished_reply(page)
    feedback = reply.locator("[data-part=feedback]")
    expect(feedback.locator("[data-action=rate-down]")).to_have_attribute("aria-pressed", "true")
    expect(reply.locator("textarea[name=comment]")).to_have_value("Too long-winded.")
    feedback.locator("[data-action=rate-up]").click()
    expect(feedback.locator("[data-action=rate-up]")).to_have_attribute("aria-pressed", "true")
    expect(feedback.locator("[data-action=rate-down]")).to_have_attribute("aria-pressed", "false")
    saved.refresh_from_db()
    assert saved.rating == 1

    logged_in(context, build.staff("reader", READ))
    admin = context.new_page()
    admin.goto("/admin/conversations/conversation/?feedback=up")
    admin.get_by_role("link", name="Rate me").click()
    rating = admin.locator(f"[data-message-id='{saved.message_id}'] .tx-feedback li")
    expect(rating).to_contain_text("Thumbs up by alice")
    expect(rating).to_contain_text("Too long-winded.")


def test_staff_watch_a_reply_stream_on_its_admin_page(context, server, user, conversation):  # noqa: F811
    logged_in(context, build.staff("reader", READ))
    admin = context.new_page()
    admin.goto(f"/admin/conversations/conversation/{conversation.pk}/change/")
    expect(admin.locator("#transcript-live")).to_be_visible()

    chat = context.browser.new_context(base_url=server.url)
    try:
        logged_in(chat, user)
        page = open_conversation(chat, conversation)
        send(page, "Watch this")
        admin.bring_to_front()
        streaming = admin.locator("#transcript [data-role=assistant][data-status=streaming]")
        expect(streaming).to_have_count(1, timeout=15_000)
        reply = admin.locator("#transcript [data-role=assistant]")
        expect(reply).to_have_attribute("data-status", "completed", timeout=30_000)
        stored = Message.objects.get(role=Message.Role.ASSISTANT)
        assert reply.locator("[data-part=body]").text_content() == stored.content
        expect(admin.locator("#transcript [data-role=user]")).to_contain_text("Watch this")
    finally:
        chat.close()
