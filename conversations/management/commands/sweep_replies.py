"""Mark streaming replies whose run died (stale heartbeat) as interrupted."""

import asyncio

from django.core.management.base import BaseCommand

from conversations.services import sweeper


class Command(BaseCommand):
    help = "Mark replies whose worker died as interrupted, keeping the text saved so far."

    def handle(self, *args, **options):
        swept = asyncio.run(sweeper.sweep_replies())
        for message in swept:
            self.stdout.write(f"interrupted {message.id} (conversation {message.conversation_id})")
        self.stdout.write(f"{len(swept)} repl{'y' if len(swept) == 1 else 'ies'} interrupted")
