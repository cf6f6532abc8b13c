"""The servers of a bench run: the project as in production, and the two peers.

The project runs from this work tree, or from a snapshot of a commit
(BENCH_PROJECT_REF, see project_tree()), with the project's .venv either way;
the peers run from their folders in ../shared, each with its own venv under
bench/.venvs/. Every server is a Server, started and stopped through procs.
"""

import io
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import procs

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = ROOT / ".venv" / "bin"  # the project's venv, made by `make`
SHARED = ROOT.parent / "shared"
VENVS = BENCH / ".venvs"
LOGS = BENCH / "logs"
RESULTS = BENCH / "results"
# The project tree whose code the servers run: this work tree, or a snapshot
# of a commit; set by use_project_tree().
PROJECT = ROOT

DB_NAME = "chat_bench"
PG = ["-h", "127.0.0.1", "-U", "postgres"]
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
PROJECT_REDIS_DB = 14
PEER_REDIS_DB = 15
# The last line of a logged traceback: "package.module.SomeError: text".
EXCEPTION_LINE = re.compile(
    r"^((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exceeded)):", re.M
)

# Extra environment for the project's servers (and history.py), on top of the
# production settings above. The load generator registers thousands of users
# from one address and sends as fast as it can: rate limits meant for people
# must not be what the bench measures, so they are set out of reach here.
SERVER_EXTRA_ENV = {
    "THROTTLE_AUTH": "1000000/minute",
    "THROTTLE_SEND": "1000000/minute",
    # The socket's own per-user send limit (5 a second after a burst of 20)
    # capped every sweep with 10 senders at 50 msg/s before this was set.
    "SEND_RATE": "1000000",
    "SEND_BURST": "1000000",
    # loadgen opens the idle sockets over a few users: at the default of 20
    # sockets per account, 1,600 of 2,000 were told too_many_connections and
    # closed, and RSS per socket was divided by sockets that did not stay.
    "MAX_SOCKETS_PER_USER": "100000",
}


@dataclass
class Server:
    name: str
    cmd: list
    cwd: Path
    env: dict
    port: int
    process: subprocess.Popen | None = None
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> None:
        self.process = procs.spawn(
            self.cmd, cwd=self.cwd, env=self.env, log=LOGS / f"{self.name}.log"
        )
        procs.wait_http(self.port, self.process)

    def restart(self) -> None:
        if self.process is not None:
            procs.stop(self.process)
        self.start()

    def log_offset(self) -> int:
        log = LOGS / f"{self.name}.log"
        return log.stat().st_size if log.exists() else 0

    def errors_since(self, offset: int) -> dict:
        """Tracebacks the server logged since `offset`, by exception type."""
        log = LOGS / f"{self.name}.log"
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        types: dict[str, int] = {}
        for match in EXCEPTION_LINE.finditer(text):
            types[match[1]] = types.get(match[1], 0) + 1
        return {"tracebacks": text.count("Traceback (most recent call last)"), "types": types}

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure_alive(self) -> str | None:
        """None if serving; restarts a dead server once and says so."""
        if self.alive():
            return None
        code = self.process.returncode if self.process else None
        if self.restarts >= 1:
            return f"{self.name} is not running (exit code {code})"
        self.restarts += 1
        self.start()
        return None


def run_checked(cmd: list, *, env: dict | None = None, timeout: float = 600) -> str:
    returncode, problem, out = procs.run_captured(
        cmd, cwd=PROJECT, env=env or dict(os.environ), timeout=timeout, log=LOGS / "setup.log"
    )
    if problem or returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))}: {problem or f'exit {returncode}'}"
            " (see bench/logs/setup.log)"
        )
    return out


