"""The chat's controls in Chromium (issue 16): following a new message, a worker that
restarts under an open page, the phone's composer, the account menu, models, the
conversation's settings and presets, editing and branches, highlighted code and math,
and exporting and importing. Against real daphne workers, as tests/test_browser.py."""

import json
import re
import time
import uuid

import pytest
from django.test import Client
from playwright.sync_api import expect

from conversations.models import ApiKey, Conversation, Message, Preset
from conversations.services.apikeys import create_api_key
from conversations.services.conversations import conversation_create

from . import test_browser
from .helpers.servers import start_daphne
from .test_browser import REPLY_TIMEOUT_MS, last_reply, logged_in, open_conversation, send

# The browser and its worker, as tests/test_browser.py has them (a worker per module).
server = test_browser.server
context = test_browser.context

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.real_passwords,
    pytest.mark.skipif(
        not __import__("pathlib").Path("/usr/bin/chromium").exists()
        and not __import__("os").environ.get("CI"),
        reason="Chromium is not installed (apt-get install chromium); CI always runs these",
    ),
]


def with_history(user, exchanges: int) -> Conversation:
    """A conversation taller than the window, linked as the services link it."""
    conversation = conversation_create(owner=user, title="Long")
    parent = None
    for index in range(exchanges):
        asked = Message.objects.create(
            conversation=conversation, role="user", content=f"Question {index}", parent=parent
        )
        parent = Message.objects.create(
            conversation=conversation,
            role="assistant",
            content=f"Answer {index}\n\n" + "A paragraph of the answer. " * 30,
            reply_to=asked,
            parent=asked,
            model="offline-demo",
        )
    return conversation


def csp_refusals(page) -> list[str]:
    """What the page's Content-Security-Policy refuses from now on (Chromium says so in
    the console): inline styles or scripts, loads from elsewhere."""
    refused: list[str] = []
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return refused


def in_view(page, locator) -> bool:
    box = locator.bounding_box()
    pane = page.locator("#messages").bounding_box()
    return box is not None and box["y"] < pane["y"] + pane["height"] and box["y"] >= pane["y"] - 1


# --- rough edges ------------------------------------------------------------------------------


def test_sending_shows_the_new_message_and_scrolling_up_stops_following(context, user):
    conversation = with_history(user, 8)
    logged_in(context, user)
    page = open_conversation(context, conversation)
    send(page, "A new question at the bottom")
    mine = page.locator("[data-role=user]").last
    expect(mine).to_have_text(re.compile("A new question"))
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "streaming")
    expect(reply).to_contain_text("Here is what I noticed")
    assert in_view(page, reply.locator("[data-part=body]")), "the reply starts out of sight"
    jump = page.locator("[data-action=jump-latest]")
    expect(jump).to_be_hidden()

    # The reader scrolls up: the page stays there while the reply grows.
    page.locator("#messages").evaluate("pane => pane.scrollTo(0, pane.scrollHeight / 3)")
    expect(jump).to_be_visible()
    held = page.locator("#messages").evaluate("pane => pane.scrollTop")
    page.wait_for_timeout(600)
    assert page.locator("#messages").evaluate("pane => pane.scrollTop") == held
    jump.click()
    expect(jump).to_be_hidden()
    expect(reply).to_have_attribute("data-status", "completed", timeout=REPLY_TIMEOUT_MS)
    page.wait_for_timeout(200)
    assert (
        page.locator("#messages").evaluate(
            "pane => pane.scrollHeight - pane.scrollTop - pane.clientHeight"
        )
        < 40
    ), "following again after the jump"


