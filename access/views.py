"""The login and logout pages: passwords (throttled by axes), single sign-on when it is
configured, and a logout that ends the provider's session too."""

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.http import HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode

from . import oidc, sessions


def login_page(request) -> dict:
    """What the login page shows besides its form: the ways to log in."""
    return {
        "signup_enabled": settings.CHAT_SIGNUP_ENABLED,
        "password_login": settings.CHAT_PASSWORD_LOGIN,
        "sso_enabled": oidc.enabled(),
        "sso_label": settings.CHAT_OIDC_LABEL,
        "sso_failed": "sso" in request.GET,
    }


class LoginView(auth_views.LoginView):
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        return super().get_context_data(**login_page(self.request), **kwargs)

    def post(self, request, *args, **kwargs):
        if not settings.CHAT_PASSWORD_LOGIN:
            return redirect("login")
        return super().post(request, *args, **kwargs)


class LogoutView(auth_views.LogoutView):
    """Logs out (which ends this session's live connections, access/signals.py); a
    session that came from single sign-on goes on to end the provider's session."""

    def post(self, request, *args, **kwargs):
        id_token = request.session.get("oidc_id_token")
        response = super().post(request, *args, **kwargs)
        if id_token and (url := oidc.end_session_url(request, id_token)):
            return HttpResponseRedirect(url)
        return response


class PasswordChangeView(auth_views.PasswordChangeView):
    """Changing one's password ends the live connections of every other session; this
    session's go on, following it to its new key (access/sessions.py)."""

    def form_valid(self, form):
        with sessions.password_change(self.request):
            return super().form_valid(form)


def admin_login(request):
    """The admin's login when password login is off: the site's login page, which
    offers single sign-on, then back to the admin."""
    next_url = request.GET.get("next") or reverse("admin:index")
    return HttpResponseRedirect(f"{reverse('login')}?{urlencode({'next': next_url})}")
