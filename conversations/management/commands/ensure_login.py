"""Make sure a person can log in to a fresh install, and say how."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

USERNAME = "admin"


class Command(BaseCommand):
    help = "Create a first staff account (random password) if there is none; say how to log in."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000/")

    def handle(self, *args, url: str, **options):
        users = get_user_model().objects
        saved = settings.VAR_DIR / "initial-login"
        if not users.exists():
            password = secrets.token_urlsafe(12)
            users.create_superuser(USERNAME, email="", password=password)
            saved.write_text(password)
            saved.chmod(0o600)
        user = users.filter(username=USERNAME).first()
        if user and saved.exists() and user.check_password(saved.read_text().strip()):
            self.stdout.write(
                f"chatsite: open {url} and log in as '{USERNAME}' with password "
                f"'{saved.read_text().strip()}' (then change it: your name at the bottom left "
                "of the chat → Change password)."
            )
        else:
            self.stdout.write(
                f"chatsite: open {url} and log in with your account "
                "(add people with `python manage.py createsuperuser` or in /admin/)."
            )
