"""Serve chatsite with daphne, its WebSocket limits derived from the settings."""

import gc
import logging
import socket
import sys

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand
from django.urls import get_resolver

from chatsite.server import ChatCommandLineInterface
from conversations.llm import client
from conversations.runs import registry
from conversations.services import sweeper

log = logging.getLogger("conversations")


class Command(BaseCommand):
    help = "Run chatsite under daphne (HTTP, SSE and WebSockets)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--proxy-headers",
            action="store_true",
            help="Trust X-Forwarded-For from a proxy in front (nginx).",
        )

    def handle(self, *args, host: str, port: int, proxy_headers: bool, **options):
        registry.set_worker_id(settings.CHAT_WORKER_ID or f"{socket.gethostname()}:{port}")
        try:
            async_to_sync(sweeper.sweep_own_replies)()
        except Exception:
            log.warning(
                "could not end this worker's earlier replies; the lease will", exc_info=True
            )
        # What a client may send in one WebSocket message: CHAT_MAX_MESSAGE_CHARS
        # characters, each up to 12 bytes once JSON-escaped (an emoji is two \uXXXX
        # escapes), plus the envelope. Anything larger is refused by daphne (close code
        # 1009) before it reaches a consumer. What the server sends has no such limit
        # (chatsite/server.py).
        max_message = settings.CHAT_MAX_MESSAGE_CHARS * 12 + 4096
        argv = [
            "-b",
            host,
            "-p",
            str(port),
            "--websocket-max-message-size",
            str(max_message),
            "--websocket-max-frame-size",
            str(max_message),
            # A WebSocket may stay open for a day; proxies are kept alive by pings.
            "--websocket_timeout",
            "86400",
            "--ping-interval",
            "20",
            "--application-close-timeout",
            "5",
        ]
        if proxy_headers:
            argv.append("--proxy-headers")
        argv.append("chatsite.asgi:application")
        # What is loaded by now lives as long as the process. Frozen, it is out of the
        # cyclic collector's sight: a full collection no longer walks its ~250,000
        # objects, a pause of ~140 ms for every stream of the worker (bench/, figure 2).
        # The URLs (with the APIs' schemas) and the model's client are loaded first:
        # Django and the first reply would load them lazily, after the freeze, where
        # their ~80,000 objects made every full collection a pause of 50-80 ms under
        # load (bench/, figure 4).
        import chatsite.asgi  # noqa: F401 - loaded before the freeze

        get_resolver().url_patterns  # noqa: B018 - imports every URLconf and view
        client.preload()
        gc.collect()
        gc.freeze()
        if settings.CHAT_GIL_SWITCH_MS:
            sys.setswitchinterval(settings.CHAT_GIL_SWITCH_MS / 1000)
        ChatCommandLineInterface().run(argv)
