"""Endpoints, the events they hear of, and the log of every delivery and attempt.

An ``Event`` is written once, in the transaction of the change it reports (the outbox);
each endpoint that wants it gets a ``Delivery``, which the delivery loop claims, attempts
and reschedules; every try is an ``Attempt``.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

MESSAGE_COMPLETED = "message.completed"
MESSAGE_FAILED = "message.failed"
MESSAGE_CANCELLED = "message.cancelled"
MESSAGE_INTERRUPTED = "message.interrupted"
CONVERSATION_CREATED = "conversation.created"
CONVERSATION_DELETED = "conversation.deleted"
EVENT_TYPES = (
    MESSAGE_COMPLETED,
    MESSAGE_FAILED,
    MESSAGE_CANCELLED,
    MESSAGE_INTERRUPTED,
    CONVERSATION_CREATED,
    CONVERSATION_DELETED,
)


def all_event_types() -> list[str]:
    return list(EVENT_TYPES)


class Endpoint(models.Model):
    """A URL of one user's that hears of the events it chose.

    ``secret`` (``whsec_`` + base64) signs every delivery; after a rotation the
    ``previous_secret`` signs too, until ``previous_secret_expires_at``. Both are kept in
    clear because signing needs them; they are shown to the owner only when made.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.CharField("URL", max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=all_event_types)
    enabled = models.BooleanField(default=True)
    secret = models.CharField(max_length=100, editable=False)
    previous_secret = models.CharField(max_length=100, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The first failed attempt since the last success: too long ago disables the endpoint.
    failing_since = models.DateTimeField(null=True, blank=True)
    # Why chatsite disabled it (empty when its owner did, or when it is enabled).
    disabled_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        verbose_name = "webhook endpoint"
        indexes = [models.Index(fields=["owner", "enabled"], name="webhook_owner_enabled")]

    def __str__(self) -> str:
        return self.url


class Event(models.Model):
    """Something that happened, as the JSON every endpoint receives, byte for byte and
    under the same ``webhook-id`` on every attempt and redelivery."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    type = models.CharField(max_length=40)
    payload = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "webhook event"

    def __str__(self) -> str:
        return f"{self.type} {self.webhook_id}"

    @property
    def webhook_id(self) -> str:
        return f"evt_{self.id.hex}"


class Delivery(models.Model):
    """One event on its way to one endpoint: pending (due at ``next_attempt_at``),
    succeeded, or failed once the retry schedule ran out."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # A worker attempting it holds it until then; past it, the attempt counts as lost
    # (the worker died) and the delivery is due again.
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim = models.UUIDField(null=True, blank=True)
    # The owner asked for this one again (the earlier delivery had ended).
    redelivery_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        indexes = [
            # The delivery loop: pending deliveries by when they are due.
            models.Index(
                fields=["next_attempt_at"], condition=Q(status="pending"), name="webhook_due"
            ),
            models.Index(fields=["endpoint", "-created_at"], name="webhook_endpoint_log"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} → {self.endpoint_id} ({self.status})"


class Attempt(models.Model):
    """One HTTP request of a delivery and what came of it."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    # The first bytes of the answer's body (WEBHOOK_EXCERPT_BYTES), as text.
    response_excerpt = models.TextField(blank=True)
    succeeded = models.BooleanField(default=False)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_once")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"