def test_a_page_open_while_its_worker_restarts_shows_the_reply_ended_at_once(context, user):
    conversation = conversation_create(owner=user)
    worker = start_daphne(
        env={"CHAT_RUN_LEASE_S": "60", "CHAT_OFFLINE_DELAY_MS": "60"}, name="browser-crash"
    )
    try:
        logged_in(context, user)
        page = context.new_page()
        page.goto(f"{worker.url}/c/{conversation.id}/")
        expect(page.locator("#messages")).to_have_attribute("data-connection", "live")
        send(page, "A reply cut short by a crash")
        reply = last_reply(page)
        expect(reply).to_contain_text("Here is what I noticed")
        worker.kill()
        expect(page.locator("#messages")).to_have_attribute("data-connection", "reconnecting")
        worker = start_daphne(env=worker.env, port=worker.port, name="browser-crash")
        restarted = time.monotonic()
        # Ended at once (its lease is 60 s), as saved, with the controls back.
        expect(reply).to_have_attribute("data-status", "interrupted", timeout=10_000)
        took = time.monotonic() - restarted
        stored = Message.objects.get(role="assistant")
        assert stored.status == "interrupted"
        expect(reply.locator("[data-part=state]")).to_have_text("Interrupted")
        expect(page.locator("[data-action=stop]")).to_be_hidden()
        assert reply.locator("[data-part=body]").inner_text().split()[-1] in stored.content
        print(f"\nshown interrupted {took:.1f} s after the worker was back")
    finally:
        worker.stop()


def test_on_a_phone_enter_adds_a_line_and_the_button_sends(server, user, monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # as the context fixture does
    from .test_browser import CHROMIUM, CHROMIUM_ARGS

    conversation = conversation_create(owner=user)
    client = Client()
    client.force_login(user)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        phone = browser.new_context(
            base_url=server.url, viewport={"width": 390, "height": 780}, has_touch=True,
            is_mobile=True,
        )  # fmt: skip
        phone.add_cookies(
            [{"name": "sessionid", "value": client.cookies["sessionid"].value,
              "domain": "127.0.0.1", "path": "/"}]
        )  # fmt: skip
        page = phone.new_page()
        page.goto(f"/c/{conversation.id}/")
        expect(page.locator("#messages")).to_have_attribute("data-connection", "live")
        composer = page.locator("textarea[name=content]")
        composer.fill("first line")
        composer.press("Enter")
        composer.press_sequentially("second line")
        assert composer.input_value() == "first line\nsecond line"
        assert not Message.objects.exists()
        page.locator("[data-action=send]").tap()
        expect(last_reply(page)).to_have_attribute("data-status", "streaming")
        # While Stop shows, the message box keeps the width of the screen.
        expect(page.locator("[data-action=stop]")).to_be_visible()
        assert composer.bounding_box()["width"] > 300
        placeholder = composer.get_attribute("placeholder")
        assert page.evaluate(
            """([el, text]) => {
                const probe = document.createElement("span");
                probe.style.font = getComputedStyle(el).font;
                probe.textContent = text;
                document.body.append(probe);
                const fits = probe.offsetWidth < el.clientWidth;
                probe.remove();
                return fits;
            }""",
            [composer.element_handle(), placeholder],
        ), f"placeholder {placeholder!r} is clipped"
        assert Message.objects.get(role="user").content == "first line\nsecond line"
        page.locator("[data-action=stop]").tap()
        expect(last_reply(page)).to_have_attribute("data-status", "cancelled")
        browser.close()


def test_a_failed_reply_without_text_offers_no_copy_or_rating(context, user):
    conversation = conversation_create(owner=user)
    asked = Message.objects.create(conversation=conversation, role="user", content="Hello?")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="failed",
        content="",
        reply_to=asked,
        parent=asked,
        error={"code": "model_unreachable", "detail": "Could not reach the model server."},
    )
    logged_in(context, user)
    page = open_conversation(context, conversation)
    reply = last_reply(page)
    expect(reply.locator("[data-part=error]")).to_have_text("Could not reach the model server.")
    expect(reply.locator("[data-action=regenerate]")).to_have_text("Retry")
    expect(reply.locator("[data-action=copy]")).to_be_hidden()
    expect(reply.locator("[data-action=rate-up]")).to_be_hidden()
    expect(page.locator("[data-role=user] [data-action=copy]")).to_be_visible()


def test_revoking_an_api_key_asks_first(context, user):
    create_api_key(owner=user, name="backup script")
    logged_in(context, user)
    page = context.new_page()
    page.goto("/settings/api-keys/")
    answers = iter([False, True])
    asked: list[str] = []
    page.on(
        "dialog",
        lambda d: (asked.append(d.message), d.accept() if next(answers) else d.dismiss()),
    )
    page.get_by_role("button", name="Revoke").click()
    page.wait_for_timeout(300)
    assert ApiKey.objects.get().revoked_at is None
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator("[data-revoked=true]")).to_have_count(1)
    assert "backup script" in asked[0]
    assert ApiKey.objects.get().revoked_at is not None


