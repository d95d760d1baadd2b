"""Recording security events (models.SecurityEvent): the one way to write the log.

Any app records through ``record``: the throttles and the signals here, and whoever
changes a quota.
"""

import ipaddress
import logging

from django.http import HttpRequest

from .models import SecurityEvent

log = logging.getLogger(__name__)


def client_address(request: HttpRequest | None) -> str | None:
    """The client's address as the server saw it (daphne's ``--proxy-headers`` puts the
    proxy's X-Forwarded-For there), or None when it is not an IP address."""
    if request is None:
        return None
    address = request.META.get("REMOTE_ADDR") or ""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def record(
    kind: str,
    *,
    user=None,
    request: HttpRequest | None = None,
    username: str = "",
    address: str | None = None,
    **detail,
) -> SecurityEvent:
    """Save one event. ``user`` is whom it concerns (None when unknown); ``username``
    defaults to theirs; ``request`` gives the address; ``detail`` is kept as JSON."""
    if not username and user is not None:
        username = user.get_username()
    return SecurityEvent.objects.create(
        kind=kind,
        user=user if user is not None and user.pk is not None else None,
        username=(username or "")[:150],
        address=address or client_address(request),
        detail=detail,
    )
