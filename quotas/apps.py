"""The quotas app: it checks every reply's start and every live connection through the
core's hooks (conversations/hooks.py), and records what each reply spent."""

from django.apps import AppConfig


class QuotasConfig(AppConfig):
    name = "quotas"
    verbose_name = "Quotas"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from conversations import hooks

        from . import connections, services

        hooks.reply_starting.append(services.check_reply_start)
        hooks.reply_final.append(services.record_reply)
        hooks.connection_opening.append(connections.open_connection)
        hooks.worker_started.append(connections.start_refresher)
