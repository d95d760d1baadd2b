"""Webhook deliveries to a real receiver on loopback that verifies every signature with
the ``standardwebhooks`` package: what arrives, retries, timeouts, redirects, refused
addresses, secret rotation, redelivery, the log, and endpoints that keep failing.

The delivery loop's passes run in the test's thread (``deliver_until``); the events come
from the services that make the changes."""

import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.utils import timezone

from conversations.models import Message
from conversations.services import conversations as services
from conversations.services import sweeper
from webhooks import addresses, delivery
from webhooks import services as webhooks
from webhooks.models import Attempt, Delivery, Endpoint, Event

from .helpers.webhook_receiver import Answer, Receiver
from .test_deploy import self_signed_certificate
from .webhook_support import deliver_until, settled

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def receiver():
    with Receiver() as receiver:
        yield receiver


def endpoint_to(receiver: Receiver, owner, path: str = "/hook", **fields) -> Endpoint:
    endpoint = webhooks.endpoint_create(owner=owner, url=receiver.url(path), **fields)
    receiver.secrets.append(endpoint.secret)
    return endpoint


def test_conversation_events_and_interrupted_replies_arrive_signed(hooks, receiver, user):
    endpoint = endpoint_to(receiver, user)
    conversation = services.conversation_create(owner=user, title="Plans")
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        content="half a repl",
        seq=3,
    )
    Message.objects.filter(pk=reply.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    async_to_sync(sweeper.sweep_replies)()
    conversation_id = str(conversation.id)
    async_to_sync(services.conversation_delete)(conversation=conversation)
    deliver_until(settled)

    # Deliveries are not ordered (they go out side by side, and retries come later).
    order = ["conversation.created", "message.interrupted", "conversation.deleted"]
    received = sorted(receiver.received, key=lambda r: order.index(r.event["type"]))
    assert [r.event["type"] for r in received] == order
    assert all(r.verified_by == [endpoint.secret] for r in received)
    assert len({r.webhook_id for r in received}) == 3
    assert all(r.webhook_id.startswith("evt_") for r in received)
    created, interrupted, deleted = (r.event for r in received)
    assert created["data"]["conversation"]["id"] == conversation_id
    assert created["data"]["conversation"]["title"] == "Plans"
    assert set(created) == {"type", "timestamp", "data"}
    message = interrupted["data"]["message"]
    assert message["id"] == str(reply.id)
    assert (message["status"], message["content"]) == ("interrupted", "half a repl")
    assert message["seq"] == 3
    assert message["error"]["code"] == "interrupted"
    assert interrupted["data"]["conversation"]["id"] == conversation_id
    assert deleted["data"] == {"conversation": created["data"]["conversation"]}
    headers = received[0].headers
    assert headers["content-type"] == "application/json"
    assert headers["webhook-signature"].startswith("v1,")
    assert abs(int(headers["webhook-timestamp"]) - timezone.now().timestamp()) < 30


def test_only_the_owners_endpoints_and_the_chosen_events_are_called(
    hooks, receiver, user, other_user
):
    endpoint_to(receiver, other_user, "/bob")
    endpoint_to(receiver, user, "/deleted-only", event_types=["conversation.deleted"])
    disabled = endpoint_to(receiver, user, "/disabled")
    webhooks.endpoint_update(endpoint=disabled, enabled=False)
    services.conversation_create(owner=user)
    assert Event.objects.count() == 0  # nobody wants it: nothing recorded
    deliver_until(settled)
    assert receiver.received == []


def test_a_change_rolled_back_sends_nothing(hooks, receiver, user):
    from django.db import transaction

    endpoint_to(receiver, user)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.conversation_create(owner=user)
        raise RuntimeError("the change fails after the event was recorded")
    assert Event.objects.count() == Delivery.objects.count() == 0


def test_a_receiver_failing_twice_gets_three_attempts_of_one_event(hooks, user):
    with Receiver(lambda r, nth: Answer(500, b"not now") if nth <= 2 else Answer(204, b"")) as rx:
        endpoint_to(rx, user)
        services.conversation_create(owner=user)
        deliver_until(settled)
    assert len(rx.received) == 3
    assert len(set(rx.ids())) == 1
    assert len({r.body for r in rx.received}) == 1  # the same bytes every time
    assert len({r.headers["webhook-signature"] for r in rx.received}) >= 1
    assert all(r.verified_by for r in rx.received)
    delivery_ = Delivery.objects.get()
    assert (delivery_.status, delivery_.attempts) == ("succeeded", 3)
    log = list(delivery_.attempt_log.values_list("number", "status_code", "succeeded"))
    assert log == [(1, 500, False), (2, 500, False), (3, 204, True)]
    assert delivery_.attempt_log.first().response_excerpt == "not now"
    assert Endpoint.objects.get().failing_since is None  # the success ended the streak


def test_retries_follow_the_schedule_and_then_the_delivery_fails(hooks, user, settings):
    settings.CHAT_WEBHOOK_RETRY_SCHEDULE = [0.3, 0.6]
    with Receiver(lambda r, nth: Answer(503)) as rx:
        endpoint_to(rx, user)
        services.conversation_create(owner=user)
        deliver_until(settled)
    gaps = [b.at - a.at for a, b in zip(rx.received, rx.received[1:], strict=False)]
    assert len(rx.received) == 3
    assert 0.27 <= gaps[0] < 0.6 and 0.54 <= gaps[1] < 1.0, gaps  # 10 % jitter at most
    delivery_ = Delivery.objects.get()
    assert (delivery_.status, delivery_.attempts, delivery_.next_attempt_at) == ("failed", 3, None)


def test_a_receiver_that_hangs_times_out_and_is_retried(hooks, user, settings):
    settings.CHAT_WEBHOOK_TIMEOUT_S = 0.5
    with Receiver(lambda r, nth: Answer(hang_s=5) if nth == 1 else Answer()) as rx:
        endpoint_to(rx, user)
        services.conversation_create(owner=user)
        deliver_until(settled)
    assert len(rx.received) == 2 and len(set(rx.ids())) == 1
    first, second = Delivery.objects.get().attempt_log.all()
    assert first.status_code is None and first.error.startswith("timeout")
    assert 450 <= first.duration_ms < 1500
    assert second.succeeded


def test_a_redirect_is_not_followed(hooks, user):
    with Receiver() as target:
        moved = lambda r, nth: Answer(302, headers={"location": target.url("/elsewhere")})  # noqa: E731
        with Receiver(moved) as rx:
            endpoint_to(rx, user)
            services.conversation_create(owner=user)
            deliver_until(settled)
    assert target.received == []
    assert len(rx.received) == 4  # the first attempt and three retries
    assert set(Attempt.objects.values_list("status_code", flat=True)) == {302}
    assert Delivery.objects.get().status == "failed"


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "::ffff:10.0.0.1"]
)
def test_a_name_resolving_to_an_internal_address_is_never_called(
    hooks, receiver, user, monkeypatch, address
):
    """DNS records for such names cannot be made here: the resolver is replaced."""
    endpoint = endpoint_to(receiver, user)
    Endpoint.objects.filter(pk=endpoint.pk).update(url=f"http://hooks.example.com:{receiver.port}/")
    hooks.CHAT_WEBHOOK_ALLOW_PRIVATE = False

    async def resolve(host, port):
        assert host == "hooks.example.com"
        return ["93.184.215.14", address] if address != "::1" else [address]

    monkeypatch.setattr(addresses, "resolve", resolve)
    services.conversation_create(owner=user)
    deliver_until(lambda: Attempt.objects.exists())
    attempt = Attempt.objects.get()
    assert attempt.error.startswith(f"refused: hooks.example.com resolves to {address}")
    assert attempt.status_code is None
    assert receiver.received == []


