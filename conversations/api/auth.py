"""Who calls the HTTP APIs: ``Authorization: Bearer <API key>``, else the browser's
session (with its CSRF token on anything but a read). A key must be neither revoked nor
expired, and a key of scope ``read`` only reads (403 ``key_read_only`` otherwise). The
request keeps which credential it came with (``request.credential``), so a live stream
it opens ends with it."""

import hashlib
import hmac
import time
from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import AuthenticationError, HttpError
from ninja.security import HttpBearer
from ninja.utils import check_csrf

from access import throttling

from .. import errors
from ..db import db_call
from ..errors import ChatError
from ..live.credentials import Credential
from ..models import ApiKey
from ..services.apikeys import KEY_START, PREFIX_CHARS, hash_key

# last_used_at is written at most this often per key, not on every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_NO_MATCH = hashlib.sha256(b"no such key").hexdigest()


def find_key(raw: str) -> ApiKey | None:
    """The key ``raw`` is, when it may be used now (with its owner), else None: unknown,
    revoked, expired, or its owner inactive."""
    now = timezone.now()
    key = (
        ApiKey.objects.select_related("owner")
        .filter(prefix=raw[:PREFIX_CHARS], revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .first()
        if raw.startswith(KEY_START)
        else None
    )
    # Compare even when no row matched, so a miss takes as long as a wrong secret.
    matches = hmac.compare_digest(key.hashed_key if key else _NO_MATCH, hash_key(raw))
    if key is None or not matches or not key.owner.is_active:
        return None
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


def key_owner(raw: str):
    """The active user a usable key belongs to, or None."""
    key = find_key(raw)
    return key.owner if key is not None else None


# A key (and a wrong key's "nobody" too) is remembered for this long: busy integrations
# make no database call per request, and a revoked or expired key stops working within
# a second on every worker.
KEY_CACHE_S = 1.0
_recent: dict[str, tuple[float, Any]] = {}


async def afind_key(raw: str, *, before_lookup=None) -> ApiKey | None:
    """find_key, remembered for KEY_CACHE_S (and never past the key's expiry).
    ``before_lookup`` is awaited before the database is asked (not when the key is
    remembered), and may refuse by raising."""
    digest = hash_key(raw)
    now = time.monotonic()
    found = _recent.get(digest)
    if found is not None and found[0] > now:
        key = found[1]
        if key is None or key.expires_at is None or key.expires_at > timezone.now():
            return key
    if before_lookup is not None:
        await before_lookup()
    key = await db_call(find_key, raw)
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

    def __init__(self, *, reads_only_allowed: bool = True) -> None:
        super().__init__()
        # Whether a key of scope ``read`` may make this API's reads (False: /v1, which
        # is all chat).
        self.reads_only_allowed = reads_only_allowed

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
        key = await afind_key(token, before_lookup=lambda: throttling.check_key_attempts(request))
        if key is None:
            await throttling.key_failed(request)
            return None
        if key.scope == ApiKey.Scope.READ and (
            not self.reads_only_allowed or request.method not in SAFE_METHODS
        ):
            raise ChatError(errors.KEY_READ_ONLY)
        request.api_key = key  # what the conversations it makes are marked with
        request.credential = Credential.of_key(key)
        return key.owner
