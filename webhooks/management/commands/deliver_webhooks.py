"""Deliver webhooks from a process of its own (every worker delivers too; any number of
these and of workers may run against one database)."""

import asyncio
import signal

from django.core.management.base import BaseCommand

from webhooks import delivery


class Command(BaseCommand):
    help = "Deliver due webhooks until stopped (SIGTERM or Ctrl+C)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--once", action="store_true", help="deliver what is due now, then exit"
        )

    def handle(self, *args, once: bool = False, **options):
        asyncio.run(self._run(once))

    async def _run(self, once: bool) -> None:
        if once:
            total = 0
            while sent := await delivery.deliver_due():
                total += sent
            self.stdout.write(f"{total} attempts made")
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        deliverer = delivery.start()
        self.stdout.write("delivering webhooks", self.style.SUCCESS)
        self.stdout.flush()
        await stop.wait()
        # Attempts in flight are abandoned: their claims expire and they are retried.
        self.stdout.write(f"stopped; {deliverer.attempts} attempts made")
