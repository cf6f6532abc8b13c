"""Settings for the chat site, read from the environment and nowhere else.

Every variable is parsed by a typed helper that fails loudly on bad input, so a
misconfigured deployment stops at start-up instead of misbehaving later.
"""

import ipaddress
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from redis.driver_info import DriverInfo

from chat.redisconnection import Connection as RedisConnection

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# A production secret shorter than this is guessable; one starting with the
# placeholder prefix is .env.example's, which anyone can read.
SECRET_MIN_LENGTH = 32
SECRET_PLACEHOLDER = "replace-me"  # noqa: S105 - the prefix refused, not a secret


def env_secret(name: str, *, dev_default: str) -> str:
    """A secret must come from the environment; only DEBUG may fall back to a dev value."""
    value = os.environ.get(name)
    if value:
        if not DEBUG and (value.startswith(SECRET_PLACEHOLDER) or len(value) < SECRET_MIN_LENGTH):
            raise ImproperlyConfigured(
                f"{name} is .env.example's placeholder or shorter than {SECRET_MIN_LENGTH}"
                " characters: generate one with"
                " python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
            )
        return value
    if DEBUG:
        return dev_default
    raise ImproperlyConfigured(f"{name} must be set when DEBUG is off")


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY", dev_default="dev-only-insecure-key-do-not-use-in-production")
ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # daphne first: it replaces runserver with the ASGI server used in production.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework_simplejwt",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "chat",
]

MIDDLEWARE = [
    # Outermost: they time, count and log every request, redirects included,
    # and give all that is logged meanwhile its request id.
    "chatsite.requestlog.RequestLogMiddleware",
    "chatsite.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "chatsite.static.StaticFilesMiddleware",  # WhiteNoise, in the async chain too
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

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

# --- Database ------------------------------------------------------------------
# DATABASE_URL selects PostgreSQL (or anything dj-database-url understands);
# unset, a SQLite file in the project directory serves a laptop.
DATABASE_URL = env_str("DATABASE_URL")
# libpq's TCP settings of every PostgreSQL connection (below): a dead peer is
# found within about a minute (idle 30 s, then 3 probes 10 s apart; 30 s for
# unacknowledged data).
DATABASE_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms
}
if DATABASE_URL:
    database = dj_database_url.parse(DATABASE_URL)
    if database["ENGINE"] == "django.db.backends.postgresql":
        # Under ASGI every request may run in a different thread; persistent
        # per-thread connections (CONN_MAX_AGE) leak one connection per thread.
        # Django's pool (psycopg-pool) bounds them instead.
        database["CONN_MAX_AGE"] = 0
        # With the pool, Django checks a connection (an empty query) as it leaves
        # the pool: after a PostgreSQL restart the pool replaces its dead ones
        # instead of failing a request with each. The sockets' messages do not
        # pay for it: they run on the event loop's own connection (chat.asyncdb).
        database["CONN_HEALTH_CHECKS"] = True
        options = database.setdefault("OPTIONS", {})
        options["pool"] = {
            "min_size": env_int("DB_POOL_MIN", 2),
            "max_size": env_int("DB_POOL_MAX", 20),
            "timeout": 10,
        }
        # The insert of a round of posts is prepared after a few runs on the
        # event loop's connection that runs it (chat.asyncdb, which takes
        # these options): planning it was most of its time. Django's own
        # queries bind on the client, never prepared.
        # Behind PgBouncer in transaction mode, that needs PgBouncer 1.21+
        # with max_prepared_statements set; or turn it off here.
        options["prepare_threshold"] = 5 if env_bool("DB_PREPARED_STATEMENTS", True) else None
        # A PostgreSQL host that vanishes without a reset (a dead machine, a
        # cut network) leaves a connection waiting for its answer until the
        # operating system gives up: many minutes. TCP keepalives find such a
        # peer under an idle or waiting connection, and the user timeout one
        # that stops acknowledging what was sent; the pool then replaces the
        # connection, and the loop's round (chat.asyncdb) fails its posts as
        # `unavailable`, for their clients to send again. A DATABASE_URL that
        # sets any of these (?keepalives_idle=60) keeps its own.
        for name, value in DATABASE_KEEPALIVES.items():
            options.setdefault(name, value)
        # One test database per test run, so that two runs side by side (two
        # checkouts, a helper script) do not drop each other's.
        database["TEST"] = {"NAME": f"test_{database['NAME']}_{os.getpid()}"}
else:
    database = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / env_str("SQLITE_NAME", "db.sqlite3"),
        # Several threads write (sockets and requests): wait for the lock
        # instead of failing at once.
        "OPTIONS": {"timeout": 20},
        # A file, not memory, so that a server process started by the tests
        # (browser test, several Daphne processes) sees the test data; one per
        # test run, so that two runs side by side do not share it.
        "TEST": {"NAME": BASE_DIR / f"test-db-{os.getpid()}.sqlite3"},
    }
