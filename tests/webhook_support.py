"""Helpers for the webhook tests: driving the delivery loop's passes from a test."""

import time

from asgiref.sync import async_to_sync

from webhooks import delivery
from webhooks.models import Delivery


def deliver_until(done, timeout: float = 20) -> None:
    """Run passes of the delivery loop until ``done()`` (tests on committed data)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("deliveries did not finish: " + str(list(Delivery.objects.all())))
        if not async_to_sync(delivery.deliver_due)():
            time.sleep(0.02)


def settled() -> bool:
    return not Delivery.objects.filter(status=Delivery.Status.PENDING).exists()
