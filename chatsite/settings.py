"""chatsite's settings, read from the environment.

Every setting has an embedded default, so a fresh clone runs with nothing configured:
SQLite in ``var/``, the in-memory channel layer, the built-in offline model. Set
``DATABASE_URL``, ``REDIS_URL`` and ``OPENAI_*`` to run on PostgreSQL, Redis and a real
model server. The table in README.md lists every variable.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CHAT_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in var/."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


# --- Core -------------------------------------------------------------------------------

SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",  # first, so `runserver` serves ASGI (WebSockets included)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",  # thousands separators on the quotas usage page
    "channels",
    "axes",  # login throttling (access/throttling.py)
    "ninja",  # the API's interactive docs, served from its own static files
    "conversations",
    "review",
    "webhooks",
    "agents",
    "quotas",
    "access",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "chatsite.middleware.content_security_policy",
    # Last: turns a login axes refused into the lockout page (access/throttling.py).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------
# Under ASGI every request may run in a different thread: connections are not kept
# between requests (CONN_MAX_AGE=0). PostgreSQL uses psycopg 3's pool instead.

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'chatsite.sqlite3'}",
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the writer; IMMEDIATE takes the write lock when a
    # transaction starts, so two replies never deadlock upgrading a read lock, and the
    # busy timeout makes a writer wait for the lock instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["OPTIONS"] = {
        "pool": {
            "min_size": env_int("DATABASE_POOL_MIN", 2),
            "max_size": env_int("DATABASE_POOL_MAX", 20),
            "timeout": env_float("DATABASE_POOL_TIMEOUT_S", 10),
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Threads that run the live path's database work (sends, flushes, final saves, API-key
# lookups, snapshots), each keeping its connection open (conversations/db.py).
# PostgreSQL takes their transactions in parallel (each holds one pooled connection:
# keep it under DATABASE_POOL_MAX). SQLite writes one transaction at a time whatever
# the number, and a writer that finds the lock taken sleeps in steps of up to 100 ms:
# one thread queues them in order instead (bench/, figure 4: half the p50 at 100
# replies).
_ON_SQLITE = DATABASES["default"]["ENGINE"].endswith("sqlite3")
CHAT_DB_THREADS = env_int("CHAT_DB_THREADS", 1 if _ON_SQLITE else 4)
# How long (ms) a busy thread of a worker (its event loop) may hold the interpreter lock
# before a waiting one gets it (Python's switch interval; 0: Python's own, 5 ms). The
# database thread gives the lock up at every SQLite call and waits up to an interval to
# get it back while the loop streams: on SQLite 1 ms cut the first-token p99 at 100
# replies from +53-59 to +42-45 ms; on PostgreSQL the bench showed no clear effect
# (docs/benchmarks.md).
CHAT_GIL_SWITCH_MS = env_float("CHAT_GIL_SWITCH_MS", 1.0 if _ON_SQLITE else 0)

# --- Channel layer ----------------------------------------------------------------------
# One process: the in-memory layer. Several processes: Redis carries every event
# between them. Token traffic needs far more than the default capacity of 100.

# Several comma-separated REDIS_URLs shard the layer; REDIS_SENTINELS (host:port,…) with
# REDIS_SENTINEL_MASTER finds the master through Sentinel instead.

REDIS_URL = os.environ.get("REDIS_URL", "")
REDIS_SENTINELS = env_list("REDIS_SENTINELS")
# All viewers in one process share one Redis list per process; size it for bursts.
CHANNEL_CAPACITY = env_int("CHANNEL_CAPACITY", 10000)
# Fail fast when Redis is down, and after a Redis restart retry once, so a stale pooled
# connection is replaced unnoticed. No read timeout: redis-py 8's default (5 s) races
# channels_redis' 5 s blocking pop, and a longer one makes a receive cancelled mid-pop
# linger until it expires.
_REDIS_OPTIONS = {
    "socket_connect_timeout": 2,
    "socket_timeout": None,
    "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
    "retry_on_error": [RedisConnectionError],
}
if REDIS_SENTINELS:
    _REDIS_HOSTS = [
        {
            "sentinels": [(h, int(p)) for h, p in (s.rsplit(":", 1) for s in REDIS_SENTINELS)],
            "master_name": os.environ.get("REDIS_SENTINEL_MASTER", "mymaster"),
            **_REDIS_OPTIONS,
        }
    ]
else:
    _REDIS_HOSTS = [{"address": url, **_REDIS_OPTIONS} for url in env_list("REDIS_URL")]
if _REDIS_HOSTS:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": _REDIS_HOSTS,
                "capacity": CHANNEL_CAPACITY,
                "expiry": 60,
                # At least daphne's WebSocket timeout, so no viewer silently leaves.
                "group_expiry": 86400,
                "prefix": os.environ.get("CHANNEL_PREFIX", "chatsite"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": CHANNEL_CAPACITY, "expiry": 60},
        }
    }

# --- The model --------------------------------------------------------------------------
# Nothing set: the built-in offline demo model. OPENAI_API_KEY and/or OPENAI_BASE_URL:
# ChatOpenAI against OpenAI or any compatible server (vLLM, Ollama, llama.cpp server).

OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "")
CHAT_MODEL = os.environ.get("CHAT_MODEL", "")
# Several models (a JSON list of {"name", "model"?, "base_url"?, "api_key"?, "label"?},
# the first the default); unset: the one model above. See conversations/llm/catalog.py.
CHAT_MODELS = os.environ.get("CHAT_MODELS", "")
CHAT_SYSTEM_PROMPT = os.environ.get(
    "CHAT_SYSTEM_PROMPT", "You are a helpful assistant. Answer in Markdown."
)
CHAT_HISTORY_MAX_TOKENS = env_int("CHAT_HISTORY_MAX_TOKENS", 6000)
CHAT_OFFLINE_DELAY_MS = env_float("CHAT_OFFLINE_DELAY_MS", 20)
CHAT_CONNECT_TIMEOUT_S = env_float("CHAT_CONNECT_TIMEOUT_S", 10)
CHAT_MODEL_RETRIES = env_int("CHAT_MODEL_RETRIES", 1)

# --- Replies ----------------------------------------------------------------------------

CHAT_REPLY_TIMEOUT_S = env_float("CHAT_REPLY_TIMEOUT_S", 300)
CHAT_CHUNK_TIMEOUT_S = env_float("CHAT_CHUNK_TIMEOUT_S", 60)
CHAT_RUN_LEASE_S = env_float("CHAT_RUN_LEASE_S", 30)
# This worker's name, the same across its restarts: a restarted worker ends at once the
# replies it was running when it stopped (other workers' go by the lease). Unset:
# `manage.py serve` uses the host name and port.
CHAT_WORKER_ID = os.environ.get("CHAT_WORKER_ID", "")
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 32000)
CHAT_FRAME_INTERVAL_MS = env_float("CHAT_FRAME_INTERVAL_MS", 30)
CHAT_FLUSH_INTERVAL_MS = env_float("CHAT_FLUSH_INTERVAL_MS", 250)
# What a viewer is sent of a conversation when it joins: its latest messages, at most
# this many and (beyond the latest exchange, whatever its size) this many characters;
# older ones come a page at a time when the client asks (``history``).
CHAT_PAGE_MESSAGES = env_int("CHAT_PAGE_MESSAGES", 50)
CHAT_PAGE_CHARS = env_int("CHAT_PAGE_CHARS", 100_000)
# Snapshots and history pages a connection may ask for: a burst of this many, then one
# more per interval; beyond that the answer is an ``error`` rate_limited.
CHAT_RESYNC_BURST = env_int("CHAT_RESYNC_BURST", 10)
CHAT_RESYNC_INTERVAL_S = env_float("CHAT_RESYNC_INTERVAL_S", 1.0)
# A viewer (WebSocket or event stream) holding more than this many bytes its network
# connection has not taken, and reading none of them for CHAT_VIEWER_STALL_S seconds, is
# too far behind: it is disconnected (it reconnects and resumes) instead of buffered
# without limit (chatsite/server.py).
CHAT_VIEWER_MAX_BUFFER_BYTES = env_int("CHAT_VIEWER_MAX_BUFFER_BYTES", 1024 * 1024)
CHAT_VIEWER_STALL_S = env_float("CHAT_VIEWER_STALL_S", 2.0)
# Replies one user may have streaming at once, over every surface (0: no limit); one
# more is refused with 429 before anything is saved.
CHAT_MAX_STREAMING_PER_USER = env_int("CHAT_MAX_STREAMING_PER_USER", 4)

# --- Quotas: how much each person may use -----------------------------------------------
# quotas/ (README, "Quotas and rate limits"). The defaults for everyone; staff give a
# group or a person other figures in the admin. 0: no limit.

# Tokens (prompt + completion, as the model reports them) per day and per calendar
# month (UTC); a reply that would start past either is refused until the next one.
CHAT_QUOTA_TOKENS_PER_DAY = env_int("CHAT_QUOTA_TOKENS_PER_DAY", 0)
CHAT_QUOTA_TOKENS_PER_MONTH = env_int("CHAT_QUOTA_TOKENS_PER_MONTH", 0)
# Replies one person may start per minute, over every surface.
CHAT_QUOTA_REQUESTS_PER_MINUTE = env_int("CHAT_QUOTA_REQUESTS_PER_MINUTE", 0)
# Live connections (WebSockets and event streams) one person may hold open at once.
CHAT_QUOTA_CONNECTIONS = env_int("CHAT_QUOTA_CONNECTIONS", 50)

# --- Agents: tools the model may call ---------------------------------------------------
# agents/ (README, "Tools"). A conversation with no tools takes the plain path.

# The tools a new conversation starts with (comma-separated names; empty: none).
CHAT_DEFAULT_TOOLS = env_list("CHAT_DEFAULT_TOOLS")
# Model turns one reply may take; one more ends it failed with agent_step_limit.
CHAT_AGENT_MAX_STEPS = env_int("CHAT_AGENT_MAX_STEPS", 8)
# One tool call longer than this fails with tool_timeout; the agent goes on.
CHAT_TOOL_TIMEOUT_S = env_float("CHAT_TOOL_TIMEOUT_S", 30)
# A tool's output longer than this is cut, with a visible marker.
CHAT_TOOL_OUTPUT_MAX_CHARS = env_int("CHAT_TOOL_OUTPUT_MAX_CHARS", 20_000)
# How long listing an MCP server's tools may take (the admin, GET /api/tools).
CHAT_MCP_LIST_TIMEOUT_S = env_float("CHAT_MCP_LIST_TIMEOUT_S", 10)

# --- Limits of what a request may bring ------------------------------------------------
# The same on every surface (README, "Limits and refusals").

# A conversation's system prompt (the JSON API's create, /v1's system messages).
CHAT_MAX_SYSTEM_PROMPT_CHARS = env_int("CHAT_MAX_SYSTEM_PROMPT_CHARS", 20000)
# Messages in one /v1 request (its history included).
CHAT_MAX_REQUEST_MESSAGES = env_int("CHAT_MAX_REQUEST_MESSAGES", 256)
# max_tokens / max_completion_tokens of a /v1 request above this are lowered to it.
CHAT_MAX_COMPLETION_TOKENS = env_int("CHAT_MAX_COMPLETION_TOKENS", 32768)
# A request body (JSON or form) over this is refused with 413 before it is parsed. 4 MiB
# holds the largest system prompt and message even written as \uXXXX escapes of astral
# characters (12 bytes a character: 624 KB) six times over, and a /v1 history of 100
# messages of 10,000 characters of plain UTF-8.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("CHAT_MAX_REQUEST_BYTES", 4 * 1024 * 1024)

# --- Operations ------------------------------------------------------------------------
# /metrics (Prometheus) answers this bearer token, staff, or — without a token — direct
# connections from the worker's own host.
CHAT_METRICS_TOKEN = os.environ.get("CHAT_METRICS_TOKEN", "")

# --- Webhooks ---------------------------------------------------------------------------
# Each user's endpoints hear of their replies' final states and of their conversations
# being created and deleted (README, "Webhooks"). Deliveries leave from every worker.

# Delays in seconds before each retry of a failed delivery (then it is failed); each
# gets up to 10 % of jitter. Default: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
CHAT_WEBHOOK_RETRY_SCHEDULE = [
    float(delay)
    for delay in env_list("CHAT_WEBHOOK_RETRY_SCHEDULE", "5,300,1800,7200,18000,36000,36000")
]
# One attempt, from resolving the name to the end of the answer's first 4 KiB.
CHAT_WEBHOOK_TIMEOUT_S = env_float("CHAT_WEBHOOK_TIMEOUT_S", 10)
# http:// URLs, and addresses that are loopback, private, link-local or otherwise not
# public (after DNS, on every attempt): refused unless set (tests, closed networks).
CHAT_WEBHOOK_ALLOW_HTTP = env_bool("CHAT_WEBHOOK_ALLOW_HTTP")
CHAT_WEBHOOK_ALLOW_PRIVATE = env_bool("CHAT_WEBHOOK_ALLOW_PRIVATE")
CHAT_MAX_WEBHOOKS_PER_USER = env_int("CHAT_MAX_WEBHOOKS_PER_USER", 10)
# An endpoint whose every attempt failed for this long is disabled (its owner sees why).
CHAT_WEBHOOK_DISABLE_AFTER_S = env_float("CHAT_WEBHOOK_DISABLE_AFTER_S", 5 * 86400)
# How often a worker looks for due deliveries made elsewhere (its own go out at once),
# and how many attempts it has in flight at most.
CHAT_WEBHOOK_POLL_S = env_float("CHAT_WEBHOOK_POLL_S", 2)
CHAT_WEBHOOK_CONCURRENCY = env_int("CHAT_WEBHOOK_CONCURRENCY", 10)

# --- Access: login throttling, API-key throttling -------------------------------------
# access/ (README, "Access"). Failed logins (the chat's and the admin's) are counted per
# username and per address by django-axes in the database every worker shares; past the
# limit the username, or the address, is refused until the cool-off ends.

AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out login before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env_bool("CHAT_LOGIN_THROTTLE", True)
AXES_FAILURE_LIMIT = env_int("CHAT_LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(seconds=env_float("CHAT_LOGIN_COOLOFF_S", 900))
# Each entry is counted on its own: the username alone, the address alone.
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
# Attempts refused during a lockout neither count nor extend it: the cool-off runs from
# the failure that locked.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "access.throttling.lockout_response"
# The address daphne saw: with --proxy-headers (behind nginx) it is taken from the
# proxy's X-Forwarded-For; a header a client sends directly is never trusted.
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]
AXES_VERBOSE = False
# Failed API-key authentications per address and fixed window; past the limit the
# address is refused with 429 until the window ends (0: no limit).
CHAT_KEY_FAILURE_LIMIT = env_int("CHAT_KEY_FAILURE_LIMIT", 20)
CHAT_KEY_FAILURE_WINDOW_S = env_float("CHAT_KEY_FAILURE_WINDOW_S", 300)

# Single sign-on over OpenID Connect (access/oidc.py), on when a client id is set. The
# issuer's endpoints are discovered from it; any CHAT_OIDC_*_ENDPOINT set wins.
CHAT_OIDC_ISSUER = os.environ.get("CHAT_OIDC_ISSUER", "")
CHAT_OIDC_CLIENT_ID = os.environ.get("CHAT_OIDC_CLIENT_ID", "")
# A claim that makes a person staff at each login: "name" (true) or "name=value" (the
# claim is, or lists, value); unset: staff is set in the admin only.
CHAT_OIDC_STAFF_CLAIM = os.environ.get("CHAT_OIDC_STAFF_CLAIM", "")
CHAT_OIDC_LABEL = os.environ.get("CHAT_OIDC_LABEL", "Log in with SSO")
CHAT_OIDC_END_SESSION_ENDPOINT = os.environ.get("CHAT_OIDC_END_SESSION_ENDPOINT", "")
# Off: only single sign-on logs people in (the chat's and the admin's login pages).
CHAT_PASSWORD_LOGIN = env_bool("CHAT_PASSWORD_LOGIN", True)
OIDC_RP_CLIENT_ID = CHAT_OIDC_CLIENT_ID
OIDC_RP_CLIENT_SECRET = os.environ.get("CHAT_OIDC_CLIENT_SECRET", "")
OIDC_RP_SCOPES = os.environ.get("CHAT_OIDC_SCOPES", "openid email profile")
OIDC_RP_SIGN_ALGO = os.environ.get("CHAT_OIDC_SIGN_ALGO", "RS256")
OIDC_OP_AUTHORIZATION_ENDPOINT = os.environ.get("CHAT_OIDC_AUTHORIZATION_ENDPOINT", "")
OIDC_OP_TOKEN_ENDPOINT = os.environ.get("CHAT_OIDC_TOKEN_ENDPOINT", "")
OIDC_OP_USER_ENDPOINT = os.environ.get("CHAT_OIDC_USERINFO_ENDPOINT", "")
OIDC_OP_JWKS_ENDPOINT = os.environ.get("CHAT_OIDC_JWKS_ENDPOINT", "")
OIDC_STORE_ID_TOKEN = True  # the logout's hint to the provider
OIDC_TIMEOUT = 10
OIDC_USE_PKCE = True
if CHAT_OIDC_CLIENT_ID:
    AUTHENTICATION_BACKENDS.append("access.oidc.Backend")
if not CHAT_PASSWORD_LOGIN:
    AUTHENTICATION_BACKENDS.remove("django.contrib.auth.backends.ModelBackend")

# The cache holds the API-key failure counts: Redis when it is configured, so every
# worker counts together; else this process's memory (one worker).
if env_list("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env_list("REDIS_URL")[0],
            "KEY_PREFIX": os.environ.get("CHANNEL_PREFIX", "chatsite"),
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }

# --- Accounts, static files, i18n -------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Anyone may create an account at /signup/ when on; otherwise staff create users
# (admin or `manage.py create_user`).
CHAT_SIGNUP_ENABLED = env_bool("CHAT_SIGNUP_ENABLED")
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Without a proxy in front, the ASGI app serves static files itself (asgi.py).
SERVE_STATIC = env_bool("SERVE_STATIC", True)

# --- Security ---------------------------------------------------------------------------
# CHAT_HTTPS=1 when served over HTTPS behind a proxy: secure cookies, HSTS, redirects.

CHAT_HTTPS = env_bool("CHAT_HTTPS")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = CHAT_HTTPS
SECURE_SSL_REDIRECT = CHAT_HTTPS
# Health checks ask over plain HTTP from inside the network (docker-compose.yml): a
# redirect there would make a healthy worker look dead.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = 31536000 if CHAT_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = CHAT_HTTPS
SECURE_HSTS_PRELOAD = CHAT_HTTPS
if CHAT_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Scripts, styles and connections (WebSockets included) only from this origin; pages
# carry no inline script or handler. Model output is sanitised on top of this.
CHAT_CSP = os.environ.get(
    "CHAT_CSP",
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
)
# Logging out of a single sign-on session is a form whose answer redirects to the
# provider, which form-action must allow.
_sso_origins = sorted(
    {
        f"{parts.scheme}://{parts.netloc}"
        for parts in map(urlsplit, (CHAT_OIDC_ISSUER, CHAT_OIDC_END_SESSION_ENDPOINT))
        if parts.scheme in ("http", "https") and parts.netloc
    }
)
if _sso_origins:
    CHAT_CSP = CHAT_CSP.replace(
        "form-action 'self'", " ".join(["form-action 'self'", *_sso_origins])
    )

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "conversations": {"level": os.environ.get("CHAT_LOG_LEVEL", "INFO")},
        "webhooks": {"level": os.environ.get("CHAT_LOG_LEVEL", "INFO")},
        # Access logs would carry Authorization headers' neighbours; keep them quiet.
        "httpx": {"level": "WARNING"},
    },
}
