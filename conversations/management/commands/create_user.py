"""Create an account for a person (staff do this while self sign-up is off)."""

import secrets
import sys

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Create a user. With --password-stdin the password is read from standard input; "
        "otherwise a random one is generated and printed as the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument("--staff", action="store_true", help="may use the admin")
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of standard input",
        )

    def handle(self, *args, username: str, email: str, staff: bool, password_stdin: bool, **_):
        users = get_user_model()
        if users.objects.filter(**{users.USERNAME_FIELD: username}).exists():
            raise CommandError(f"A user named {username!r} already exists.")
        user = users(**{users.USERNAME_FIELD: username}, email=email, is_staff=staff)
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
            try:
                validate_password(password, user)
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
        else:
            password = secrets.token_urlsafe(12)
        user.set_password(password)
        user.full_clean(exclude=["password"])
        user.save()
        role = "staff user" if staff else "user"
        self.stdout.write(f"Created {role} {username!r}.")
        if not password_stdin:
            self.stdout.write(password)