def test_an_unknown_conversation_is_a_404_in_the_apps_layout(context, user):
    kept = conversation_create(owner=user, title="Still here")
    logged_in(context, user)
    page = context.new_page()
    response = page.goto(f"/c/{uuid.uuid4()}/")
    assert response.status == 404
    expect(page.locator("#not-found")).to_contain_text("No such conversation")
    expect(page.locator(f"[data-conversation-id='{kept.id}']")).to_be_visible()
    expect(page.locator("textarea[name=content]")).to_be_visible()
    elsewhere = page.goto("/no/such/page/")
    assert elsewhere.status == 404
    expect(page.get_by_role("link", name="Back to the chat")).to_be_visible()


def test_one_account_menu_names_what_the_docs_name(context, user):
    logged_in(context, user)
    page = context.new_page()
    page.goto("/")
    page.locator("[data-action=account-menu]").click()
    menu = page.locator("#account-menu .menu-items")
    for name in ("Settings", "Change password", "API keys", "Log out"):
        expect(menu.get_by_text(name, exact=True)).to_be_visible()
    menu.get_by_text("Settings", exact=True).click()
    expect(page).to_have_url(re.compile("/settings/$"))
    expect(page.get_by_role("heading", name="Settings")).to_be_visible()
    page.get_by_role("link", name="API keys").first.click()
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
    docs = context.new_page()
    docs.goto("/api/openapi.json")
    description = json.loads(docs.locator("body").inner_text())["info"]["description"]
    assert "API keys" in description and "/v1/chat/completions" in description


# --- what the issue asks for --------------------------------------------------------------------


@pytest.fixture
def two_models(stub_server):
    """A worker with the offline model and the stub server as a second model."""
    models = [
        {"name": "offline-demo"},
        {"name": "stub", "model": "stub-model", "base_url": f"{stub_server}/v1", "label": "Stub"},
    ]
    worker = start_daphne(
        env={"CHAT_MODELS": json.dumps(models), "OPENAI_API_KEY": "sk-test",
             "CHAT_OFFLINE_DELAY_MS": "5"},
        name="browser-models",
    )  # fmt: skip
    yield worker
    worker.stop()


def test_pick_a_model_set_a_system_prompt_and_every_tab_follows(context, user, two_models):
    conversation = conversation_create(owner=user)
    logged_in(context, user)
    first = context.new_page()
    first.goto(f"{two_models.url}/c/{conversation.id}/")
    second = context.new_page()
    second.goto(f"{two_models.url}/c/{conversation.id}/")
    for page in (first, second):
        expect(page.locator("#messages")).to_have_attribute("data-connection", "live")
    first.bring_to_front()
    picker = first.locator("select[name=model]")
    expect(picker).to_have_value("offline-demo")
    picker.select_option("stub")
    expect(second.locator("select[name=model]")).to_have_value("stub")
    expect(second.locator(".model-label")).to_have_text("Stub")
    send(first, "Which model is this?")
    reply = last_reply(first)
    expect(reply).to_have_attribute("data-status", "completed", timeout=REPLY_TIMEOUT_MS)
    expect(reply.locator("[data-part=body]")).to_have_text("You said: Which model is this?")
    expect(reply.locator("[data-part=model]")).to_have_text("stub")
    assert Message.objects.get(role="assistant").model == "stub"

    # Regenerate with another model: pick it, then regenerate.
    picker.select_option("offline-demo")
    expect(first.locator("select[name=model]")).to_have_value("offline-demo")
    reply.locator("[data-action=regenerate]").click()
    newest = last_reply(first)
    expect(newest).to_contain_text("offline demo model", timeout=REPLY_TIMEOUT_MS)
    expect(newest.locator("[data-part=branch-index]")).to_have_text("2 / 2")

    first.locator("[data-action=conversation-settings]").click()
    dialog = first.locator("#settings-dialog")
    dialog.locator("textarea[name=system_prompt]").fill("Answer like a pirate.")
    dialog.locator("input[name=temperature]").fill("0.3")
    dialog.locator("[data-action=save-settings]").click()
    expect(dialog).to_be_hidden()
    conversation.refresh_from_db()
    assert (conversation.system_prompt, conversation.temperature) == ("Answer like a pirate.", 0.3)
    second.bring_to_front()
    second.locator("[data-action=conversation-settings]").click()
    expect(second.locator("textarea[name=system_prompt]")).to_have_value("Answer like a pirate.")


