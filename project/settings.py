"""Django settings, read from the environment (django-environ).

Every deployment-specific value comes from an environment variable; see the README's
"Settings" table. Nothing here connects to anything at import time.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

# A development default: project.asgi refuses to serve with it while DEBUG is off.
DEV_SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"
SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "realtime",
    "demo",  # the demo site's status board and orders (demo/realtime.py)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before anything that reads the database: 503 with Retry-After when the pool is empty.
    "realtime.middleware.DatabaseBusy",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
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
WSGI_APPLICATION = None
ASGI_APPLICATION = "project.asgi.application"

# --- Database: SQLite file under var/ by default, anything through DATABASE_URL ---
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several writer processes (daphne, the scheduler, commands): WAL lets readers run beside
    # the writer, IMMEDIATE takes the write lock up front so busy_timeout applies instead of an
    # instant "database is locked" on lock upgrade.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Tests use a file too, so that several threads and processes can share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
# Check connections before reuse, so a database that went away is reconnected to.
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool(
    "DB_POOL", default=True
):
    # A bounded pool per process (psycopg's, through Django's OPTIONS["pool"]): under ASGI
    # each HTTP request runs in a thread of its own, and with persistent connections every
    # such thread kept one (a burst of API requests held 99 of PostgreSQL's 100). A request
    # waits DB_POOL_TIMEOUT seconds for a free connection, then gets 503 with Retry-After
    # (realtime.middleware.DatabaseBusy); connections idle DB_POOL_MAX_IDLE seconds beyond
    # DB_POOL_MIN_SIZE are closed.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN_SIZE", default=1),
        "max_size": env.int("DB_POOL_MAX_SIZE", default=20),
        "timeout": env.float("DB_POOL_TIMEOUT", default=5.0),
        "max_idle": env.float("DB_POOL_MAX_IDLE", default=60.0),
        "name": "realtime",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them; Django gives them back
else:
    # Keep connections (the consumers' database thread reuses one instead of reconnecting
    # per query).
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, and the Channels layer (channels_redis core layer) ---
# REDIS_URL is one Redis (redis://host:port/db) or a Redis Cluster
# (redis+cluster://host:port[,host:port...]/0: sharded pub/sub, realtime/cluster.py).
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
REDIS_CLUSTER = REDIS_URL.startswith("redis+cluster://")
# Every key and channel of the app starts with this prefix (several sites, or test runs, may
# share one Redis).
REDIS_PREFIX = env.str("REDIS_PREFIX", default="asgi")
# channels_redis has no cluster support: with a cluster the layer (used by nothing of the
# app's fan-out; only by code that calls group_send itself) gets CHANNEL_LAYER_URL, a single
# Redis, or else the in-memory layer of each process.
CHANNEL_LAYER_URL = env.str("CHANNEL_LAYER_URL", default="" if REDIS_CLUSTER else REDIS_URL)
if CHANNEL_LAYER_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 caps a pool at 100 connections and raises beyond: allow more.
                "hosts": [
                    {
                        "address": CHANNEL_LAYER_URL,
                        "max_connections": env.int("REDIS_MAX_CONNECTIONS", 1000),
                    }
                ],
                "capacity": env.int("CHANNEL_LAYER_CAPACITY", default=1000),
                "prefix": REDIS_PREFIX,
                "expiry": 60,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- The realtime app's tunables (see realtime/conf.py for every key and its default) ---
try:
    REALTIME = env.json("REALTIME", default={})
except ValueError as exc:
    raise ImproperlyConfigured(
        f"The REALTIME environment variable must be a JSON object such as "
        f'{{"MAX_SUBSCRIPTIONS": 50}}: {exc}'
    ) from None
if REDIS_CLUSTER:
    REALTIME.setdefault("REDIS_URL", REDIS_URL)
    REALTIME.setdefault("REDIS_PREFIX", REDIS_PREFIX)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# WhiteNoise serves static files from daphne itself (from the app folders while DEBUG is on,
# from STATIC_ROOT after `collectstatic` otherwise).
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- HTTPS hardening: HTTPS=1 behind TLS (what `manage.py check --deploy` expects) ---
HTTPS = env.bool("HTTPS", default=False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)

# --- Behind a reverse proxy (deploy/nginx): see docs/DEPLOY.md ---
# The proxy's X-Forwarded-Host names the host the visitor asked for (Django's get_host and
# the WebSocket Origin check read it). Only behind a proxy that sets it.
USE_X_FORWARDED_HOST = env.bool("USE_X_FORWARDED_HOST", default=False)
if env.bool("BEHIND_TLS_PROXY", default=False) and not HTTPS:
    # The proxy terminates TLS and says so in X-Forwarded-Proto (HTTPS=1 implies this).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Operator endpoints (realtime/ops.py): /healthz, /readyz, /metrics ---
# /metrics answers these client addresses or networks, or a request with
# "Authorization: Bearer $METRICS_TOKEN". Behind a proxy the client address is the proxy's
# unless daphne runs with --proxy-headers (PROXY_HEADERS=1 for realtime.server).
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "realtime": {"level": LOG_LEVEL},
        "django.channels.server": {"level": LOG_LEVEL},
    },
}
