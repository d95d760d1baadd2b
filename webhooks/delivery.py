"""The delivery loop: claim due deliveries, attempt them, log, reschedule.

Every chatsite worker runs one (``outbox.start_delivery``), and ``manage.py
deliver_webhooks`` runs one on its own. Several may run against one database: a
delivery is *claimed* — its ``claim`` token set and ``claimed_until`` a lease ahead —
in one transaction that skips rows another claimer holds (``SELECT … FOR UPDATE SKIP
LOCKED`` on PostgreSQL; on SQLite every write transaction takes the database's one
write lock, so claimers take turns). A claim whose lease passed without a result (the
worker died mid-attempt) is logged as a lost attempt and the delivery is due again.

Failed attempts are retried after ``CHAT_WEBHOOK_RETRY_SCHEDULE`` (with jitter), then
the delivery fails; an endpoint whose attempts all failed for
``CHAT_WEBHOOK_DISABLE_AFTER_S`` is disabled with the reason shown to its owner.
"""

import asyncio
import logging
import random
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import client, signing
from .models import Attempt, Delivery, Endpoint

log = logging.getLogger(__name__)

JITTER = 0.1
LOST_ATTEMPT = "no result: the worker making this attempt stopped before it ended"


def claim_lease() -> timedelta:
    """How long a claim holds: the attempt's own limit, twice, and time to log it."""
    return timedelta(seconds=2 * settings.CHAT_WEBHOOK_TIMEOUT_S + 5)


def retry_delay(attempts: int) -> float | None:
    """Seconds until the retry after ``attempts`` failed ones; None: no retry left."""
    schedule = settings.CHAT_WEBHOOK_RETRY_SCHEDULE
    if attempts > len(schedule):
        return None
    return schedule[attempts - 1] * (1 + random.uniform(-JITTER, JITTER))


@dataclass(frozen=True)
class Claimed:
    """What one attempt needs, read when it was claimed."""

    delivery_id: uuid.UUID
    claim: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    secrets: tuple[str, ...]
    webhook_id: str
    payload: str


def _due(now: datetime):
    return Delivery.objects.filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
        status=Delivery.Status.PENDING,
        next_attempt_at__lte=now,
        endpoint__enabled=True,
    )


