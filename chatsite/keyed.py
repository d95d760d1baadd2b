"""Requests that carry an API key: Django's request path without the browser's middleware.

Django runs a middleware that is not async-native (all of Django's own, and axes) through
``sync_to_async`` in an async stack: two thread hops each, and each hop waits for a turn
of the event loop, which under load is busy streaming every other reply. Eight of them
put about sixteen hops in front of every ``/v1`` request; at 100 replies streaming on
one worker that was hundreds of milliseconds before the view ran (docs/benchmarks.md).

A request to the HTTP APIs (``/api/``, ``/v1/``) that sends an ``Authorization`` header
is judged by that header alone (``conversations.api.auth.ApiAuth``): it uses no session,
no CSRF token, no messages and no login form. Such a request goes to a second Django
handler whose middleware is what still applies to it — the security middleware (HTTPS
redirect, HSTS, nosniff, Referrer-Policy), the common middleware (``ALLOWED_HOSTS``,
disallowed user agents), ``X-Frame-Options`` and the Content-Security-Policy — run inline
on the event loop: none of them touches the database or blocks. Everything else (the
browser's pages, the admin, the APIs with a session cookie) goes through
``settings.MIDDLEWARE`` as before.
"""

from collections.abc import Callable

from django.contrib.auth.models import AnonymousUser
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.security import SecurityMiddleware

from .middleware import _add_csp

# Where a request with an Authorization header takes the keyed handler.
KEYED_PREFIXES = ("/api/", "/v1/")


def keyed_middleware(get_response: Callable) -> Callable:
    """What ``settings.MIDDLEWARE`` does to a request judged by its key, in the same
    order, as plain calls: each of these middlewares only reads the request and sets
    headers."""
    security = SecurityMiddleware(get_response)
    common = CommonMiddleware(get_response)
    frames = XFrameOptionsMiddleware(get_response)

    async def middleware(request: HttpRequest) -> HttpResponse:
        # No session here: whoever reads the request's user sees nobody signed in.
        request.user = AnonymousUser()
        request.auser = _anonymous
        response = security.process_request(request) or common.process_request(request)
        if response is None:
            response = await get_response(request)
        response = _add_csp(frames.process_response(request, response))
        response = common.process_response(request, response)
        return security.process_response(request, response)

    return middleware


async def _anonymous() -> AnonymousUser:
    return AnonymousUser()


class KeyedHandler(ASGIHandler):
    """Django's ASGI handler with :func:`keyed_middleware` for its middleware."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        view = convert_exception_to_response(self._get_response_async)
        self._middleware_chain = convert_exception_to_response(keyed_middleware(view))


class KeyedRequests:
    """ASGI router: HTTP requests to the APIs that send an ``Authorization`` header go to
    ``keyed``, every other request to ``app``."""

    def __init__(self, app, keyed) -> None:
        self.app = app
        self.keyed = keyed

    async def __call__(self, scope, receive, send) -> None:
        app = self.keyed if self.is_keyed(scope) else self.app
        return await app(scope, receive, send)

    @staticmethod
    def is_keyed(scope) -> bool:
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        return path.startswith(KEYED_PREFIXES) and any(
            name.lower() == b"authorization" for name, _ in scope.get("headers", ())
        )
