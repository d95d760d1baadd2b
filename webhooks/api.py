"""``/api/webhooks``: a user's endpoints, their secrets and their delivery log, as JSON.

Routes on the integration API's ``api`` object (same keys, same errors); a thin edge
over services.py and selectors.py. Imported by chatsite/urls.py before the API's URLs
are built.
"""

import json
from typing import Annotated

from channels.db import database_sync_to_async
from ninja import Query, Status

from conversations.api.schemas import REFUSALS
from conversations.api.views import MAX_OFFSET, api
from conversations.errors import ChatError

from . import selectors, services
from .models import Delivery, Endpoint
from .schemas import (
    DeliveryId,
    DeliveryOut,
    DeliveryPage,
    EndpointCreated,
    EndpointId,
    EndpointIn,
    EndpointOut,
    EndpointPatch,
    SecretOut,
)

WEBHOOKS = "webhooks"


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def endpoint_out(endpoint: Endpoint) -> dict:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": endpoint.event_types,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": _iso(endpoint.failing_since),
        "previous_secret_expires_at": _iso(endpoint.previous_secret_expires_at),
        "created_at": _iso(endpoint.created_at),
        "updated_at": _iso(endpoint.updated_at),
    }


def delivery_out(delivery: Delivery) -> dict:
    return {
        "id": delivery.id,
        "event_id": delivery.event.webhook_id,
        "event_type": delivery.event.type,
        "payload": json.loads(delivery.event.payload),
        "status": delivery.status,
        "attempts": [
            {
                "number": a.number,
                "started_at": _iso(a.started_at),
                "duration_ms": a.duration_ms,
                "status_code": a.status_code,
                "error": a.error,
                "response_excerpt": a.response_excerpt,
                "succeeded": a.succeeded,
            }
            for a in delivery.attempt_log.all()
        ],
        "next_attempt_at": _iso(delivery.next_attempt_at),
        "redelivery_of": delivery.redelivery_of_id,
        "created_at": _iso(delivery.created_at),
        "finished_at": _iso(delivery.finished_at),
    }


def _owned(user, endpoint_id) -> Endpoint:
    endpoint = selectors.endpoint_for(user, endpoint_id)
    if endpoint is None:
        raise ChatError("not_found", "No such webhook endpoint.", 404)
    return endpoint


# Each route's body runs on the ORM thread as one sync function.


@api.get("/webhooks", response=list[EndpointOut], summary="List webhook endpoints", tags=[WEBHOOKS])
async def list_endpoints(request):
    @database_sync_to_async
    def run():
        return [endpoint_out(e) for e in selectors.endpoints_for(request.auth)]

    return await run()


@api.post(
    "/webhooks",
    response={201: EndpointCreated, **REFUSALS},
    summary="Create a webhook endpoint",
    tags=[WEBHOOKS],
)
async def create_endpoint(request, body: EndpointIn):
    """The answer holds the signing `secret`, shown this once (rotate to get a new one)."""

    @database_sync_to_async
    def run():
        endpoint = services.endpoint_create(
            owner=request.auth,
            url=body.url,
            description=body.description,
            event_types=body.events,
            enabled=body.enabled,
        )
        return {**endpoint_out(endpoint), "secret": endpoint.secret}

    return Status(201, await run())


@api.get(
    "/webhooks/{endpoint_id}",
    response={200: EndpointOut, **REFUSALS},
    summary="Read a webhook endpoint",
    tags=[WEBHOOKS],
)
async def read_endpoint(request, endpoint_id: EndpointId):
    @database_sync_to_async
    def run():
        return endpoint_out(_owned(request.auth, endpoint_id))

    return await run()


@api.patch(
    "/webhooks/{endpoint_id}",
    response={200: EndpointOut, **REFUSALS},
    summary="Change a webhook endpoint (URL, description, events, enabled)",
    tags=[WEBHOOKS],
)
async def update_endpoint(request, endpoint_id: EndpointId, body: EndpointPatch):
    @database_sync_to_async
    def run():
        endpoint = services.endpoint_update(
            endpoint=_owned(request.auth, endpoint_id),
            url=body.url,
            description=body.description,
            event_types=body.events,
            enabled=body.enabled,
        )
        return endpoint_out(endpoint)

    return await run()


@api.delete(
    "/webhooks/{endpoint_id}",
    response={204: None, **REFUSALS},
    summary="Delete a webhook endpoint",
    tags=[WEBHOOKS],
)
async def delete_endpoint(request, endpoint_id: EndpointId):
    @database_sync_to_async
    def run():
        services.endpoint_delete(endpoint=_owned(request.auth, endpoint_id))

    await run()
    return Status(204, None)


@api.post(
    "/webhooks/{endpoint_id}/rotate-secret",
    response={200: SecretOut, **REFUSALS},
    summary="Rotate the signing secret",
    tags=[WEBHOOKS],
)
async def rotate_secret(request, endpoint_id: EndpointId):
    """A new secret, shown this once. For 24 hours the previous one signs too: each
    delivery carries both signatures, so receivers can switch at their pace."""

    @database_sync_to_async
    def run():
        endpoint = _owned(request.auth, endpoint_id)
        secret = services.secret_rotate(endpoint=endpoint)
        endpoint.refresh_from_db()
        expires = _iso(endpoint.previous_secret_expires_at)
        return {"secret": secret, "previous_secret_expires_at": expires}

    return await run()


@api.get(
    "/webhooks/{endpoint_id}/deliveries",
    response={200: DeliveryPage, **REFUSALS},
    summary="List an endpoint's deliveries and their attempts",
    tags=[WEBHOOKS],
)
async def list_deliveries(
    request,
    endpoint_id: EndpointId,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    status: Annotated[str | None, Query(pattern="^(pending|succeeded|failed)$")] = None,
):
    """Newest first; each with its payload and every attempt (time, status code or
    error, duration, the answer's first 4 KiB)."""

    @database_sync_to_async
    def run():
        found = selectors.deliveries_of(_owned(request.auth, endpoint_id), status=status)
        return {
            "items": [delivery_out(d) for d in found[offset : offset + limit]],
            "count": found.count(),
            "limit": limit,
            "offset": offset,
        }

    return await run()


@api.post(
    "/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    response={202: DeliveryOut, **REFUSALS},
    summary="Deliver an event again",
    tags=[WEBHOOKS],
)
async def redeliver(request, endpoint_id: EndpointId, delivery_id: DeliveryId):
    """Same event, same `webhook-id`. A delivery still retrying is attempted now; one
    that ended gets a new delivery (with its own attempts), which is the answer."""

    @database_sync_to_async
    def run():
        delivery = selectors.delivery_of(_owned(request.auth, endpoint_id), delivery_id)
        if delivery is None:
            raise ChatError("not_found", "No such delivery.", 404)
        fresh = services.redeliver(delivery=delivery)
        return delivery_out(selectors.deliveries_of(delivery.endpoint).get(pk=fresh.pk))

    return Status(202, await run())