def test_localhost_is_refused_after_real_dns_on_every_attempt(hooks, receiver, user):
    endpoint = endpoint_to(receiver, user)
    Endpoint.objects.filter(pk=endpoint.pk).update(url=f"http://localhost:{receiver.port}/hook")
    services.conversation_create(owner=user)
    deliver_until(settled)
    assert len(receiver.received) == 1  # allowed while CHAT_WEBHOOK_ALLOW_PRIVATE is on
    hooks.CHAT_WEBHOOK_ALLOW_PRIVATE = False
    services.conversation_create(owner=user)
    deliver_until(lambda: Attempt.objects.count() == 2)
    assert "resolves to" in Attempt.objects.order_by("pk").last().error
    assert "loopback" in Attempt.objects.order_by("pk").last().error
    assert len(receiver.received) == 1


def test_https_is_required_at_delivery_too(hooks, receiver, user):
    endpoint_to(receiver, user)
    hooks.CHAT_WEBHOOK_ALLOW_HTTP = False
    services.conversation_create(owner=user)
    deliver_until(lambda: Attempt.objects.exists())
    assert Attempt.objects.get().error.startswith("refused: http:// is not allowed")
    assert receiver.received == []


def test_after_a_rotation_both_secrets_sign_for_a_day(hooks, user):
    with Receiver() as old_side, Receiver() as new_side:
        endpoint = endpoint_to(old_side, user)
        new_secret = webhooks.secret_rotate(endpoint=endpoint)
        assert new_secret.startswith("whsec_") and new_secret != endpoint.secret
        new_side.secrets.append(new_secret)
        Endpoint.objects.filter(pk=endpoint.pk).update(url=old_side.url())
        services.conversation_create(owner=user)
        deliver_until(settled)
        # The same request verifies with either secret: receivers switch when they like.
        (request,) = old_side.received
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        assert new_side.verify(request.body, request.headers) == [new_secret]
        assert request.verified_by == [endpoint.secret]

        endpoint.refresh_from_db()
        assert timedelta(hours=23) < endpoint.previous_secret_expires_at - timezone.now()
        Endpoint.objects.filter(pk=endpoint.pk).update(
            previous_secret_expires_at=timezone.now() - timedelta(seconds=1)
        )
        services.conversation_create(owner=user)
        deliver_until(settled)
        later = old_side.received[1]
        assert later.verified_by == []  # the old secret no longer signs
        assert new_side.verify(later.body, later.headers) == [new_secret]


