"""Errors as JSON for the HTTP APIs (``/api/`` and the OpenAI-compatible ``/v1/``).

Every answer of an API is JSON, its refusals included: the services' ChatErrors, ninja's
own (validation is 400, not 422; a string holding a character that cannot be stored is
``invalid_characters``, as on every surface), a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``
(413 ``request_too_large``), unknown paths (404) and methods (405). ``/api/`` answers
``{"code", "detail"}``; a subclass gives its own shape (openai_compat.py).
"""

import logging
import math
from functools import wraps

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import re_path
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from .. import errors
from ..errors import ChatError
from .auth import CsrfFailed

log = logging.getLogger(__name__)


class JsonAPI(NinjaAPI):
    """A NinjaAPI that answers every error as JSON (see the module's docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        handlers = {
            ChatError: lambda request, exc: self.refuse(request, exc),
            ValidationError: self._invalid,
            RequestDataTooBig: lambda request, exc: self.error(
                request,
                413,
                "request_too_large",
                f"The request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes.",
            ),
            AuthenticationError: lambda request, exc: self.error(
                request, 401, "unauthorized", _unauthorized_detail(exc)
            ),
            CsrfFailed: lambda request, exc: self.error(request, 403, "csrf_failed", exc.message),
            HttpError: lambda request, exc: self.error(
                request, exc.status_code, _HTTP_CODES.get(exc.status_code, "error"), exc.message
            ),
            Http404: lambda request, exc: self.error(request, 404, "not_found", "Not found."),
            Exception: self._server_error,
        }
        for exc_class, handler in handlers.items():
            self.add_exception_handler(exc_class, handler)

    def refuse(self, request: HttpRequest, exc: ChatError):
        if exc.retry_after is not None:
            return self.error(
                request, exc.status, exc.code, exc.detail, retry_after=exc.retry_after
            )
        return self.error(request, exc.status, exc.code, exc.detail)

    def error(self, request: HttpRequest, status: int, code: str, detail: str, **extra):
        response = self.create_response(
            request, {"code": code, "detail": detail, **extra}, status=status
        )
        if status == 401:
            response["WWW-Authenticate"] = "Bearer"
        elif status == 429:
            response["Retry-After"] = str(math.ceil(extra.get("retry_after") or 1))
        return response

    def _invalid(self, request: HttpRequest, exc: ValidationError) -> HttpResponse:
        for error in exc.errors:
            # pydantic refuses a lone surrogate in a constrained string before the
            # services see it: answer as they would (text.check_text).
            if error.get("type") == "string_unicode":
                refused = errors.invalid_characters(".".join(field_path(error)))
                return self.error(request, 400, refused.code, refused.detail, errors=[error])
        return self.error(request, 400, "invalid_request", _describe(exc.errors), errors=exc.errors)

    def _server_error(self, request: HttpRequest, exc: Exception) -> HttpResponse:
        log.error("error in %s %s", request.method, request.path, exc_info=exc)
        return self.error(request, 500, "server_error", "Something went wrong on our side.")

    @property
    def urls(self):
        patterns, app_name, namespace = super().urls
        for pattern in patterns:
            if iscoroutinefunction(pattern.callback):
                pattern.callback = self._json_not_allowed(pattern.callback)
        patterns.append(re_path(r"^.*$", self._not_found))
        return patterns, app_name, namespace

    def _json_not_allowed(self, view):
        @wraps(view)
        async def json_view(request, *args, **kwargs):
            response = await view(request, *args, **kwargs)
            if isinstance(response, HttpResponseNotAllowed):
                answer = self.error(
                    request, 405, "method_not_allowed", f"{request.method} is not allowed here."
                )
                answer["Allow"] = response["Allow"]
                return answer
            return response

        return json_view

    def _not_found(self, request: HttpRequest) -> HttpResponse:
        return self.error(request, 404, "not_found", f"No endpoint at {request.path}.")


_HTTP_CODES = {400: "bad_request", 403: "forbidden", 404: "not_found", 429: "too_many_requests"}


def _unauthorized_detail(exc: AuthenticationError) -> str:
    if exc.message != "Unauthorized":
        return exc.message
    return "Send a valid API key as `Authorization: Bearer <key>`."


def field_path(error: dict) -> list[str]:
    """Where a validation error is, as the client named it: ``messages.0.content``, not
    ninja's ``body.body.messages.0.content``."""
    location = [str(part) for part in error.get("loc", ())]
    return location[2:] if location[:1] == ["body"] else location[1:]


def _describe(errors: list[dict]) -> str:
    return (
        "; ".join(f"{'.'.join(field_path(e)) or 'body'}: {e.get('msg', 'invalid')}" for e in errors)
        or "Invalid request."
    )
