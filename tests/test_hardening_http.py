"""Bad input over HTTP: characters that cannot be stored, numbers out of range, bodies
too big, oversized and unsupported ``/v1`` requests. Each is a clear 4xx in the
surface's own error shape and saves nothing; never a 500.

Over real HTTP to a real daphne worker (the offline model), as test_api.py does.
"""

import json

import httpx
import pytest
from django.conf import settings

from conversations import llm
from conversations.api.views import MAX_OFFSET
from conversations.models import Conversation, Message

from .helpers.api import bearer

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = llm.OFFLINE_MODEL_NAME
# JSON escapes, sent as they are: a NUL and a lone UTF-16 surrogate.
BAD_CHARACTERS = ["\\u0000", "\\ud800"]


@pytest.fixture
def http(daphne_server, key):
    with httpx.Client(base_url=daphne_server.url, headers=bearer(key), timeout=30) as client:
        yield client


def raw_json(value: dict, bad: str) -> bytes:
    """``value`` as JSON, its ``BAD`` markers replaced by the raw escape ``bad``."""
    return json.dumps(value).replace("BAD", bad).encode()


def post_raw(http, path: str, body: bytes, **kwargs) -> httpx.Response:
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return http.post(path, content=body, headers=headers, **kwargs)


def assert_api_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["detail"], body
    return body


def assert_openai_error(response, status: int, code: str | None = None, param=...) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    if code is not None:
        assert error["code"] == code, error
    if param is not ...:
        assert error["param"] == param, error
    return error


def nothing_saved() -> None:
    assert Message.objects.count() == 0
    assert Conversation.objects.count() == 0


# --- item 4: characters that cannot be stored -----------------------------------------


@pytest.mark.parametrize("bad", BAD_CHARACTERS)
@pytest.mark.parametrize(
    "body", [{"title": "a BAD title"}, {"system_prompt": "be BAD"}], ids=["title", "system"]
)
def test_an_api_create_with_unstorable_characters_is_400(http, bad, body):
    response = post_raw(http, "/api/conversations", raw_json(body, bad))
    assert_api_error(response, 400, "invalid_characters")
    nothing_saved()


@pytest.mark.parametrize("bad", BAD_CHARACTERS)
def test_an_api_rename_with_unstorable_characters_is_400(http, bad, conversation):
    conversation.title = "Before"
    conversation.save()
    response = http.patch(
        f"/api/conversations/{conversation.id}",
        content=raw_json({"title": "BAD"}, bad),
        headers={"Content-Type": "application/json"},
    )
    assert_api_error(response, 400, "invalid_characters")
    conversation.refresh_from_db()
    assert conversation.title == "Before"


@pytest.mark.parametrize("bad", BAD_CHARACTERS)
def test_an_api_send_with_unstorable_characters_is_400(http, bad, conversation):
    response = post_raw(
        http, f"/api/conversations/{conversation.id}/messages", raw_json({"content": "BAD"}, bad)
    )
    assert_api_error(response, 400, "invalid_characters")
    assert Message.objects.count() == 0


def v1_body(messages: list[dict], **extra) -> dict:
    return {"model": MODEL, "messages": messages, **extra}


@pytest.mark.parametrize("bad", BAD_CHARACTERS)
@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "say BAD"}],
        [{"role": "system", "content": "be BAD"}, {"role": "user", "content": "hi"}],
        [
            {"role": "user", "content": "first BAD"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hi"},
        ],
        [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok BAD"},
            {"role": "user", "content": "hi"},
        ],
        [{"role": "user", "content": [{"type": "text", "text": "parts BAD"}]}],
    ],
    ids=["last", "system", "earlier-user", "earlier-assistant", "content-part"],
)
def test_a_v1_request_with_unstorable_characters_is_400(http, bad, messages):
    response = post_raw(http, "/v1/chat/completions", raw_json(v1_body(messages), bad))
    assert_openai_error(response, 400, "invalid_characters")
    nothing_saved()


@pytest.mark.parametrize("bad", BAD_CHARACTERS)
def test_a_v1_request_to_a_conversation_with_unstorable_characters_is_400(http, bad, conversation):
    response = post_raw(
        http,
        "/v1/chat/completions",
        raw_json(v1_body([{"role": "user", "content": "BAD"}]), bad),
        headers={"X-Conversation-Id": str(conversation.id)},
    )
    assert_openai_error(response, 400, "invalid_characters")
    assert Message.objects.count() == 0


@pytest.mark.parametrize("bad", BAD_CHARACTERS)
def test_unstorable_characters_in_a_v1_model_name_are_a_clean_404(http, bad):
    body = raw_json({"model": "gpt-BAD", "messages": [{"role": "user", "content": "hi"}]}, bad)
    assert_openai_error(post_raw(http, "/v1/chat/completions", body), 404, "model_not_found")
    nothing_saved()


# --- item 4: numbers and sizes out of range ---------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"offset": "9223372036854775808"},
        {"offset": "9223372036854775807"},
        {"offset": str(10**40)},
        {"limit": str(10**30)},
        {"limit": "9223372036854775808"},
        {"offset": "-1"},
    ],
)
def test_list_parameters_out_of_range_are_400(http, params):
    assert_api_error(http.get("/api/conversations", params=params), 400, "invalid_request")


def test_the_last_page_of_the_list_is_reachable(http, user):
    response = http.get("/api/conversations", params={"offset": MAX_OFFSET})
    assert response.status_code == 200
    assert response.json()["items"] == []


def oversized(limit: int) -> bytes:
    # Valid JSON, just too long: the refusal must come from the size alone.
    return json.dumps({"title": "x", "system_prompt": "y" * (limit + 1)}).encode()


def test_an_api_body_over_the_upload_limit_is_413(http):
    response = post_raw(http, "/api/conversations", oversized(settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
    body = assert_api_error(response, 413, "request_too_large")
    assert f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,}" in body["detail"]
    nothing_saved()


def test_a_v1_body_over_the_upload_limit_is_413(http):
    messages = [{"role": "user", "content": "y" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}]
    body = json.dumps(v1_body(messages)).encode()
    assert_openai_error(post_raw(http, "/v1/chat/completions", body), 413, "request_too_large")
    nothing_saved()


def test_a_body_within_the_upload_limit_reaches_the_size_checks(http):
    """The upload limit is not what refuses a long message: its own limit does."""
    content = "z" * (settings.CHAT_MAX_MESSAGE_CHARS + 1)
    response = http.post(
        "/v1/chat/completions", json=v1_body([{"role": "user", "content": content}])
    )
    assert_openai_error(response, 413, "message_too_long")


# --- item 12: static files carry the pages' security headers ----------------------------


@pytest.mark.parametrize(
    "path",
    ["/static/conversations/chat.js", "/static/conversations/chat.css", "/static/nope.js"],
)
def test_static_files_carry_the_same_security_headers_as_pages(daphne_server, path):
    page = httpx.get(f"{daphne_server.url}/login/")
    static = httpx.get(f"{daphne_server.url}{path}")
    assert static.status_code == (404 if "nope" in path else 200)
    for header in (
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "cross-origin-opener-policy",
        "content-security-policy",
    ):
        assert static.headers.get(header) == page.headers[header], header