def test_redelivery_sends_the_same_event_again_and_a_retry_now(hooks, receiver, user, settings):
    endpoint_to(receiver, user)
    services.conversation_create(owner=user)
    deliver_until(settled)
    first = Delivery.objects.get()
    again = webhooks.redeliver(delivery=first)
    assert again.pk != first.pk and again.redelivery_of_id == first.pk
    deliver_until(settled)
    assert len(receiver.received) == 2
    assert receiver.received[0].webhook_id == receiver.received[1].webhook_id
    assert receiver.received[0].body == receiver.received[1].body
    assert [d.attempts for d in Delivery.objects.order_by("created_at")] == [1, 1]

    # A delivery waiting for its next retry is attempted now instead.
    settings.CHAT_WEBHOOK_RETRY_SCHEDULE = [3600.0]
    receiver.respond = lambda r, nth: Answer(500) if nth == 1 else Answer()
    services.conversation_create(owner=user)
    async_to_sync(delivery.deliver_due)()
    waiting = Delivery.objects.get(status="pending")
    assert waiting.next_attempt_at > timezone.now() + timedelta(minutes=50)
    assert webhooks.redeliver(delivery=waiting).pk == waiting.pk
    deliver_until(settled)
    waiting.refresh_from_db()
    assert (waiting.status, waiting.attempts) == ("succeeded", 2)


def test_a_worker_that_died_mid_attempt_is_logged_and_the_delivery_goes_out(hooks, receiver, user):
    endpoint_to(receiver, user)
    services.conversation_create(owner=user)
    (claimed,) = delivery.claim_due(limit=10)  # ... and the worker is killed here
    assert delivery.claim_due(limit=10) == []  # held by its claim
    Delivery.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    deliver_until(settled)
    lost, sent = Delivery.objects.get().attempt_log.all()
    assert lost.error == delivery.LOST_ATTEMPT and not lost.succeeded
    assert sent.succeeded and sent.number == 2
    assert receiver.ids() == [claimed.webhook_id]


