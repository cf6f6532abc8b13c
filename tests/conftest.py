import os
import shutil
import sys
import time
import uuid

import pytest
import pytest_asyncio
import redis
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection

from chat.asyncdb import close_all_loop_connections, close_loop_connection
from chat.fanout import close_fanout
from chat.heartbeat import close_heartbeat
from chat.models import Room
from chat.sharedstate import reset_shared_stores
from tests.concurrency import another_session
from tests.factories import make_room, make_user
from tests.servers import PrivateRedis, daphne

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def pytest_sessionstart(session):
    """Under REQUIRE_SERVICES=1 a missing service fails the run instead of skipping tests."""
    if not REQUIRE_SERVICES:
        return
    missing = [name for name in ("REDIS_URL", "DATABASE_URL") if not getattr(settings, name, "")]
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        missing.append("DATABASE_URL (PostgreSQL)")
    if missing:
        pytest.exit(f"REQUIRE_SERVICES=1 but not configured: {', '.join(missing)}", returncode=1)
    redis.Redis.from_url(settings.REDIS_URL).ping()


def need_redis() -> str:
    """The Redis URL, or skip (fail under REQUIRE_SERVICES) when there is none."""
    if not settings.REDIS_URL:
        if REQUIRE_SERVICES:
            pytest.fail("REDIS_URL is required")
        pytest.skip("needs REDIS_URL")
    return settings.REDIS_URL


def started_private_redis() -> PrivateRedis:
    """A redis-server of the test's own, started; skip (fail under
    REQUIRE_SERVICES) where the machine has no redis-server to start."""
    if shutil.which("redis-server") is None:
        if REQUIRE_SERVICES:
            pytest.fail("redis-server is required")
        pytest.skip("needs redis-server")
    server = PrivateRedis()
    server.start()
    return server


def need_postgres() -> None:
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        if REQUIRE_SERVICES:
            pytest.fail("DATABASE_URL (PostgreSQL) is required")
        pytest.skip("needs DATABASE_URL pointing at PostgreSQL")


@pytest.fixture(autouse=True)
def _isolated_shared_state(settings):
    """Each test gets its own Redis key prefix (layer and presence) and a fresh presence store."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    redis_url = settings.REDIS_URL  # tests may point settings elsewhere meanwhile
    settings.REDIS_PREFIX = prefix
    # Throttle counters live in the cache: each test starts with none.
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"{prefix}:cache"}}
    if settings.REDIS_URL:
        settings.CHANNEL_LAYERS = {
            "default": {
                **settings.CHANNEL_LAYERS["default"],
                "CONFIG": {
                    **settings.CHANNEL_LAYERS["default"]["CONFIG"],
                    "prefix": f"{prefix}:layer",
                },
            }
        }
    reset_shared_stores()
    yield prefix
    reset_shared_stores()
    if redis_url:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="session", autouse=True)
def _test_database_free_to_drop(django_db_setup):
    """PostgreSQL refuses to drop a database that a session is still using
    (the run then ends with a warning and leaves it behind). Loops that
    async_to_sync made and dropped may still hold their connection
    (chat.asyncdb) until they are collected: closed here. Any other session
    still open is reported, then ended, so that the next run can find it."""
    yield
    close_all_loop_connections()
    if connection.vendor != "postgresql":
        return
    connection.close()
    connection.close_pool()  # as Django's own teardown does, a step early
    with another_session(autocommit=True) as session:
        others = _other_sessions(session)
        deadline = time.monotonic() + 10  # a session whose client left ends soon after
        while others and time.monotonic() < deadline:
            time.sleep(0.1)
            others = _other_sessions(session)
        if others:
            print(f"\nsessions still open on the test database, ended: {others}", file=sys.stderr)
            session.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


def _other_sessions(session) -> list[tuple]:
    return session.execute(
        "SELECT pid, application_name, state, backend_start, left(query, 80)"
        " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()


@pytest_asyncio.fixture(autouse=True)
async def _fanout_stops_with_the_loop():
    """Each test's event loop ends with it: the loop's room fan-out stops first
    (chat.fanout.close), or a receive stuck in channels-redis hangs the teardown;
    and its heartbeat. The database thread gives its connection back too:
    Channels' communicator keeps database_sync_to_async from closing it while
    the application runs, and a connection still out of the pool keeps the
    test database from being dropped; so does the loop's own connection
    (chat.asyncdb)."""
    yield
    await close_fanout()
    close_heartbeat()
    close_loop_connection()
    await database_sync_to_async(close_old_connections)()


@pytest.fixture(params=["memory", "redis"])
def channel_backend(request, settings):
    """Run a socket test on the in-memory layer and, when there is Redis, on channels-redis."""
    if request.param == "memory":
        settings.REDIS_URL = ""
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    else:
        need_redis()
    reset_shared_stores()
    return request.param


@pytest.fixture
def user(db):
    return make_user("alice")


@pytest.fixture
def other_user(db):
    return make_user("bob")


@pytest.fixture
def room(db):
    return make_room("lobby", name="Lobby")


# --- browser tests: Debian's Chromium through Playwright, against Daphne ---

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if REQUIRE_SERVICES:
            pytest.fail("Chromium is required: `make system-deps` installs Debian's package")
        pytest.skip("needs Debian's chromium (`make system-deps`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def server(transactional_db):
    # Flushes between transactional tests remove the migration's rooms.
    Room.objects.get_or_create(slug="general", defaults={"name": "General"})
    with daphne() as address:
        yield f"http://{address}"
