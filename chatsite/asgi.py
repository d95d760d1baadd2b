"""The ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_asgi_app = get_asgi_application()

# Imported after Django is set up: they use the ORM and the app registry.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from chatsite.keyed import KeyedHandler, KeyedRequests  # noqa: E402
from chatsite.middleware import (  # noqa: E402
    RequestThreads,
    StaticFilesHandler,
    WebSocketOriginValidator,
)
from conversations import routing as chat_routing  # noqa: E402
from conversations.consumers import NoSuchPath  # noqa: E402
from conversations.worker import WorkerTasksMiddleware  # noqa: E402
from review import routing as review_routing  # noqa: E402

websocket_urlpatterns = [
    *chat_routing.websocket_urlpatterns,
    *review_routing.websocket_urlpatterns,
    re_path(r"", NoSuchPath.as_asgi()),  # anything else: refused at the handshake
]

application = WorkerTasksMiddleware(
    ProtocolTypeRouter(
        {
            # With no proxy in front (the embedded default), static files come from here,
            # with the pages' security headers.
            # Requests to the APIs with a key skip the browser's middleware (keyed.py).
            "http": RequestThreads(
                KeyedRequests(
                    StaticFilesHandler(django_asgi_app)
                    if settings.SERVE_STATIC
                    else django_asgi_app,
                    keyed=KeyedHandler(),
                )
            ),
            # Only the site's own pages (its scheme, host and port) may open a socket.
            "websocket": WebSocketOriginValidator(
                AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
            ),
        }
    )
)
