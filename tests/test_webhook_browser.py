"""The Webhooks page in a real browser (Playwright, Debian's Chromium) against a real
worker that delivers to a receiver on loopback: the deliveries and their attempts as
the log holds them, and redelivery."""

import pytest
from playwright.sync_api import expect

from conversations.services import conversations as services
from webhooks import services as webhooks
from webhooks.models import Delivery

from . import test_browser
from .helpers.servers import start_daphne
from .helpers.webhook_receiver import Answer, Receiver
from .test_browser import logged_in
from .test_webhook_workers import HOOKS_ENV

pytestmark = test_browser.pytestmark
context = test_browser.context  # a fresh browser per test, on this module's server


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    server = start_daphne(env=HOOKS_ENV, name="webhooks-browser-daphne")
    yield server
    server.stop()


def test_the_page_lists_deliveries_with_their_attempts_and_redelivers(context, user, hooks):
    with Receiver(lambda received, nth: Answer(500, b"busy") if nth == 1 else Answer()) as rx:
        endpoint = webhooks.endpoint_create(owner=user, url=rx.url(), description="nightly job")
        rx.secrets.append(endpoint.secret)
        logged_in(context, user)
        page = context.new_page()
        page.goto("/")
        page.locator("[data-action=account-menu]").click()  # the account menu, bottom left
        page.get_by_role("link", name="Webhooks").click()
        expect(page.locator(f"[data-endpoint-id='{endpoint.id}']")).to_contain_text("nightly job")

        services.conversation_create(owner=user, title="Watched")
        rx.wait_for(lambda got: len(got) == 2)  # 500, then the retry's 200
        page.get_by_role("link", name="Deliveries").click()
        delivery = page.locator("[data-delivery-id]")
        expect(delivery).to_have_count(1)
        expect(delivery).to_have_attribute("data-status", "succeeded")
        expect(delivery).to_have_attribute("data-event-id", rx.received[0].webhook_id)
        delivery.locator("summary").first.click()
        attempts = delivery.locator("[data-attempt]")
        expect(attempts).to_have_count(2)
        expect(attempts.nth(0)).to_contain_text("HTTP 500")
        expect(attempts.nth(0)).to_contain_text("busy")
        expect(attempts.nth(1)).to_contain_text("HTTP 200")
        expect(attempts.nth(1)).to_have_attribute("data-succeeded", "true")

        delivery.locator("[data-action=redeliver]").click()
        expect(page.locator(".flash")).to_contain_text("conversation.created is on its way again")
        rx.wait_for(lambda got: len(got) == 3)
        assert len(set(rx.ids())) == 1
        page.reload()
        expect(page.locator("[data-delivery-id]")).to_have_count(2)
        expect(page.locator("[data-delivery-id]").first).to_have_attribute(
            "data-status", "succeeded"
        )
        assert Delivery.objects.filter(redelivery_of__isnull=False).count() == 1
