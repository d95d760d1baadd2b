"""Reads of webhooks: a user's endpoints, and an endpoint's deliveries with their log."""

from django.core.exceptions import ValidationError
from django.db.models import Prefetch, QuerySet

from .models import Attempt, Delivery, Endpoint


def endpoints_for(owner) -> QuerySet[Endpoint]:
    return Endpoint.objects.filter(owner=owner)


def endpoint_for(owner, endpoint_id) -> Endpoint | None:
    """One of ``owner``'s endpoints; None for anyone else's, as for one that does not exist."""
    try:
        return Endpoint.objects.filter(owner=owner, pk=endpoint_id).first()
    except (ValidationError, ValueError):  # a malformed id names nothing
        return None


def deliveries_of(endpoint: Endpoint, *, status: str | None = None) -> QuerySet[Delivery]:
    """The endpoint's deliveries, newest first, each with its event and attempts."""
    found = (
        Delivery.objects.filter(endpoint=endpoint)
        .select_related("event")
        .prefetch_related(Prefetch("attempt_log", queryset=Attempt.objects.order_by("number")))
        .order_by("-created_at")
    )
    return found.filter(status=status) if status else found


def delivery_of(endpoint: Endpoint, delivery_id) -> Delivery | None:
    try:
        return (
            Delivery.objects.select_related("endpoint", "event")
            .filter(endpoint=endpoint, pk=delivery_id)
            .first()
        )
    except (ValidationError, ValueError):  # a malformed id names nothing
        return None
