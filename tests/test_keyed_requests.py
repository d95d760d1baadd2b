"""Requests to the APIs that carry a key take Django's request path without the
browser's middleware (chatsite/keyed.py). They keep every guard a page has — the
allowed hosts, the HTTPS redirect, the security headers — and are judged by their key
alone; a request without a key goes through the whole middleware as before.

Over real HTTP to a real daphne worker (the offline model).
"""

import httpx
import pytest
from asgiref.sync import async_to_sync

from chatsite.keyed import KeyedRequests
from conversations import llm
from conversations.services.conversations import conversation_create

from .helpers.api import bearer
from .helpers.servers import start_daphne
from .helpers.ws import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

SECURITY_HEADERS = (
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cross-origin-opener-policy",
    "content-security-policy",
)


def v1_stream() -> dict:
    return {
        "model": llm.OFFLINE_MODEL_NAME,
        "stream": True,
        "messages": [{"role": "user", "content": "Hello there"}],
    }


def test_keyed_responses_carry_the_security_headers_of_every_page(daphne_server, key):
    page = httpx.get(f"{daphne_server.url}/login/")
    with httpx.Client(base_url=daphne_server.url, headers=bearer(key), timeout=30) as http:
        answers = [
            http.get("/v1/models"),
            http.get("/v1/models/no-such-model"),  # an error too
            http.get("/api/conversations"),
        ]
        with http.stream("POST", "/v1/chat/completions", json=v1_stream()) as stream:
            assert stream.status_code == 200
            body = "".join(stream.iter_text())
            answers.append(stream)
    assert body.rstrip().endswith("data: [DONE]")
    assert [a.status_code for a in answers] == [200, 404, 200, 200]
    for answer in answers:
        for header in SECURITY_HEADERS:
            assert answer.headers.get(header) == page.headers[header], (answer.url, header)
        assert "set-cookie" not in answer.headers  # no session, no CSRF cookie


@pytest.mark.parametrize("path", ["/v1/models", "/api/conversations", "/login/"])
def test_a_host_outside_allowed_hosts_is_refused_with_or_without_a_key(daphne_server, key, path):
    answer = httpx.get(
        f"{daphne_server.url}{path}", headers={**bearer(key), "Host": "evil.example"}
    )
    assert answer.status_code == 400


def test_a_request_with_a_key_is_judged_by_the_key_alone(daphne_server, key, user, other_user):
    """The key's owner, whoever's session cookie comes along; a wrong key is refused even
    with a good cookie; without a key, the cookie's owner."""
    mine = conversation_create(owner=user, title="Alice's")
    theirs = conversation_create(owner=other_user, title="Bob's")
    cookie = {"Cookie": f"sessionid={async_to_sync(session_cookie)(other_user)}"}

    def titles(headers: dict) -> list[str]:
        answer = httpx.get(f"{daphne_server.url}/api/conversations", headers=headers)
        assert answer.status_code == 200, answer.text
        return [item["title"] for item in answer.json()["items"]]

    assert titles({**bearer(key), **cookie}) == [mine.title]
    assert titles(cookie) == [theirs.title]
    wrong = httpx.get(
        f"{daphne_server.url}/api/conversations",
        headers={**bearer("chs_not-a-real-key"), **cookie},
    )
    assert wrong.status_code == 401
    # Without a key the browser's rules hold: a change needs the CSRF token.
    refused = httpx.post(
        f"{daphne_server.url}/api/conversations", json={"title": "x"}, headers=cookie
    )
    assert refused.status_code == 403


def test_behind_https_a_keyed_request_is_redirected_and_gets_hsts():
    server = start_daphne(env={"CHAT_HTTPS": "1"}, name="keyed-https")
    try:
        plain = httpx.get(f"{server.url}/v1/models", headers=bearer("chs_anything"))
        assert plain.status_code == 301
        assert plain.headers["location"] == f"https://127.0.0.1:{server.port}/v1/models"
        secure = httpx.get(
            f"{server.url}/v1/models",
            headers={**bearer("chs_anything"), "X-Forwarded-Proto": "https"},
        )
        assert secure.status_code == 401  # reached the API: the key is not a real one
        assert secure.headers["strict-transport-security"].startswith("max-age=31536000")
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("path", "headers", "root_path", "keyed"),
    [
        ("/v1/chat/completions", [(b"authorization", b"Bearer x")], "", True),
        ("/api/conversations", [(b"Authorization", b"Bearer x")], "", True),
        ("/api/conversations", [(b"cookie", b"sessionid=x")], "", False),
        ("/login/", [(b"authorization", b"Bearer x")], "", False),
        ("/v1x/models", [(b"authorization", b"Bearer x")], "", False),
        ("/chat/v1/models", [(b"authorization", b"Bearer x")], "/chat", True),
    ],
)
def test_which_requests_take_the_keyed_path(path, headers, root_path, keyed):
    scope = {"type": "http", "path": path, "root_path": root_path, "headers": headers}
    assert KeyedRequests.is_keyed(scope) is keyed
