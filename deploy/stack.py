"""The production topology on loopback: nginx in front of two Daphne processes
that share PostgreSQL and Redis, with production settings (DEBUG off).

    python deploy/stack.py start     # make stack: (re)starts it, prints the URL
    python deploy/stack.py stop      # make stack-stop
    python deploy/stack.py status

nginx listens on 127.0.0.1:STACK_PORT (8080) and the Daphne processes on the
two ports after it. Everything the stack writes lives in its state directory,
var/stack/ (gitignored): generated secrets, the rendered nginx config, pid files
and logs. PostgreSQL and Redis are started when down but never stopped; the
database is `chat_stack`. tests/test_stack.py runs these same functions on free
ports with a database of its own.
"""

import argparse
import grp
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEPLOY_DIR = BASE_DIR / "deploy"
NGINX = "/usr/sbin/nginx"
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
START_TIMEOUT = 30
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
DAPHNE_TARGET = "chatsite.asgi:application"


class StackError(RuntimeError):
    """A step of starting or stopping the stack failed; the message says which."""


@dataclass(frozen=True)
class Stack:
    """Where one stack lives: its ports, database, Redis prefix and state directory."""

    state_dir: Path = BASE_DIR / "var" / "stack"
    port: int = 8080
    daphne_ports: tuple[int, ...] = (8081, 8082)
    database: str = "chat_stack"
    postgres_url: str = f"postgres://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}"
    redis_url: str = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    redis_prefix: str = "chat-stack"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def snippets_dir(self) -> Path:
        """*.conf files here are included in nginx's server block."""
        return self.state_dir / "nginx.d"

    @property
    def nginx_conf(self) -> Path:
        return self.state_dir / "nginx.conf"

    def pid_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"


# --- Services ----------------------------------------------------------------------


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.1)


def services_ensure() -> None:
    """Start the machine's PostgreSQL and Redis when they are not listening."""
    if not _listening(POSTGRES_HOST, POSTGRES_PORT):
        versions = sorted(os.listdir("/etc/postgresql"))
        _run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"])
    if not _listening(REDIS_HOST, REDIS_PORT):
        command = ["redis-server", "--daemonize", "yes", "--bind", REDIS_HOST, "--port"]
        _run([*command, str(REDIS_PORT), "--save", "", "--appendonly", "no"])  # nothing on disk
    _wait_until(lambda: _listening(POSTGRES_HOST, POSTGRES_PORT), "PostgreSQL listening")
    _wait_until(lambda: _listening(REDIS_HOST, REDIS_PORT), "Redis listening")


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (NGINX if Path(NGINX).exists() else None)


def nginx_ensure() -> str:
    """The nginx binary, installing Debian's package when there is none."""
    binary = nginx_binary()
    if binary:
        return binary
    if os.geteuid() != 0:
        raise StackError("nginx is not installed: run `apt-get install nginx` as root")
    _say("installing Debian's nginx")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], env=env)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx"], env=env)
    binary = nginx_binary()
    if not binary:
        raise StackError("apt-get installed nginx, but there is no nginx binary")
    return binary


# --- Database --------------------------------------------------------------------------


def _postgres_admin(stack: Stack):
    import psycopg  # the project's requirement; imported late so --help needs nothing

    return psycopg.connect(f"{stack.postgres_url}/postgres", autocommit=True)


def database_ensure(stack: Stack) -> None:
    from psycopg import sql

    with _postgres_admin(stack) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [stack.database]
        ).fetchone()
        if not exists:
            _say(f"creating database {stack.database}")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(stack.database)))


def database_drop(stack: Stack) -> None:
    from psycopg import sql

    with _postgres_admin(stack) as conn:
        # FORCE: a Daphne that was killed may leave a session behind for a moment.
        query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(query.format(sql.Identifier(stack.database)))


# --- The application's environment -----------------------------------------------------------


def secrets_load(stack: Stack) -> dict[str, str]:
    """The stack's SECRET_KEY and JWT_SIGNING_KEY, generated on first use and kept:
    restarting the stack must not log everyone out."""
    path = stack.state_dir / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    values = {name: secrets.token_urlsafe(50) for name in ("SECRET_KEY", "JWT_SIGNING_KEY")}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(values, file)
    return values


