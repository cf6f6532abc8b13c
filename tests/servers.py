"""Real server processes (Daphne, or uvicorn as deploy/uvicorn_serve.py runs it)
serving the test database, for end-to-end tests."""

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent


def run_python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The project's Python in a child process, from the project's root: its
    exit code and output (text)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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


class DaphneProcess:
    """chatsite.asgi served by Daphne in a child process, on a fixed port so
    that it can be restarted where clients expect it."""

    name = "daphne"

    def __init__(self, *server_args: str, **env: str) -> None:
        self.server_args = list(server_args)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Marks the process's PostgreSQL sessions, to wait for them to end.
        self.application_name = f"chat-test-server-{self.port}"
        self.env = {
            **os.environ,
            **database_env(self.application_name),
            "REDIS_URL": settings.REDIS_URL,
            "REDIS_PREFIX": settings.REDIS_PREFIX,
            **env,
        }
        self.process: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process

    def command(self) -> list[str]:
        # As the Dockerfile and `make run` start it: on uvloop (chatsite.serve).
        command = [sys.executable, "-m", "chatsite.serve", "-b", "127.0.0.1", "-p", str(self.port)]
        return [*command, *self.server_args, "chatsite.asgi:application"]

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command(),
            cwd=BASE_DIR,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        _wait_for_port(self.name, self.port, self.process, self.log)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        _wait_for_sessions_to_end(self.application_name)

    def restart(self) -> None:
        self.stop()
        self.start()


class UvicornProcess(DaphneProcess):
    """The same, served by uvicorn with the production options of deploy/uvicorn_serve.py."""

    name = "uvicorn"

    def command(self) -> list[str]:
        script = str(BASE_DIR / "deploy" / "uvicorn_serve.py")
        return [sys.executable, script, "--port", str(self.port), *self.server_args]


SERVERS = {"daphne": DaphneProcess, "uvicorn": UvicornProcess}


@contextmanager
def daphne(**env: str) -> Iterator[str]:
    """Serve chatsite.asgi in a Daphne process; yields its `host:port`."""
    with serve("daphne", **env) as address:
        yield address


@contextmanager
def serve(kind: str, **env: str) -> Iterator[str]:
    """Serve chatsite.asgi in a process of `kind` (SERVERS); yields its `host:port`."""
    server = SERVERS[kind](**env)
    server.start()
    try:
        yield server.address
    finally:
        server.stop()
        server.log.close()


class PrivateRedis:
    """A redis-server of a test's own, to stop and start (empty) at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        self.process = subprocess.Popen(
            [*command, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


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


def _wait_for_port(name: str, port: int, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{name} exited early:\n{log.read().decode(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on port {port} within 30 s")
