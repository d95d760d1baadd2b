"""The pages and the sidebar's actions, through Django's test client."""

import io
import json

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import AsyncClient
from django.urls import reverse

from conversations.live.hub import hub
from conversations.models import Conversation, Message
from conversations.services.conversations import conversation_create

# Transactional: the async views reach the ORM through Channels' database_sync_to_async,
# which closes the connection a test transaction would live on.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice_client(client, user):
    client.force_login(user)
    return client


def _chat(conversation, role, content, **fields):
    return Message.objects.create(conversation=conversation, role=role, content=content, **fields)


# --- logging in -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, args",
    [
        ("home", []),
        ("search", []),
        ("password_change", []),
        ("conversation", ["8d6d4a35-86f5-4d47-9d42-3e0f1b2e5b8a"]),
    ],
)
def test_every_page_but_login_requires_a_login(client, name, args):
    response = client.get(reverse(name, args=args))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("name", ["conversation-rename", "conversation-delete"])
def test_sidebar_actions_require_a_login(client, conversation, name):
    response = client.post(reverse(name, args=[conversation.id]), {"title": "x"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    conversation.refresh_from_db()
    assert conversation.title == ""


def test_logging_in_through_the_form_opens_the_chat(client, user):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    response = client.post(
        reverse("login"), {"username": "alice", "password": "alice-password-1"}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("home")
    assert b'name="content"' in response.content


def test_pages_carry_a_strict_content_security_policy(alice_client, conversation):
    for url in (reverse("login"), reverse("conversation", args=[conversation.id])):
        policy = alice_client.get(url)["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        assert "script-src 'self'" in policy
        assert "'unsafe-inline'" not in policy


def test_the_chat_page_has_no_inline_script_or_handler(alice_client, conversation):
    html = alice_client.get(reverse("conversation", args=[conversation.id])).content.decode()
    assert "<script>" not in html
    assert " onclick=" not in html and " onload=" not in html
    for tag in html.split("<script")[1:]:
        assert "src=" in tag.split(">")[0]


# --- sign-up and accounts ---------------------------------------------------------------


def sign_up(client, username: str, password: str = "a-long-passphrase-9"):
    return client.post(
        reverse("signup"), {"username": username, "password1": password, "password2": password}
    )


def test_sign_up_is_off_by_default(client):
    assert client.get(reverse("signup")).status_code == 404
    assert sign_up(client, "mallory").status_code == 404
    assert not get_user_model().objects.filter(username="mallory").exists()
    assert b"/signup/" not in client.get(reverse("login")).content


def test_sign_up_when_enabled_creates_and_logs_in(client, settings):
    settings.CHAT_SIGNUP_ENABLED = True
    assert b"/signup/" in client.get(reverse("login")).content
    assert sign_up(client, "carol").status_code == 302
    assert client.get(reverse("home")).status_code == 200
    assert get_user_model().objects.filter(username="carol").exists()


def change_password_form(old: str, new: str) -> dict:
    return {"old_password": old, "new_password1": new, "new_password2": new}


def test_a_user_can_change_their_password(alice_client, user):
    form = alice_client.get(reverse("password_change"))
    assert form.status_code == 200
    response = alice_client.post(
        reverse("password_change"),
        change_password_form("alice-password-1", "a-new-passphrase-7"),
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("password_change_done")
    user.refresh_from_db()
    assert user.check_password("a-new-passphrase-7")
    # Still logged in on this session.
    assert alice_client.get(reverse("home")).status_code == 200


def test_a_wrong_old_password_changes_nothing(alice_client, user):
    response = alice_client.post(
        reverse("password_change"),
        change_password_form("not-it", "a-new-passphrase-7"),
    )
    assert response.status_code == 200
    user.refresh_from_db()
    assert user.check_password("alice-password-1")


def test_create_user_prints_a_generated_password():
    out = io.StringIO()
    call_command("create_user", "dave", "--staff", stdout=out)
    password = out.getvalue().strip().splitlines()[-1]
    dave = get_user_model().objects.get(username="dave")
    assert dave.is_staff and not dave.is_superuser
    assert dave.check_password(password)


def test_create_user_reads_the_password_from_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("a-chosen-passphrase-3\n"))
    out = io.StringIO()
    call_command("create_user", "erin", "--password-stdin", stdout=out)
    erin = get_user_model().objects.get(username="erin")
    assert not erin.is_staff
    assert erin.check_password("a-chosen-passphrase-3")
    assert "a-chosen-passphrase-3" not in out.getvalue()


def test_create_user_refuses_a_taken_name_and_a_weak_password(user, monkeypatch):
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_user", "alice", stdout=io.StringIO())
    monkeypatch.setattr("sys.stdin", io.StringIO("123\n"))
    with pytest.raises(CommandError):
        call_command("create_user", "frank", "--password-stdin", stdout=io.StringIO())
    assert not get_user_model().objects.filter(username="frank").exists()


# --- the chat page and the sidebar ------------------------------------------------------


def test_the_sidebar_lists_own_conversations_newest_activity_first(alice_client, user, other_user):
    old = conversation_create(owner=user, title="Old topic")
    new = conversation_create(owner=user, title="New topic")
    Conversation.objects.filter(pk=old.pk).update(updated_at=new.updated_at.replace(year=2020))
    conversation_create(owner=other_user, title="Bob's secret")
    html = alice_client.get(reverse("home")).content.decode()
    assert html.index("New topic") < html.index("Old topic")
    assert "Bob&#x27;s secret" not in html and "Bob's secret" not in html
    assert f'data-conversation-id="{new.id}"' in html


def test_another_users_conversation_is_not_found(alice_client, other_user):
    theirs = conversation_create(owner=other_user, title="Bob's")
    assert alice_client.get(reverse("conversation", args=[theirs.id])).status_code == 404
    response = alice_client.post(reverse("conversation-rename", args=[theirs.id]), {"title": "x"})
    assert response.status_code == 404
    response = alice_client.post(reverse("conversation-delete", args=[theirs.id]))
    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.title == "Bob's"


def test_search_finds_titles_and_message_text(alice_client, user, other_user):
    by_title = conversation_create(owner=user, title="Holiday in Lisbon")
    by_text = conversation_create(owner=user, title="Misc")
    _chat(by_text, Message.Role.USER, "What is the capital of PORTUGAL?")
    _chat(by_text, Message.Role.ASSISTANT, "It is Lisbon.")
    unrelated = conversation_create(owner=user, title="Cooking")
    theirs = conversation_create(owner=other_user, title="Lisbon too")

    html = alice_client.get(reverse("search"), {"q": "lisbon"}).content.decode()
    assert str(by_title.id) in html and str(by_text.id) in html
    assert str(unrelated.id) not in html and str(theirs.id) not in html
    # Listed once even when several messages match.
    assert html.count(f'data-conversation-id="{by_text.id}"') == 1

    html = alice_client.get(reverse("search"), {"q": "portugal"}).content.decode()
    assert str(by_text.id) in html and str(by_title.id) not in html

    html = alice_client.get(reverse("search"), {"q": "nothing like it"}).content.decode()
    assert "No conversation mentions" in html
    # Without JavaScript the page itself filters its sidebar.
    page = alice_client.get(reverse("home"), {"q": "cooking"}).content.decode()
    assert str(unrelated.id) in page and str(by_title.id) not in page


def test_search_marks_the_open_conversation(alice_client, conversation):
    html = alice_client.get(
        reverse("search"), {"q": "", "current": str(conversation.id)}
    ).content.decode()
    assert 'aria-current="page"' in html


def test_rename_sets_the_title_and_goes_back(alice_client, conversation):
    response = alice_client.post(
        reverse("conversation-rename", args=[conversation.id]), {"title": "  My   plans "}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("conversation", args=[conversation.id])
    conversation.refresh_from_db()
    assert conversation.title == "My plans"


def test_rename_answers_json_to_the_page(alice_client, conversation):
    response = alice_client.post(
        reverse("conversation-rename", args=[conversation.id]),
        {"title": "Renamed"},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200
    assert response.json()["conversation"] == {
        **response.json()["conversation"],
        "id": str(conversation.id),
        "title": "Renamed",
    }
    response = alice_client.post(
        reverse("conversation-rename", args=[conversation.id]),
        {"title": "   "},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "empty_title"
    conversation.refresh_from_db()
    assert conversation.title == "Renamed"


def test_rename_does_not_reorder_the_history(alice_client, conversation):
    before = Conversation.objects.get(pk=conversation.pk).updated_at
    alice_client.post(reverse("conversation-rename", args=[conversation.id]), {"title": "T"})
    assert Conversation.objects.get(pk=conversation.pk).updated_at == before


def test_writes_need_post_and_csrf(user, conversation):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    url = reverse("conversation-rename", args=[conversation.id])
    assert strict.get(url).status_code == 405
    assert strict.post(url, {"title": "no token"}).status_code == 403
    assert strict.post(reverse("conversation-delete", args=[conversation.id])).status_code == 403
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_delete_removes_the_conversation_and_its_messages(alice_client, conversation):
    _chat(conversation, Message.Role.USER, "hi")
    response = alice_client.post(reverse("conversation-delete", args=[conversation.id]))
    assert response.status_code == 302
    assert response["Location"] == reverse("home")
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()


def test_delete_from_another_page_returns_there(alice_client, user, conversation):
    other = conversation_create(owner=user)
    back = reverse("conversation", args=[other.id])
    response = alice_client.post(
        reverse("conversation-delete", args=[conversation.id]), {"next": back}
    )
    assert response["Location"] == back
    response = alice_client.post(
        reverse("conversation-delete", args=[other.id]), {"next": "https://evil.example/"}
    )
    assert response["Location"] == reverse("home")


def test_the_page_labels_the_offline_model(alice_client, conversation):
    html = alice_client.get(reverse("conversation", args=[conversation.id])).content.decode()
    assert "Offline demo model" in html
    assert 'data-offline-model="offline-demo"' in html


async def test_rename_tells_every_viewer(user, conversation):
    watching = await hub().subscribe(conversation.id)
    client = AsyncClient()
    await client.aforce_login(user)
    response = await client.post(
        reverse("conversation-rename", args=[conversation.id]), {"title": "Shared title"}
    )
    assert response.status_code == 302
    frame = await watching.receive(5)
    await watching.close()
    event = json.loads(frame["json"])
    assert event["type"] == "conversation.updated"
    assert event["conversation"]["title"] == "Shared title"


async def test_the_new_chat_composer_starts_the_conversation_and_its_reply(user):
    client = AsyncClient()
    await client.aforce_login(user)
    response = await client.post(reverse("conversation-new"), {"content": "First words"})
    conversation = await Conversation.objects.aget(owner=user)
    assert response.status_code == 302
    assert response["Location"] == reverse("conversation", args=[conversation.id])
    assert conversation.title == "First words"
    roles = [m.role async for m in Message.objects.filter(conversation=conversation)]
    assert roles == ["user", "assistant"]


def _busy(user, count: int) -> list[Conversation]:
    """Conversations of ``user`` with a reply streaming in each (as far as the database
    says), so the next reply is over CHAT_MAX_STREAMING_PER_USER."""
    busy = []
    for index in range(count):
        conversation = conversation_create(owner=user, title=f"busy {index}")
        _chat(conversation, Message.Role.ASSISTANT, "", status=Message.Status.STREAMING)
        busy.append(conversation)
    return busy


async def test_a_refused_new_chat_saves_nothing_and_gives_the_text_back(user, settings):
    settings.CHAT_MAX_STREAMING_PER_USER = 1
    await database_sync_to_async(_busy)(user, 1)
    client = AsyncClient()
    await client.aforce_login(user)
    typed = "My <b>question</b>\r\n\nwith lines"
    response = await client.post(reverse("conversation-new"), {"content": typed})
    assert response.status_code == 429
    html = response.content.decode()
    assert "You have 1 replies streaming already" in html
    textarea = html[html.index("<textarea") : html.index("</textarea>")]
    assert textarea.endswith(">\nMy &lt;b&gt;question&lt;/b&gt;\n\nwith lines")
    assert await Conversation.objects.acount() == 1  # only the busy one
    assert await Message.objects.acount() == 1


@pytest.mark.parametrize(
    ("content", "status", "reason"),
    [
        ("x" * 40_000, 413, "the limit is"),
        ("   ", 400, "The message is empty."),
        ("a NUL \x00 here", 400, "cannot be stored"),
    ],
)
async def test_a_new_chat_with_an_invalid_message_saves_nothing(
    user, settings, content, status, reason
):
    settings.CHAT_MAX_MESSAGE_CHARS = 32_000
    client = AsyncClient()
    await client.aforce_login(user)
    response = await client.post(reverse("conversation-new"), {"content": content})
    assert response.status_code == status
    assert reason in response.content.decode()
    assert await Conversation.objects.acount() == 0


def test_a_page_rename_with_a_nul_is_refused_and_changes_nothing(alice_client, conversation):
    conversation.title = "Before"
    conversation.save()
    url = reverse("conversation-rename", args=[conversation.id])
    response = alice_client.post(url, {"title": "a\x00b"}, headers={"Accept": "application/json"})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_characters"
    response = alice_client.post(url, {"title": "a\x00b"}, follow=True)
    assert response.status_code == 200
    assert "cannot be stored" in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.title == "Before"
