"""The chat page in a real browser: Playwright driving Debian's Chromium against a real
daphne worker (one per module, replies slowed to 20 ms a token so they can be watched).

What the page shows is compared with what the database holds: the words a reader sees
with the stored Markdown's words, and the reply's copy button with the stored text.
"""

import itertools
import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.test import Client
from playwright.sync_api import Page, expect, sync_playwright

from conversations.models import Conversation, Message
from conversations.services.conversations import conversation_create

from .helpers.servers import ROOT, start_daphne

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
VENDOR = ROOT / "conversations/static/conversations/vendor"
REPLY_TIMEOUT_MS = 30_000

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.real_passwords,  # the server checks the password typed into its form
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="Chromium is not installed (apt-get install chromium); CI always runs these",
    ),
]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    built = ("marked.umd.js", "purify.min.js", "katex/katex.min.js", "hljs/highlight.min.js")
    missing = [name for name in built if not (VENDOR / name).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not built: run `make frontend` (npm ci) first")
    server = start_daphne(env={"CHAT_OFFLINE_DELAY_MS": "20"}, name="browser-daphne")
    yield server
    server.stop()


@pytest.fixture
def context(server, request, monkeypatch):
    """A fresh browser for each test. Playwright's sync API marks an asyncio loop as
    running in this thread while it is up, so it is started after, and stopped before,
    the suite's async fixtures; the test's own ORM calls are sync code all the same."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    context = browser.new_context(
        base_url=server.url,
        viewport={"width": 1200, "height": 850},
        permissions=["clipboard-read", "clipboard-write"],
    )
    context.set_default_timeout(10_000)
    script_errors: list[str] = []
    context.on("page", lambda page: page.on("pageerror", lambda e: script_errors.append(str(e))))
    failed_before = request.session.testsfailed
    try:
        yield context
        if request.session.testsfailed > failed_before or script_errors:
            ARTIFACTS.mkdir(exist_ok=True)
            name = re.sub(r"[^\w.-]+", "_", request.node.name)
            for number, page in enumerate(context.pages):
                page.screenshot(path=ARTIFACTS / f"{name}-{number}.png", full_page=True)
        assert script_errors == [], "the page's scripts raised"
    finally:
        context.close()
        browser.close()
        playwright.stop()


def logged_in(context, user) -> None:
    """Log a browser context in without the form (the first test uses the form)."""
    client = Client()
    client.force_login(user)
    context.add_cookies(
        [
            {
                "name": "sessionid",
                "value": client.cookies["sessionid"].value,
                "domain": "127.0.0.1",
                "path": "/",
            }
        ]
    )


# --- what the page shows ------------------------------------------------------------------


def visible_words(markdown: str) -> list[str]:
    """The words a reader sees once Markdown is rendered, for the offline model's
    answers: no emphasis or code marks, list bullets or fence lines."""
    lines = [line for line in markdown.splitlines() if not line.startswith("```")]
    # A bullet alone (a reply stopped right after it) shows as an empty list item.
    text = "\n".join(re.sub(r"^\s*[-*](\s+|$)", "", line) for line in lines)
    return text.replace("**", "").replace("`", "").split()


def last_reply(page: Page):
    return page.locator("[data-role=assistant]:not([hidden])").last


def body_of(message) -> str:
    return message.locator("[data-part=body]").inner_text()


def watch_reply(page: Page, timeout_s: float = 30) -> list[str]:
    """Every distinct text the last reply showed while it streamed, until it ended."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = page.evaluate(
            """() => {
                const replies = document.querySelectorAll('[data-role=assistant]:not([hidden])');
                const reply = replies[replies.length - 1];
                if (!reply) return null;
                return [reply.dataset.status, reply.querySelector('[data-part=body]').innerText];
            }"""
        )
        if state is not None:
            status, text = state
            if status != "streaming":
                return seen
            if text.strip() and (not seen or seen[-1] != text):
                seen.append(text)
        time.sleep(0.03)
    raise AssertionError(f"the reply did not end within {timeout_s} s")


def copied_text(page: Page, message) -> str:
    message.locator("[data-action=copy]").click()
    expect(message.locator("[data-action=copy]")).to_have_class(re.compile("copied"))
    return page.evaluate("navigator.clipboard.readText()")


def assert_shows_stored_text(page: Page, message, stored: Message) -> None:
    assert body_of(message).split() == visible_words(stored.content)
    assert copied_text(page, message) == stored.content


