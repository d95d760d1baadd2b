"""API keys' hygiene: expiry, scopes (``read`` only reads), staff's view of every key
with a revoke action, and conversations made through keys marked as API traffic, kept
out of the sidebar unless asked for."""

import io
from datetime import timedelta

import httpx
import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from conversations.models import ApiKey, Conversation, Message
from conversations.services.apikeys import create_api_key
from conversations.services.conversations import conversation_create

from .helpers.api import bearer

pytestmark = pytest.mark.django_db(transaction=True)


def _client(server, raw: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=bearer(raw), timeout=30)


def test_an_expired_key_is_refused_everywhere_and_one_not_yet_expired_works(daphne_server, user):
    _, past = create_api_key(owner=user, expires_at=timezone.now() - timedelta(seconds=1))
    _, future = create_api_key(owner=user, expires_at=timezone.now() + timedelta(days=1))
    for path in ("/api/conversations", "/v1/models"):
        assert _client(daphne_server, past).get(path).status_code == 401
        assert _client(daphne_server, future).get(path).status_code == 200


def test_a_read_key_reads_and_is_refused_every_write_with_a_clear_message(daphne_server, user):
    conversation = conversation_create(owner=user, title="kept")
    _, raw = create_api_key(owner=user, scope=ApiKey.Scope.READ)
    reader = _client(daphne_server, raw)
    assert reader.get("/api/conversations").json()["count"] == 1
    assert reader.get(f"/api/conversations/{conversation.id}").status_code == 200

    writes = [
        ("POST", "/api/conversations", {"title": "new"}),
        ("POST", f"/api/conversations/{conversation.id}/messages", {"content": "hi"}),
        ("POST", f"/api/conversations/{conversation.id}/stop", {}),
        ("PATCH", f"/api/conversations/{conversation.id}", {"title": "renamed"}),
        ("DELETE", f"/api/conversations/{conversation.id}", None),
    ]
    for method, path, body in writes:
        response = reader.request(method, path, json=body)
        assert response.status_code == 403, path
        assert response.json()["code"] == "key_read_only"
        assert "scope is `read`" in response.json()["detail"]

    completion = reader.post(
        "/v1/chat/completions",
        json={"model": "offline-demo", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert completion.status_code == 403
    assert completion.json()["error"]["code"] == "key_read_only"
    assert completion.json()["error"]["type"] == "permission_error"
    assert reader.get("/v1/models").status_code == 403  # /v1 is all chat

    conversation.refresh_from_db()
    assert conversation.title == "kept"
    assert Conversation.objects.count() == 1
    assert Message.objects.count() == 0


def test_staff_see_every_key_and_revoke_any(admin_client, user, other_user):
    mine, raw = create_api_key(owner=user, name="backup script", scope=ApiKey.Scope.READ)
    theirs, _ = create_api_key(
        owner=other_user, name="bot", expires_at=timezone.now() + timedelta(days=3)
    )
    listing = admin_client.get("/admin/conversations/apikey/").content.decode()
    for key in (mine, theirs):
        assert key.prefix in listing and key.name in listing
        assert key.owner.username in listing
    assert raw not in listing and mine.hashed_key not in listing
    admin_client.post(
        "/admin/conversations/apikey/",
        {"action": "revoke", "_selected_action": [mine.pk]},
    )
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.revoked_at is not None
    assert theirs.revoked_at is None
    refused = Client(headers=bearer(raw)).get("/api/conversations")
    assert refused.status_code == 401


def test_people_choose_a_keys_scope_and_expiry(user):
    browser = Client()
    browser.force_login(user)
    tomorrow = (timezone.now() + timedelta(days=1)).date()
    made = browser.post(
        "/settings/api-keys/", {"name": "reader", "scope": "read", "expires": tomorrow}
    )
    key = ApiKey.objects.get(owner=user)
    assert (key.scope, key.expires_at.date()) == ("read", tomorrow)
    assert 'data-part="scope">read<' in made.content.decode()
    past = browser.post("/settings/api-keys/", {"name": "old", "expires": "2000-01-01"})
    assert "Choose a day after today." in past.content.decode()
    assert ApiKey.objects.count() == 1


def test_conversations_made_through_keys_are_api_traffic_kept_out_of_the_sidebar(
    daphne_server, user
):
    key, raw = create_api_key(owner=user)
    own = conversation_create(owner=user, title="Typed in the chat")
    made = httpx.post(
        f"{daphne_server.url}/api/conversations", headers=bearer(raw), json={"title": "By key"}
    ).json()
    completion = httpx.post(
        f"{daphne_server.url}/v1/chat/completions",
        headers=bearer(raw),
        json={"model": "offline-demo", "messages": [{"role": "user", "content": "By v1"}]},
        timeout=30,
    )
    assert completion.status_code == 200
    through_key = Conversation.objects.filter(api_traffic=True, api_key=key)
    assert {str(c.pk) for c in through_key} == {
        made["id"],
        completion.headers["X-Conversation-Id"],
    }
    assert not Conversation.objects.get(pk=own.pk).api_traffic

    browser = Client()
    browser.force_login(user)
    sidebar = browser.get("/").content.decode()
    assert f'data-conversation-id="{own.pk}"' in sidebar
    assert made["id"] not in sidebar
    shown = browser.get("/?api=1").content.decode()
    assert made["id"] in shown and completion.headers["X-Conversation-Id"] in shown
    searched = browser.get("/search/", {"q": "By", "api": "1"}).content.decode()
    assert made["id"] in searched
    assert made["id"] not in browser.get("/search/", {"q": "By"}).content.decode()


def test_the_command_makes_a_read_key_that_expires(user):
    out = io.StringIO()
    call_command(
        "create_api_key",
        user.username,
        "--scope",
        "read",
        "--expires-in-days",
        "7",
        stdout=out,
        stderr=io.StringIO(),
    )
    key = ApiKey.objects.get(owner=user)
    assert out.getvalue().strip().splitlines()[-1].startswith(key.prefix)
    assert key.scope == "read"
    assert timedelta(days=6) < key.expires_at - timezone.now() <= timedelta(days=7)
