"""Login throttling (django-axes on the chat's and the admin's login), the API-key
throttle per address, and the security audit log — tried as an attacker would."""

import ipaddress
import secrets
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client

from access import audit
from access.models import SecurityEvent
from conversations.services.apikeys import create_api_key, revoke_api_key

from .helpers.api import bearer


def new_address() -> str:
    """An address no other test, and no earlier run, used: the counts kept in the cache
    (Redis, when REDIS_URL is set) outlive a test run."""
    return str(ipaddress.ip_address(f"fd00::{secrets.token_hex(2)}:{secrets.token_hex(2)}:1"))


@pytest.fixture
def address() -> str:
    return new_address()


@pytest.fixture
def throttled(settings):
    settings.AXES_FAILURE_LIMIT = 3
    return settings


def log_in(client: Client, username: str, password: str, path: str = "/login/"):
    data = {"username": username, "password": password}
    if path == "/admin/login/":
        data["next"] = "/admin/"
    return client.post(path, data)


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_wrong_passwords_lock_the_username_then_the_right_one_is_refused(user, throttled):
    client = Client(REMOTE_ADDR="10.1.1.1")
    # The failure that reaches the limit is answered with the lockout already.
    assert [log_in(client, "alice", "wrong").status_code for _ in range(3)] == [200, 200, 429]
    refused = log_in(client, "alice", "alice-password-1")
    assert refused.status_code == 429
    assert not logged_in(client)
    assert "Too many failed logins. Try again in 15 minutes." in refused.content.decode()
    assert refused["Retry-After"] == "900"
    # From another address too: the username is locked, not only the address.
    elsewhere = Client(REMOTE_ADDR="10.1.1.2")
    assert log_in(elsewhere, "alice", "alice-password-1").status_code == 429
    assert not logged_in(elsewhere)

    kinds = list(SecurityEvent.objects.values_list("kind", "username", "address"))
    assert kinds.count(("login_failed", "alice", "10.1.1.1")) == 3
    assert ("locked_out", "alice", "10.1.1.1") in kinds
    # Refused attempts during the lockout are not logged one by one.
    assert len(kinds) == 4


def test_one_address_trying_many_usernames_is_locked_out(user, other_user, throttled):
    client = Client(REMOTE_ADDR="10.2.2.2")
    for name in ("root", "admin", "carol"):
        log_in(client, name, "guess")
    assert log_in(client, "alice", "alice-password-1").status_code == 429
    assert not logged_in(client)
    # The usernames are not locked for everyone: bob logs in from his own address.
    bob = Client(REMOTE_ADDR="10.2.2.3")
    assert log_in(bob, "bob", "bob-password-1").status_code == 302
    assert logged_in(bob)


def test_the_admin_login_is_throttled_the_same_way(db, throttled):
    get_user_model().objects.create_superuser("root", password="root-password-1")
    client = Client(REMOTE_ADDR="10.3.3.3")
    answers = [log_in(client, "root", "wrong", "/admin/login/").status_code for _ in range(3)]
    assert answers == [200, 200, 429]
    refused = log_in(client, "root", "root-password-1", "/admin/login/")
    assert refused.status_code == 429
    assert "Too many failed logins" in refused.content.decode()
    assert not logged_in(client)
    assert client.get("/admin/").status_code == 302  # still to the login page


def test_the_lockout_ends_after_the_cool_off(user, throttled):
    client = Client(REMOTE_ADDR="10.4.4.4")
    for _ in range(3):
        log_in(client, "alice", "wrong")
    assert log_in(client, "alice", "alice-password-1").status_code == 429
    # As if the cool-off had passed (the attempts are dated; nothing sleeps here).
    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time -= timedelta(hours=1)
        attempt.save()
    assert log_in(client, "alice", "alice-password-1").status_code == 302
    assert logged_in(client)