def open_conversation(context, conversation) -> Page:
    page = context.new_page()
    page.goto(f"/c/{conversation.id}/")
    expect(page.locator("#messages")).to_have_attribute("data-connection", "live")
    return page


def send(page: Page, text: str) -> None:
    page.bring_to_front()  # a tab in the background gets no animation frames
    page.locator("textarea[name=content]").fill(text)
    page.locator("textarea[name=content]").press("Enter")


# --- the tests ----------------------------------------------------------------------------


def test_log_in_send_and_watch_the_reply_grow_to_the_stored_text(context, user):
    page = context.new_page()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("alice-password-1")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/$"))

    composer = page.locator("textarea[name=content]")
    composer.fill("Tell me about streaming")
    composer.press("Shift+Enter")
    composer.press_sequentially("in two lines")
    assert composer.input_value() == "Tell me about streaming\nin two lines"
    assert Message.objects.count() == 0  # Shift+Enter only added a line
    composer.press("Enter")

    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    expect(page.locator("[data-action=stop]")).to_be_visible()
    expect(page.locator("[data-action=send]")).to_be_disabled()
    states = watch_reply(page)
    assert len(states) >= 2, f"saw only {len(states)} intermediate state(s)"
    assert all(len(a) < len(b) for a, b in itertools.pairwise(states))

    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "completed")
    stored = Message.objects.get(role=Message.Role.ASSISTANT)
    assert stored.status == Message.Status.COMPLETED
    assert_shows_stored_text(page, reply, stored)
    sent = Message.objects.get(role=Message.Role.USER)
    assert sent.content == "Tell me about streaming\nin two lines"
    assert page.locator("[data-role=user] [data-part=body]").text_content() == sent.content

    # Markdown, rendered: a list, a code block with its language, the model's name.
    assert reply.locator("[data-part=body] li").count() == 4
    expect(reply.locator(".code-header")).to_have_attribute("data-lang", "python")
    expect(reply.locator("[data-part=body] pre code")).to_contain_text("def reply(")
    expect(reply.locator("[data-part=model]")).to_have_text("offline demo model")
    expect(page.locator("[data-action=stop]")).to_be_hidden()
    expect(page.locator("[data-action=send]")).to_be_enabled()

    # The title came from the first message, in the header and the sidebar.
    conversation = Conversation.objects.get()
    entry = page.locator(f"[data-conversation-id='{conversation.id}']")
    expect(entry).to_contain_text("Tell me about streaming in two lines")
    expect(page.locator("#conversation-title")).to_have_text(conversation.title)

    # Log out, log in again: the conversation is in the history, and search finds it by
    # a word only its reply holds.
    page.locator("[data-action=account-menu]").click()  # the account menu, bottom left
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login/"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("alice-password-1")
    page.get_by_role("button", name="Log in").click()
    expect(entry).to_be_visible()
    # The shortcut belongs to a deferred script: it is listening once the DOM is loaded.
    page.wait_for_load_state("domcontentloaded")
    page.keyboard.press("Control+k")
    expect(page.locator("#search-input")).to_be_focused()
    page.keyboard.type("CAREFUL")
    expect(page.locator("[data-conversation-id]")).to_have_count(1)
    expect(entry).to_be_visible()
    page.locator("#search-input").fill("no such words anywhere")
    expect(page.locator("[data-conversation-id]")).to_have_count(0)
    expect(page.locator(".history-empty")).to_be_visible()


def test_reload_mid_reply_shows_the_text_so_far_and_ends_with_the_stored_text(
    context, user, conversation
):
    logged_in(context, user)
    page = open_conversation(context, conversation)
    send(page, "A reply to reload in the middle of")
    reply = last_reply(page)
    expect(reply).to_contain_text("Here is what I noticed")
    expect(reply).to_have_attribute("data-status", "streaming")
    before = body_of(reply)

    page.reload()
    # The text so far is there as soon as the page has its snapshot, still streaming.
    expect(reply.locator("[data-part=body]")).not_to_be_empty(timeout=3000)
    first = body_of(reply)
    assert reply.get_attribute("data-status") == "streaming"
    assert first.split()[: len(before.split()) - 1] == before.split()[:-1]

    expect(reply).to_have_attribute("data-status", "completed", timeout=REPLY_TIMEOUT_MS)
    stored = Message.objects.get(role=Message.Role.ASSISTANT)
    assert_shows_stored_text(page, reply, stored)


