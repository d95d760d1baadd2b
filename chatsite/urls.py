from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from conversations import health, views_keys
from conversations import views as chat_views
from conversations.api import api
from conversations.metrics import metrics_view
from conversations.openai_compat import openai_api
from webhooks import api as webhooks_api  # noqa: F401  (adds /api/webhooks to `api`)

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("v1/", openai_api.urls),
    path("settings/api-keys/", views_keys.api_keys, name="api-keys"),
    path("settings/api-keys/<int:key_id>/revoke/", views_keys.revoke, name="api-key-revoke"),
    path("login/", chat_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("webhooks.urls")),
    path("", include("quotas.urls")),
    path("", include("review.urls")),
    path("", include("conversations.urls")),
]
