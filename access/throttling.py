"""Throttles on guessing credentials.

- Passwords: django-axes counts failed logins (the chat's and the admin's) per username
  and per address in the database, which every worker shares, and refuses them during
  the cool-off (settings: ``AXES_*``, from ``CHAT_LOGIN_*``). ``lockout_response`` is the
  page a refused login gets: the login page, saying why and for how long.
- API keys: failed key authentications are counted per address in fixed windows in the
  cache (Redis when ``REDIS_URL`` is set, so every worker shares the count); past
  ``CHAT_KEY_FAILURE_LIMIT`` in a window the address is refused with 429 until the
  window ends. Only a lookup that reaches the database is counted and checked: a key
  remembered by api/auth.py costs nothing more.
"""

import math
import time

from asgiref.sync import sync_to_async
from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.http import HttpRequest
from django.shortcuts import render

from conversations import errors
from conversations.db import db_call

from . import audit
from .models import SecurityEvent
from .views import login_page


def lockout_message(request: HttpRequest) -> str:
    cool_off = get_cool_off(request)
    if not cool_off:
        return "Too many failed logins: this account or address is locked. Ask staff to unlock it."
    minutes = max(1, math.ceil(cool_off.total_seconds() / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many failed logins. Try again in {minutes} {unit}."


def lockout_response(request: HttpRequest, original_response=None, credentials=None):
    """What a login refused by axes gets (``AXES_LOCKOUT_CALLABLE``): the login page with
    the reason, status 429 and Retry-After. The admin's login gets the same page; after
    logging in there, ``next`` leads back to the admin."""
    cool_off = get_cool_off(request)
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if not next_url and request.path.startswith("/admin/"):
        next_url = "/admin/"
    response = render(
        request,
        "registration/login.html",
        {
            **login_page(request),
            "form": AuthenticationForm(request),
            "locked_out": lockout_message(request),
            "next": next_url,
        },
        status=429,
    )
    if cool_off:
        response["Retry-After"] = str(math.ceil(cool_off.total_seconds()))
    return response


# --- API keys ------------------------------------------------------------------------------


def _window() -> tuple[int, float]:
    """The current window's number and the seconds left in it."""
    length = settings.CHAT_KEY_FAILURE_WINDOW_S
    now = time.time()
    return int(now // length), length - now % length


def _cache_key(address: str, window: int) -> str:
    return f"access:key-failures:{address}:{window}"


def _failures(address: str) -> tuple[int, float]:
    window, left = _window()
    return cache.get(_cache_key(address, window), 0), left


def _add_failure(address: str) -> tuple[int, float]:
    window, left = _window()
    key = _cache_key(address, window)
    cache.add(key, 0, timeout=math.ceil(left) + 1)
    try:
        return cache.incr(key), left
    except ValueError:  # expired between the two calls: a new window
        cache.add(key, 1, timeout=math.ceil(left) + 1)
        return 1, left


async def check_key_attempts(request: HttpRequest) -> None:
    """Refuse (ChatError 429) an address whose failed key attempts passed the limit."""
    address = audit.client_address(request)
    limit = settings.CHAT_KEY_FAILURE_LIMIT
    if address is None or limit <= 0:
        return
    count, left = await sync_to_async(_failures, thread_sensitive=False)(address)
    if count >= limit:
        raise errors.key_attempts_throttled(math.ceil(left))


async def key_failed(request: HttpRequest) -> None:
    """Count a failed key authentication; the one that reaches the limit is recorded in
    the audit log."""
    address = audit.client_address(request)
    if address is None or settings.CHAT_KEY_FAILURE_LIMIT <= 0:
        return
    count, left = await sync_to_async(_add_failure, thread_sensitive=False)(address)
    if count == settings.CHAT_KEY_FAILURE_LIMIT:
        await db_call(
            audit.record,
            SecurityEvent.Kind.KEY_THROTTLED,
            address=address,
            failures=count,
            seconds=math.ceil(left),
        )