def test_two_tabs_stream_the_same_reply_and_see_each_others_messages(context, user, conversation):
    logged_in(context, user)
    first = open_conversation(context, conversation)
    second = open_conversation(context, conversation)

    send(first, "Hello from the first tab")
    expect(second.locator("[data-role=user]")).to_have_text(re.compile("Hello from the first"))
    states = watch_reply(second)
    assert len(states) >= 2
    stored = Message.objects.get(role=Message.Role.ASSISTANT)
    for page in (first, second):
        reply = last_reply(page)
        expect(reply).to_have_attribute("data-status", "completed")
        assert_shows_stored_text(page, reply, stored)

    send(second, "And hello back from the second")
    expect(first.locator("[data-role=user] [data-part=body]").last).to_have_text(
        "And hello back from the second"
    )
    expect(first.locator("[data-role=assistant]")).to_have_count(2)
    for page in (first, second):
        expect(last_reply(page)).to_have_attribute(
            "data-status", "completed", timeout=REPLY_TIMEOUT_MS
        )


def test_stop_keeps_the_same_text_on_the_page_and_in_the_database_then_retry(
    context, user, conversation
):
    logged_in(context, user)
    page = open_conversation(context, conversation)
    send(page, "Please stop me midway")
    expect(last_reply(page)).to_contain_text("Here is what I noticed")
    reply = page.locator(f"[data-message-id='{last_reply(page).get_attribute('data-message-id')}']")
    page.locator("[data-action=stop]").click()

    expect(reply).to_have_attribute("data-status", "cancelled")
    expect(reply.locator("[data-part=state]")).to_have_text("Stopped")
    stored = Message.objects.get(role=Message.Role.ASSISTANT)
    assert stored.status == Message.Status.CANCELLED
    assert not stored.content.endswith("then restart chatsite.")
    assert_shows_stored_text(page, reply, stored)
    expect(page.locator("[data-action=stop]")).to_be_hidden()

    # Retry answers the same message again; the stopped reply stays one click away.
    retry = reply.locator("[data-action=regenerate]")
    expect(retry).to_have_text("Retry")
    retry.click()
    newest = last_reply(page)
    expect(newest).to_have_attribute("data-status", "completed", timeout=REPLY_TIMEOUT_MS)
    expect(reply).to_be_hidden()
    expect(newest.locator("[data-part=branch-index]")).to_have_text("2 / 2")
    replies = Message.objects.filter(role=Message.Role.ASSISTANT).order_by("created_at")
    assert [r.status for r in replies] == ["cancelled", "completed"]
    assert replies[0].reply_to_id == replies[1].reply_to_id
    newest_id = newest.get_attribute("data-message-id")
    newest.locator("[data-action=branch-prev]").click()
    expect(reply).to_be_visible()
    expect(reply.locator("[data-part=branch-index]")).to_have_text("1 / 2")
    # The page shows one branch; the database shows the first version now.
    expect(page.locator(f"[data-message-id='{newest_id}']")).to_have_count(0)
    assert [r.active for r in replies.all()] == [True, False]


def test_a_dropped_connection_reconnects_and_catches_up(context, user, conversation):
    worker = start_daphne(name="browser-reconnect")
    try:
        logged_in(context, user)
        page = context.new_page()
        page.goto(f"{worker.url}/c/{conversation.id}/")
        pane = page.locator("#messages")
        expect(pane).to_have_attribute("data-connection", "live")

        worker.stop()
        expect(pane).to_have_attribute("data-connection", "reconnecting")
        expect(page.locator("#connection")).to_have_text("Reconnecting…")
        # While the page is away, another surface adds to the conversation.
        Message.objects.create(
            conversation=conversation, role=Message.Role.USER, content="Written meanwhile"
        )
        worker = start_daphne(port=worker.port, name="browser-reconnect")

        expect(pane).to_have_attribute("data-connection", "live", timeout=20_000)
        expect(page.locator("#connection")).to_be_hidden()
        expect(page.locator("[data-role=user] [data-part=body]")).to_have_text("Written meanwhile")
        send(page, "And a message after the break")
        expect(last_reply(page)).to_have_attribute(
            "data-status", "completed", timeout=REPLY_TIMEOUT_MS
        )
    finally:
        worker.stop()


