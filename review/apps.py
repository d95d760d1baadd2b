"""The review app: it registers the SQLite median aggregate its usage page needs."""

from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "review"
    verbose_name = "Review"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import aggregates

        aggregates.register_sqlite_median()
