"""Write paths of webhooks: endpoints made, changed, deleted, their secrets rotated, and
deliveries asked for again. Every surface (the settings page, the API, the admin's
actions) calls these; each rule is written here once."""

from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from conversations.errors import ChatError
from conversations.text import check_text

from . import delivery as deliveries
from . import signing
from .addresses import check_url
from .models import EVENT_TYPES, Delivery, Endpoint

DESCRIPTION_CHARS = 200


def check_event_types(event_types: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(event_types))
    unknown = [t for t in chosen if t not in EVENT_TYPES]
    if unknown:
        raise ChatError(
            "unknown_event_type",
            f"Unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}.",
        )
    if not chosen:
        raise ChatError("no_event_types", "Choose at least one event type.")
    return [t for t in EVENT_TYPES if t in chosen]


def _check_description(description: str) -> str:
    description = " ".join(check_text(description, "description").split())
    if len(description) > DESCRIPTION_CHARS:
        raise ChatError(
            "description_too_long", f"A description has at most {DESCRIPTION_CHARS} characters."
        )
    return description


def endpoint_create(
    *,
    owner,
    url: str,
    description: str = "",
    event_types: Iterable[str] = EVENT_TYPES,
    enabled: bool = True,
) -> Endpoint:
    """A new endpoint of ``owner``'s; its ``secret`` is for the owner's eyes, now."""
    url = check_url(check_text(url, "url"))
    description = _check_description(description)
    event_types = check_event_types(event_types)
    with transaction.atomic():
        # The owner's row, locked: two creates at once cannot both pass the limit.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        limit = settings.CHAT_MAX_WEBHOOKS_PER_USER
        if Endpoint.objects.filter(owner=owner).count() >= limit:
            raise ChatError(
                "too_many_webhooks", f"You have {limit} webhook endpoints already; delete one."
            )
        return Endpoint.objects.create(
            owner=owner,
            url=url,
            description=description,
            event_types=event_types,
            enabled=enabled,
            secret=signing.new_secret(),
        )


def endpoint_update(
    *,
    endpoint: Endpoint,
    url: str | None = None,
    description: str | None = None,
    event_types: Iterable[str] | None = None,
    enabled: bool | None = None,
) -> Endpoint:
    """Change what is given. Enabling an endpoint clears why it was disabled and gives
    it a fresh start (its failing streak is forgotten)."""
    if url is not None:
        endpoint.url = check_url(check_text(url, "url"))
    if description is not None:
        endpoint.description = _check_description(description)
    if event_types is not None:
        endpoint.event_types = check_event_types(event_types)
    if enabled is not None:
        if enabled and not endpoint.enabled:
            endpoint.disabled_reason, endpoint.failing_since = "", None
        endpoint.enabled = enabled
    endpoint.save()
    return endpoint


def endpoint_delete(*, endpoint: Endpoint) -> None:
    """Delete an endpoint with its deliveries and their log; nothing more is sent to it."""
    endpoint.delete()


def secret_rotate(*, endpoint: Endpoint) -> str:
    """A new secret; the current one goes on signing beside it for ROTATION_OVERLAP."""
    with transaction.atomic():
        endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = timezone.now() + signing.ROTATION_OVERLAP
        endpoint.secret = signing.new_secret()
        endpoint.save()
    return endpoint.secret


def redeliver(*, delivery: Delivery) -> Delivery:
    """Send a delivery's event to its endpoint again, under the same ``webhook-id``.

    A delivery still retrying is made due now; one that ended (succeeded or failed)
    gets a new delivery with a fresh retry schedule and its own log.
    """
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        raise ChatError(
            "endpoint_disabled", "The endpoint is disabled; enable it first.", status=409
        )
    now = timezone.now()
    if delivery.status == Delivery.Status.PENDING:
        Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.PENDING).update(
            next_attempt_at=now
        )
        fresh = delivery
    else:
        fresh = Delivery.objects.create(
            event_id=delivery.event_id,
            endpoint=endpoint,
            next_attempt_at=now,
            redelivery_of=delivery,
        )
    transaction.on_commit(deliveries.wake)
    fresh.refresh_from_db()
    return fresh
