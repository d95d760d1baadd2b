"""Ask an OpenAI-compatible server which models it serves (``GET <base_url>/models``)
and print them as a ``CHAT_MODELS`` value, to edit and set."""

import json

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Print the models an OpenAI-compatible server lists, as a CHAT_MODELS value."

    def add_arguments(self, parser):
        parser.add_argument(
            "--base-url",
            default=None,
            help="e.g. http://127.0.0.1:11434/v1 (default: OPENAI_BASE_URL)",
        )
        parser.add_argument("--api-key", default=None, help="default: OPENAI_API_KEY")

    def handle(self, *args, base_url: str | None, api_key: str | None, **options):
        base_url = (base_url or settings.OPENAI_BASE_URL or "https://api.openai.com/v1").rstrip("/")
        api_key = api_key if api_key is not None else settings.OPENAI_API_KEY
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            response = httpx.get(f"{base_url}/models", headers=headers, timeout=10)
            response.raise_for_status()
            names = sorted(m["id"] for m in response.json()["data"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise CommandError(f"{base_url}/models did not list models: {exc}") from None
        entries = [{"name": name, "base_url": base_url} for name in names]
        self.stdout.write(json.dumps(entries, indent=1))
