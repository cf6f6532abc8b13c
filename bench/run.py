"""`make bench`: the project and the two peers under the same load, side by side.

Starts, in one run on this machine:

- the project as in production: DEBUG off, random secrets, PostgreSQL
  (database `chat_bench`, created and migrated here), the Redis channel layer
  (db 14, prefix `bench`), collectstatic, Daphne from the project's .venv with
  a listen backlog of 2048; a second Daphne on the same database and Redis for
  the scale-out scenario;
- `../shared/peers/seed_fastapi` (uvicorn, Redis db 15) and
  `../shared/peers/bare_ws`, each from its own folder and venv;

then drives every scenario with `../shared/bench/loadgen.py` against each
server in turn (project, seed_fastapi, bare_ws, project, ...), repeated, and
writes `bench/results/<date>.jsonl` (one loadgen line per run, as it goes),
`<date>.json` (everything, with medians and ratios) and `<date>.md` (tables).
Finally the history API script (`bench/history.py`) and a py-spy profile.

Configuration (environment):
  BENCH_QUICK=1        one repetition of a reduced set, short windows: a smoke test
                       (results go to <date>-quick.*)
  BENCH_REPEATS=N      repetitions (default 3; 1 when quick)
  BENCH_DURATION=S     measured seconds per run or sweep step (default 5; 2 quick)
  BENCH_WARMUP=S       unmeasured seconds before each window (default 1)
  BENCH_DRAIN=S        seconds to wait for stragglers (default 3; 2 quick)
  BENCH_SWEEP_FACTOR=F rate step of the sweep (default 1.5; 2 quick)
  BENCH_SCENARIOS=a,b  only these scenarios (keys below; `history`, `profile` too)
  BENCH_SERVERS=a,b    only these servers (project, seed_fastapi, bare_ws)
  BENCH_PROFILE=0|1    py-spy profile of the project at the end (default 1; 0 quick)
  BENCH_RESET_DB=1     drop and recreate the bench database first
  (`run.py --render bench/results/<date>.json` redoes a run's tables from its JSON.)
  BENCH_PROJECT_REF=R  serve commit R (e.g. HEAD) from a snapshot (git archive into
                       bench/.snapshots/) instead of the work tree, which others may be
                       editing during a run; the project's .venv is used either way
"""

import contextlib
import datetime
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import procs
import profile_summary
import report

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = ROOT / ".venv" / "bin"  # the project's venv, made by `make`
# The project tree whose code the servers run: this work tree, or a snapshot of
# a commit (BENCH_PROJECT_REF), see project_tree().
PROJECT = ROOT
SHARED = ROOT.parent / "shared"
VENVS = BENCH / ".venvs"
LOGS = BENCH / "logs"
RESULTS = BENCH / "results"

DB_NAME = "chat_bench"
PG = ["-h", "127.0.0.1", "-U", "postgres"]
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
PROJECT_REDIS_DB = 14
# The last line of a logged traceback: "package.module.SomeError: text".
EXCEPTION_LINE = re.compile(
    r"^((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exceeded)):", re.M
)
PROFILE_DELAY = 8  # seconds for loadgen's setup (100 users and sockets) before py-spy attaches
PROFILE_SECONDS = 10
PEER_REDIS_DB = 15

# Extra environment for the project's servers (and history.py), on top of the
# production settings above. The load generator registers thousands of users
# from one address and sends as fast as it can: rate limits meant for people
# must not be what the bench measures, so they are set out of reach here.
SERVER_EXTRA_ENV = {
    "THROTTLE_AUTH": "1000000/minute",
    "THROTTLE_SEND": "1000000/minute",
}


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "")
    return default if value == "" else value.lower() in {"1", "true", "yes", "on"}


