"""Webhook endpoints: the JSON API (/api/webhooks), the rules every surface shares
(URLs, event types, the limit), the settings page and the admin."""

import json

import pytest
from django.test import Client

from conversations.services import conversations as services
from webhooks import services as webhooks
from webhooks.models import EVENT_TYPES, Delivery, Endpoint

from .helpers.api import bearer
from .helpers.webhook_receiver import Receiver
from .webhook_support import deliver_until, settled

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api(key):
    client = Client(headers=bearer(key))

    def call(method: str, path: str, body=None):
        response = getattr(client, method)(
            f"/api/webhooks{path}",
            data=json.dumps(body) if body is not None else None,
            content_type="application/json",
        )
        return response.status_code, response.json() if response.content else None

    return call


def test_an_endpoint_is_created_read_listed_changed_and_deleted(api, hooks, user):
    status, created = api(
        "post", "", {"url": "https://hooks.example.com/chat", "description": "CI"}
    )
    assert status == 201
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["events"] == list(EVENT_TYPES)
    assert created["enabled"] is True
    endpoint_id = created["id"]

    status, listed = api("get", "")
    assert status == 200 and [e["id"] for e in listed] == [endpoint_id]
    assert "secret" not in listed[0]  # shown at creation and rotation only
    assert "secret" not in api("get", f"/{endpoint_id}")[1]

    status, changed = api(
        "patch", f"/{endpoint_id}", {"events": ["message.completed"], "enabled": False}
    )
    assert status == 200
    assert (changed["events"], changed["enabled"], changed["description"]) == (
        ["message.completed"],
        False,
        "CI",
    )
    status, rotated = api("post", f"/{endpoint_id}/rotate-secret")
    assert status == 200 and rotated["secret"] != created["secret"]
    assert rotated["previous_secret_expires_at"]
    assert api("get", f"/{endpoint_id}")[1]["previous_secret_expires_at"]

    assert api("delete", f"/{endpoint_id}") == (204, None)
    assert api("get", f"/{endpoint_id}")[0] == 404
    assert not Endpoint.objects.exists()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/", "https://"),
        ("ftp://hooks.example.com/", "https://"),
        ("https://", "no host"),
        ("https://user:pw@hooks.example.com/", "credentials"),
        ("https://127.0.0.1/", "loopback"),
        ("https://10.1.2.3:8443/", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[::1]/", "loopback"),
        ("https://[::ffff:192.168.0.1]/", "private"),
        ("https://localhost:8000/", "localhost"),
        ("https://api.localhost/", "localhost"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://224.0.0.1/", "multicast"),
    ],
)
def test_urls_that_are_not_https_or_not_public_are_refused(api, url, why):
    status, error = api("post", "", {"url": url})
    assert status == 400 and error["code"] == "invalid_url"
    assert why in error["detail"]
    assert not Endpoint.objects.exists()


def test_the_settings_allow_http_and_private_addresses(api, hooks):
    assert api("post", "", {"url": "http://127.0.0.1:9/hook"})[0] == 201


def test_event_types_are_checked_and_at_most_ten_endpoints_a_user(api, settings, user):
    status, error = api("post", "", {"url": "https://a.example.com/", "events": ["token"]})
    assert status == 400 and error["code"] == "invalid_request"
    status, error = api("post", "", {"url": "https://a.example.com/", "events": []})
    assert (status, error["code"]) == (400, "no_event_types")
    for n in range(settings.CHAT_MAX_WEBHOOKS_PER_USER):
        assert api("post", "", {"url": f"https://{n}.example.com/"})[0] == 201
    status, error = api("post", "", {"url": "https://11.example.com/"})
    assert (status, error["code"]) == (400, "too_many_webhooks")
    assert Endpoint.objects.filter(owner=user).count() == 10


def test_other_users_endpoints_and_deliveries_look_like_nothing(api, hooks, other_user):
    theirs = webhooks.endpoint_create(owner=other_user, url="https://bob.example.com/")
    for method, path in [
        ("get", f"/{theirs.id}"),
        ("patch", f"/{theirs.id}"),
        ("delete", f"/{theirs.id}"),
        ("post", f"/{theirs.id}/rotate-secret"),
        ("get", f"/{theirs.id}/deliveries"),
        ("get", "/not-a-uuid"),
    ]:
        status, error = api(method, path, {} if method == "patch" else None)
        assert (status, error["code"]) == (404, "not_found"), (method, path)
    assert api("get", "")[1] == []
    theirs.refresh_from_db()
    assert theirs.enabled