def test_a_successful_login_forgets_the_failures_before_it(user, throttled):
    client = Client(REMOTE_ADDR="10.5.5.5")
    for _ in range(2):
        log_in(client, "alice", "wrong")
    assert log_in(client, "alice", "alice-password-1").status_code == 302
    client.logout()
    for _ in range(2):
        log_in(client, "alice", "wrong")
    assert log_in(client, "alice", "alice-password-1").status_code == 302


@pytest.mark.django_db(transaction=True)
def test_guessing_api_keys_from_one_address_is_refused_with_429(settings, user, address):
    settings.CHAT_KEY_FAILURE_LIMIT = 3
    _, good = create_api_key(owner=user)
    client = Client(REMOTE_ADDR=address)
    for n in range(3):
        answer = client.get("/api/models", headers=bearer(f"chs_guess{n:04}_{'x' * 40}"))
        assert answer.status_code == 401
    refused = client.get("/api/models", headers=bearer(f"chs_guess9999_{'x' * 40}"))
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "rate_limited"
    assert 0 < body["retry_after"] <= 300
    assert int(refused["Retry-After"]) == body["retry_after"]
    # A right key from that address waits too; the same key from elsewhere works.
    assert client.get("/api/models", headers=bearer(good)).status_code == 429
    other = Client(REMOTE_ADDR=new_address())
    assert other.get("/api/models", headers=bearer(good)).status_code == 200
    # /v1 (and the event streams) authenticate the same way.
    openai = client.get("/v1/models", headers=bearer(f"chs_guess8888_{'x' * 40}"))
    assert openai.status_code == 429
    assert openai.json()["error"]["code"] == "rate_limit_exceeded"  # OpenAI's name for it
    throttled = SecurityEvent.objects.filter(kind="key_throttled")
    assert [(e.address, e.detail["failures"]) for e in throttled] == [(address, 3)]


def test_with_password_login_off_a_right_password_logs_nobody_in(settings, user):
    settings.CHAT_PASSWORD_LOGIN = False
    client = Client()
    page = client.get("/login/").content.decode()
    assert 'name="password"' not in page
    answer = log_in(client, "alice", "alice-password-1")
    assert answer.status_code == 302 and answer["Location"] == "/login/"
    assert not logged_in(client)


def test_keys_made_and_revoked_are_in_the_audit_log(user):
    key, _ = create_api_key(owner=user, name="backup")
    assert revoke_api_key(owner=user, key_id=key.pk)
    assert not revoke_api_key(owner=user, key_id=key.pk)  # once
    events = list(SecurityEvent.objects.order_by("at").values_list("kind", "user", "detail"))
    detail = {"key": key.pk, "prefix": key.prefix, "name": "backup"}
    assert events == [("key_created", user.pk, detail), ("key_revoked", user.pk, detail)]


def test_record_keeps_who_what_and_where(rf, user):
    request = rf.get("/", REMOTE_ADDR="192.0.2.7")
    event = audit.record("quota_changed", user=user, request=request, tokens_per_day=1000)
    event.refresh_from_db()
    assert (event.kind, event.user, event.username, event.address) == (
        "quota_changed",
        user,
        "alice",
        "192.0.2.7",
    )
    assert event.detail == {"tokens_per_day": 1000}
    user.delete()
    event.refresh_from_db()
    assert event.user is None and event.username == "alice"


def test_only_superusers_read_the_audit_log_and_nobody_edits_it(db, user):
    staff = get_user_model().objects.create_user("staff", password="x", is_staff=True)
    root = get_user_model().objects.create_superuser("root", password="x")
    event = audit.record("login_failed", username="mallory", address="192.0.2.8")
    url = "/admin/access/securityevent/"
    client = Client()
    client.force_login(staff)
    assert client.get(url).status_code == 403
    client.force_login(root)
    page = client.get(url)
    assert page.status_code == 200 and "mallory" in page.content.decode()
    assert client.get(f"{url}?kind__exact=login_failed").status_code == 200
    assert client.get(f"{url}?user__id__exact={user.pk}").status_code == 200
    assert client.get(f"{url}add/").status_code == 403
    assert client.post(f"{url}{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert SecurityEvent.objects.filter(pk=event.pk).exists()