def app_env(stack: Stack, *, application_name: str = "chat-stack") -> dict[str, str]:
    """Production settings for loopback: everything but HTTPS.

    Built from scratch rather than from this process's environment, so that a
    DEBUG=1 (or anything else) in the caller's shell never reaches the stack.
    """
    hosts = "127.0.0.1,localhost"
    database_url = f"{stack.postgres_url}/{stack.database}?application_name={application_name}"
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "DEBUG": "0",
        **secrets_load(stack),
        "ALLOWED_HOSTS": hosts,
        "CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{stack.port},http://localhost:{stack.port}",
        "DATABASE_URL": database_url,
        "REDIS_URL": stack.redis_url,
        "REDIS_PREFIX": stack.redis_prefix,
        # Plain HTTP on loopback: no redirect to https, no HSTS.
        "SECURE_SSL_REDIRECT": "0",
        "SECURE_HSTS_SECONDS": "0",
        # nginx is one proxy hop: DRF's throttles count the address it saw.
        "NUM_PROXIES": "1",
    }


def manage(stack: Stack, *args: str) -> None:
    _run([sys.executable, "manage.py", *args], env=app_env(stack), cwd=BASE_DIR)


# --- Processes ---------------------------------------------------------------------------


def _pid_alive(pid: int, marker: str) -> bool:
    """Whether `pid` runs and is ours: its command line contains `marker` (a
    recycled pid belongs to someone else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return marker in cmdline


def _ended(pid: int, marker: str) -> bool:
    """Whether `pid` has ended: gone, a zombie, or reused by another program.
    A process's command line empties while it exits, before it has ended:
    _pid_alive is already false then, and a stop that trusted it returned
    while the process still ran."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return True
    if state in ("Z", "X"):
        return True
    return bool(cmdline) and marker not in cmdline


def _recorded(stack: Stack) -> Iterator[tuple[str, int, str]]:
    """(name, pid, marker) of every process the stack's pid files name and that still runs."""
    if not stack.state_dir.exists():
        return
    for pid_file in sorted(stack.state_dir.glob("*.pid")):
        name = pid_file.stem
        marker = str(stack.nginx_conf) if name == "nginx" else _daphne_marker(name)
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid_file.unlink(missing_ok=True)
            continue
        if _pid_alive(pid, marker):
            yield name, pid, marker
        else:
            pid_file.unlink(missing_ok=True)


def _daphne_args(port: int | str) -> list[str]:
    """The Dockerfile's Daphne command, on loopback (after `python -m chatsite.serve`)."""
    endpoint = f"tcp:port={port}:interface=127.0.0.1:backlog=2048"
    return ["-e", endpoint, "--proxy-headers", DAPHNE_TARGET]


def _daphne_marker(name: str) -> str:
    return " ".join(_daphne_args(name.removeprefix("daphne-")))


def daphne_start(stack: Stack, port: int) -> subprocess.Popen:
    name = f"daphne-{port}"
    command = [sys.executable, "-m", "chatsite.serve", *_daphne_args(port)]
    with stack.log_file(name).open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own fixed command
            command,
            cwd=BASE_DIR,
            env=app_env(stack, application_name=f"chat-stack-{port}"),
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: the stack outlives `make stack` and its terminal's Ctrl-C.
            start_new_session=True,
        )
    stack.pid_file(name).write_text(f"{process.pid}\n")
    return process


def _checkout_owner() -> str:
    """Who nginx's workers run as when started as root: the checkout's owner.

    They read the collected static files from the checkout; `nobody` cannot
    when the checkout sits in a private directory (as `mktemp -d` makes), and
    nginx then quietly hands every static request to Daphne.
    """
    info = BASE_DIR.stat()
    return f"{pwd.getpwuid(info.st_uid).pw_name} {grp.getgrgid(info.st_gid).gr_name}"


def _render(template: Path, values: Mapping[str, str]) -> str:
    """Replace ${NAME} placeholders, the way envsubst does in the nginx image."""
    text = template.read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    leftover = sorted(set(PLACEHOLDER.findall(text)))
    if leftover:
        raise StackError(f"{template.name}: no value for {', '.join(leftover)}")
    return text


def nginx_render(stack: Stack) -> Path:
    """Write the site (deploy/nginx.conf.template) and the process config around it."""
    stack.snippets_dir.mkdir(parents=True, exist_ok=True)
    # nginx makes each temp directory, but not their parent.
    (stack.state_dir / "nginx-temp").mkdir(exist_ok=True)
    servers = " ".join(f"server 127.0.0.1:{port};" for port in stack.daphne_ports)
    site = _render(
        DEPLOY_DIR / "nginx.conf.template",
        {
            "CHAT_LISTEN": f"127.0.0.1:{stack.port}",
            "CHAT_UPSTREAM_SERVERS": servers,
            "CHAT_STATIC_ROOT": str(BASE_DIR / "staticfiles"),
            "CHAT_NGINX_SNIPPETS": str(stack.snippets_dir),
        },
    )
    (stack.state_dir / "site.conf").write_text(site)
    user = f"user {_checkout_owner()};" if os.geteuid() == 0 else ""
    main = _render(
        DEPLOY_DIR / "stack-nginx.conf.template",
        {"STACK_DIR": str(stack.state_dir), "STACK_USER": user},
    )
    stack.nginx_conf.write_text(main)
    return stack.nginx_conf