def env_num(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    return default if value == "" else float(value)


def env_list(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


@dataclass
class Config:
    quick: bool = field(default_factory=lambda: env_bool("BENCH_QUICK", False))

    def __post_init__(self) -> None:
        q = self.quick
        self.repeats = int(env_num("BENCH_REPEATS", 1 if q else 3))
        # Sweeps take many short windows; the fixed-rate runs that give the
        # latency percentiles take one longer window.
        self.duration = env_num("BENCH_DURATION", 2 if q else 3)
        self.warmup = env_num("BENCH_WARMUP", 1)
        self.fixed_duration = env_num("BENCH_FIXED_DURATION", 3 if q else 8)
        self.fixed_warmup = env_num("BENCH_FIXED_WARMUP", 1 if q else 2)
        self.drain = env_num("BENCH_DRAIN", 2 if q else 3)
        # Longest wait for the presence frames of the joins to stop (loadgen_ext.py).
        self.settle_max = env_num("BENCH_SETTLE_MAX", 20 if q else 30)
        # No frame for this long after the joins: the room has settled. The seed
        # peer pauses for over a second inside its presence broadcast to 1,000.
        self.settle_quiet = env_num("BENCH_SETTLE_QUIET", 2)
        self.sweep_factor = env_num("BENCH_SWEEP_FACTOR", 2 if q else 1.5)
        self.only = env_list("BENCH_SCENARIOS")
        self.servers = env_list("BENCH_SERVERS") or ["project", "seed_fastapi", "bare_ws"]
        self.profile = env_bool("BENCH_PROFILE", not q)
        self.reset_db = env_bool("BENCH_RESET_DB", False)

    def wants(self, key: str) -> bool:
        return not self.only or key in self.only


def scenarios(cfg: Config, *, filtered: bool = True) -> list[dict]:
    """The load scenarios of issue 10, smaller when quick; those BENCH_SCENARIOS names."""
    q = cfg.quick
    big = 300 if q else 1000
    # Sweeps start near 1,000 offered deliveries/s (400 for 10 x 20 at 20 msg/s),
    # low enough that the project gets a figure in every room size.
    servers = [s for s in ("project", "seed_fastapi", "bare_ws") if s in cfg.servers]
    every = [
        {
            "key": "room100",
            "kind": "load",
            "title": "1 room x 100 members, 10 senders",
            "rooms": 1,
            "members": 100,
            "senders": 10,
            "start_rate": 10,
        },
        {
            "key": "rooms10x20",
            "kind": "load",
            "title": "10 rooms x 20 members, 2 senders each",
            "rooms": 10,
            "members": 20,
            "senders": 2,
            "start_rate": 20,
        },
        {
            "key": f"room{big}",
            "kind": "load",
            "title": f"1 room x {big:,} members, 10 senders",
            "rooms": 1,
            "members": big,
            "senders": 10,
            "start_rate": round(1000 / big, 2),
        },
        {
            "key": "idle",
            "kind": "idle",
            "title": f"{500 if q else 2000:,} idle authenticated sockets",
            "sockets": 500 if q else 2000,
            "fresh": True,  # RSS growth of a freshly started server
        },
        {
            "key": "storm",
            "kind": "storm",
            "title": f"connect storm of {300 if q else 1000:,} sockets",
            "sockets": 300 if q else 1000,
        },
        {
            "key": "scale",
            "kind": "scale",
            "title": "1 room x 100 members, 10 senders: two Daphne processes sharing Redis vs one",
            "rooms": 1,
            "members": 100,
            "senders": 10,
            "start_rate": 10,
            "servers": ["project_1proc", "project_2proc"],
            "ratios": [("project_2proc", "project_1proc")],
        },
    ]
    chosen = []
    for s in every:
        s.setdefault("servers", servers)
        if s["kind"] == "scale" and "project" not in cfg.servers:
            continue
        if not filtered or cfg.wants(s["key"]) or cfg.wants(s["kind"]):
            chosen.append(s)
    return chosen


# --- servers ----------------------------------------------------------------------


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


def project_tree() -> Path:
    """The tree to serve: this work tree, or with BENCH_PROJECT_REF=<commit> a
    snapshot of that commit (`git archive`, extracted under bench/.snapshots/),
    so that a long run measures one version while others edit the work tree."""
    ref = os.environ.get("BENCH_PROJECT_REF", "")
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
            # The project first; `bench` (a namespace package) from either tree.
            "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(PROJECT), str(ROOT)])),
            "BENCH_PROJECT_DIR": str(PROJECT),
        }
    )
    env.update(SERVER_EXTRA_ENV)
    return env