def test_deliveries_are_listed_with_their_attempts_and_redelivered(api, hooks, user):
    with Receiver() as receiver:
        endpoint_id = api("post", "", {"url": receiver.url()})[1]["id"]
        conversation = services.conversation_create(owner=user, title="Log me")
        deliver_until(settled)
        status, page = api("get", f"/{endpoint_id}/deliveries")
        assert status == 200 and page["count"] == 1
        (item,) = page["items"]
        assert item["event_type"] == "conversation.created"
        assert item["event_id"] == receiver.received[0].webhook_id
        assert item["payload"]["data"]["conversation"]["id"] == str(conversation.id)
        assert item["status"] == "succeeded"
        (attempt,) = item["attempts"]
        assert (attempt["number"], attempt["status_code"], attempt["succeeded"]) == (1, 200, True)
        assert attempt["response_excerpt"] == "ok" and attempt["duration_ms"] >= 0

        status, again = api("post", f"/{endpoint_id}/deliveries/{item['id']}/redeliver")
        assert status == 202 and again["redelivery_of"] == item["id"]
        assert again["event_id"] == item["event_id"] and again["status"] == "pending"
        deliver_until(settled)
        assert receiver.ids() == [item["event_id"]] * 2
        page = api("get", f"/{endpoint_id}/deliveries?status=succeeded&limit=1")[1]
        assert (page["count"], len(page["items"])) == (2, 1)
        assert page["items"][0]["id"] == again["id"]  # newest first


def test_the_settings_page_creates_an_endpoint_and_shows_its_secret_once(user):
    client = Client()
    client.force_login(user)
    page = client.post(
        "/settings/webhooks/",
        {"url": "https://hooks.example.com/x", "description": "ops", "event_types": EVENT_TYPES},
    )
    endpoint = Endpoint.objects.get()
    assert endpoint.secret in page.content.decode()
    assert page["Cache-Control"] == "no-store"
    assert endpoint.secret not in client.get("/settings/webhooks/").content.decode()
    detail = client.get(f"/settings/webhooks/{endpoint.id}/").content.decode()
    assert "hooks.example.com/x" in detail and endpoint.secret not in detail
    refused = client.post(
        "/settings/webhooks/", {"url": "https://10.0.0.1/", "event_types": EVENT_TYPES}
    )
    assert "not a public one" in refused.content.decode()
    assert Endpoint.objects.count() == 1
    rotated = client.post(f"/settings/webhooks/{endpoint.id}/", {"action": "rotate"})
    endpoint.refresh_from_db()
    assert endpoint.secret in rotated.content.decode()
    client.post(f"/settings/webhooks/{endpoint.id}/", {"action": "disable"})
    endpoint.refresh_from_db()
    assert not endpoint.enabled
    client.post(f"/settings/webhooks/{endpoint.id}/delete/")
    assert not Endpoint.objects.exists()


def test_the_settings_pages_are_the_owners_only(user, other_user):
    theirs = webhooks.endpoint_create(owner=other_user, url="https://bob.example.com/")
    client = Client()
    assert client.get("/settings/webhooks/").status_code == 302  # to the login page
    client.force_login(user)
    assert client.get(f"/settings/webhooks/{theirs.id}/").status_code == 404
    assert client.post(f"/settings/webhooks/{theirs.id}/delete/").status_code == 404
    assert client.post(f"/settings/webhooks/{theirs.id}/", {"action": "disable"}).status_code == 404
    assert Endpoint.objects.get().enabled


def test_the_chat_links_to_the_webhooks_page(user):
    client = Client()
    client.force_login(user)
    assert 'href="/settings/webhooks/"' in client.get("/").content.decode()


def test_staff_see_every_delivery_in_the_admin_and_can_disable_endpoints(hooks, user, other_user):
    from django.contrib.auth.models import Permission

    staff = other_user
    staff.is_staff = True
    staff.save()
    staff.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["view_delivery", "change_endpoint", "view_endpoint"]
        )
    )
    with Receiver() as receiver:
        endpoint = webhooks.endpoint_create(owner=user, url=receiver.url())
        services.conversation_create(owner=user)
        deliver_until(settled)
    client = Client()
    client.force_login(staff)
    listing = client.get("/admin/webhooks/delivery/").content.decode()
    assert "conversation.created" in listing
    delivery = Delivery.objects.get()
    page = client.get(f"/admin/webhooks/delivery/{delivery.id}/change/").content.decode()
    assert delivery.event.webhook_id in page and "200" in page
    assert endpoint.secret not in page
    form = client.get(f"/admin/webhooks/endpoint/{endpoint.id}/change/").content.decode()
    assert endpoint.secret not in form
    response = client.post(
        f"/admin/webhooks/endpoint/{endpoint.id}/change/",
        {
            "owner": user.pk,
            "url": endpoint.url,
            "description": "",
            "event_types": list(EVENT_TYPES),
            "disabled_reason": "Disabled by staff: it answers slowly.",
        },
    )
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_reason.startswith("Disabled by staff")
    assert client.post(f"/admin/webhooks/delivery/{delivery.id}/delete/").status_code == 403
