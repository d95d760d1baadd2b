"""Single sign-on over OpenID Connect, through mozilla-django-oidc.

Configured from the environment (chatsite/settings.py, ``CHAT_OIDC_*``): the issuer,
whose endpoints are discovered from its ``/.well-known/openid-configuration`` the first
time they are needed (or each endpoint given outright), the client id and secret, the
scopes, and optionally a claim that makes staff. A person is found by the provider's
``sub`` (access.models.SsoIdentity); the first login creates their user, named after
``preferred_username`` (else the e-mail's local part), made unique.
"""

import logging
import re
from urllib.parse import urlencode

import httpx
import jwt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

from . import audit
from .models import SecurityEvent, SsoIdentity

log = logging.getLogger(__name__)

BACKEND = "access.oidc.Backend"
_SETTINGS = {
    "authorization_endpoint": "OIDC_OP_AUTHORIZATION_ENDPOINT",
    "token_endpoint": "OIDC_OP_TOKEN_ENDPOINT",
    "userinfo_endpoint": "OIDC_OP_USER_ENDPOINT",
    "jwks_uri": "OIDC_OP_JWKS_ENDPOINT",
    "end_session_endpoint": "CHAT_OIDC_END_SESSION_ENDPOINT",
}
_discovered: dict | None = None


def enabled() -> bool:
    return bool(settings.CHAT_OIDC_CLIENT_ID)


def endpoints() -> dict[str, str]:
    """The provider's endpoints: those set in the environment, the rest discovered from
    the issuer once per process (raises if the issuer cannot be reached)."""
    global _discovered
    found = {name: getattr(settings, setting, "") for name, setting in _SETTINGS.items()}
    missing = [name for name, value in found.items() if not value]
    if missing and settings.CHAT_OIDC_ISSUER:
        if _discovered is None:
            url = settings.CHAT_OIDC_ISSUER.rstrip("/") + "/.well-known/openid-configuration"
            answer = httpx.get(url, timeout=settings.OIDC_TIMEOUT)
            answer.raise_for_status()
            _discovered = answer.json()
        found.update({name: _discovered.get(name) or "" for name in missing})
    return found


def end_session_url(request, id_token: str) -> str | None:
    """Where a logout sends the browser so the provider's session ends too (None when the
    provider has no end-session endpoint); it comes back to the login page."""
    try:
        endpoint = endpoints()["end_session_endpoint"]
    except Exception:
        log.warning("the single sign-on provider could not be reached for its logout")
        return None
    if not endpoint:
        return None
    query = urlencode(
        {
            "id_token_hint": id_token,
            "post_logout_redirect_uri": request.build_absolute_uri(reverse("login")),
        }
    )
    return f"{endpoint}?{query}"


def _is_staff(claims: dict) -> bool | None:
    """What ``CHAT_OIDC_STAFF_CLAIM`` says of these claims (None when it is not set):
    ``name`` — the claim is true; ``name=value`` — the claim is, or lists, ``value``."""
    rule = settings.CHAT_OIDC_STAFF_CLAIM
    if not rule:
        return None
    name, _, value = rule.partition("=")
    claim = claims.get(name.strip())
    if not value:
        return claim is True or (isinstance(claim, str) and claim.lower() in {"true", "1"})
    value = value.strip()
    return claim == value or (isinstance(claim, list) and value in claim)


def _free_username(claims: dict) -> str:
    User = get_user_model()
    wanted = claims.get("preferred_username") or (claims.get("email") or "").split("@")[0]
    base = re.sub(r"[^\w.@+-]", "", str(wanted))[:140] or "user"
    name, n = base, 1
    while User.objects.filter(username__iexact=name).exists():
        n += 1
        name = f"{base}{n}"
    return name


class Backend(OIDCAuthenticationBackend):
    """The provider's users as chatsite users, found by (issuer, sub)."""

    def __init__(self, *args, **kwargs) -> None:
        # Endpoints are read when a login comes back (authenticate), not here: Django
        # builds every backend for every login, passwords included, and those must not
        # wait for the provider.
        self.UserModel = get_user_model()
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None

    def authenticate(self, request, **kwargs):
        if request is None or "code" not in request.GET or "state" not in request.GET:
            return None
        try:
            found = endpoints()
        except Exception:
            log.warning("the single sign-on provider could not be reached")
            return None
        self.OIDC_OP_TOKEN_ENDPOINT = found["token_endpoint"]
        self.OIDC_OP_USER_ENDPOINT = found["userinfo_endpoint"]
        self.OIDC_OP_JWKS_ENDPOINT = found["jwks_uri"]
        return super().authenticate(request, **kwargs)

    def retrieve_matching_jwk(self, token):
        """The key that signed the ID token. A token without a key id (a provider with
        one key may leave it out) is checked against that one key, never any key."""
        if "kid" in jwt.get_unverified_header(token):
            return super().retrieve_matching_jwk(token)
        answer = httpx.get(self.OIDC_OP_JWKS_ENDPOINT, timeout=settings.OIDC_TIMEOUT)
        answer.raise_for_status()
        keys = [
            key
            for key in answer.json().get("keys", [])
            if key.get("use", "sig") == "sig"
            and key.get("alg", self.OIDC_RP_SIGN_ALGO) == self.OIDC_RP_SIGN_ALGO
        ]
        if len(keys) != 1:
            raise SuspiciousOperation("The ID token names no key, and the provider has several.")
        return jwt.PyJWK(keys[0])

    def verify_claims(self, claims) -> bool:
        return bool(claims.get("sub"))

    def filter_users_by_claims(self, claims):
        return self.UserModel.objects.filter(
            sso_identity__issuer=self._issuer(), sso_identity__subject=claims["sub"]
        )

    def create_user(self, claims):
        with transaction.atomic():
            user = self.UserModel.objects.create_user(
                _free_username(claims), email=claims.get("email") or ""
            )
            SsoIdentity.objects.create(user=user, issuer=self._issuer(), subject=claims["sub"])
            return self.update_user(user, claims)

    def update_user(self, user, claims):
        staff = _is_staff(claims)
        if staff is not None and user.is_staff != staff:
            user.is_staff = staff
            user.save(update_fields=["is_staff"])
        return user

    def _issuer(self) -> str:
        return settings.CHAT_OIDC_ISSUER or settings.OIDC_RP_CLIENT_ID


class LoginStart(OIDCAuthenticationRequestView):
    """``/oidc/authenticate/``: off to the provider."""

    def get(self, request):
        try:
            self.OIDC_OP_AUTH_ENDPOINT = endpoints()["authorization_endpoint"]
        except Exception:
            log.warning("the single sign-on provider could not be reached")
            return HttpResponseRedirect(reverse("login") + "?sso=failed")
        return super().get(request)


class LoginCallback(OIDCAuthenticationCallbackView):
    """``/oidc/callback/``: back from the provider, logged in or told why not."""

    def login_success(self):
        response = super().login_success()
        audit.record(SecurityEvent.Kind.SSO_LOGIN, user=self.user, request=self.request)
        return response

    def login_failure(self):
        audit.record(
            SecurityEvent.Kind.SSO_REJECTED,
            user=getattr(self, "user", None),
            request=self.request,
            error=self.request.GET.get("error", ""),
        )
        return HttpResponseRedirect(reverse("login") + "?sso=failed")


# The names are mozilla-django-oidc's: its views reverse them.
urlpatterns = [
    path("oidc/authenticate/", LoginStart.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", LoginCallback.as_view(), name="oidc_authentication_callback"),
]