DATABASES = {"default": database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer and shared state ----------------------------------------------
# REDIS_URL is what lets several server processes act as one: the channel layer
# and presence both live there. Unset, everything stays in this one process.
REDIS_URL = env_str("REDIS_URL")
REDIS_PREFIX = env_str("REDIS_PREFIX", "chat")
# Connections per process and pool. redis-py's default ceiling raised
# MaxConnectionsError under bursts in the benchmark (every group_send and
# every receive cleanup takes one for a moment).
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 1000)
# Seconds a command waits for a free connection of the shared-state pool
# (chat.sharedstate) before it fails.
REDIS_POOL_TIMEOUT = env_int("REDIS_POOL_TIMEOUT", 5)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis, riding out Redis restarts (chat/layers.py).
            "BACKEND": "chat.layers.ResilientRedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "max_connections": REDIS_MAX_CONNECTIONS,
                        # channels-redis blocks 5 s in BZPOPMIN waiting for
                        # messages, and redis-py 8 gives up on a read after 5 s
                        # by default: every quiet receive would then fail, and
                        # read as Redis lost (chat.layers). Longer than the pop;
                        # still a bound on a dead connection.
                        "socket_timeout": 15,
                        "socket_connect_timeout": 3,
                        # Resolved once, not per new connection (chat.sharedstate).
                        "driver_info": DriverInfo(),
                        # Writes that let a cancellation through (Python 3.11).
                        "connection_class": RedisConnection,
                    }
                ],
                "prefix": f"{REDIS_PREFIX}:layer",
                # Each process has one channel (chat.fanout): room for what
                # arrives while its event loop is busy, a burst of every room's.
                "capacity": env_int("CHANNEL_CAPACITY", 1000),
                "expiry": 60,
                # A process that died without leaving its groups (killed,
                # crashed) stays in them this long: every broadcast would
                # otherwise still be pushed to its channel, for channels-redis's
                # default of a day. Live processes renew theirs (chat.fanout).
                "group_expiry": env_int("CHANNEL_GROUP_EXPIRY", 120),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The cache holds what every process must agree on: the API's throttle
# counters. Redis when there is one, else this process's memory.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": f"{REDIS_PREFIX}:cache",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The socket's limits (docs/protocol.md, "Limits"). Sends: a token bucket per
# user, shared by all processes (a database row, chat.ratelimit): SEND_BURST at
# once, then SEND_RATE a second.
SEND_RATE = float(env_int("SEND_RATE", 5))
SEND_BURST = float(env_int("SEND_BURST", 20))
MAX_FRAME_BYTES = env_int("MAX_FRAME_BYTES", 16 * 1024)
MAX_ROOMS_PER_SOCKET = env_int("MAX_ROOMS_PER_SOCKET", 50)
# Open sockets per account, all processes together (another tab, a bot
# reconnecting in a loop): one more is told `too_many_connections` and closed.
MAX_SOCKETS_PER_USER = env_int("MAX_SOCKETS_PER_USER", 20)
# Refused frames per socket (errors answered): SOCKET_ERROR_BURST at once, then
# SOCKET_ERROR_RATE a second. A client past that (a flood ignoring
# `rate_limited`, a broken loop) is closed: reading its frames costs the
# process even when every one is refused.
SOCKET_ERROR_RATE = float(env_int("SOCKET_ERROR_RATE", 2))
SOCKET_ERROR_BURST = float(env_int("SOCKET_ERROR_BURST", 30))

# Seconds a presence entry lives without a heartbeat: a crashed process's
# sockets drop out of "online" after this long.
PRESENCE_TTL = env_int("PRESENCE_TTL", 90)

# --- Auth --------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:room-list"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "chat.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {
        # Per client address on the auth endpoints (password guessing), per
        # user on sends. Counted in the shared cache, so in all processes.
        "auth": env_str("THROTTLE_AUTH", "30/minute"),
        "send": env_str("THROTTLE_SEND", "120/minute"),
    },
    # Behind one reverse proxy (nginx), the client address is the last hop it added.
    "NUM_PROXIES": env_int("NUM_PROXIES", 0),
}
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_MINUTES", 15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_DAYS", 7)),
    "SIGNING_KEY": env_secret("JWT_SIGNING_KEY", dev_default=SECRET_KEY),
    "UPDATE_LAST_LOGIN": False,
    # Each refresh hands out a new refresh token and retires the old one, so a
    # stolen refresh token stops working once its owner uses theirs.
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Chat API",
    "DESCRIPTION": "Rooms, memberships and message history. The WebSocket protocol is in "
    "docs/protocol.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "chat.models.Membership.Role",
        "AssignableRoleEnum": [("member", "Member"), ("moderator", "Moderator")],
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "chat.api.schema.add_error_responses",
    ],
}

# --- Internationalisation and static files -------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# Under DEBUG, WhiteNoise serves straight from the source folders (no
# collectstatic needed); in production from STATIC_ROOT, hashed and compressed.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Production hardening (inert under DEBUG) --------------------------------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
    X_FRAME_OPTIONS = "DENY"

# --- Metrics (chatsite/metrics.py, docs/operations.md) --------------------------------
# /metrics answers to these addresses and networks (REMOTE_ADDR), or to
# `Authorization: Bearer <METRICS_TOKEN>` when a token is set; a 404 when off.
METRICS_ENABLED = env_bool("METRICS_ENABLED", True)
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", ["127.0.0.1", "::1"])
try:
    [ipaddress.ip_network(item, strict=False) for item in METRICS_ALLOWED_IPS]
except ValueError as error:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_IPS: {error}") from None
METRICS_TOKEN = env_str("METRICS_TOKEN")

# --- Logs (chatsite/logs.py) ---------------------------------------------------------
# One JSON object per line in production, for a log collector; plain text
# under DEBUG, for a person. Each line carries its request or connection id.
LOG_FORMAT = env_str("LOG_FORMAT", "plain" if DEBUG else "json")
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "chatsite.logs.ContextFilter"}},
    "formatters": {
        "plain": {"()": "chatsite.logs.PlainFormatter"},
        "json": {"()": "chatsite.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # SQL is never logged, whatever LOG_LEVEL says: its parameters hold
    # password hashes and refresh tokens (the JWT blacklist stores them).
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