def claim_due(*, limit: int) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries for this process."""
    now = timezone.now()
    if limit <= 0 or not _due(now).exists():
        return []  # a read: an idle poll takes no write lock
    token = uuid.uuid4()
    claimed = []
    with transaction.atomic():
        rows = list(
            _due(now)
            .select_related("endpoint", "event")
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("next_attempt_at")[:limit]
        )
        for delivery in rows:
            if delivery.claimed_until is not None and not _log_lost_attempt(delivery, now):
                continue
            delivery.claim, delivery.claimed_until = token, now + claim_lease()
            delivery.save(update_fields=["claim", "claimed_until"])
            endpoint = delivery.endpoint
            claimed.append(
                Claimed(
                    delivery_id=delivery.id,
                    claim=token,
                    endpoint_id=endpoint.id,
                    url=endpoint.url,
                    secrets=tuple(signing.signing_secrets(endpoint, now=now)),
                    webhook_id=delivery.event.webhook_id,
                    payload=delivery.event.payload,
                )
            )
    return claimed


def _log_lost_attempt(delivery: Delivery, now: datetime) -> bool:
    """Log the attempt of a claim that expired; False when no retry is left."""
    delivery.attempts += 1
    Attempt.objects.create(
        delivery=delivery,
        number=delivery.attempts,
        started_at=delivery.claimed_until - claim_lease(),
        error=LOST_ATTEMPT,
    )
    if delivery.attempts > len(settings.CHAT_WEBHOOK_RETRY_SCHEDULE):
        delivery.status, delivery.finished_at, delivery.next_attempt_at = (
            Delivery.Status.FAILED,
            now,
            None,
        )
        delivery.claim = delivery.claimed_until = None
        delivery.save()
        return False
    delivery.save(update_fields=["attempts"])
    return True


async def attempt(claimed: Claimed) -> client.Answer:
    """Make one attempt of a claimed delivery and log it."""
    started_at = timezone.now()
    started = time.monotonic()
    headers = signing.headers(
        webhook_id=claimed.webhook_id,
        payload=claimed.payload,
        secrets_=claimed.secrets,
        timestamp=time.time(),
    )
    answer = await client.post(claimed.url, headers=headers, body=claimed.payload.encode())
    duration_ms = round((time.monotonic() - started) * 1000)
    await database_sync_to_async(record)(
        claimed, answer, started_at=started_at, duration_ms=duration_ms
    )
    return answer


def record(claimed: Claimed, answer: client.Answer, *, started_at, duration_ms: int) -> None:
    """Log an attempt and decide what comes next: done, a retry, or failed."""
    now = timezone.now()
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=claimed.delivery_id)
        delivery.attempts += 1
        Attempt.objects.create(
            delivery=delivery,
            number=delivery.attempts,
            started_at=started_at,
            duration_ms=duration_ms,
            status_code=answer.status_code,
            error=answer.error[:300],
            response_excerpt=answer.excerpt,
            succeeded=answer.succeeded,
        )
        if delivery.claim != claimed.claim:
            # Our lease ran out and another worker holds the delivery now: the attempt
            # is logged, the schedule is theirs.
            log.warning("webhook delivery %s: attempt ended after its claim", delivery.id)
            delivery.save(update_fields=["attempts"])
            return
        delivery.claim = delivery.claimed_until = None
        delay = None if answer.succeeded else retry_delay(delivery.attempts)
        if answer.succeeded or delay is None:
            delivery.status = (
                Delivery.Status.SUCCEEDED if answer.succeeded else Delivery.Status.FAILED
            )
            delivery.finished_at, delivery.next_attempt_at = now, None
        else:
            delivery.next_attempt_at = now + timedelta(seconds=delay)
        delivery.save()
        _judge_endpoint(claimed.endpoint_id, answer, started_at=started_at, now=now)


def _judge_endpoint(endpoint_id, answer: client.Answer, *, started_at, now) -> None:
    endpoints = Endpoint.objects.filter(pk=endpoint_id)
    if answer.succeeded:
        endpoints.filter(failing_since__isnull=False).update(failing_since=None)
        return
    endpoints.filter(failing_since__isnull=True).update(failing_since=started_at)
    limit = timedelta(seconds=settings.CHAT_WEBHOOK_DISABLE_AFTER_S)
    failing = endpoints.filter(enabled=True, failing_since__lte=now - limit)
    outcome = f"HTTP {answer.status_code}" if answer.status_code else answer.error
    reason = (
        f"Disabled by chatsite on {now:%Y-%m-%d %H:%M} UTC: every delivery attempt failed "
        f"for {_span(limit)} (last: {outcome})."
    )
    if failing.update(enabled=False, disabled_reason=reason[:1000], updated_at=now):
        log.warning("webhook endpoint %s disabled: failing for %s", endpoint_id, _span(limit))


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 86400:
        return f"{seconds / 86400:g} days"
    if seconds >= 3600:
        return f"{seconds / 3600:g} hours"
    return f"{seconds:g} seconds"


aclaim_due = database_sync_to_async(claim_due)


async def deliver_due(*, limit: int = 100) -> int:
    """One pass: claim what is due now and attempt it all; returns how many."""
    claimed = await aclaim_due(limit=limit)
    await asyncio.gather(*(attempt(c) for c in claimed))
    return len(claimed)


# --- the loop ------------------------------------------------------------------------------


class Deliverer:
    """The loop of one process: keeps up to CHAT_WEBHOOK_CONCURRENCY attempts in flight,
    claiming as slots free up; looks for due work every CHAT_WEBHOOK_POLL_S, and at once
    when this process records an event (``wake``)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.woken = asyncio.Event()
        self.in_flight: set[asyncio.Task] = set()
        self.attempts = 0  # made by this loop, for `deliver_webhooks`' report

    def wake(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.woken.set)

    async def run(self) -> None:
        while True:
            self.woken.clear()
            free = settings.CHAT_WEBHOOK_CONCURRENCY - len(self.in_flight)
            try:
                claimed = await aclaim_due(limit=free)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("claiming webhook deliveries failed; retrying", exc_info=True)
                claimed = []
            for one in claimed:
                task = asyncio.create_task(self._attempt(one), name=f"webhook-{one.delivery_id}")
                self.in_flight.add(task)
                task.add_done_callback(self._done)
            if free > 0 and len(claimed) == free:
                continue  # maybe more is due
            try:
                async with asyncio.timeout(settings.CHAT_WEBHOOK_POLL_S):
                    await self.woken.wait()
            except TimeoutError:
                pass

    async def _attempt(self, claimed: Claimed) -> None:
        try:
            await attempt(claimed)
            self.attempts += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            # Not logged as an attempt: its claim expires and it is tried again.
            log.warning("webhook delivery %s: attempt crashed", claimed.delivery_id, exc_info=True)

    def _done(self, task: asyncio.Task) -> None:
        self.in_flight.discard(task)
        self.woken.set()


# The loop of each event loop (one per process; tests run a loop per test).
_deliverers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_tasks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def start() -> Deliverer:
    loop = asyncio.get_running_loop()
    if loop not in _deliverers:
        deliverer = _deliverers[loop] = Deliverer()
        _tasks[loop] = loop.create_task(deliverer.run(), name="deliver-webhooks")
    return _deliverers[loop]


def wake() -> None:
    """Called after a commit that recorded an event (from any thread)."""
    for deliverer in list(_deliverers.values()):
        deliverer.wake()
