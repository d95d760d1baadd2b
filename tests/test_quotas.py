"""Quotas and rate limits (quotas/): each limit refused before anything is saved, on
every surface, and held under parallel requests on two workers sharing the database and
Redis (PostgreSQL when DATABASE_URL names it)."""

import asyncio

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from conversations.models import Conversation, Message
from conversations.services.conversations import conversation_create
from quotas import limits
from quotas.models import GroupQuota, Usage, UserQuota

from .helpers.api import bearer, new_key
from .helpers.servers import start_daphne
from .helpers.ws import connect, receive, receive_until_final
from .test_workers import worker_env

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def workers(django_db_setup, django_db_blocker, redis_url):
    # Replies long enough to stream through each burst.
    env = worker_env(redis_url, CHAT_OFFLINE_DELAY_MS=200, CHAT_RUN_LEASE_S=30)
    a = start_daphne(env=env, name="quota-a")
    b = start_daphne(env=env, name="quota-b")
    yield a, b
    a.stop()
    b.stop()


def _person(name: str, **own) -> tuple:
    user = get_user_model().objects.create_user(name, password="x")
    if own:
        UserQuota.objects.create(user=user, **own)
    conversations = [conversation_create(owner=user, title=f"c{i}") for i in range(12)]
    return user, new_key(user), conversations


async def _burst(workers, key, requests) -> list[httpx.Response]:
    """``requests`` ((method, path, body) each) at once, alternately to each worker."""
    async with httpx.AsyncClient(headers=bearer(key), timeout=30) as client:
        return await asyncio.gather(
            *(
                client.request(method, f"{workers[i % 2].url}{path}", json=body)
                for i, (method, path, body) in enumerate(requests)
            )
        )


def _refused(responses, code: str) -> list[httpx.Response]:
    refused = [r for r in responses if r.status_code == 429]
    for response in refused:
        assert response.json()["code"] == code
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["retry_after"] >= 1
    return refused


async def _stop_all(workers, key, user) -> None:
    """Stop the user's streaming replies through a worker, and wait until they ended."""

    @database_sync_to_async
    def streaming():
        return list(
            Message.objects.filter(conversation__owner=user, status="streaming").values_list(
                "conversation_id", flat=True
            )
        )

    async with httpx.AsyncClient(headers=bearer(key), timeout=30) as client:
        for conversation_id in await streaming():
            await client.post(f"{workers[0].url}/api/conversations/{conversation_id}/stop")


def _used(user, tokens: int) -> None:
    """``user`` has used ``tokens`` today (and this month)."""
    today = timezone.now().date()
    Usage.objects.create(
        user=user, day=today, day_tokens=tokens, month=today.replace(day=1), month_tokens=tokens
    )


async def _one_reply(ws, content: str) -> list[dict]:
    """Send on a connected socket (its snapshot read) and read up to the reply's end."""
    await ws.send_json_to({"type": "message.send", "content": content})
    return await receive_until_final(ws)


def _streaming(user) -> int:
    return Message.objects.filter(conversation__owner=user, status="streaming").count()


async def test_parallel_sends_on_two_workers_start_exactly_the_streaming_limit(workers):
    user, key, conversations = await sync_to_async(_person)("bursty", streaming_replies=4)
    sends = [
        ("POST", f"/api/conversations/{c.id}/messages", {"content": "hi"}) for c in conversations
    ]
    responses = await _burst(workers, key, sends)
    assert sorted(r.status_code for r in responses) == [202] * 4 + [429] * 8
    assert len(_refused(responses, "too_many_replies")) == 8
    assert await sync_to_async(_streaming)(user) == 4
    # Refused sends saved nothing: 4 user messages and 4 replies in all.
    assert await Message.objects.filter(conversation__owner=user).acount() == 8
    await _stop_all(workers, key, user)


