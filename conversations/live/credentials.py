"""What a live connection was opened with, and whether a "credential ended" message
(live/control.py, ``credential_ended``) ends it.

A connection remembers its user and either its session (the session key, and the
password-derived hash Django stored in it at login) or the API key it authenticated
with. The messages name what ended:

- ``session``: that session (logged out);
- ``password``: every session whose hash is not the user's new one (the password
  changed); the session that changed it may be named in ``renew``: its connections
  follow it to its new key and hash instead;
- ``key``: that API key (revoked);
- ``user``: everything of the user (deactivated or deleted).
"""

from dataclasses import dataclass, replace

from django.contrib.auth import HASH_SESSION_KEY

SESSION = "session"
PASSWORD = "password"
KEY = "key"
USER = "user"


@dataclass(frozen=True)
class Credential:
    user_id: str
    session_key: str | None = None
    session_hash: str | None = None
    key_id: int | None = None

    @classmethod
    def of_session(cls, user, session) -> "Credential":
        return cls(
            user_id=str(user.pk),
            session_key=getattr(session, "session_key", None),
            session_hash=session.get(HASH_SESSION_KEY) if session is not None else None,
        )

    @classmethod
    def of_key(cls, key) -> "Credential":
        return cls(user_id=str(key.owner_id), key_id=key.pk)

    def after(self, ends: dict) -> "Credential | None":
        """What a connection holds once it hears ``ends``: this credential, or the one a
        password change carried it on to, or None when it ended."""
        if renewed := self.renewed_by(ends):
            return renewed
        return None if self.ended_by(ends) else self

    def renewed_by(self, ends: dict) -> "Credential | None":
        """This credential as a password change carried it on (its session changed the
        password and got a new key), else None."""
        renew = ends.get("renew") or {}
        if ends.get("what") != PASSWORD or self.session_key is None:
            return None
        if renew.get("from") != self.session_key:
            return None
        return replace(self, session_key=renew.get("to"), session_hash=ends.get("hash"))

    def ended_by(self, ends: dict) -> bool:
        """Whether the ``ends`` of a credential-ended message covers this credential."""
        what = ends.get("what")
        if what == USER:
            return True
        if what == KEY:
            return self.key_id is not None and self.key_id == ends.get("key")
        if self.key_id is not None:
            return False
        if what == SESSION:
            return self.session_key is not None and self.session_key == ends.get("session")
        if what == PASSWORD:
            return self.session_hash != ends.get("hash")
        return False
