"""The access app: throttling (django-axes and the API-key counter), the audit log,
single sign-on, and the signals that end live connections with their credential."""

from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "access"
    verbose_name = "Access"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import signals  # noqa: F401 - connects the receivers
