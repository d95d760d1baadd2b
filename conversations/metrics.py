"""What a worker tells an operator: Prometheus metrics, and the ``/metrics`` page.

Each worker process keeps its own figures; Prometheus scrapes every worker (README,
"Metrics"). The page answers a request that brings ``Authorization: Bearer
<CHAT_METRICS_TOKEN>``, a logged-in staff member, or — when no token is configured — a
direct connection from the worker's own host (not one passed on by a proxy).
"""

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from .runs import registry

# Latencies in seconds, from a millisecond to half a minute.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REPLIES_STREAMING = Gauge("chatsite_replies_streaming", "Replies this worker is streaming now.")
REPLIES_STREAMING.set_function(lambda: len(registry.running()))
REPLIES_STARTED = Counter("chatsite_replies_started", "Replies started by this worker.")
REPLIES_FINISHED = Counter(
    "chatsite_replies_finished", "Replies ended by this worker, by final status.", ["status"]
)
TIME_TO_FIRST_TOKEN = Histogram(
    "chatsite_time_to_first_token_seconds",
    "From a reply's start to the model's first text.",
    buckets=_SECONDS,
)
MODEL_ERRORS = Counter(
    "chatsite_model_errors", "Replies the model failed, by error code.", ["code"]
)
FRAMES_PUBLISHED = Counter("chatsite_frames_published", "Token frames this worker published.")
FRAMES_DROPPED = Counter(
    "chatsite_frames_dropped", "Frames dropped for a viewer that fell behind in this worker."
)
FRAMES_FILLED = Counter(
    "chatsite_frames_filled", "Gaps of viewers filled, by where the frames came from.", ["source"]
)
RESYNCS = Counter("chatsite_resyncs", "Snapshots re-sent to viewers after a loss.")
FLUSH_SECONDS = Histogram(
    "chatsite_db_flush_seconds",
    "How long one flush (every streaming reply of the worker) took in the database.",
    buckets=_SECONDS,
)
FLUSH_REPLIES = Histogram(
    "chatsite_db_flush_replies",
    "Replies saved by one flush.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
)
SEND_DB_SECONDS = Histogram(
    "chatsite_send_db_seconds",
    "How long a send waited for the database (saving the message and the reply).",
    buckets=_SECONDS,
)
CONNECTIONS = Gauge(
    "chatsite_connections", "Live connections open on this worker, by kind.", ["kind"]
)
VIEWERS_LET_GO = Counter(
    "chatsite_viewers_let_go", "Connections aborted because they fell too far behind."
)


def _allowed(request: HttpRequest) -> bool:
    token = settings.CHAT_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    if token or "X-Forwarded-For" in request.headers:
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse("Not allowed.\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
