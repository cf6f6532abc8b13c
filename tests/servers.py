"""Real Daphne processes serving the test database, for end-to-end tests."""

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_env(application_name: str) -> dict[str, str]:
    """Environment that points a server process at the database the tests use now."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.postgresql":
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        url = f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        return {"DATABASE_URL": f"{url}?application_name={application_name}"}
    return {"DATABASE_URL": "", "SQLITE_NAME": str(db["NAME"])}


@contextmanager
def daphne(**env: str) -> Iterator[str]:
    """Serve chatsite.asgi in a Daphne process; yields its `host:port`."""
    port = free_port()
    # Marks the process's PostgreSQL sessions, to wait for them to end.
    application_name = f"chat-test-server-{port}"
    process_env = {
        **os.environ,
        **database_env(application_name),
        "REDIS_URL": settings.REDIS_URL,
        "REDIS_PREFIX": settings.REDIS_PREFIX,
        **env,
    }
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [*command, "chatsite.asgi:application"],
            cwd=BASE_DIR,
            env=process_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_port(port, process, log)
            yield f"127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _wait_for_sessions_to_end(application_name)


def _wait_for_sessions_to_end(application_name: str) -> None:
    """PostgreSQL ends a dead client's sessions a moment later; the test
    database cannot be flushed or dropped until it has."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    deadline = time.monotonic() + 10
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(query, [application_name])
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.05)


def _wait_for_port(port: int, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"daphne exited early:\n{log.read().decode(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"daphne did not listen on port {port} within 30 s")