def test_start_a_new_chat_from_a_preset(context, user):
    Preset.objects.create(name="Pirate", system_prompt="Talk like a pirate.", temperature=0.9)
    logged_in(context, user)
    page = context.new_page()
    page.goto("/")
    page.locator("select[name=preset]").select_option(label="Pirate (shared)")
    page.locator("textarea[name=content]").fill("Ahoy")
    page.locator("textarea[name=content]").press("Enter")
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    conversation = Conversation.objects.get()
    assert (conversation.system_prompt, conversation.temperature) == ("Talk like a pirate.", 0.9)
    page.locator("[data-action=conversation-settings]").click()
    expect(page.locator("textarea[name=system_prompt]")).to_have_value("Talk like a pirate.")

    # Saving the settings as a preset of one's own.
    page.locator("#settings-dialog summary").click()
    page.locator("input[name=preset_name]").fill("My pirate")
    page.locator("[data-action=save-preset]").click()
    expect(page.locator("#notice")).to_contain_text("My pirate")
    assert Preset.objects.get(owner=user).system_prompt == "Talk like a pirate."


def test_edit_a_message_and_switch_branches_in_every_tab(context, user):
    conversation = conversation_create(owner=user)
    logged_in(context, user)
    first = open_conversation(context, conversation)
    second = open_conversation(context, conversation)
    first.bring_to_front()
    send(first, "The first question")
    expect(last_reply(first)).to_have_attribute(
        "data-status", "completed", timeout=REPLY_TIMEOUT_MS
    )
    send(first, "A second question")
    expect(last_reply(first)).to_have_attribute(
        "data-status", "completed", timeout=REPLY_TIMEOUT_MS
    )
    expect(second.locator("[data-role]")).to_have_count(4)

    question = first.locator("[data-role=user]").first
    question.hover()
    question.locator("[data-action=edit]").click()
    editor = question.locator("textarea[name=edit]")
    expect(editor).to_have_value("The first question")
    editor.fill("The first question, put better")
    question.locator("[data-action=save-edit]").click()
    for page in (first, second):
        expect(page.locator("[data-role]")).to_have_count(2)
        edited = page.locator("[data-role=user]").first
        expect(edited.locator("[data-part=body]")).to_have_text("The first question, put better")
        expect(edited.locator("[data-part=branch-index]")).to_have_text("2 / 2")
    expect(last_reply(first)).to_have_attribute(
        "data-status", "completed", timeout=REPLY_TIMEOUT_MS
    )
    expect(last_reply(first)).to_contain_text("It is message number 1 from you")

    first.locator("[data-role=user]").first.locator("[data-action=branch-prev]").click()
    for page in (first, second):
        expect(page.locator("[data-role]")).to_have_count(4)
        expect(
            page.locator("[data-role=user]").first.locator("[data-part=branch-index]")
        ).to_have_text("1 / 2")
        expect(page.locator("[data-role=user] [data-part=body]").last).to_have_text(
            "A second question"
        )
    first.reload()
    expect(first.locator("[data-role]")).to_have_count(4)
    first.locator("[data-role=user]").first.locator("[data-action=branch-next]").click()
    expect(second.locator("[data-role]")).to_have_count(2)


