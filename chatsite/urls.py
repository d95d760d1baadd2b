from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from access import oidc
from access import views as access_views
from conversations import health, views_keys
from conversations.api import api
from conversations.metrics import metrics_view
from conversations.openai_compat import openai_api
from webhooks import api as webhooks_api  # noqa: F401  (adds /api/webhooks to `api`)

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    *(
        # Password login off: the admin's login is the site's (single sign-on).
        []
        if settings.CHAT_PASSWORD_LOGIN
        else [path("admin/login/", access_views.admin_login, name="admin-login")]
    ),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("v1/", openai_api.urls),
    path("settings/api-keys/", views_keys.api_keys, name="api-keys"),
    path("settings/api-keys/<int:key_id>/revoke/", views_keys.revoke, name="api-key-revoke"),
    path("login/", access_views.LoginView.as_view(), name="login"),
    path("logout/", access_views.LogoutView.as_view(), name="logout"),
    path(
        "account/password/",
        access_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    *(oidc.urlpatterns if oidc.enabled() else []),
    path("", include("webhooks.urls")),
    path("", include("quotas.urls")),
    path("", include("review.urls")),
    path("", include("conversations.urls")),
]
