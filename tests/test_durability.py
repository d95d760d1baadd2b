"""Exactly once, every time: seeded, randomized campaigns (tests/helpers/chaos.py) against one
worker (the in-memory layer) and two (Redis), with viewers joining late, dropping and
resuming, resyncing, stopping and repeating sends while a worker is killed and
restarted or paused past the lease.

The suite runs a few seeds; ``make durability`` runs many more (README, "Durability").
A failure names its seed: ``CHAT_DURABILITY_SEEDS=<seed> pytest tests/test_durability.py``
replays its plan.
"""

import asyncio
import os

import pytest
from asgiref.sync import sync_to_async

from .helpers import chaos
from .helpers.api import new_key, stub_env
from .helpers.servers import start_daphne
from .helpers.ws import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

SEEDS = [int(s) for s in os.environ.get("CHAT_DURABILITY_SEEDS", "11,12").split(",")]
SCENARIOS = int(os.environ.get("CHAT_DURABILITY_SCENARIOS", "8"))
CONCURRENCY = int(os.environ.get("CHAT_DURABILITY_CONCURRENCY", "4"))


def worker_env(stub_server: str, redis_url: str | None, seed: int) -> dict:
    env = stub_env(
        stub_server,
        CHAT_RUN_LEASE_S=str(chaos.LEASE_S),
        # One user drives every scenario: no per-user cap on replies or connections here
        # (a killed worker's connections hold their places for a minute, by design:
        # two kills close together put this one user past the default 50).
        CHAT_MAX_STREAMING_PER_USER="0",
        CHAT_QUOTA_CONNECTIONS="0",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
        env["CHANNEL_PREFIX"] = f"chatsite-chaos-{os.getpid()}-{seed}"
    return env


def restart(worker):
    return start_daphne(env=worker.env, port=worker.port, name=f"chaos-{worker.port}")


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("seed", SEEDS)
async def test_every_viewer_ends_with_exactly_the_stored_reply(
    workers, seed, stub_server, redis_url, user
):
    env = worker_env(stub_server, redis_url if workers > 1 else None, seed)
    servers = [
        await asyncio.to_thread(start_daphne, env=env, name=f"chaos-{seed}-{i}")
        for i in range(workers)
    ]
    target = chaos.Target(
        workers=servers,
        cookie=await session_cookie(user),
        key=await sync_to_async(new_key)(user),
    )
    try:
        report = await chaos.campaign(
            target,
            seed=seed * 10 + workers,
            scenarios=SCENARIOS,
            concurrency=CONCURRENCY,
            restart=restart,
        )
    finally:
        for server in target.workers:
            server.stop()
    print(report.summary())
    assert report.scenarios == SCENARIOS
    assert not report.violations, "\n".join([report.summary(), *report.violations[:40]])
