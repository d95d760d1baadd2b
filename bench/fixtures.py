"""Prepare the bench's database: migrate, then a user with a session, an API key and
many empty conversations (a fresh one per reply, so every prompt is the same size).

Run by the bench in chatsite's environment; prints one line of JSON:
``{"session", "api_key", "conversations": [uuid, ...]}``.
"""

import argparse
import json
import os
import secrets

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    django.setup()

    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    from conversations.llm import model_name
    from conversations.models import Conversation
    from conversations.services.apikeys import create_api_key

    call_command("migrate", verbosity=0, interactive=False)
    user = get_user_model().objects.create_user(f"bench-{secrets.token_hex(4)}")
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    _, api_key = create_api_key(owner=user, name="bench")
    conversations = Conversation.objects.bulk_create(
        Conversation(owner=user, model=model_name(), title="bench")
        for _ in range(args.conversations)
    )
    print(
        json.dumps(
            {
                "session": session.session_key,
                "api_key": api_key,
                "conversations": [str(c.id) for c in conversations],
            }
        )
    )


if __name__ == "__main__":
    main()
