"""The webhook API's schemas, for validation and the OpenAPI document."""

import uuid
from typing import Annotated, Any, Literal

from ninja import Field, Path, Schema

from .models import EVENT_TYPES

IsoTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
EndpointId = Annotated[str, Path(description="The endpoint's id (a UUID).")]
DeliveryId = Annotated[str, Path(description="The delivery's id (a UUID).")]


class EndpointIn(Schema):
    url: str = Field(description="https:// URL that receives the POSTs")
    description: str = ""
    events: list[EventType] = Field(
        default_factory=lambda: list(EVENT_TYPES), description="the event types it receives"
    )
    enabled: bool = True


class EndpointPatch(Schema):
    url: str | None = None
    description: str | None = None
    events: list[EventType] | None = None
    enabled: bool | None = None


class EndpointOut(Schema):
    id: uuid.UUID
    url: str
    description: str
    events: list[str]
    enabled: bool
    disabled_reason: str = Field(description="why chatsite disabled it; empty otherwise")
    failing_since: IsoTime | None = Field(description="first failed attempt since a success")
    previous_secret_expires_at: IsoTime | None = Field(
        description="after a rotation, until when the previous secret signs too"
    )
    created_at: IsoTime
    updated_at: IsoTime


class EndpointCreated(EndpointOut):
    secret: str = Field(description="whsec_…: shown now only (and on rotation)")


class SecretOut(Schema):
    secret: str
    previous_secret_expires_at: IsoTime


class AttemptOut(Schema):
    number: int
    started_at: IsoTime
    duration_ms: int | None
    status_code: int | None
    error: str
    response_excerpt: str = Field(description="the answer's first 4 KiB")
    succeeded: bool


class DeliveryOut(Schema):
    id: uuid.UUID
    event_id: str = Field(description="the webhook-id header: the same on every attempt")
    event_type: str
    payload: dict[str, Any]
    status: str = Field(description="pending, succeeded or failed")
    attempts: list[AttemptOut]
    next_attempt_at: IsoTime | None
    redelivery_of: uuid.UUID | None
    created_at: IsoTime
    finished_at: IsoTime | None


class DeliveryPage(Schema):
    items: list[DeliveryOut]
    count: int
    limit: int
    offset: int
