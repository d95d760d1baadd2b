"""Ending live connections with their credential: a logout ends its session's, a
password change every other session's, a deactivation or a deletion all of the user's,
a revoked key its own — on every worker, through the user's control group
(conversations/live/control.py). Each ending is recorded in the audit log.

Called from signals (access/signals.py), so from sync code; the message leaves once
the transaction that ended the credential commits.
"""

import asyncio
import contextvars
import logging
from contextlib import contextmanager

from asgiref.sync import async_to_sync
from django.db import transaction

from conversations.live import control
from conversations.live import credentials as what

from . import audit
from .models import SecurityEvent

log = logging.getLogger(__name__)

LOGGED_OUT = "logged_out"
PASSWORD_CHANGED = "password_changed"
DEACTIVATED = "deactivated"
DELETED = "deleted"
KEY_REVOKED = "key_revoked"

_pending: set[asyncio.Task] = set()
# A password change made by a logged-in session (the account page): its own
# connections follow it to its new session key instead of ending.
_changing: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "password_change", default=None
)


def end_session(*, user, session_key: str, request=None) -> None:
    audit.record(SecurityEvent.Kind.SESSION_ENDED, user=user, request=request, reason=LOGGED_OUT)
    _publish(user.pk, LOGGED_OUT, what=what.SESSION, session=session_key)


def end_other_sessions(*, user) -> None:
    """The password changed: sessions that do not carry its new hash end (during a
    ``password_change``, once its session has its new key)."""
    audit.record(SecurityEvent.Kind.SESSION_ENDED, user=user, reason=PASSWORD_CHANGED)
    change = _changing.get()
    if change is not None and change["user_id"] == user.pk:
        change["changed"] = True
        return
    _publish(user.pk, PASSWORD_CHANGED, what=what.PASSWORD, hash=user.get_session_auth_hash())


@contextmanager
def password_change(request):
    """Around a session's change of its own password: Django gives that session a new
    key and the new hash (update_session_auth_hash); its live connections are told to
    follow it (``renew``), and every other session's end."""
    change = {"user_id": request.user.pk, "changed": False}
    before = request.session.session_key
    token = _changing.set(change)
    try:
        yield
    finally:
        _changing.reset(token)
        if change["changed"]:
            _publish(
                request.user.pk,
                PASSWORD_CHANGED,
                what=what.PASSWORD,
                hash=request.user.get_session_auth_hash(),
                renew={"from": before, "to": request.session.session_key},
            )


def end_user(*, user, reason: str) -> None:
    """Every live connection of the user, sessions and keys."""
    audit.record(
        SecurityEvent.Kind.SESSION_ENDED,
        user=user if reason != DELETED else None,
        username=user.get_username(),
        reason=reason,
    )
    _publish(user.pk, reason, what=what.USER)


def end_key(*, key) -> None:
    _publish(key.owner_id, KEY_REVOKED, what=what.KEY, key=key.pk)


def _publish(user_id, reason: str, **ends) -> None:
    message = control.credential_ended(user_id, reason=reason, **ends)
    transaction.on_commit(lambda: _send(message))


async def _end(message: dict) -> None:
    try:
        await control.end_credential(message)
    except Exception:
        log.warning("could not end the live connections of user %s", message["user"])


def _send(message: dict) -> None:
    """Sent from wherever the change was made: a thread of a worker (a view), or a
    process with no event loop (a management command)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    try:
        if loop is None:
            async_to_sync(control.end_credential)(message)
        else:
            task = loop.create_task(_end(message))
            _pending.add(task)
            task.add_done_callback(_pending.discard)
    except Exception:
        log.warning("could not end the live connections of user %s", message["user"])
