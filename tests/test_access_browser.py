"""Access in a real browser: a tab whose session ended says so and offers to log in
again, instead of reconnecting forever; the tabs of the session that changed its own
password go on."""

from playwright.sync_api import expect

from .test_browser import context, logged_in, open_conversation, server  # noqa: F401
from .test_browser import pytestmark as browser_marks

pytestmark = browser_marks


def log_out_from_the_account_menu(page) -> None:
    page.locator("[data-action=account-menu]").click()
    page.locator("[data-menu=logout]").click()
    expect(page).to_have_url("/login/")


def test_logging_out_in_another_tab_shows_the_session_ended(context, user, conversation):  # noqa: F811
    logged_in(context, user)
    chat = open_conversation(context, conversation)
    other = context.new_page()
    other.goto("/")
    log_out_from_the_account_menu(other)

    chat.bring_to_front()
    ended = chat.locator("[data-part=session-ended]")
    expect(ended).to_be_visible()
    expect(ended).to_contain_text("You logged out. Log in again.")
    expect(chat.locator("#messages")).to_have_attribute("data-connection", "closed")
    expect(chat.locator("#connection")).to_have_text("Session ended")
    ended.get_by_role("link", name="Log in again").click()
    expect(chat).to_have_url(f"/login/?next=/c/{conversation.id}/")


def test_changing_the_password_in_another_tab_keeps_this_browser_live(
    context,  # noqa: F811
    user,
    conversation,
):
    user.set_password("alice-password-1")
    user.save()
    logged_in(context, user)
    chat = open_conversation(context, conversation)
    other = context.new_page()
    other.goto("/account/password/")
    other.locator("[name=old_password]").fill("alice-password-1")
    other.locator("[name=new_password1]").fill("a new pass phrase 2")
    other.locator("[name=new_password2]").fill("a new pass phrase 2")
    other.locator("[type=submit]").last.click()
    expect(other).to_have_url("/account/password/done/")

    chat.bring_to_front()
    # Its socket was opened with the session that changed the password: it goes on.
    expect(chat.locator("#messages")).to_have_attribute("data-connection", "live")
    expect(chat.locator("[data-part=session-ended]")).to_be_hidden()
    chat.locator("textarea[name=content]").fill("still here")
    chat.locator("textarea[name=content]").press("Enter")
    expect(chat.locator("[data-role=user]").last).to_contain_text("still here")
