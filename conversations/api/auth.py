"""Who calls the HTTP APIs: ``Authorization: Bearer <API key>``, else the browser's
session (with its CSRF token on anything but a read). The request keeps which
credential it came with (``request.credential``), so a live stream it opens ends with
it."""

import hashlib
import hmac
import time
from datetime import timedelta
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import AuthenticationError, HttpError
from ninja.security import HttpBearer
from ninja.utils import check_csrf

from access import throttling

from ..db import db_call
from ..live.credentials import Credential
from ..models import ApiKey
from ..services.apikeys import KEY_START, PREFIX_CHARS, hash_key

# last_used_at is written at most this often per key, not on every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_NO_MATCH = hashlib.sha256(b"no such key").hexdigest()


def key_owner(raw: str):
    """The active user a key belongs to, or None (unknown, revoked, inactive user)."""
    key = active_key(raw)
    return key.owner if key is not None else None


def active_key(raw: str) -> ApiKey | None:
    """The key, with its owner, if it works: known, not revoked, its owner active."""
    key = (
        ApiKey.objects.select_related("owner")
        .filter(prefix=raw[:PREFIX_CHARS], revoked_at__isnull=True)
        .first()
        if raw.startswith(KEY_START)
        else None
    )
    # Compare even when no row matched, so a miss takes as long as a wrong secret.
    matches = hmac.compare_digest(key.hashed_key if key else _NO_MATCH, hash_key(raw))
    if key is None or not matches or not key.owner.is_active:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


# A key's owner is remembered for this long (and a wrong key's "nobody" too): busy
# integrations make no database call per request, and a revoked key stops working
# within a second on every worker.
KEY_CACHE_S = 1.0
_recent: dict[str, tuple[float, Any]] = {}


async def akey(raw: str, *, before_lookup=None) -> ApiKey | None:
    """active_key, remembered for KEY_CACHE_S. ``before_lookup`` is awaited before the
    database is asked (not when the key is remembered), and may refuse by raising."""
    digest = hash_key(raw)
    now = time.monotonic()
    found = _recent.get(digest)
    if found is not None and found[0] > now:
        return found[1]
    if before_lookup is not None:
        await before_lookup()
    key = await db_call(active_key, raw)
    if len(_recent) > 10_000:
        _recent.clear()
    _recent[digest] = (now + KEY_CACHE_S, key)
    return key


class CsrfFailed(HttpError):
    def __init__(self) -> None:
        super().__init__(403, "A browser session must send its CSRF token (X-CSRFToken).")


class ApiAuth(HttpBearer):
    """``Authorization: Bearer <key>``; without the header, the browser's session, which
    must send its CSRF token on anything but a read.

    A request that sends an Authorization header is judged by it alone: a wrong key is
    refused even when a session cookie comes along.
    """

    csrf = True  # tells the interactive docs to send the token

    async def __call__(self, request: HttpRequest):
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthenticationError(401, "Send the key as `Authorization: Bearer <key>`.")
            return await self.authenticate(request, token.strip())
        user = await request.auser()
        if not user.is_authenticated:
            return None
        if request.method not in SAFE_METHODS and check_csrf(request) is not None:
            raise CsrfFailed()
        request.credential = Credential.of_session(user, request.session)
        return user

    async def authenticate(self, request: HttpRequest, token: str):
        """The key's owner; an address that failed too often is refused (429) before
        the database is asked, and every failure counts (access/throttling.py)."""
        key = await akey(token, before_lookup=lambda: throttling.check_key_attempts(request))
        if key is None:
            await throttling.key_failed(request)
            return None
        request.credential = Credential.of_key(key)
        return key.owner
