"""API keys: making and revoking the keys integrations authenticate with.

A key is ``chs_<8 characters>_<secret>``. Its first 12 characters (the prefix) are
stored in clear to find the row and to show people which key is which; of the whole
key only a SHA-256 hash is stored (api/auth.py compares it in constant time). Keys are
256-bit random strings, so a fast hash is enough: there is nothing to brute-force. No
key is ever logged.
"""

import hashlib
import secrets
import string
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..models import ApiKey

KEY_START = "chs_"
PREFIX_CHARS = len(KEY_START) + 8
_ALPHABET = string.ascii_letters + string.digits


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def create_api_key(
    *,
    owner,
    name: str = "",
    scope: str = ApiKey.Scope.CHAT,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key for ``owner``, of ``scope`` (``read`` or ``chat``), refused from
    ``expires_at`` on (None: never); returns the saved row and the key, which is shown
    once."""
    if scope not in ApiKey.Scope.values:
        raise ValueError(f"unknown API key scope {scope!r}")
    for _ in range(5):
        prefix = KEY_START + "".join(secrets.choice(_ALPHABET) for _ in range(8))
        raw = f"{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    owner=owner,
                    name=name.strip()[:100],
                    prefix=prefix,
                    hashed_key=hash_key(raw),
                    scope=scope,
                    expires_at=expires_at,
                )
        except IntegrityError:  # a prefix taken already: 62**8 makes this rare
            continue
        return key, raw
    raise RuntimeError("could not find a free API key prefix")


def revoke_api_key(*, owner, key_id: int) -> bool:
    """Revoke one of ``owner``'s keys; it stops working within a second, and the live
    streams it opened end."""
    return bool(revoke_api_keys(keys=ApiKey.objects.filter(owner=owner, pk=key_id)))


def revoke_api_keys(*, keys) -> int:
    """Revoke the ``keys`` (a query of them) still in use, anyone's (staff, in the
    admin); returns how many were. Each is saved, not updated in bulk: access/signals.py
    hears each revocation (the audit log, the end of the key's live streams)."""
    with transaction.atomic():
        found = list(keys.select_for_update().filter(revoked_at__isnull=True))
        now = timezone.now()
        for key in found:
            key.revoked_at = now
            key.save(update_fields=["revoked_at"])
    return len(found)
