"""What Django 5.2 does not guard by itself: the Content-Security-Policy header of every
response, the security headers of static files (served before the middleware), and the
origin of WebSocket handshakes; and the threads of HTTP requests, kept between them."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port, validate_host
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.utils.decorators import sync_and_async_middleware
from django.utils.http import is_same_domain


def _add_csp(response: HttpResponse) -> HttpResponse:
    if settings.CHAT_CSP and "Content-Security-Policy" not in response:
        response["Content-Security-Policy"] = settings.CHAT_CSP
    return response


@sync_and_async_middleware
def content_security_policy(get_response: Callable) -> Callable:
    """Add ``settings.CHAT_CSP`` to every response that does not set its own.

    The pages load scripts and styles only from this origin and have no inline
    script or event handler, so model output that slips past the sanitiser still
    cannot run code or load anything from elsewhere.
    """

    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            return _add_csp(await get_response(request))

    else:

        def middleware(request: HttpRequest) -> HttpResponse:
            return _add_csp(get_response(request))

    return middleware


# --- static files -----------------------------------------------------------------------


class StaticFilesHandler(ASGIStaticFilesHandler):
    """Django's static files handler, whose responses get the headers the middleware
    gives every page (nosniff, X-Frame-Options, Referrer-Policy, the CSP…): it answers
    before the middleware runs, and a script or stylesheet is content like any other."""

    async def get_response_async(self, request: HttpRequest) -> HttpResponse:
        response = await super().get_response_async(request)
        for middleware in (SecurityMiddleware, XFrameOptionsMiddleware):
            response = middleware(_unused).process_response(request, response)
        return _add_csp(response)


def _unused(request: HttpRequest) -> HttpResponse:
    raise AssertionError("only process_response of the middleware is used")


# --- WebSocket origins ------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of an origin, default ports filled in; None when it is none."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path not in ("", "/"):
        return None
    return parts.scheme, parts.hostname, port


_DEFAULT_PORTS = {"http": 80, "https": 443}


class WebSocketOriginValidator:
    """ASGI middleware: a WebSocket handshake must come from the site's own pages.

    The ``Origin`` header must be the origin of the connection itself — its scheme, its
    host and its port, as this server sees them — or be listed in
    ``CSRF_TRUSTED_ORIGINS``: the rule Django's CSRF check applies to a form's
    ``Origin``. The connection's scheme is ``https`` when the proxy in front says so in
    ``SECURE_PROXY_SSL_HEADER`` (``CHAT_HTTPS=1``: ``X-Forwarded-Proto: https``), or when
    the server terminates TLS itself (``wss``); its host is the ``Host`` header, which
    must be one of ``ALLOWED_HOSTS``. A handshake without an origin, or from anywhere
    else, is refused before it reaches the application (HTTP 403): a page on another
    port or scheme of the same host is another site, and must not speak with the
    user's cookie.
    """

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not self.allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)

    @staticmethod
    def allowed(scope) -> bool:
        headers = Headers(scope)
        origin = _origin(headers.get("origin", ""))
        if origin is None:
            return False
        if any(_trusted(origin, pattern) for pattern in settings.CSRF_TRUSTED_ORIGINS):
            return True
        host = headers.get("host", "")
        domain, _ = split_domain_port(host)
        if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
            return False
        scheme = "https" if _is_secure(scope, headers) else "http"
        return origin == _origin(f"{scheme}://{host}")


class Headers:
    """A scope's headers by lower-case name (the last of repeated ones), decoded."""

    def __init__(self, scope) -> None:
        self._headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", ())
        }

    def get(self, name: str, default: str | None = "") -> str | None:
        return self._headers.get(name, default)


def _is_secure(scope, headers: Headers) -> bool:
    """As Django's ``request.is_secure()``: the proxy's header when one is configured."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = headers.get(header.removeprefix("HTTP_").replace("_", "-").lower(), None)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") in ("wss", "https")


def _trusted(origin: tuple[str, str, int | None], pattern: str) -> bool:
    """An entry of CSRF_TRUSTED_ORIGINS: exact, or ``scheme://*.domain`` for subdomains."""
    if "://*." in pattern:
        scheme, _, domain = pattern.lower().partition("://*.")
        return origin[0] == scheme and is_same_domain(origin[1], f".{domain}")
    return origin == _origin(pattern)


class RequestThreads:
    """ASGI middleware: a thread kept from one HTTP request to the next.

    Django runs the synchronous parts of every request (its middleware, the
    request_started and request_finished signals) on a thread of the request's own,
    started for it and stopped after it. Starting a thread holds the event loop until
    the new thread runs, which under load, with the GIL busy, took milliseconds per
    request from every reply streaming in the process (bench/, figure 4, ``/v1``).

    Here a finished request's thread serves the next one: still one thread per request
    in flight, as Django expects (as a WSGI server's thread pool reuses its threads),
    and no thread started per request once the process is warm.
    """

    # Idle threads kept; past a burst the others end. Enough for the replies one worker
    # streams at once: an HTTP stream holds its thread until it ends, and a thread
    # started while a hundred streams run waits for the busy event loop to start.
    KEPT = 256

    def __init__(self, app) -> None:
        self.app = app
        self.idle: list[ThreadPoolExecutor] = []

    async def __call__(self, scope, receive, send) -> None:
        if self.idle:
            executor = self.idle.pop()
        else:
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
        finally:
            if len(self.idle) < self.KEPT:
                self.idle.append(executor)
            else:
                executor.shutdown(wait=False)