def prepare_project(cfg: Config, env: dict) -> None:
    exists = run_checked(
        ["psql", *PG, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'"]  # noqa: S608
    )
    if exists.strip() and cfg.reset_db:
        run_checked(["dropdb", *PG, "--force", DB_NAME])
        exists = ""
    if not exists.strip():
        run_checked(["createdb", *PG, DB_NAME])
    for db in (PROJECT_REDIS_DB, PEER_REDIS_DB):  # the bench's own Redis databases
        run_checked(["redis-cli", "-h", "127.0.0.1", "-n", str(db), "FLUSHDB"])
    python = VENV_BIN / "python"
    run_checked([python, "manage.py", "migrate", "--noinput"], env=env)
    run_checked([python, "manage.py", "collectstatic", "--noinput"], env=env)


def daphne(name: str, env: dict) -> Server:
    port = procs.free_port()
    server_env = dict(env, DATABASE_URL=f"{DATABASE_URL}?application_name=bench-{name}")
    cmd = [
        VENV_BIN / "daphne",
        "-e",
        f"tcp:port={port}:interface=127.0.0.1:backlog=2048",
        "chatsite.asgi:application",
    ]
    return Server(name, cmd, PROJECT, server_env, port)


def peers(cfg: Config) -> list[Server]:
    out = []
    if "seed_fastapi" in cfg.servers:
        folder = SHARED / "peers" / "seed_fastapi"
        venv = VENVS / "seed_fastapi"
        procs.ensure_venv(venv, [folder / "requirements.txt"], LOGS / "venvs.log")
        port = procs.free_port()
        env = dict(os.environ, PEER_REDIS_URL=f"redis://127.0.0.1:6379/{PEER_REDIS_DB}")
        cmd = [venv / "bin" / "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)]
        out.append(Server("seed_fastapi", cmd, folder, env, port))
    if "bare_ws" in cfg.servers:
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


# --- one loadgen run ------------------------------------------------------------------


class Bench:
    def __init__(self, cfg: Config, stem: str):
        self.cfg = cfg
        self.stem = stem
        self.records: list[dict] = []
        self.servers: dict[str, Server] = {}
        self.targets: dict[str, dict] = {}  # load target name -> urls, pids, servers
        self.no_room_create: set[str] = set()
        self.loadgen_python: Path | None = None
        self.jsonl = RESULTS / f"{stem}.jsonl"
        self.notes: list[str] = []
        self.run_id = secrets.token_hex(2)
        self.env: dict = {}  # the project's environment, once started

    def room_prefix(self, scenario: dict, rep: int, kind: str) -> str:
        """Fresh rooms for every loadgen run, so that no run inherits another's
        room state (members, presence, channel-layer groups)."""
        return f"b{self.run_id}-{scenario['key']}-{'p' if rep < 0 else rep}{kind[0]}"

    def loadgen_args(
        self,
        scenario: dict,
        kind: str,
        rate: float | None,
        prefix: str = "",
        duration: float | None = None,
    ) -> list:
        cfg = self.cfg
        if kind in ("idle", "storm"):
            n = scenario["sockets"]
            if kind == "idle":
                return ["--idle", n, "--settle", 2]
            return ["--idle", n, "--idle-users", n, "--connect-concurrency", n, "--settle", 1]
        shape = ["--rooms", scenario["rooms"], "--members", scenario["members"]]
        shape += ["--senders", scenario["senders"], "--room-prefix", prefix or scenario["key"]]
        if kind == "sweep":
            window = ["--duration", cfg.duration, "--warmup", cfg.warmup, "--drain", cfg.drain]
            sweep = [
                "--sweep",
                "--rate",
                scenario["start_rate"],
                "--sweep-factor",
                cfg.sweep_factor,
            ]
            return [*shape, *sweep, *window]
        window = ["--duration", duration or cfg.fixed_duration, "--warmup", cfg.fixed_warmup]
        return [*shape, "--rate", rate, *window, "--drain", cfg.drain]

    def command(self, target: str, args: list) -> list:
        """loadgen, through bench/loadgen_ext.py (several servers, settling after joins)."""
        spec = self.targets[target]
        pids = ",".join(str(s.pid) for s in spec["servers"])
        cmd = [self.loadgen_python, BENCH / "loadgen_ext.py", *(str(a) for a in args)]
        cmd += ["--url", spec["urls"][0], "--label", target]
        cmd += ["--server-pid", str(spec["servers"][0].pid), "--server-pids", pids]
        cmd += [a for url in spec["urls"][1:] for a in ("--also-url", url)]
        if "--idle" not in args:
            settle = ["--settle-joins", self.cfg.settle_quiet, "--settle-max", self.cfg.settle_max]
            cmd += [str(a) for a in settle]
        if target in self.no_room_create:
            cmd.append("--no-room-create")
        return cmd

    def invoke(
        self, scenario: dict, target: str, rep: int, kind: str, rate: float | None = None
    ) -> dict:
        spec = self.targets[target]
        record = {
            "scenario": scenario["key"],
            "server": target,
            "rep": rep,
            "kind": kind,
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        }
        for server in spec["servers"]:
            problem = server.ensure_alive()
            if problem:
                record["error"] = problem
                return self.keep(record)
        prefix = self.room_prefix(scenario, rep, kind)
        if target in self.no_room_create and "rooms" in scenario:
            precreate_rooms(self.env, [f"{prefix}-{i}" for i in range(scenario["rooms"])])
        cmd = self.command(target, self.loadgen_args(scenario, kind, rate, prefix))
        offsets = [server.log_offset() for server in spec["servers"]]
        record["cmd"] = " ".join(str(c) for c in cmd)
        steps = 12 if kind == "sweep" else 1
        window = (
            self.cfg.warmup + self.cfg.duration + self.cfg.fixed_warmup + self.cfg.fixed_duration
        )
        timeout = 180 + self.cfg.settle_max + steps * (window + self.cfg.drain + 5)
        print(
            f"bench: rep {rep + 1} {scenario['key']:10} {kind:5} {target:13}"
            + (f" rate {rate:g}" if rate else ""),
            end=" ",
            flush=True,
        )
        started = time.monotonic()
        returncode, problem, out = procs.run_captured(
            cmd, cwd=BENCH, env=dict(os.environ), timeout=timeout, log=LOGS / "loadgen.log"
        )
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if lines:
            record["result"] = json.loads(lines[-1])
        else:
            record["error"] = (
                problem or f"loadgen exit {returncode}: {last_error(LOGS / 'loadgen.log')}"
            )
        record["seconds"] = round(time.monotonic() - started, 1)
        errors = [s.errors_since(o) for s, o in zip(spec["servers"], offsets, strict=True)]
        types: dict[str, int] = {}
        for e in errors:
            for name, n in e["types"].items():
                types[name] = types.get(name, 0) + n
        record["server_errors"] = {
            "tracebacks": sum(e["tracebacks"] for e in errors),
            "types": types,
        }
        if record.get("result") is not None:
            record["result"]["server_tracebacks"] = record["server_errors"]["tracebacks"]
        tracebacks = record["server_errors"]["tracebacks"]
        logged = f", {tracebacks} tracebacks in the server log" if tracebacks else ""
        print(f"-> {headline(record)}{logged} ({record['seconds']:.0f} s)", flush=True)
        return self.keep(record)

    def keep(self, record: dict) -> dict:
        self.records.append(record)
        line = {
            **(record.get("result") or {}),
            **{k: v for k, v in record.items() if k != "result"},
        }
        line["label"] = record["server"]
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(line) + "\n")
        return record

    # --- scenarios -------------------------------------------------------------------

    def run_scenario(self, scenario: dict, rep: int) -> None:
        targets = [t for t in scenario["servers"] if t in self.targets]
        kind = scenario["kind"]
        if kind in ("idle", "storm"):
            for target in targets:
                if scenario.get("fresh"):
                    for server in self.targets[target]["servers"]:
                        server.restart()
                self.invoke(scenario, target, rep, kind)
            return
        best = {}
        for target in targets:
            record = self.invoke(scenario, target, rep, "sweep")
            best[target] = (record.get("result") or {}).get("max_sustained_msgs_per_s")
        for target in targets:
            # Latency and CPU at half the server's own max sustained rate (the
            # issue's latency target); the scale-out pair both at half of one
            # process's, so that their CPU per delivery compares like for like.
            reference = best.get(targets[0]) if kind == "scale" else best.get(target)
            rate = round((reference or scenario["start_rate"]) / 2, 2)
            self.invoke(scenario, target, rep, "fixed", rate)

    def median_max_rate(self, scenario_key: str, target: str) -> float | None:
        rates = [
            r["result"].get("max_sustained_msgs_per_s")
            for r in self.records
            if r["scenario"] == scenario_key
            and r["server"] == target
            and r["kind"] == "sweep"
            and r.get("result")
        ]
        return report.median(rates)


def last_error(log: Path) -> str:
    try:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    except OSError:
        return "?"
    return " | ".join(tail)[-300:]


def headline(record: dict) -> str:
    if "error" in record:
        return f"ERROR {record['error'][:200]}"
    r = record["result"]
    if r.get("error"):
        return f"ERROR {r['error']}"
    if record["kind"] == "sweep":
        best = r.get("max_sustained_deliveries_per_s")
        return f"max sustained {best} deliv/s ({r.get('stopped_because')})"
    if record["kind"] in ("idle", "storm"):
        return (
            f"{r.get('connect_per_s')} sockets/s, {r.get('connect_failures')} failed, "
            f"{r.get('server_rss_kib_per_socket')} KiB/socket"
        )
    lat = r.get("latency_ms") or {}
    return (
        f"{r.get('deliveries_per_s')} deliv/s p50 {lat.get('p50')} p99 {lat.get('p99')} ms, "
        f"lost {r.get('lost')}, cpu srv {r.get('server_cpu_pct')}% lg {r.get('loadgen_cpu_pct')}%"
        + ("" if r.get("valid") else " INVALID")
    )


# --- history and profile -----------------------------------------------------------------


def run_history(bench: Bench, env: dict) -> dict:
    server = bench.servers["project"]
    out = RESULTS / f"{bench.stem}-history.json.tmp"
    requests = "100" if bench.cfg.quick else "1000"
    cmd = [
        VENV_BIN / "python",
        BENCH / "history.py",
        "--url",
        server.url,
        "--requests",
        requests,
        "--in-process-requests",
        "50" if bench.cfg.quick else "300",
        "--out",
        out,
    ]
    print("bench: history API at 1,000,000 messages", flush=True)
    returncode, problem, stdout = procs.run_captured(
        cmd, cwd=PROJECT, env=env, timeout=1800, log=LOGS / "history.log"
    )
    print(stdout, end="", flush=True)
    if returncode != 0 or not out.exists():
        return {
            "error": problem or f"history.py exit {returncode}: {last_error(LOGS / 'history.log')}"
        }
    result = json.loads(out.read_text())
    out.unlink()
    return result


def run_profile(bench: Bench, scenario: dict) -> dict:
    """py-spy on the project's Daphne while loadgen offers its max sustained rate.

    loadgen first registers users and opens sockets, so it gets a long window
    and py-spy attaches only after PROFILE_DELAY seconds, to sample the send
    path rather than the setup. Two recordings: collapsed stacks (text, for
    the summary and for speedscope or inferno) and a flamegraph SVG.
    """
    py_spy = (
        procs.ensure_venv(VENVS / "tools", [BENCH / "requirements.txt"], LOGS / "venvs.log").parent
        / "py-spy"
    )
    server = bench.servers["project"]
    rate = bench.median_max_rate(scenario["key"], "project") or scenario["start_rate"]
    result = {
        "scenario": scenario["key"],
        "rate_msgs_per_s": rate,
        "seconds": PROFILE_SECONDS,
        "files": {},
        "runs": [],
    }
    outputs = {
        "raw": RESULTS / f"{bench.stem}-profile.txt",
        "flamegraph": RESULTS / f"{bench.stem}-profile.svg",
    }
    for fmt_name, path in outputs.items():
        print(
            f"bench: py-spy ({fmt_name}) on the project's Daphne at {rate:g} msg/s"
            f" ({scenario['key']})",
            flush=True,
        )
        prefix = bench.room_prefix(scenario, -1, fmt_name)
        if "project" in bench.no_room_create:
            precreate_rooms(bench.env, [f"{prefix}-{i}" for i in range(scenario["rooms"])])
        duration = PROFILE_DELAY + PROFILE_SECONDS + 5
        args = bench.loadgen_args(scenario, "fixed", rate, prefix, duration)
        log = LOGS / f"profile-loadgen-{fmt_name}.log"
        loadgen = procs.spawn(
            bench.command("project", args), cwd=BENCH, env=dict(os.environ), log=log
        )
        time.sleep(PROFILE_DELAY)
        returncode, problem, _ = procs.run_captured(
            [
                py_spy,
                "record",
                "--pid",
                server.pid,
                "--duration",
                PROFILE_SECONDS,
                "--rate",
                100,
                "--format",
                fmt_name,
                "--output",
                path,
            ],
            cwd=ROOT,
            env=dict(os.environ),
            timeout=PROFILE_SECONDS + 60,
            log=LOGS / "py-spy.log",
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            loadgen.wait(timeout=PROFILE_DELAY + PROFILE_SECONDS + 120)
        procs.stop(loadgen)
        lines = [
            line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")
        ]
        result["runs"].append(json.loads(lines[-1]) if lines else {"error": last_error(log)})
        if returncode != 0 or not path.exists():
            result["files"][fmt_name] = None
            result.setdefault("errors", []).append(
                problem or f"py-spy exit {returncode}: {last_error(LOGS / 'py-spy.log')}"
            )
            continue
        result["files"][fmt_name] = str(path.relative_to(ROOT))
    if outputs["raw"].exists():
        result["summary"] = profile_summary.summarize(outputs["raw"])
    return result


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    cfg = Config()
    today = datetime.date.today().isoformat()
    # A partial run (BENCH_SCENARIOS, BENCH_SERVERS) never overwrites a full one.
    stem = "-".join([today, *(["quick"] if cfg.quick else []), *cfg.only])
    if os.environ.get("BENCH_SERVERS"):
        stem += "-" + "-".join(cfg.servers)
    RESULTS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    for log in LOGS.glob("*.log"):
        log.unlink()
    bench = Bench(cfg, stem)
    bench.jsonl.write_text("")
    chosen = scenarios(cfg)
    meta = {
        "date": today,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": cfg.quick,
        "config": {k: v for k, v in vars(cfg).items()},
        "nproc": os.cpu_count(),
        "git": git_info(),
        "server_extra_env": SERVER_EXTRA_ENV,
        "scenarios": chosen,
    }
    print(
        f"bench: {len(chosen)} scenarios x {cfg.repeats} repetitions,"
        f" servers {', '.join(cfg.servers)}"
        f"{' (quick)' if cfg.quick else ''}",
        flush=True,
    )
    history = profile = None
    interrupted = None
    global PROJECT
    try:
        check_services()
        PROJECT = project_tree()
        meta["project_tree"] = str(PROJECT.relative_to(ROOT)) if PROJECT != ROOT else "."
        meta["project_ref"] = os.environ.get("BENCH_PROJECT_REF") or None
        bench.loadgen_python = procs.ensure_venv(
            VENVS / "loadgen", [SHARED / "bench" / "requirements.txt"], LOGS / "venvs.log"
        )
        env = bench.env = project_env()
        if "project" in cfg.servers:
            start_project(bench, cfg, env, chosen)
        for server in peers(cfg) if chosen else []:
            server.start()
            bench.servers[server.name] = server
            bench.targets[server.name] = {"urls": [server.url], "servers": [server]}
        meta["servers"] = {
            name: {"cmd": " ".join(map(str, s.cmd)), "port": s.port, "pid": s.pid}
            for name, s in bench.servers.items()
        }
        meta["versions"] = versions()
        for rep in range(cfg.repeats):
            for scenario in chosen:
                bench.run_scenario(scenario, rep)
        if "project" in bench.servers and cfg.wants("history"):
            history = run_history(bench, env)
        if "project" in bench.servers and cfg.profile and cfg.wants("profile"):
            room100 = next(s for s in scenarios(cfg, filtered=False) if s["key"] == "room100")
            profile = run_profile(bench, room100)
    except KeyboardInterrupt:
        interrupted = "interrupted (Ctrl-C)"
        print("\nbench: interrupted; stopping everything", flush=True)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        interrupted = f"failed: {exc}"
        print(f"\nbench: {interrupted}", flush=True)
    finally:
        procs.stop_all()
        meta["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        meta["interrupted"] = interrupted
        write_results(bench, meta, chosen, history, profile)
    if interrupted:
        sys.exit(1)


def start_project(bench: Bench, cfg: Config, env: dict, chosen: list[dict]) -> None:
    print("bench: preparing the project (database chat_bench, migrate, collectstatic)", flush=True)
    prepare_project(cfg, env)
    a = daphne("project", env)
    a.start()
    bench.servers["project"] = a
    bench.targets["project"] = {"urls": [a.url], "servers": [a]}
    if any(s["kind"] == "scale" for s in chosen):
        b = daphne("project_b", env)
        b.start()
        bench.servers["project_b"] = b
        bench.targets["project_1proc"] = {"urls": [a.url], "servers": [a]}
        bench.targets["project_2proc"] = {"urls": [a.url, b.url], "servers": [a, b]}
    works, detail = room_api_works(a)
    if not works:
        # loadgen stops on anything but 200/201/400/409 from POST /api/rooms/:
        # make the rooms in the database and tell the wrapper not to ask.
        bench.no_room_create.update(["project", "project_1proc", "project_2proc"])
        bench.notes.append(
            f"The project's room API did not answer as loadgen needs ({detail}); "
            "the bench rooms were created in the database and loadgen_ext.py skipped that step."
        )
        print(f"bench: {bench.notes[-1]}", flush=True)


def git_info() -> dict:
    def git(*args: str) -> str:
        try:
            done = subprocess.run(  # noqa: S603
                ["git", *args],  # noqa: S607
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
            return done.stdout.strip()
        except OSError:
            return ""

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        # The working tree changes under a long run when others edit it: this
        # tells two runs of the same commit apart.
        "diff_sha256": hashlib.sha256(git("diff", "HEAD").encode()).hexdigest()[:12],
        "uncommitted_files": len(
            [line for line in git("status", "--porcelain").splitlines() if line]
        ),
    }


def versions() -> dict:
    wanted = {
        "django",
        "channels",
        "channels-redis",
        "daphne",
        "twisted",
        "autobahn",
        "djangorestframework",
    }
    out = {}
    for req in [
        ROOT / "requirements.txt",
        *(SHARED / "peers").glob("*/requirements.txt"),
        SHARED / "bench" / "requirements.txt",
    ]:
        for line in req.read_text().splitlines():
            name, _, version = line.partition("==")
            if version and (req.parent.name != "main" or name.lower() in wanted):
                out.setdefault(req.parent.name if req.parent != ROOT else "project", {})[name] = (
                    version
                )
    return out


def write_results(
    bench: Bench, meta: dict, chosen: list[dict], history: dict | None, profile: dict | None
) -> None:
    summary = report.summarize(bench.records, chosen)
    data = {
        **meta,
        "notes": bench.notes,
        "summary": summary,
        "history": history,
        "profile": profile,
        "runs": bench.records,
    }
    json_path = RESULTS / f"{bench.stem}.json"
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(json_path)
    md = render_markdown(meta, summary, history, profile, bench.notes)
    md_path = RESULTS / f"{bench.stem}.md"
    md_path.write_text(md)
    print(
        f"\nbench: wrote {json_path.relative_to(ROOT)}, {md_path.relative_to(ROOT)}, "
        f"{bench.jsonl.relative_to(ROOT)}\n",
        flush=True,
    )
    print(md, flush=True)


def project_line(meta: dict) -> str:
    if meta.get("project_ref"):
        tree = meta.get("project_tree", "")
        return f"Project: `{meta['project_ref']}` = commit {tree.rsplit('/', 1)[-1]} (a snapshot)"
    git = meta["git"]
    return (
        f"Project: the work tree at commit {git.get('commit')} with"
        f" {git.get('uncommitted_files')} uncommitted files (diff {git.get('diff_sha256')})"
    )


def render_markdown(
    meta: dict, summary: dict, history: dict | None, profile: dict | None, notes: list
) -> str:
    cfg = meta["config"]
    lines = [
        f"# Bench results {meta['date']}{' (quick smoke run)' if meta['quick'] else ''}",
        "",
        f"{project_line(meta)};"
        f" {meta.get('nproc')} cores; {meta['started']} to {meta.get('finished')}."
        f" {cfg['repeats']} repetition(s), interleaved; windows of {cfg['duration']:g} s"
        f" after {cfg['warmup']:g} s warm-up; sweep factor {cfg['sweep_factor']:g}."
        " Method: docs/performance.md.",
        "",
        "Each cell is the median over the repetitions that count (`(k/n)` when some did not);"
        " ratios are medians of the per-repetition ratios. `≥` marks a sweep that stopped"
        " because the load generator ran out of CPU, not the server; `<X` a sweep that failed"
        " its first step, at X (the p99 100 ms / no-loss bound). Fixed-rate runs are at"
        " half of each server's own max sustained rate (the scale-out pair both at half of one"
        " process's). Server CPU is the Daphne/uvicorn/bare process only, not PostgreSQL or"
        " Redis.",
        "",
    ]
    if meta.get("interrupted"):
        lines += [f"**This run did not finish: {meta['interrupted']}.**", ""]
    lines += [f"Note: {n}" for n in notes] + ([""] if notes else [])
    lines.append(report.markdown_tables(summary))
    lines.append(report.history_table(history))
    if profile:
        lines.append(profile_summary.markdown(profile))
    return "\n".join(lines)


def rerender(path: Path) -> None:
    """Recompute the summary and the markdown of a results JSON (after a report change)."""
    data = json.loads(path.read_text())
    data["summary"] = report.summarize(data["runs"], data["scenarios"])
    profile = data.get("profile")
    raw_name = (profile or {}).get("files", {}).get("raw")
    raw = ROOT / raw_name if raw_name else None
    if profile and raw and raw.is_file():
        profile["summary"] = profile_summary.summarize(raw)
    path.write_text(json.dumps(data, indent=1, default=str))
    md = render_markdown(data, data["summary"], data.get("history"), profile, data.get("notes", []))
    path.with_suffix(".md").write_text(md)
    print(f"bench: rewrote {path} and {path.with_suffix('.md')}")


def on_signal(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if sys.argv[1:2] == ["--render"]:
        rerender(Path(sys.argv[2]))
    else:
        main()
