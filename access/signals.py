"""What access listens to: failed logins and lockouts (Django's and axes' signals) go to
the audit log; API keys made and revoked are recorded, and a revoked key's live
connections end; a logout, a password change, a deactivation and a deletion end the
user's live connections opened with what ended (access/sessions.py)."""

from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out, user_login_failed
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from conversations.models import ApiKey

from . import audit, sessions
from .models import SecurityEvent

User = get_user_model()


def _refused_during_lockout(request) -> bool:
    """Whether axes refused this login without counting it (the lockout was on before
    it). Such attempts are not recorded one by one: an attacker cannot fill the log
    faster than the lockouts allow."""
    return bool(
        getattr(request, "axes_locked_out", False)
        and getattr(request, "axes_failures_since_start", None) is None
    )


@receiver(user_login_failed)
def login_failed(sender, credentials: dict, request=None, **kwargs) -> None:
    if _refused_during_lockout(request):
        return
    audit.record(
        SecurityEvent.Kind.LOGIN_FAILED,
        request=request,
        username=str(credentials.get("username") or ""),
        path=request.path if request is not None else "",
    )


@receiver(user_locked_out)
def locked_out(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    if _refused_during_lockout(request):
        return
    audit.record(
        SecurityEvent.Kind.LOCKED_OUT,
        request=request,
        username=str(username or ""),
        address=ip_address,
        path=request.path if request is not None else "",
    )


@receiver(user_logged_out)
def logged_out(sender, request=None, user=None, **kwargs) -> None:
    session = getattr(request, "session", None)
    session_key = getattr(session, "session_key", None)
    if user is None or not session_key:
        return
    # Django deletes the session right after this signal; it is deleted first here, so
    # a page told that its session ended and asking whether it is still logged in
    # hears "no", never the session's last moments.
    session.flush()
    sessions.end_session(user=user, session_key=session_key, request=request)


# --- users: the password, active, deleted -------------------------------------------------


@receiver(pre_save, sender=User)
def user_before(sender, instance, update_fields=None, **kwargs) -> None:
    """Remember what the row held, to see below whether the password or is_active
    changed (a save that names its fields and neither of these is not looked at)."""
    instance._access_before = None
    if instance.pk is None or (
        update_fields is not None and not {"password", "is_active"} & set(update_fields)
    ):
        return
    instance._access_before = (
        User.objects.filter(pk=instance.pk).values_list("password", "is_active").first()
    )


@receiver(post_save, sender=User)
def user_after(sender, instance, created=False, **kwargs) -> None:
    before = getattr(instance, "_access_before", None)
    instance._access_before = None
    if created or before is None:
        return
    password, was_active = before
    if was_active and not instance.is_active:
        sessions.end_user(user=instance, reason=sessions.DEACTIVATED)
    elif password != instance.password:
        sessions.end_other_sessions(user=instance)


@receiver(post_delete, sender=User)
def user_deleted(sender, instance, **kwargs) -> None:
    sessions.end_user(user=instance, reason=sessions.DELETED)


# --- API keys ------------------------------------------------------------------------------


@receiver(pre_save, sender=ApiKey)
def key_before(sender, instance, **kwargs) -> None:
    instance._access_revoked = None
    if instance.pk is not None and instance.revoked_at is not None:
        instance._access_revoked = (
            ApiKey.objects.filter(pk=instance.pk).values_list("revoked_at", flat=True).first()
        )


@receiver(post_save, sender=ApiKey)
def key_after(sender, instance, created=False, **kwargs) -> None:
    if created:
        _record_key(SecurityEvent.Kind.KEY_CREATED, instance)
    elif instance.revoked_at is not None and getattr(instance, "_access_revoked", 1) is None:
        _record_key(SecurityEvent.Kind.KEY_REVOKED, instance)
        sessions.end_key(key=instance)


def _record_key(kind: str, key: ApiKey) -> None:
    audit.record(kind, user=key.owner, key=key.pk, prefix=key.prefix, name=key.name)
