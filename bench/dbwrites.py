"""Figure 7: database writes per reply against reply length.

Runs replies in this process, through the real path (``services.reply_start`` → the
run → ``ChatOpenAI`` over HTTP to the stub), on the in-memory layer, and counts the
INSERT and UPDATE statements on the connections of the threads the live path's database
work runs on (``conversations/db.py``) and of the one the rest of async code uses (as
``tests/test_llm.py`` does). Writes made while the exchange is
created (the user message, the reply's row, the conversation's activity) are told
apart from the run's own (flushes and the final save).

Run by the bench in chatsite's environment; prints one line of JSON.
"""

import argparse
import asyncio
import json
import math
import os
import time

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", default="100,1000,5000")
    parser.add_argument("--gap-ms", type=float, default=1)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    django.setup()
    print(json.dumps(asyncio.run(measure([int(n) for n in args.tokens.split(",")], args.gap_ms))))


async def measure(lengths: list[int], gap_ms: float) -> list[dict]:
    from channels.db import database_sync_to_async
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection

    from conversations import db
    from conversations.models import Conversation
    from conversations.runs import registry
    from conversations.services import replies

    writes: list[str] = []

    def count_writes(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith(("UPDATE", "INSERT")):
            writes.append(sql)
        return execute(sql, params, many, context)

    @database_sync_to_async
    def fresh_conversation() -> Conversation:
        user = get_user_model().objects.get_or_create(username="bench-dbwrites")[0]
        return Conversation.objects.create(owner=user)

    # The first reply of a process imports and connects what it needs: not measured.
    first = await fresh_conversation()
    warm_up = await replies.reply_start(conversation=first, content="tokens=5")
    await asyncio.wait_for(registry.local_run(warm_up.reply.id).task, 60)

    def watch_all():
        db.on_every_thread(lambda: connection.execute_wrappers.append(count_writes))
        connection.execute_wrappers.append(count_writes)

    await database_sync_to_async(watch_all)()
    results = []
    for tokens in lengths:
        conversation = await fresh_conversation()
        writes.clear()
        started = time.monotonic()
        exchange = await replies.reply_start(
            conversation=conversation, content=f"tokens={tokens} gap_ms={gap_ms:g}"
        )
        exchange_writes = len(writes)
        run = registry.local_run(exchange.reply.id)
        await asyncio.wait_for(run.task, 120)
        duration_ms = (time.monotonic() - started) * 1000
        run_writes = len(writes) - exchange_writes
        results.append(
            {
                "tokens": tokens,
                "frames": run.seq,
                "status": run.message.status if run.message else None,
                "duration_ms": round(duration_ms),
                "exchange_writes": exchange_writes,
                "run_writes": run_writes,
                # The reply's own row: its INSERT, the flushes and the final save.
                "reply_writes": 1 + run_writes,
                # Its INSERT, its final save, and a flush at most per tick of the
                # process's flusher, which ticks on its own clock: ceil(duration / interval).
                "bound": 2 + math.ceil(duration_ms / settings.CHAT_FLUSH_INTERVAL_MS),
            }
        )
    return results


if __name__ == "__main__":
    main()
