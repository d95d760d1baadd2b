"""Signing secrets and signatures, per the Standard Webhooks specification.

A secret is ``whsec_`` followed by 32 random bytes in base64. Every attempt is signed
anew with its own ``webhook-timestamp`` (receivers refuse old ones), with every secret
that is valid: the current one, and for ``ROTATION_OVERLAP`` after a rotation the
previous one too, space-separated in ``webhook-signature`` so that a receiver holding
either verifies it. Nothing here logs a secret.
"""

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
ROTATION_OVERLAP = timedelta(hours=24)
USER_AGENT = "chatsite-webhooks/1"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signing_secrets(endpoint, *, now: datetime) -> list[str]:
    """The secrets that sign an attempt made ``now``: the current one first."""
    valid = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires and expires > now:
        valid.append(endpoint.previous_secret)
    return valid


def headers(
    *, webhook_id: str, payload: str, secrets_: Sequence[str], timestamp: float
) -> dict[str, str]:
    """The headers of one attempt."""
    moment = datetime.fromtimestamp(int(timestamp), tz=UTC)
    signatures = " ".join(Webhook(secret).sign(webhook_id, moment, payload) for secret in secrets_)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": signatures,
    }
