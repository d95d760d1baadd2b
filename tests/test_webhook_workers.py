"""Webhooks from real chatsite workers (daphne, and ``manage.py deliver_webhooks``) to a
receiver on loopback that verifies every signature with ``standardwebhooks``: the
integrator's fire-and-forget flow, a worker killed mid-delivery, and two delivery
processes sharing the work without ever sending one attempt twice."""

import os
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest
from django.db import transaction

from conversations.models import Message
from conversations.services import conversations as services
from webhooks import delivery
from webhooks import services as webhooks
from webhooks.models import Attempt, Delivery

from .helpers import servers
from .helpers.api import bearer, stub_env
from .helpers.servers import ROOT, start_daphne
from .helpers.webhook_receiver import Answer, Receiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

HOOKS_ENV = {
    "CHAT_WEBHOOK_ALLOW_HTTP": "1",
    "CHAT_WEBHOOK_ALLOW_PRIVATE": "1",
    "CHAT_WEBHOOK_RETRY_SCHEDULE": "0.2,0.2,0.2",
    "CHAT_WEBHOOK_POLL_S": "0.2",
}


@pytest.fixture
def receiver():
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def worker(stub_server):
    server = start_daphne(env=stub_env(stub_server, **HOOKS_ENV), name="webhooks-daphne")
    yield server
    server.stop()


def test_an_integrator_sends_without_waiting_and_hears_every_event_by_webhook(
    worker, receiver, key
):
    api = httpx.Client(base_url=f"{worker.url}/api", headers=bearer(key), timeout=20)
    created = api.post("/webhooks", json={"url": receiver.url(), "description": "job runner"})
    assert created.status_code == 201
    receiver.secrets.append(created.json()["secret"])

    conversation = api.post("/conversations", json={"title": "Nightly"}).json()
    messages = f"/conversations/{conversation['id']}/messages"
    # "wait": false answers at once, even to a client that would take a stream.
    sent = api.post(
        messages,
        json={"content": "tokens=40 gap_ms=100", "wait": False},
        headers={"Accept": "text/event-stream"},
    )
    assert sent.status_code == 202
    reply_id = sent.json()["reply"]["id"]
    assert sent.json()["user_message"]["id"] and sent.json()["reply"]["status"] == "streaming"
    # Answered without waiting for the reply (4 s long): it is still being written.
    assert Message.objects.get(pk=reply_id).status == "streaming"

    done = receiver.wait_for(lambda got: any(r.event["type"] == "message.completed" for r in got))
    completed = next(r for r in done if r.event["type"] == "message.completed")
    assert completed.verified_by == receiver.secrets
    stored = Message.objects.get(pk=reply_id)
    message = completed.event["data"]["message"]
    assert message["id"] == reply_id and message["status"] == "completed"
    assert message["content"] == stored.content
    assert stored.content.split() == [f"t{n}" for n in range(1, 41)]
    assert message["usage"] == stored.usage and message["usage"]["completion_tokens"] == 40
    assert completed.event["data"]["conversation"]["id"] == conversation["id"]

    # Prefer: respond-async does the same; a model error arrives as message.failed
    # without what the model server said (that is for staff).
    sent = api.post(
        messages,
        json={"content": "status=500"},
        headers={"Accept": "text/event-stream", "Prefer": "respond-async"},
    )
    assert sent.status_code == 202
    got = receiver.wait_for(lambda got: any(r.event["type"] == "message.failed" for r in got))
    failed = next(r for r in got if r.event["type"] == "message.failed").event["data"]["message"]
    assert failed["error"]["code"] and set(failed["error"]) == {"code", "detail"}
    assert Message.objects.get(pk=failed["id"]).error.get("upstream") is not None

    # Stop: message.cancelled with the text saved; then the conversation is deleted.
    reply_id = api.post(messages, json={"content": "tokens=500 gap_ms=20", "wait": False}).json()[
        "reply"
    ]["id"]
    time.sleep(0.3)
    assert api.post(f"/conversations/{conversation['id']}/stop").status_code == 200
    assert api.delete(f"/conversations/{conversation['id']}").status_code == 204
    got = receiver.wait_for(lambda got: len(got) == 5)  # in no guaranteed order
    cancelled = next(r for r in got if r.event["type"] == "message.cancelled").event["data"]
    assert cancelled["message"]["id"] == reply_id and cancelled["message"]["content"]
    assert cancelled["message"]["content"].startswith("t1 t2")

    assert sorted(r.event["type"] for r in got) == [
        "conversation.created",
        "conversation.deleted",
        "message.cancelled",
        "message.completed",
        "message.failed",
    ]
    assert all(r.verified_by for r in got)
    assert len({r.webhook_id for r in got}) == 5


