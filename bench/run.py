"""`make bench`: the project and the two peers under the same load, side by side.

Starts the project as in production and the peers seed_fastapi and bare_ws
(servers.py), drives every scenario of issue 10 against each in turn
(project, seed_fastapi, bare_ws, project, ...) with ../shared/bench/loadgen.py
through loadgen_ext.py, repeated, then the history API (history.py) and a
py-spy profile, and writes bench/results/<date>-<commit>.{jsonl,json,md} (output.py,
report.py). The method and every BENCH_* setting: docs/performance.md.

    make bench                      # the full run
    BENCH_QUICK=1 make bench        # a smoke run
    .venv/bin/python bench/run.py --render bench/results/<date>-<commit>.json   # redo the tables
"""

import contextlib
import datetime
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import output
import procs
import profile_summary
import report
import servers
from servers import BENCH, LOGS, RESULTS, ROOT, SHARED, VENV_BIN, VENVS, Server

# The project under Daphne (as `make run` and the compose file serve it), and
# the same application under uvicorn, the documented alternative.
PROJECT_SERVERS = ("project", "project_uvicorn")
PROFILE_DELAY = 8  # seconds for loadgen's setup (100 users and sockets) before py-spy attaches
PROFILE_SECONDS = 10


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
        # Runs that narrow a sweep the server stopped (Bench.refine).
        self.refine = int(env_num("BENCH_REFINE", 0 if q else 2))
        self.only = env_list("BENCH_SCENARIOS")
        self.servers = env_list("BENCH_SERVERS") or [*PROJECT_SERVERS, "seed_fastapi", "bare_ws"]
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
    names = [s for s in (*PROJECT_SERVERS, "seed_fastapi", "bare_ws") if s in cfg.servers]
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
            # At ~1 msg/s a 3 s window holds a handful of messages, and loadgen
            # starts its CPU clock at the first send inside the window: a late
            # first send shrinks that clock and a short burst reads as >70%.
            "min_duration": 0 if q else 6,
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
            "servers": ["project_1proc", "project_2proc", "project_1proc_half"],
            # A process's cost per delivery falls as its load rises (its turns of
            # the event loop carry more work): at the same total rate each of the
            # pair carries half of one process's load. project_1proc_half is one
            # process at that load, half the pair's rate: fixed runs only.
            "fixed_only": {"project_1proc_half": 0.5},  # target -> its share of the rate
            "ratios": [
                ("project_2proc", "project_1proc"),
                ("project_2proc", "project_1proc_half"),
                # What halving the load alone does to one process's figure.
                ("project_1proc_half", "project_1proc"),
            ],
        },
    ]
    if "bare_ws" in cfg.servers:
        # The ceiling at the same two rates: how much of that fall is the
        # machine's and the workload's (every wake-up of a quiet process, and
        # of the load generator, costs more), for a server with nothing to share.
        scale = next(s for s in every if s["key"] == "scale")
        scale["servers"] = [*scale["servers"], "bare_ws", "bare_ws_half"]
        scale["fixed_only"] = {**scale["fixed_only"], "bare_ws": 1, "bare_ws_half": 0.5}
        scale["ratios"] = [*scale["ratios"], ("bare_ws_half", "bare_ws")]
    chosen = []
    for s in every:
        s.setdefault("servers", names)
        if s["kind"] == "scale" and "project" not in cfg.servers:
            continue
        if not filtered or cfg.wants(s["key"]) or cfg.wants(s["kind"]):
            chosen.append(s)
    return chosen


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

    def room_prefix(
        self, scenario: dict, rep: int, kind: str, rate: float | None = None, target: str = ""
    ) -> str:
        """Fresh rooms for every loadgen run, so that no run inherits another's
        room state (members, presence, channel-layer groups, history): the
        targets of the scale-out scenario share one database."""
        run = f"{'p' if rep < 0 else rep}{kind[0]}"
        if kind == "refine":
            run += f"{rate * 10:.0f}"  # its rate, in tenths: a slug has no dot
        if target in scenario["servers"]:
            run += f"t{scenario['servers'].index(target)}"
        return f"b{self.run_id}-{scenario['key']}-{run}"

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
            duration = max(cfg.duration, scenario.get("min_duration", 0))
            window = ["--duration", duration, "--warmup", cfg.warmup, "--drain", cfg.drain]
            sweep = [
                "--sweep",
                "--rate",
                scenario["start_rate"],
                "--sweep-factor",
                cfg.sweep_factor,
            ]
            return [*shape, *sweep, *window]
        if kind == "refine":  # one step of a sweep, at `rate`
            duration = max(cfg.duration, scenario.get("min_duration", 0))
            window = ["--duration", duration, "--warmup", cfg.warmup, "--drain", cfg.drain]
            return [*shape, "--rate", rate, *window]
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
        prefix = self.room_prefix(scenario, rep, kind, rate, target)
        if target in self.no_room_create and "rooms" in scenario:
            servers.precreate_rooms(self.env, [f"{prefix}-{i}" for i in range(scenario["rooms"])])
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
        fixed_only = scenario.get("fixed_only", {})
        for target in targets:
            if target in fixed_only:
                continue
            record = self.invoke(scenario, target, rep, "sweep")
            self.refine(scenario, target, rep, record)
            best[target] = (record.get("result") or {}).get("max_sustained_msgs_per_s")
        for target in targets:
            # Latency and CPU at half the server's own max sustained rate (the
            # issue's latency target); the scale-out pair both at half of one
            # process's (the same total load), and a fixed-only target at its
            # share of that rate (one process at the pair's load per process).
            reference = best.get(targets[0]) if kind == "scale" else best.get(target)
            share = fixed_only.get(target, 1)
            rate = round((reference or scenario["start_rate"]) / 2 * share, 2)
            self.invoke(scenario, target, rep, "fixed", rate)

    def refine(self, scenario: dict, target: str, rep: int, record: dict) -> None:
        """Narrow a sweep that the server stopped (p99 over 100 ms, or a loss).

        The sweep multiplies the rate by BENCH_SWEEP_FACTOR (1.5) per step, so
        its maximum may be a third below the server's. Up to BENCH_REFINE runs,
        each one step of the sweep's length, bisect between the last rate
        sustained and the first that was not (geometric middle); the sweep's
        result then holds the highest rate sustained, and `refined_from` the
        sweep's own. A sweep stopped by the load generator (its CPU) or by its
        last step is left alone: its figure is a lower bound, marked so.
        """
        result = record.get("result") or {}
        good = result.get("max_sustained_msgs_per_s")
        failed = [
            step
            for step in result.get("steps") or []
            if good is not None and step.get("offered_msgs_per_s", 0) > good
        ]
        if not (self.cfg.refine and failed) or report.sweep_lower_bound(result):
            return
        bad = failed[0]["offered_msgs_per_s"]
        best = None
        for _ in range(self.cfg.refine):
            rate = round((good * bad) ** 0.5, 1)
            run = self.invoke(scenario, target, rep, "refine", rate).get("result") or {}
            p99 = (run.get("latency_ms") or {}).get("p99")
            if run.get("valid") and not run.get("lost") and p99 is not None and p99 <= 100:
                good, best = rate, run
            else:
                bad = rate
        if best is not None:
            result["refined_from"] = {
                "max_sustained_msgs_per_s": result["max_sustained_msgs_per_s"],
                "max_sustained_deliveries_per_s": result.get("max_sustained_deliveries_per_s"),
            }
            result["max_sustained_msgs_per_s"] = good
            result["max_sustained_deliveries_per_s"] = best.get("deliveries_per_s")
        refined = f"refined: {good:g} msg/s sustained, {bad:g} not"
        result["stopped_because"] = f"{result.get('stopped_because')}; {refined}"
        self.keep_refined(record)

    def keep_refined(self, record: dict) -> None:
        """The sweep's record again, refined (the JSON lines keep both)."""
        line = {**record["result"], **{k: v for k, v in record.items() if k != "result"}}
        line["label"], line["refined"] = record["server"], True
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(line) + "\n")

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
        "--server-log",
        LOGS / f"{server.name}.log",
        "--out",
        out,
    ]
    print("bench: history API at 1,000,000 messages", flush=True)
    returncode, problem, stdout = procs.run_captured(
        cmd, cwd=servers.PROJECT, env=env, timeout=1800, log=LOGS / "history.log"
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
            servers.precreate_rooms(bench.env, [f"{prefix}-{i}" for i in range(scenario["rooms"])])
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


def take_lock():
    """One bench at a time on a machine: a second run would share the database,
    the Redis databases, the log folder and the two cores with the first, and
    both sets of figures would be wrong. Returns the open lock file (keep it)."""
    lock = open(BENCH / ".bench.lock", "a+")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        sys.exit(f"bench: another `make bench` is running ({holder}); wait for it to finish.")
    lock.seek(0)
    lock.truncate()
    lock.write(
        f"pid {os.getpid()}, started {datetime.datetime.now().isoformat(timespec='seconds')}"
    )
    lock.flush()
    return lock


def main() -> None:
    cfg = Config()
    lock = take_lock()  # noqa: F841 - released when the process ends
    today = datetime.date.today().isoformat()
    # Named for the day and the commit measured, so that two runs of one day
    # keep their own files; a partial run (BENCH_SCENARIOS, BENCH_SERVERS)
    # never overwrites a full one.
    parts = [today, servers.project_commit(), *(["quick"] if cfg.quick else []), *cfg.only]
    stem = "-".join(parts)
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
        "git": output.git_info(),
        "server_extra_env": servers.SERVER_EXTRA_ENV,
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
    try:
        servers.check_services()
        tree = servers.use_project_tree()
        meta["project_tree"] = str(tree.relative_to(ROOT)) if tree != ROOT else "."
        meta["project_ref"] = os.environ.get("BENCH_PROJECT_REF") or None
        bench.loadgen_python = procs.ensure_venv(
            VENVS / "loadgen", [SHARED / "bench" / "requirements.txt"], LOGS / "venvs.log"
        )
        env = bench.env = servers.project_env()
        if any(name in cfg.servers for name in PROJECT_SERVERS):
            start_project(bench, cfg, env, chosen)
        for server in servers.peers(cfg.servers) if chosen else []:
            server.start()
            bench.servers[server.name] = server
            bench.targets[server.name] = {"urls": [server.url], "servers": [server]}
        if "bare_ws" in bench.targets:
            bench.targets["bare_ws_half"] = bench.targets["bare_ws"]  # the scale scenario's
        meta["servers"] = {
            name: {"cmd": " ".join(map(str, s.cmd)), "port": s.port, "pid": s.pid}
            for name, s in bench.servers.items()
        }
        meta["versions"] = output.versions()
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
        output.write_results(bench, meta, chosen, history, profile)
    if interrupted:
        sys.exit(1)


def start_project(bench: Bench, cfg: Config, env: dict, chosen: list[dict]) -> None:
    print("bench: preparing the project (database chat_bench, migrate, collectstatic)", flush=True)
    servers.prepare_project(cfg.reset_db, env)
    if "project_uvicorn" in cfg.servers:
        u = servers.uvicorn("project_uvicorn", env)
        u.start()
        bench.servers[u.name] = u
        bench.targets[u.name] = {"urls": [u.url], "servers": [u]}
    if "project" not in cfg.servers:
        return
    a = servers.daphne("project", env)
    a.start()
    bench.servers["project"] = a
    bench.targets["project"] = {"urls": [a.url], "servers": [a]}
    if any(s["kind"] == "scale" for s in chosen):
        b = servers.daphne("project_b", env)
        b.start()
        bench.servers["project_b"] = b
        bench.targets["project_1proc"] = {"urls": [a.url], "servers": [a]}
        bench.targets["project_2proc"] = {"urls": [a.url, b.url], "servers": [a, b]}
        bench.targets["project_1proc_half"] = bench.targets["project_1proc"]
    works, detail = servers.room_api_works(a)
    if not works:
        # loadgen stops on anything but 200/201/400/409 from POST /api/rooms/:
        # make the rooms in the database and tell the wrapper not to ask.
        bench.no_room_create.update(
            ["project", "project_1proc", "project_2proc", "project_1proc_half"]
        )
        bench.notes.append(
            f"The project's room API did not answer as loadgen needs ({detail}); "
            "the bench rooms were created in the database and loadgen_ext.py skipped that step."
        )
        print(f"bench: {bench.notes[-1]}", flush=True)


def on_signal(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if sys.argv[1:2] == ["--render"]:
        output.rerender(Path(sys.argv[2]))
    else:
        main()
