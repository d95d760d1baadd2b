"""The JSON API under /api/, over real HTTP to a real daphne worker (offline model):
conversations, authentication, and every refusal answered as JSON."""

import secrets
import time

import httpx
import pytest
from asgiref.sync import async_to_sync

from conversations import events, selectors
from conversations.api.schemas import MessageOut
from conversations.models import ApiKey, Conversation, Message
from conversations.services.apikeys import revoke_api_key
from conversations.services.conversations import conversation_create

from .helpers.api import bearer, wait_until_final
from .helpers.ws import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def assert_json_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["detail"]
    if code:
        assert body["code"] == code
    return body


def test_conversations_are_created_listed_newest_first_read_renamed_and_deleted(api):
    created = [api.post("/conversations", json={"title": f"Chat {i}"}) for i in range(3)]
    assert [r.status_code for r in created] == [201] * 3
    assert created[0].json()["source"] == "api"
    ids = [r.json()["id"] for r in created]

    page = api.get("/conversations", params={"limit": 2}).json()
    assert page["count"] == 3
    assert [c["id"] for c in page["items"]] == ids[::-1][:2]
    rest = api.get("/conversations", params={"limit": 2, "offset": 2}).json()
    assert [c["id"] for c in rest["items"]] == ids[:1]

    renamed = api.patch(f"/conversations/{ids[0]}", json={"title": "  Renamed   chat "})
    assert renamed.status_code == 200
    assert renamed.json()["title"] == "Renamed chat"
    detail = api.get(f"/conversations/{ids[0]}").json()
    assert detail["title"] == "Renamed chat"
    assert detail["messages"] == []

    assert api.delete(f"/conversations/{ids[1]}").status_code == 204
    assert_json_error(api.get(f"/conversations/{ids[1]}"), 404, "not_found")
    assert Conversation.objects.count() == 2


def test_a_conversation_reads_with_its_messages_in_the_protocols_shape(api):
    conversation_id = api.post("/conversations", json={}).json()["id"]
    sent = api.post(f"/conversations/{conversation_id}/messages", json={"content": "Hi there"})
    assert sent.status_code == 202
    wait_until_final(sent.json()["reply"]["id"])
    detail = api.get(f"/conversations/{conversation_id}").json()
    assert detail["title"] == "Hi there"
    saved = list(Message.objects.filter(conversation_id=conversation_id))
    selectors.annotate_siblings(conversation_id, saved)
    assert detail["messages"] == [events.message_out(m) for m in saved]


def test_the_message_schema_describes_every_field_of_the_protocol(user, conversation):
    reply = Message.objects.create(conversation=conversation, role="assistant")
    selectors.annotate_siblings(conversation.id, [reply])  # as every read of a branch does
    # A tool message (an OpenAI client's tool result, /v1) adds its tool_call_id.
    result = Message.objects.create(conversation=conversation, role="tool", tool_call_id="c1")
    selectors.annotate_siblings(conversation.id, [result])
    described = set(events.message_out(reply)) | set(events.message_out(result))
    assert set(MessageOut.model_fields) == described


def test_invalid_requests_are_400_json_and_save_nothing(api, conversation):
    url = f"/conversations/{conversation.id}/messages"
    assert_json_error(
        api.post(url, content=b"{not json", headers={"Content-Type": "application/json"}), 400
    )
    body = assert_json_error(api.post(url, json={"content": 5}), 400, "invalid_request")
    assert "content" in body["detail"]
    assert_json_error(api.post(url, json={}), 400, "invalid_request")
    assert_json_error(api.post(url, json={"content": "   "}), 400, "empty_content")
    assert_json_error(api.post(url, json={"content": "x", "client_id": ""}), 400)
    assert_json_error(api.get("/conversations", params={"limit": 0}), 400, "invalid_request")
    assert_json_error(api.post(url, json={"content": "x" * 40_000}), 413, "message_too_long")
    assert Message.objects.count() == 0


