"""``/metrics``: who may read it, and that it counts what a worker does."""

import re

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from .helpers.protocol import WsViewer
from .helpers.ws import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def value(text: str, name: str, **labels) -> float:
    """One sample of the exposition text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}(?:\{{{re.escape(wanted)}\}})? ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def test_only_the_workers_host_a_token_or_staff_may_read_the_metrics(settings, user):
    local = Client(REMOTE_ADDR="127.0.0.1")
    assert local.get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 403
    # Through a proxy every request comes from the proxy's address: not trusted.
    proxied = local.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 403
    user_client = Client(REMOTE_ADDR="10.1.2.3")
    user_client.force_login(user)
    assert user_client.get("/metrics").status_code == 403

    settings.CHAT_METRICS_TOKEN = "scrape-me"
    assert local.get("/metrics").status_code == 403  # with a token, the token is needed
    assert local.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 403
    scraped = Client(REMOTE_ADDR="10.1.2.3").get(
        "/metrics", headers={"Authorization": "Bearer scrape-me"}
    )
    assert scraped.status_code == 200
    assert scraped["Content-Type"].startswith("text/plain")
    staff = get_user_model().objects.create_user("ops", password="ops-password-1", is_staff=True)
    staff_client = Client(REMOTE_ADDR="10.1.2.3")
    staff_client.force_login(staff)
    assert staff_client.get("/metrics").status_code == 200


async def test_a_worker_counts_its_replies_connections_and_flushes(
    daphne_server, user, conversation
):
    url = f"{daphne_server.url}/metrics"
    async with httpx.AsyncClient() as client:
        before = (await client.get(url)).text
        viewer = await WsViewer(daphne_server, await session_cookie(user), conversation.id).open()
        during = (await client.get(url)).text
        await viewer.send({"type": "message.send", "content": "Count me"})
        reply_id = await viewer.reply_started()
        await viewer.until_final(reply_id)
        await viewer.close()
        after = (await client.get(url)).text
    assert value(during, "chatsite_connections", kind="websocket") == 1 + value(
        before, "chatsite_connections", kind="websocket"
    )
    started = value(after, "chatsite_replies_started_total") - value(
        before, "chatsite_replies_started_total"
    )
    completed = value(after, "chatsite_replies_finished_total", status="completed") - value(
        before, "chatsite_replies_finished_total", status="completed"
    )
    assert (started, completed) == (1, 1)
    assert value(after, "chatsite_frames_published_total") > value(
        before, "chatsite_frames_published_total"
    )
    assert value(after, "chatsite_time_to_first_token_seconds_count") >= 1
    assert value(after, "chatsite_db_flush_seconds_count") >= 1
    assert value(after, "chatsite_send_db_seconds_count") >= 1
    assert value(after, "chatsite_replies_streaming") == 0