def nginx_start(stack: Stack, binary: str) -> None:
    conf = str(nginx_render(stack))
    error_log = str(stack.log_file("nginx-error"))
    # -e: nginx opens its error log before reading the config; keep it ours.
    _run([binary, "-t", "-q", "-c", conf, "-e", error_log])
    _run([binary, "-c", conf, "-e", error_log])


def _wait_for_daphne(stack: Stack, port: int, process: subprocess.Popen) -> None:
    def up() -> bool:
        if process.poll() is not None:
            log = stack.log_file(f"daphne-{port}").read_text(errors="replace")
            raise StackError(f"daphne on port {port} exited:\n{log[-3000:]}")
        return _listening("127.0.0.1", port)

    _wait_until(up, f"daphne listening on port {port}")


def readiness(stack: Stack) -> tuple[int, str]:
    """GET /readyz through nginx: (status, body)."""
    try:
        with urllib.request.urlopen(f"{stack.url}readyz", timeout=5) as response:  # noqa: S310 - our own URL
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As servers bind: a port whose old connections linger in TIME_WAIT is
        # free, one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# --- The whole stack ------------------------------------------------------------------------


def start(stack: Stack, *, nginx: str, collectstatic: bool = True) -> str:
    """Start (or restart) the stack with the `nginx` binary; returns its URL.

    PostgreSQL and Redis must be up (services_ensure()). On failure, stops
    whatever it had started before raising.
    """
    stop(stack)
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    busy = [p for p in (stack.port, *stack.daphne_ports) if not _port_free(p)]
    if busy:
        raise StackError(f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 already in use")
    try:
        database_ensure(stack)
        _say(f"migrating database {stack.database}")
        manage(stack, "migrate", "--noinput")
        if collectstatic:
            _say("collecting static files")
            manage(stack, "collectstatic", "--noinput")
        processes = {port: daphne_start(stack, port) for port in stack.daphne_ports}
        for port, process in processes.items():
            _wait_for_daphne(stack, port, process)
        _say(f"daphne on 127.0.0.1:{', '.join(map(str, stack.daphne_ports))}")
        nginx_start(stack, nginx)
        _wait_until(lambda: _listening("127.0.0.1", stack.port), "nginx listening")
        status, body = readiness(stack)
        if status != 200:
            raise StackError(f"/readyz through nginx answered {status}: {body}")
    except BaseException:
        stop(stack, quiet=True)
        raise
    return stack.url


def stop(stack: Stack, *, quiet: bool = False) -> None:
    """Stop nginx, then the Daphne processes (never PostgreSQL or Redis)."""
    # nginx first, so that nothing is sent to a Daphne that is going away.
    running = sorted(_recorded(stack), key=lambda item: item[0] != "nginx")
    for name, pid, marker in running:
        if not quiet:
            _say(f"stopping {name} (pid {pid})")
        # TERM, not QUIT, for nginx: a graceful quit waits for every open socket.
        os.kill(pid, signal.SIGTERM)
        try:
            _wait_until(lambda pid=pid, marker=marker: _ended(pid, marker), name, 10)
        except StackError:
            os.kill(pid, signal.SIGKILL)
        stack.pid_file(name).unlink(missing_ok=True)


def status(stack: Stack) -> list[str]:
    return [f"{name} pid {pid}" for name, pid, _ in _recorded(stack)]


# --- Helpers and the command line ----------------------------------------------------------------


def _say(message: str) -> None:
    print(f"stack: {message}", flush=True)


def _run(command: list[str], **kwargs) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # noqa: S603
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise StackError(f"`{' '.join(command)}` failed ({result.returncode}):\n{output}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("STACK_PORT") or 8080),
        help="nginx's port on 127.0.0.1 (default: $STACK_PORT or 8080); Daphne takes the next two",
    )
    args = parser.parse_args(argv)
    stack = Stack(port=args.port, daphne_ports=(args.port + 1, args.port + 2))
    try:
        if args.action == "start":
            services_ensure()
            url = start(stack, nginx=nginx_ensure())
            _say(f"serving on {url} (logs and pids in {stack.state_dir})")
            # DEBUG is off, so session and CSRF cookies are Secure over plain HTTP.
            _say("browsers must keep Secure cookies on loopback to sign in: docs/deploy.md")
        elif args.action == "stop":
            stop(stack)
        else:
            running = status(stack)
            print("\n".join(running) if running else "stack: not running")
    except StackError as error:
        print(f"stack: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
