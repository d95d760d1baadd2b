"""Security headers Django 5.2 does not set by itself: the Content-Security-Policy."""

from collections.abc import Callable

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware


@sync_and_async_middleware
def content_security_policy(get_response: Callable) -> Callable:
    """Add ``settings.CHAT_CSP`` to every response that does not set its own.

    The pages load scripts and styles only from this origin and have no inline
    script or event handler, so model output that slips past the sanitiser still
    cannot run code or load anything from elsewhere.
    """

    def add_header(response: HttpResponse) -> HttpResponse:
        if settings.CHAT_CSP and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = settings.CHAT_CSP
        return response

    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            return add_header(await get_response(request))

    else:

        def middleware(request: HttpRequest) -> HttpResponse:
            return add_header(get_response(request))

    return middleware
