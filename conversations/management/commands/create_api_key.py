"""Make an API key for a user and print it (as the last line, for scripts)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from conversations.services.apikeys import create_api_key


class Command(BaseCommand):
    help = "Create an API key for USERNAME; the key is printed once, as the last line."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the key is for")

    def handle(self, *args, username: str, name: str, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        key, raw = create_api_key(owner=user, name=name)
        self.stderr.write(f"API key {key.prefix}… for {username}; it is not shown again.")
        self.stdout.write(raw)