HOSTILE = "\n\n".join(
    [
        "<script>window.__pwned = 'script'; alert('script')</script>",
        "<img src=x onerror=\"window.__pwned = 'img'; alert('img')\">",
        '<iframe src="https://evil.invalid/frame"></iframe>',
        "[click me](javascript:window.__pwned='link';alert('link'))",
        "<a href=\"javascript:alert('raw')\" onclick=\"alert('raw')\">raw link</a>",
        "![pixel](https://evil.invalid/pixel.png)",
        "<svg onload=\"alert('svg')\"></svg>",
        '<button data-action="stop">fake stop</button>',
        "[a fine link](https://example.invalid/page)",
    ]
)


def outside_requests(page: Page) -> list[str]:
    leaving: list[str] = []
    page.on(
        "request",
        lambda request: (
            leaving.append(request.url)
            if urlsplit(request.url).hostname not in {"127.0.0.1", None}
            and not request.url.startswith("data:")
            else None
        ),
    )
    return leaving


def assert_inert(page: Page, dialogs: list, leaving: list) -> None:
    messages = page.locator("#messages")
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []
    for tag in ("script", "img", "iframe", "[onerror]", "[onclick]", "[onload]"):
        assert messages.locator(f"[data-part=body] {tag}").count() == 0, tag
    # The only pictures are the page's own icons (the code blocks' copy buttons).
    assert messages.locator("[data-part=body] svg:not(.code-header svg)").count() == 0
    for link in messages.locator("[data-part=body] a").all():
        href = link.get_attribute("href") or ""
        assert not href.lower().startswith("javascript:"), href
    # The only stop button is the page's own.
    assert page.locator("[data-action=stop]").count() == 1
    assert leaving == []


def test_hostile_markup_in_replies_is_inert(context, user, conversation):
    user_message = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content="Say something nasty"
    )
    Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content=HOSTILE,
        reply_to=user_message,
        model="offline-demo",
    )
    logged_in(context, user)
    page = context.new_page()
    dialogs: list = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    leaving = outside_requests(page)
    page.goto(f"/c/{conversation.id}/")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "completed")
    expect(reply).to_contain_text("click me")
    # Raw HTML shows as the text it is.
    expect(reply).to_contain_text("<script>window.__pwned")
    page.get_by_text("click me").click()
    page.get_by_text("raw link", exact=False).first.click()
    page.wait_for_timeout(300)
    assert len(context.pages) == 1 and page.url.endswith(f"/c/{conversation.id}/")
    fine = reply.locator("a", has_text="a fine link")
    expect(fine).to_have_attribute("target", "_blank")
    expect(fine).to_have_attribute("rel", "noopener noreferrer")
    assert_inert(page, dialogs, leaving)

    # The live path: the user's message, and the offline model quoting it.
    payload = "<img src=x onerror=alert(1)> [x](javascript:alert(2))"
    send(page, payload)
    live = last_reply(page)
    expect(live).to_have_attribute("data-status", "completed", timeout=REPLY_TIMEOUT_MS)
    expect(page.locator("[data-role=user]").last.locator("[data-part=body]")).to_have_text(payload)
    expect(live).to_contain_text("<img src=x onerror=alert(1)>")
    expect(live.locator("a", has_text="x")).to_have_count(1)
    live.locator("a", has_text="x").click()
    page.wait_for_timeout(300)
    assert_inert(page, dialogs, leaving)


def test_rename_reaches_every_tab_and_delete_asks_first(context, server, user):
    kept = conversation_create(owner=user, title="Kept")
    doomed = conversation_create(owner=user, title="Doomed")
    logged_in(context, user)
    first = open_conversation(context, doomed)
    second = open_conversation(context, doomed)
    first.bring_to_front()

    first.locator(f"[data-conversation-id='{doomed.id}'] [data-action=rename]").click()
    first.get_by_label("Title").fill("Renamed here")
    first.get_by_role("button", name="Save").click()
    for page in (first, second):
        expect(page.locator("#conversation-title")).to_have_text("Renamed here")
        expect(page.locator(f"[data-conversation-id='{doomed.id}']")).to_contain_text(
            "Renamed here"
        )
    assert Conversation.objects.get(pk=doomed.pk).title == "Renamed here"

    first.locator(f"[data-conversation-id='{doomed.id}'] [data-action=delete]").click()
    dialog = first.locator("#delete-dialog")
    expect(dialog).to_contain_text("Renamed here")
    dialog.get_by_role("button", name="Cancel").click()
    assert Conversation.objects.filter(pk=doomed.pk).exists()
    first.locator(f"[data-conversation-id='{doomed.id}'] [data-action=delete]").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(first).to_have_url(f"{server.url}/")
    assert not Conversation.objects.filter(pk=doomed.pk).exists()
    expect(first.locator(f"[data-conversation-id='{kept.id}']")).to_be_visible()
    expect(first.locator(f"[data-conversation-id='{doomed.id}']")).to_have_count(0)


