"""``/healthz``: whether this worker can serve — its database and its channel layer."""

from channels.db import database_sync_to_async
from django.db import connection
from django.http import JsonResponse

from .live import layer


@database_sync_to_async
def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


async def healthz(request) -> JsonResponse:
    checks = {
        "database": await _database_ok(),
        "channel_layer": await layer.reachable("health"),
    }
    return JsonResponse(
        {"ok": all(checks.values()), **checks}, status=200 if all(checks.values()) else 503
    )