def test_a_worker_killed_mid_delivery_delivers_after_its_restart_once_by_id(
    stub_server, receiver, user, hooks
):
    env = stub_env(stub_server, **HOOKS_ENV, CHAT_WEBHOOK_TIMEOUT_S="2", CHAT_WORKER_ID="w1")
    receiver.respond = lambda received, nth: Answer(hang_s=60) if nth == 1 else Answer()
    endpoint = webhooks.endpoint_create(
        owner=user, url=receiver.url(), event_types=["message.completed"]
    )
    receiver.secrets.append(endpoint.secret)
    conversation = services.conversation_create(owner=user)
    first = start_daphne(env=env, name="webhooks-killed")
    try:
        client = httpx.Client(base_url=first.url, headers=bearer_for(user), timeout=20)
        sent = client.post(
            f"/api/conversations/{conversation.id}/messages",
            json={"content": "tokens=5", "wait": False},
        )
        assert sent.status_code == 202
        receiver.wait_for(lambda got: len(got) == 1)  # the attempt is in flight...
        reply = Message.objects.get(pk=sent.json()["reply"]["id"])
        assert reply.status == "completed"  # ... after the final save
    finally:
        first.kill()
    killed_at = time.monotonic()

    second = start_daphne(env=env, port=first.port, name="webhooks-restarted")
    try:
        httpx.get(f"{second.url}/healthz", timeout=10)  # as a health check would
        got = receiver.wait_for(lambda got: len(got) == 2, timeout=30)
        # Not before the killed worker's claim ran out (2 x timeout + 5 s).
        assert got[1].at - killed_at >= 8
        time.sleep(1.5)
        assert len(receiver.received) == 2  # nothing more: delivered once
    finally:
        second.stop()
    assert got[0].webhook_id == got[1].webhook_id and got[0].body == got[1].body
    assert got[1].verified_by == [endpoint.secret]
    assert got[1].event["data"]["message"]["content"] == reply.content
    log = Delivery.objects.get().attempt_log.all()
    assert [(a.number, a.error == delivery.LOST_ATTEMPT, a.succeeded) for a in log] == [
        (1, True, False),
        (2, False, True),
    ]


def bearer_for(user) -> dict:
    from .helpers.api import new_key

    return bearer(new_key(user))


def start_deliverer(env: dict) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "manage.py", "deliver_webhooks"],
        cwd=ROOT,
        env={
            **os.environ,
            "DATABASE_URL": servers.test_database_url(),
            "PYTHONUNBUFFERED": "1",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process


def test_two_delivery_processes_never_send_one_attempt_twice(user, hooks):
    """Every event fails once then succeeds: each must reach the receiver exactly twice
    (attempt 1 and its retry), however the two processes race for the rows."""
    events = 120
    with Receiver(lambda received, nth: Answer(500) if nth == 1 else Answer()) as receiver:
        endpoint = webhooks.endpoint_create(
            owner=user, url=receiver.url(), event_types=["conversation.created"]
        )
        receiver.secrets.append(endpoint.secret)
        env = {**HOOKS_ENV, "CHAT_WEBHOOK_RETRY_SCHEDULE": "0.05", "CHAT_WEBHOOK_CONCURRENCY": "8"}
        processes = [start_deliverer(env) for _ in range(2)]
        for process in processes:
            assert process.stdout.readline().strip() == "delivering webhooks"
        try:
            with transaction.atomic():  # all due at once: both processes race for them
                for _ in range(events):
                    services.conversation_create(owner=user)
            receiver.wait_for(lambda got: len(got) >= 2 * events, timeout=60)
            deadline = time.monotonic() + 30
            while Delivery.objects.filter(status="pending").exists():
                assert time.monotonic() < deadline
                time.sleep(0.1)
            time.sleep(0.5)  # anything sent twice would arrive now
        finally:
            reports = []
            for process in processes:
                process.terminate()
                reports.append(process.communicate(timeout=20)[0])
    per_id = Counter(receiver.ids())
    assert len(per_id) == events and set(per_id.values()) == {2}, per_id.most_common(3)
    assert all(r.verified_by for r in receiver.received)
    assert Attempt.objects.count() == 2 * events
    assert set(Delivery.objects.values_list("status", "attempts")) == {("succeeded", 2)}
    made = [int(report.rsplit("stopped; ", 1)[1].split()[0]) for report in reports]
    assert sum(made) == 2 * events and min(made) > 0, reports  # both took part


def readme_receiver(secret: str, port: int) -> str:
    """The README's Python receiver, with this endpoint's secret and a free port."""
    readme = (ROOT / "README.md").read_text()
    blocks = readme.split("```python\n")[1:]
    (code,) = [b.split("```", 1)[0] for b in blocks if "from standardwebhooks import" in b]
    assert '"whsec_..."' in code and "9000" in code
    return code.replace('"whsec_..."', repr(secret)).replace("9000", str(port))


def test_the_readmes_receiver_verifies_and_prints_a_reply_sent_without_waiting(
    worker, key, tmp_path
):
    api = httpx.Client(base_url=f"{worker.url}/api", headers=bearer(key), timeout=20)
    port = servers.free_port()
    endpoint = api.post(
        "/webhooks", json={"url": f"http://127.0.0.1:{port}/", "events": ["message.completed"]}
    ).json()
    script = tmp_path / "receiver.py"
    script.write_text(readme_receiver(endpoint["secret"], port))
    receiver = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        servers.wait_for_port(port, receiver)
        conversation = api.post("/conversations", json={}).json()
        sent = api.post(
            f"/conversations/{conversation['id']}/messages",
            json={"content": "tokens=7", "wait": False},
        )
        assert sent.status_code == 202
        printed = receiver.stdout.readline()  # the reply's text, once it is verified
        assert printed.split() == [f"t{n}" for n in range(1, 8)]
        deadline = time.monotonic() + 10
        while (log := api.get(f"/webhooks/{endpoint['id']}/deliveries").json())["items"][0][
            "status"
        ] != "succeeded":
            assert time.monotonic() < deadline, log
            time.sleep(0.1)
    finally:
        receiver.kill()
        receiver.wait(timeout=10)
    assert [a["status_code"] for a in log["items"][0]["attempts"]] == [204]