def test_other_tabs_sidebars_follow_conversations_created_renamed_and_deleted(
    context, server, user
):
    renamed = conversation_create(owner=user, title="Before")
    doomed = conversation_create(owner=user, title="Doomed")
    elsewhere = conversation_create(owner=user, title="Elsewhere")
    logged_in(context, user)
    first = open_conversation(context, renamed)
    other = open_conversation(context, elsewhere)  # on another conversation
    first.bring_to_front()

    first.locator(f"[data-conversation-id='{renamed.id}'] [data-action=rename]").click()
    first.get_by_label("Title").fill("After")
    first.get_by_role("button", name="Save").click()
    expect(other.locator(f"[data-conversation-id='{renamed.id}']")).to_contain_text("After")

    first.locator(f"[data-conversation-id='{doomed.id}'] [data-action=delete]").click()
    first.locator("#delete-dialog").get_by_role("button", name="Delete").click()
    expect(other.locator(f"[data-conversation-id='{doomed.id}']")).to_have_count(0)

    first.goto("/")
    send(first, "A new one")
    expect(first).to_have_url(re.compile(r"/c/[0-9a-f-]+/$"))
    created = Conversation.objects.exclude(pk__in=[renamed.pk, elsewhere.pk]).get()
    expect(other.locator(f"[data-conversation-id='{created.id}']")).to_be_visible()


def test_a_refused_new_chat_keeps_the_typed_text_and_says_why(context, server, user):
    # As many replies streaming as a user may have (CHAT_MAX_STREAMING_PER_USER, 4).
    busy = []
    for index in range(4):
        conversation = conversation_create(owner=user, title=f"Busy {index}")
        busy.append(
            Message.objects.create(
                conversation=conversation, role="assistant", status=Message.Status.STREAMING
            )
        )
    logged_in(context, user)
    page = context.new_page()
    page.goto("/")
    typed = "A question I took a while to write,\nover two lines"
    page.locator("textarea[name=content]").fill(typed)
    page.locator("textarea[name=content]").press("Enter")

    notice = page.locator("#notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("You have 4 replies streaming already")
    expect(page.locator("textarea[name=content]")).to_have_value(typed)
    assert Conversation.objects.count() == 4  # nothing new, not even an empty one
    expect(page.locator("[data-conversation-id]")).to_have_count(4)

    # Once a reply has finished, sending the same text again starts the chat.
    Message.objects.filter(pk=busy[0].pk).update(status=Message.Status.COMPLETED)
    expect(page.locator("[data-action=send]")).to_be_enabled()
    page.locator("textarea[name=content]").press("Enter")
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    new = Conversation.objects.exclude(pk__in=[m.conversation_id for m in busy]).get()
    assert Message.objects.filter(conversation=new, role="user").get().content == typed
    expect(last_reply(page)).to_have_attribute("data-status", "completed", timeout=REPLY_TIMEOUT_MS)


def test_phone_width_keeps_the_chat_usable(context, user, conversation):
    logged_in(context, user)
    page = open_conversation(context, conversation)
    page.set_viewport_size({"width": 390, "height": 780})
    sidebar = page.locator("#sidebar")
    toggle = page.locator("[data-action=toggle-sidebar]")
    expect(toggle).to_be_visible()
    expect(page.locator("textarea[name=content]")).to_be_in_viewport()
    expect(page.locator("[data-action=send]")).to_be_in_viewport()
    page.wait_for_timeout(300)  # the sidebar's slide
    assert sidebar.bounding_box()["x"] + sidebar.bounding_box()["width"] <= 1
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    page.wait_for_timeout(300)
    assert sidebar.bounding_box()["x"] >= 0
    page.keyboard.press("Escape")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