def test_code_is_highlighted_and_math_typeset_within_the_csp(context, user, conversation):
    logged_in(context, user)
    page = context.new_page()
    refused = csp_refusals(page)
    page.goto(f"/c/{conversation.id}/")
    expect(page.locator("#messages")).to_have_attribute("data-connection", "live")
    # The offline model quotes the message's beginning, so the math is in its reply too.
    send(page, r"$x^2 + y^2$ and \(\frac{a}{b}\), then $$\sum_{i=1}^n i$$")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "completed", timeout=REPLY_TIMEOUT_MS)
    code = reply.locator("pre code")
    expect(code).to_have_class(re.compile(r"\bhljs\b"))
    expect(code.locator(".hljs-keyword").first).to_have_text("def")
    expect(reply.locator(".math-inline .katex").first).to_be_visible()
    assert reply.locator(".katex-error").count() == 0
    # Copying gives the Markdown as stored, math and all.
    stored = Message.objects.get(role="assistant")
    assert "$x^2 + y^2$" in stored.content

    # A stored reply with math of every kind, rendered on load.
    asked = Message.objects.filter(role="user").get()
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="Euler: $e^{i\\pi} + 1 = 0$\n\n$$\n\\int_0^1 x\\,dx = \\tfrac12\n$$\n\n"
        "\\[a^2 + b^2 = c^2\\]\n\nPrices: $5 and $10.\n\n```js\nconst x = 1;\n```",
        reply_to=asked,
        parent=stored,
        model="offline-demo",
    )
    page.reload()
    latest = last_reply(page)
    expect(latest.locator(".math-display .katex-display")).to_have_count(2)
    expect(latest.locator(".math-inline .katex")).to_have_count(1)
    expect(latest).to_contain_text("Prices: $5 and $10.")
    expect(latest.locator("code.hljs .hljs-keyword")).to_have_text("const")
    assert refused == []


def test_export_a_conversation_and_import_it_back(context, user, tmp_path):
    conversation = conversation_create(owner=user, title="Worth keeping")
    logged_in(context, user)
    page = open_conversation(context, conversation)
    send(page, "Something to keep")
    expect(last_reply(page)).to_have_attribute("data-status", "completed", timeout=REPLY_TIMEOUT_MS)

    page.locator(".conversation-menu summary").click()
    with page.expect_download() as markdown:
        page.locator("[data-action=export-md]").click()
    text = open(markdown.value.path(), encoding="utf-8").read()
    assert text.startswith("# Worth keeping") and "Something to keep" in text
    page.locator(".conversation-menu summary").click()
    with page.expect_download() as exported:
        page.locator("[data-action=export-json]").click()
    path = tmp_path / "chat.json"
    exported.value.save_as(path)

    page.locator("[data-action=account-menu]").click()
    with page.expect_download() as everything:
        page.locator("[data-menu=export-json]").click()
    assert json.loads(open(everything.value.path()).read())["conversations"][0]["title"] == (
        "Worth keeping"
    )
    page.locator("[data-action=account-menu]").click()
    page.locator("input[data-action=import]").set_input_files(path)
    expect(page).not_to_have_url(re.compile(str(conversation.id)))
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    expect(page.locator("#conversation-title")).to_have_text("Worth keeping")
    expect(page.locator("[data-role=user] [data-part=body]")).to_have_text("Something to keep")
    assert Conversation.objects.filter(title="Worth keeping").count() == 2


def test_the_admin_transcript_shows_branches_code_and_math(context, user):
    from .helpers import review as build

    conversation = conversation_create(owner=user, title="Reviewed")
    asked = Message.objects.create(conversation=conversation, role="user", content="Prove it")
    first = Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="An older version.",
        reply_to=asked,
        parent=asked,
        active=False,
    )
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content="So $a^2 + b^2 = c^2$, and\n\n\\[e^{i\\pi} = -1\\]\n\n```python\nimport math\n```",
        reply_to=asked,
        parent=asked,
    )
    logged_in(context, build.staff("reader", build.READ))
    page = context.new_page()
    refused = csp_refusals(page)
    page.goto(f"/admin/conversations/conversation/{conversation.pk}/change/")
    older = page.locator(f"#transcript [data-message-id='{first.pk}']")
    expect(older.locator("[data-part=branch]")).to_have_text("other branch")
    expect(older.locator("[data-part=version]")).to_have_text("version 1 of 2")
    latest = page.locator("#transcript [data-role=assistant]").last
    expect(latest.locator("[data-part=version]")).to_have_text("version 2 of 2")
    expect(latest.locator("[data-part=branch]")).to_have_count(0)
    expect(latest.locator(".math-inline .katex")).to_have_count(1)
    expect(latest.locator(".math-display .katex-display")).to_have_count(1)
    expect(latest.locator("code.hljs .hljs-keyword")).to_have_text("import")
    assert refused == []