def test_unknown_and_foreign_conversations_and_paths_are_404_json(api, other_user):
    foreign = conversation_create(owner=other_user)
    for path in (
        f"/conversations/{foreign.id}",
        "/conversations/0c6c3c5e-0000-4000-8000-000000000000",
        "/conversations/not-a-uuid",
        "/no/such/endpoint",
    ):
        assert_json_error(api.get(path), 404, "not_found")
    assert_json_error(
        api.post(f"/conversations/{foreign.id}/messages", json={"content": "hi"}), 404
    )
    assert_json_error(api.post(f"/conversations/{foreign.id}/stop"), 404)
    assert_json_error(api.delete(f"/conversations/{foreign.id}"), 404)
    assert_json_error(api.get(f"/conversations/{foreign.id}/events"), 404)
    assert Conversation.objects.filter(pk=foreign.pk).exists()
    assert Message.objects.count() == 0


def test_wrong_methods_are_405_json_and_a_get_never_starts_a_reply(api, conversation):
    response = api.get(f"/conversations/{conversation.id}/messages")
    assert_json_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]
    assert_json_error(api.put("/conversations", json={}), 405, "method_not_allowed")
    assert_json_error(api.get(f"/conversations/{conversation.id}/stop"), 405)
    assert Message.objects.count() == 0


def test_missing_unknown_and_revoked_keys_are_401_json(daphne_server, user, key):
    url = f"{daphne_server.url}/api/conversations"
    assert httpx.get(url, headers=bearer(key)).status_code == 200
    for headers in (
        {},
        bearer("chs_AAAAAAAA_" + secrets.token_urlsafe(32)),
        bearer(key[:-1] + ("A" if key[-1] != "A" else "B")),
        {"Authorization": f"Token {key}"},
        {"Authorization": "Bearer"},
    ):
        response = httpx.get(url, headers=headers)
        assert_json_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"

    stored = ApiKey.objects.get(owner=user)
    assert stored.last_used_at is not None
    assert revoke_api_key(owner=user, key_id=stored.pk)
    # A worker remembers a key's owner for up to a second: then the key is refused.
    time.sleep(1.1)
    assert_json_error(httpx.get(url, headers=bearer(key)), 401, "unauthorized")
    assert_json_error(httpx.post(url, headers=bearer(key), json={}), 401)
    assert Conversation.objects.count() == 0
    # Neither the key nor its secret part ever reaches the worker's log.
    time.sleep(0.2)
    log = daphne_server.log()
    assert key not in log
    assert key[len(stored.prefix) + 1 :] not in log


def test_a_browser_session_needs_its_csrf_token_and_a_key_does_not(daphne_server, user, key):
    url = f"{daphne_server.url}/api/conversations"
    cookies = {"sessionid": async_to_sync(session_cookie)(user)}
    assert httpx.get(url, cookies=cookies).status_code == 200  # reads need no token
    refused = httpx.post(url, cookies=cookies, json={"title": "no token"})
    assert_json_error(refused, 403, "csrf_failed")
    secret = secrets.token_hex(16)
    accepted = httpx.post(
        url,
        cookies={**cookies, "csrftoken": secret},
        headers={"X-CSRFToken": secret},
        json={"title": "with token"},
    )
    assert accepted.status_code == 201
    assert httpx.post(url, headers=bearer(key), json={"title": "by key"}).status_code == 201
    assert sorted(Conversation.objects.values_list("title", flat=True)) == [
        "by key",
        "with token",
    ]


def test_a_busy_conversation_is_409_and_a_repeated_client_id_answers_with_the_first_send(
    api, conversation
):
    url = f"/conversations/{conversation.id}/messages"
    first = api.post(url, json={"content": "One", "client_id": "same"})
    repeat = api.post(url, json={"content": "One", "client_id": "same"})
    busy = api.post(url, json={"content": "Two"})
    assert first.status_code == repeat.status_code == 202
    assert repeat.json()["created"] is False
    assert repeat.json()["reply"]["id"] == first.json()["reply"]["id"]
    if Message.objects.get(pk=first.json()["reply"]["id"]).status == "streaming":
        assert_json_error(busy, 409, "conversation_busy")
    wait_until_final(first.json()["reply"]["id"])
    assert Message.objects.filter(role="user").count() == 1 + (busy.status_code == 202)


def test_the_openapi_document_and_its_interactive_docs_are_served(daphne_server):
    schema = httpx.get(f"{daphne_server.url}/api/openapi.json").json()
    assert "/api/conversations/{conversation_id}/messages" in schema["paths"]
    assert "/api/conversations/{conversation_id}/events" in schema["paths"]
    assert schema["components"]["securitySchemes"]["ApiAuth"]["scheme"] == "bearer"
    docs = httpx.get(f"{daphne_server.url}/api/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
