"""Make an API key for a user and print it (as the last line, for scripts)."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from conversations.models import ApiKey
from conversations.services.apikeys import create_api_key


class Command(BaseCommand):
    help = "Create an API key for USERNAME; the key is printed once, as the last line."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the key is for")
        parser.add_argument(
            "--scope",
            choices=ApiKey.Scope.values,
            default=ApiKey.Scope.CHAT,
            help="read: list, read and follow conversations; chat (default): also send, /v1",
        )
        parser.add_argument(
            "--expires-in-days", type=int, default=None, help="refused after so many days"
        )

    def handle(self, *args, username: str, name: str, scope: str, expires_in_days, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be 1 or more.")
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        key, raw = create_api_key(owner=user, name=name, scope=scope, expires_at=expires_at)
        self.stderr.write(f"API key {key.prefix}… for {username}; it is not shown again.")
        self.stdout.write(raw)
