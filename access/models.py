"""The security audit log: what happened to whose access, from where, and when."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class SecurityEvent(models.Model):
    """One security-relevant event. Rows keep the username and the address after the
    user is deleted; nothing edits them."""

    class Kind(models.TextChoices):
        LOGIN_FAILED = "login_failed", "login failed"
        LOCKED_OUT = "locked_out", "locked out"
        KEY_THROTTLED = "key_throttled", "API key attempts throttled"
        SSO_LOGIN = "sso_login", "SSO login"
        SSO_REJECTED = "sso_rejected", "SSO login rejected"
        KEY_CREATED = "key_created", "API key created"
        KEY_REVOKED = "key_revoked", "API key revoked"
        SESSION_ENDED = "session_ended", "sessions ended"
        QUOTA_CHANGED = "quota_changed", "quota changed"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # The name given (a failed login's), else the user's at the time.
    username = models.CharField(max_length=150, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at"]
        indexes = [
            models.Index(fields=["kind", "-at"]),
            models.Index(fields=["user", "-at"]),
            models.Index(fields=["-at"]),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} · {self.username or '—'}"


class SsoIdentity(models.Model):
    """Which user an identity of the single sign-on provider logs in as: the provider's
    ``sub`` for its issuer, never the e-mail address (an address can change hands)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identity"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="sso_identity_unique")
        ]
        verbose_name = "SSO identity"
        verbose_name_plural = "SSO identities"

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"