def test_answers_are_read_up_to_4_kib(hooks, user):
    big = ("é" * 5000).encode() + b"\x00"
    with Receiver(lambda r, nth: Answer(200, big)) as rx:
        endpoint_to(rx, user)
        services.conversation_create(owner=user)
        deliver_until(settled)
    excerpt = Attempt.objects.get().response_excerpt
    assert len(excerpt.encode()) <= 4096 + 3 and excerpt.startswith("é" * 2000)


def test_an_endpoint_failing_for_too_long_is_disabled_and_its_owner_sees_why(hooks, user, settings):
    settings.CHAT_WEBHOOK_DISABLE_AFTER_S = 0.5
    settings.CHAT_WEBHOOK_RETRY_SCHEDULE = [0.3, 0.3, 0.3]
    with Receiver(lambda r, nth: Answer(500)) as rx:
        endpoint = endpoint_to(rx, user)
        services.conversation_create(owner=user)
        deliver_until(lambda: not Endpoint.objects.get().enabled)
        endpoint.refresh_from_db()
        assert "every delivery attempt failed for 0.5 seconds (last: HTTP 500)" in (
            endpoint.disabled_reason
        )
        # Nothing more goes to it, and nothing more is recorded for it.
        sent = len(rx.received)
        services.conversation_create(owner=user)
        assert Event.objects.count() == 1
        async_to_sync(delivery.deliver_due)()
        assert len(rx.received) == sent
    client = Client()
    client.force_login(user)
    page = client.get("/settings/webhooks/").content.decode()
    assert "every delivery attempt failed for 0.5 seconds" in page
    assert client.get(f"/settings/webhooks/{endpoint.id}/").content.decode().count("disabled")
    # Enabling it again gives it a fresh start; its waiting delivery goes out.
    webhooks.endpoint_update(endpoint=endpoint, enabled=True)
    endpoint.refresh_from_db()
    assert (endpoint.disabled_reason, endpoint.failing_since) == ("", None)


def test_the_payload_is_compact_json_with_the_protocols_objects(hooks, receiver, user):
    endpoint_to(receiver, user)
    conversation = services.conversation_create(owner=user, title="naïve ☕")
    deliver_until(settled)
    body = receiver.received[0].body
    assert "naïve ☕".encode() in body  # UTF-8 as is, not escaped
    from conversations import events

    assert json.loads(body)["data"]["conversation"] == events.conversation_out(conversation)


def test_https_goes_to_the_checked_address_with_the_names_sni_host_and_certificate(
    hooks, user, monkeypatch, tmp_path
):
    """The attempt connects to the address it checked, yet TLS and HTTP speak the URL's
    name. The receiver's certificate is its own: only the trust store is replaced."""
    import ssl

    from webhooks import client

    self_signed_certificate(tmp_path / "certs", "localhost")
    cert, key = str(tmp_path / "certs/fullchain.pem"), str(tmp_path / "certs/privkey.pem")
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=cert)
    monkeypatch.setattr(client, "ssl_context", lambda: trusting)
    hooks.CHAT_WEBHOOK_ALLOW_HTTP = False
    with Receiver(tls=server_side) as rx:
        endpoint = webhooks.endpoint_create(owner=user, url=f"https://localhost:{rx.port}/tls")
        rx.secrets.append(endpoint.secret)
        services.conversation_create(owner=user)
        deliver_until(settled)
        assert Delivery.objects.get().status == "succeeded"
        (request,) = rx.received
        assert request.verified_by == [endpoint.secret]
        assert request.headers["host"] == f"localhost:{rx.port}"
        assert rx.server_names == ["localhost"]

        # A certificate for another name is refused, as it should be.
        Endpoint.objects.filter(pk=endpoint.pk).update(url=f"https://127.0.0.1:{rx.port}/tls")
        services.conversation_create(owner=user)
        deliver_until(settled)
        assert len(rx.received) == 1
        assert "CERTIFICATE_VERIFY_FAILED" in Attempt.objects.order_by("pk").last().error