def check_services() -> None:
    try:
        run_checked(["pg_isready", "-q", *PG], timeout=10)
        run_checked(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"], timeout=10)
    except (RuntimeError, FileNotFoundError) as exc:
        sys.exit(
            f"bench: PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 must be up ({exc}). "
            "`.ci/run` shows how to start them."
        )


def project_tree(ref: str | None = None) -> Path:
    """The tree to serve: this work tree, or with BENCH_PROJECT_REF=<commit>
    (or `ref`) a snapshot of that commit (`git archive`, extracted under
    bench/.snapshots/), so that a long run measures one version while others
    edit the work tree."""
    ref = ref or os.environ.get("BENCH_PROJECT_REF", "")
    if not ref:
        return ROOT
    sha = run_checked(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"]).strip()
    dest = BENCH / ".snapshots" / sha[:12]
    if not (dest / "manage.py").exists():
        archive = subprocess.run(  # noqa: S603
            ["git", "archive", sha],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        tmp.replace(dest)
    return dest


def project_commit() -> str:
    """The short commit of the code the servers run, for the results' file
    names: BENCH_PROJECT_REF's, or this work tree's HEAD, with `-wip` when
    the tree's code differs from it (results files aside)."""
    ref = os.environ.get("BENCH_PROJECT_REF", "")
    sha = run_checked(["git", "rev-parse", "--short", f"{ref or 'HEAD'}^{{commit}}"]).strip()
    if ref:
        return sha
    changed = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", ".", ":!bench/results"],  # noqa: S607
        cwd=ROOT,
        check=False,
    )
    return sha if changed.returncode == 0 else f"{sha}-wip"


def use_project_tree() -> Path:
    """Serve the tree BENCH_PROJECT_REF names (default: this work tree)."""
    global PROJECT
    PROJECT = project_tree()
    return PROJECT


def project_env() -> dict:
    env = dict(os.environ)
    env.update(
        {
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "JWT_SIGNING_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "0",
            "DATABASE_URL": DATABASE_URL,
            "REDIS_URL": f"redis://127.0.0.1:6379/{PROJECT_REDIS_DB}",
            "REDIS_PREFIX": "bench",
            # Production settings with a cheap password hash (see bench/settings.py).
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            **tree_paths(PROJECT),
        }
    )
    env.update(SERVER_EXTRA_ENV)
    return env


def tree_paths(tree: Path) -> dict:
    """Where a server's Python finds the code of `tree`: the project first;
    `bench` (a namespace package) from either tree."""
    return {
        "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(tree), str(ROOT)])),
        "BENCH_PROJECT_DIR": str(tree),
    }


def prepare_project(reset_db: bool, env: dict) -> None:
    exists = run_checked(
        ["psql", *PG, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'"]  # noqa: S608
    )
    if exists.strip() and reset_db:
        run_checked(["dropdb", *PG, "--force", DB_NAME])
        exists = ""
    if not exists.strip():
        run_checked(["createdb", *PG, DB_NAME])
    for db in (PROJECT_REDIS_DB, PEER_REDIS_DB):  # the bench's own Redis databases
        run_checked(["redis-cli", "-h", "127.0.0.1", "-n", str(db), "FLUSHDB"])
    python = VENV_BIN / "python"
    run_checked([python, "manage.py", "migrate", "--noinput"], env=env)
    run_checked([python, "manage.py", "collectstatic", "--noinput"], env=env)


def daphne(name: str, env: dict, tree: Path | None = None) -> Server:
    """Daphne serving `tree` (default: the tree of the run, PROJECT)."""
    tree = tree or PROJECT
    port = procs.free_port()
    server_env = dict(
        env, DATABASE_URL=f"{DATABASE_URL}?application_name=bench-{name}", **tree_paths(tree)
    )
    # Daphne on uvloop, as the Dockerfile runs it; a snapshot of a commit
    # from before chatsite.serve (BENCH_PROJECT_REF) runs plain Daphne.
    if (tree / "chatsite" / "serve.py").exists():
        cmd = [VENV_BIN / "python", "-m", "chatsite.serve"]
    else:
        cmd = [VENV_BIN / "daphne"]
    cmd += ["-e", f"tcp:port={port}:interface=127.0.0.1:backlog=2048", "chatsite.asgi:application"]
    return Server(name, cmd, tree, server_env, port)


def uvicorn(name: str, env: dict) -> Server:
    port = procs.free_port()
    server_env = dict(env, DATABASE_URL=f"{DATABASE_URL}?application_name=bench-{name}")
    # The documented alternative to Daphne, with its options (deploy/uvicorn_serve.py).
    cmd = [VENV_BIN / "python", PROJECT / "deploy" / "uvicorn_serve.py", "--port", str(port)]
    return Server(name, cmd, PROJECT, server_env, port)


def peers(names: list[str]) -> list[Server]:
    out = []
    if "seed_fastapi" in names:
        folder = SHARED / "peers" / "seed_fastapi"
        venv = VENVS / "seed_fastapi"
        procs.ensure_venv(venv, [folder / "requirements.txt"], LOGS / "venvs.log")
        port = procs.free_port()
        env = dict(os.environ, PEER_REDIS_URL=f"redis://127.0.0.1:6379/{PEER_REDIS_DB}")
        cmd = [venv / "bin" / "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)]
        out.append(Server("seed_fastapi", cmd, folder, env, port))
    if "bare_ws" in names:
        folder = SHARED / "peers" / "bare_ws"
        venv = VENVS / "bare_ws"
        procs.ensure_venv(venv, [folder / "requirements.txt"], LOGS / "venvs.log")
        port = procs.free_port()
        cmd = [venv / "bin" / "python", "server.py", "--host", "127.0.0.1", "--port", str(port)]
        out.append(Server("bare_ws", cmd, folder, dict(os.environ), port))
    return out


def http_json(
    method: str, url: str, body: dict | None = None, token: str | None = None
) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def room_api_works(server: Server) -> tuple[bool, str]:
    """Whether POST /api/rooms/ answers as loadgen needs (200/201/400/409)."""
    creds = {"username": f"benchprobe{secrets.token_hex(4)}", "password": "bench-pass-1"}
    status, text = http_json("POST", f"{server.url}/api/auth/register/", creds)
    if status not in (200, 201):
        return False, f"register: HTTP {status} {text[:200]}"
    status, text = http_json("POST", f"{server.url}/api/auth/token/", creds)
    if status != 200:
        return False, f"token: HTTP {status} {text[:200]}"
    token = json.loads(text)["access"]
    status, text = http_json(
        "POST", f"{server.url}/api/rooms/", {"name": "bench-probe", "slug": "bench-probe"}, token
    )
    return status in (200, 201, 400, 409), f"POST /api/rooms/: HTTP {status}"


def precreate_rooms(env: dict, slugs: list[str]) -> None:
    code = (
        "from chat.models import Room\n"
        f"for slug in {slugs!r}:\n"
        "    Room.objects.get_or_create(slug=slug, defaults={'name': slug})\n"
    )
    run_checked([VENV_BIN / "python", "manage.py", "shell", "-c", code], env=env)