async def test_a_reply_that_ends_frees_its_place(workers):
    user, key, conversations = await sync_to_async(_person)("freed", streaming_replies=1)
    first = await _burst(
        workers,
        key,
        [("POST", f"/api/conversations/{conversations[0].id}/messages", {"content": "a"})],
    )
    assert first[0].status_code == 202
    refused = await _burst(
        workers,
        key,
        [("POST", f"/api/conversations/{conversations[1].id}/messages", {"content": "b"})],
    )
    assert refused[0].status_code == 429
    await _stop_all(workers, key, user)  # cancelled: the place is free again
    async with httpx.AsyncClient(headers=bearer(key), timeout=30) as client:
        for _ in range(100):
            if not await sync_to_async(_streaming)(user):
                break
            await asyncio.sleep(0.05)
        again = await client.post(
            f"{workers[1].url}/api/conversations/{conversations[1].id}/messages",
            json={"content": "b"},
        )
    assert again.status_code == 202
    await _stop_all(workers, key, user)


async def test_parallel_sends_and_v1_calls_hold_the_requests_per_minute(workers):
    user, key, conversations = await sync_to_async(_person)(
        "hasty", requests_per_minute=3, streaming_replies=0
    )
    sends = [
        ("POST", f"/api/conversations/{c.id}/messages", {"content": "hi"})
        for c in conversations[:6]
    ] + [
        (
            "POST",
            "/v1/chat/completions",
            {
                "model": "offline-demo",
                "stream": True,
                "max_tokens": 2,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
    ] * 4
    responses = await _burst(workers, key, sends)
    accepted = [r for r in responses if r.status_code in (200, 202)]
    assert len(accepted) == 3
    refused = [r for r in responses if r.status_code == 429]
    assert len(refused) == 7
    for response in refused:
        body = response.json()
        if "error" in body:  # /v1: OpenAI's shape
            assert body["error"]["code"] == "rate_limit_exceeded"
            assert "replies a minute" in body["error"]["message"]
        else:
            assert body["code"] == "rate_limited"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
    await _stop_all(workers, key, user)


async def test_a_spent_token_budget_refuses_every_surface_until_it_resets(workers):
    user, key, conversations = await sync_to_async(_person)("spender", tokens_per_day=1000)
    await sync_to_async(_used)(user, 1000)
    responses = await _burst(
        workers,
        key,
        [
            ("POST", f"/api/conversations/{conversations[0].id}/messages", {"content": "hi"}),
            (
                "POST",
                "/v1/chat/completions",
                {"model": "offline-demo", "messages": [{"role": "user", "content": "hi"}]},
            ),
            (
                "POST",
                "/v1/chat/completions",
                {
                    "model": "offline-demo",
                    "messages": [{"role": "user", "content": "hi"}],
                    "tools": [{"type": "function", "function": {"name": "lookup"}}],
                },
            ),
        ],
    )
    api, v1, v1_tools = responses
    assert v1_tools.status_code == 429
    assert v1_tools.json()["error"]["code"] == "rate_limit_exceeded"
    assert api.status_code == 429
    assert api.json()["code"] == "quota_exceeded"
    assert "1,000 of your 1,000 tokens today" in api.json()["detail"]
    assert 0 < api.json()["retry_after"] <= 86400
    assert v1.status_code == 429
    assert v1.json()["error"]["code"] == "rate_limit_exceeded"
    assert await Message.objects.filter(conversation__owner=user).acount() == 0
    assert await Conversation.objects.filter(owner=user).acount() == 12  # no /v1 one

    # Yesterday's tokens do not count today.
    today = timezone.now().date()
    await Usage.objects.filter(user=user).aupdate(day=today.replace(year=today.year - 1))
    again = await _burst(
        workers,
        key,
        [("POST", f"/api/conversations/{conversations[0].id}/messages", {"content": "hi"})],
    )
    assert again[0].status_code == 202
    await _stop_all(workers, key, user)


async def test_parallel_event_streams_on_two_workers_hold_the_connection_limit(workers):
    _user, key, conversations = await sync_to_async(_person)("watcher", connections=3)
    conversation = conversations[0]
    url = f"/api/conversations/{conversation.id}/events"
    async with httpx.AsyncClient(headers=bearer(key), timeout=30) as client:
        async with asyncio.TaskGroup() as group:
            opened = [
                group.create_task(_open_stream(client, f"{workers[i % 2].url}{url}"))
                for i in range(6)
            ]
        streams = [task.result() for task in opened]
        statuses = sorted(response.status_code for response in streams)
        assert statuses == [200] * 3 + [429] * 3
        _refused([r for r in streams if r.status_code == 429], "too_many_connections")
        for response in streams:
            await response.aclose()
        # The closed streams' places are free again, on either worker.
        for _ in range(100):
            response = await _open_stream(client, f"{workers[1].url}{url}")
            await response.aclose()
            if response.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert response.status_code == 200


async def _open_stream(client: httpx.AsyncClient, url: str) -> httpx.Response:
    request = client.build_request("GET", url, headers={"Accept": "text/event-stream"})
    response = await client.send(request, stream=True)
    if response.status_code != 200:
        await response.aread()
    return response


# --- in one process --------------------------------------------------------------------


async def test_a_refused_send_on_the_websocket_is_an_error_event_and_the_socket_stays(
    user, conversation
):
    await UserQuota.objects.acreate(user=user, requests_per_minute=1)
    ws = await connect(user, conversation.id)
    await receive(ws)
    await ws.send_json_to({"type": "message.send", "content": "one", "client_id": "a"})
    await receive_until_final(ws)
    await ws.send_json_to({"type": "message.send", "content": "two", "client_id": "b"})
    refused = await receive(ws)
    assert refused["type"] == "error"
    assert refused["code"] == "rate_limited"
    assert refused["client_id"] == "b"
    assert 1 <= refused["retry_after"] <= 60
    await ws.send_json_to({"type": "resync"})  # still open and answering
    assert (await receive(ws))["type"] == "snapshot"
    await ws.disconnect()


async def test_a_spent_budget_refuses_regenerate_and_edit_on_the_websocket(user, conversation):
    # The first reply starts within the budget, and spends it.
    await UserQuota.objects.acreate(user=user, tokens_per_month=1)
    ws = await connect(user, conversation.id)
    await receive(ws)
    received = await _one_reply(ws, "one")
    reply = received[-1]["message"]
    asked = next(e["message"] for e in received if e["type"] == "message.created")
    for request in (
        {"type": "reply.regenerate", "message": reply["id"]},
        {"type": "message.edit", "message": asked["id"], "content": "two", "client_id": "e"},
    ):
        await ws.send_json_to(request)
        refused = await receive(ws)
        assert (refused["type"], refused["code"]) == ("error", "quota_exceeded")
        assert "tokens this month" in refused["detail"]
    assert await Message.objects.acount() == 2
    await ws.disconnect()


async def test_a_spent_budget_refuses_the_new_chat_page_and_saves_nothing(user):
    from django.test import AsyncClient

    await UserQuota.objects.acreate(user=user, tokens_per_day=10)
    await sync_to_async(_used)(user, 10)
    client = AsyncClient()
    await client.aforce_login(user)
    response = await client.post("/c/new/", {"content": "hello"})
    assert response.status_code == 429
    assert "You have used 10 of your 10 tokens today" in response.content.decode()
    assert await Conversation.objects.acount() == 0


async def test_one_socket_too_many_is_told_why_and_closed(user, conversation):
    await UserQuota.objects.acreate(user=user, connections=2)
    first = await connect(user, conversation.id)
    second = await connect(user, conversation.id)
    await receive(first)
    await receive(second)
    third = await connect(user, conversation.id)
    refused = await receive(third)
    assert refused["type"] == "error"
    assert refused["code"] == "too_many_connections"
    assert (await third.receive_output(2))["code"] == 4429
    await first.disconnect()
    fourth = await connect(user, conversation.id)  # the first one's place is free
    assert (await receive(fourth))["type"] == "snapshot"
    await second.disconnect()
    await fourth.disconnect()


async def test_a_replys_tokens_count_toward_the_day_and_the_month(
    user, other_user, conversation, settings
):
    settings.CHAT_QUOTA_TOKENS_PER_MONTH = 1_000_000
    ws = await connect(user, conversation.id)
    await receive(ws)
    received = await _one_reply(ws, "count me")
    await ws.disconnect()
    usage = received[-1]["message"]["usage"]
    spent = usage["prompt_tokens"] + usage["completion_tokens"]
    row = await Usage.objects.aget(user=user)
    assert row.day_tokens == row.month_tokens == spent > 0

    # With no token limit nothing is counted: no write for it at each reply's end.
    await UserQuota.objects.acreate(user=other_user, tokens_per_month=0)
    theirs = await sync_to_async(conversation_create)(owner=other_user)
    ws = await connect(other_user, theirs.id)
    await receive(ws)
    await _one_reply(ws, "not counted")
    await ws.disconnect()
    assert not await Usage.objects.filter(user=other_user).aexists()


def test_an_unreported_usage_is_estimated_from_the_text(user, conversation):
    from quotas.services import spent

    asked = Message.objects.create(conversation=conversation, role="user", content="a" * 40)
    reply = Message.objects.create(
        conversation=conversation, role="assistant", content="b" * 80, reply_to=asked
    )
    assert spent(reply) == 30


def test_limits_come_from_the_person_then_the_most_generous_group_then_the_defaults(user, settings):
    settings.CHAT_QUOTA_TOKENS_PER_DAY = 100
    settings.CHAT_QUOTA_REQUESTS_PER_MINUTE = 7
    settings.CHAT_MAX_STREAMING_PER_USER = 4
    small, large = Group.objects.create(name="small"), Group.objects.create(name="large")
    user.groups.add(small, large)
    GroupQuota.objects.create(group=small, tokens_per_day=500, streaming_replies=2)
    GroupQuota.objects.create(group=large, tokens_per_day=5000)
    UserQuota.objects.create(user=user, streaming_replies=0)
    found = limits.limits_for(user.pk)
    assert found.tokens_per_day == 5000  # the larger group's
    assert found.streaming_replies == 0  # their own: no limit
    assert found.requests_per_minute == 7  # the default


def test_staff_see_who_is_nearest_their_limits(admin_client, user, other_user, settings):
    settings.CHAT_QUOTA_TOKENS_PER_DAY = 1000
    _used(user, 100)
    _used(other_user, 900)
    index = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/quotas/usage/"' in index
    page = admin_client.get("/admin/quotas/usage/").content.decode()
    assert page.index(other_user.username) < page.index(f'data-user="{user.username}"')
    assert "900 of 1,000" in page
    assert "90 %" in page


def test_staff_set_a_persons_limits_in_the_admin(admin_client, user):
    response = admin_client.post(
        "/admin/quotas/userquota/add/",
        {"user": user.pk, "tokens_per_day": "5000", "requests_per_minute": "0"},
    )
    assert response.status_code == 302
    found = limits.limits_for(user.pk)
    assert found.tokens_per_day == 5000
    assert found.requests_per_minute == 0
    # The change is in the security audit log: whose, by whom, to what.
    from access.models import SecurityEvent

    event = SecurityEvent.objects.get(kind=SecurityEvent.Kind.QUOTA_CHANGED)
    assert event.user == user
    assert event.detail["by"] == "admin" and event.detail["action"] == "set"
    assert event.detail["limits"]["tokens_per_day"] == 5000


def test_limits_read_within_the_cache_time_are_known_without_the_database(user, monkeypatch):
    """A stream opening under load asks the database for its owner's limits at most once
    per ``limits.CACHE_S``; staff's change is read again after it."""
    limits.forget()
    assert limits.remembered_limits(user.pk) is None
    UserQuota.objects.create(user=user, connections=3)
    read = limits.limits_for(user.pk)
    assert read.connections == 3
    assert limits.remembered_limits(user.pk) == read
    clock = limits.time.monotonic() + limits.CACHE_S + 1
    monkeypatch.setattr(limits.time, "monotonic", lambda: clock)
    assert limits.remembered_limits(user.pk) is None
