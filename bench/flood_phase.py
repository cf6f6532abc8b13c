"""One phase of `make bench-flood` (bench/flood.py): the members' sockets, the
normal senders' schedule, the flooder process, and the figures of the window.

Member sockets stay open for the whole run; each phase has its own client_ids
(`p<phase>-<sender>-<n>`), so a late delivery is counted in its own phase.
"""

import asyncio
import contextlib
import json
import os
import resource
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import flood_report
import procs
import servers
from servers import BENCH, LOGS, PG, ROOT, VENV_BIN, Server
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

LOADGEN_CPU_LIMIT = 70.0  # % of one core, as loadgen's validity rule
SETTLE_MAX = 30.0  # s to wait for Daphne to go quiet between phases


@dataclass
class Member:
    name: str
    ws: ClientConnection
    last_id: int = 0
    seen: set = field(default_factory=set)


@dataclass
class Phase:
    index: int
    rep: int
    kind: str
    t0: float  # time.monotonic() of the first scheduled send
    window_start: float
    window_end: float
    deadline: float  # window end + drain: later deliveries count as lost
    sent: int = 0  # normal messages scheduled inside the window
    expected: int = 0
    latencies: list = field(default_factory=list)
    acks: list = field(default_factory=list)
    out_of_order: int = 0
    duplicates: int = 0
    refused: Counter = field(default_factory=Counter)  # error frames to normal sockets
    complete: asyncio.Event = field(default_factory=asyncio.Event)  # all expected delivered


class Flood:
    def __init__(self, cfg: dict, server: Server, room: str, members: list, flooder: dict):
        self.cfg = cfg
        self.server = server
        self.room = room
        self.members = members
        self.flooder = flooder  # username and token
        self.sends: dict[str, tuple[int, float, bool]] = {}  # client_id: phase, scheduled, measured
        self.phases: list[Phase] = []
        self.rows: list[dict] = []
        self.redis_pid = redis_pid()

    # --- the members' side -------------------------------------------------------------

    async def read(self, member: Member) -> None:
        try:
            async for raw in member.ws:
                now = time.monotonic()
                frame = json.loads(raw)
                if frame.get("type") == "message":
                    self.on_message(member, frame, now)
                elif frame.get("type") == "error" and self.phases:
                    self.phases[-1].refused[frame.get("code")] += 1
        except ConnectionClosed:
            pass

    def on_message(self, member: Member, frame: dict, now: float) -> None:
        current = self.phases[-1] if self.phases else None
        if frame["id"] in member.seen:
            if current:
                current.duplicates += 1
            return
        member.seen.add(frame["id"])
        if frame["id"] < member.last_id:
            if current:
                current.out_of_order += 1
        else:
            member.last_id = frame["id"]
        sent = self.sends.get(frame.get("client_id") or "")
        if sent is None:
            return  # the flooder's, or from before
        phase = self.phases[sent[0]]
        if frame["user"] == member.name:
            phase.acks.append(now - sent[1])  # the sender's own copy: its ack
        elif sent[2] and now <= phase.deadline:
            phase.latencies.append(now - sent[1])
            if len(phase.latencies) >= phase.expected:
                phase.complete.set()

    async def send_loop(self, k: int, phase: Phase) -> None:
        """Sender k: periodic from phase.t0, offset so the senders interleave."""
        period = 1 / self.cfg["sender_rate"]
        offset = k * period / self.cfg["senders"]
        member = self.members[k]
        n = 0
        while (scheduled := phase.t0 + offset + n * period) < phase.window_end:
            if (delay := scheduled - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            client_id = f"p{phase.index}-{k}-{n}"
            measured = scheduled >= phase.window_start
            self.sends[client_id] = (phase.index, scheduled, measured)
            if measured:
                phase.sent += 1
                phase.expected += len(self.members) - 1
            body = {"type": "message", "room": self.room, "body": f"m{n}", "client_id": client_id}
            await member.ws.send(json.dumps(body))
            n += 1

    # --- one phase -----------------------------------------------------------------------

    async def run_phase(self, rep: int, kind: str, profile: tuple | None = None) -> dict:
        """One phase; with `profile` (py-spy, output path), py-spy records
        Daphne over the window."""
        cfg = self.cfg
        problem = self.server.ensure_alive()
        if problem:
            raise RuntimeError(problem)
        pg_pids = postgres_pids(self.server.name)
        log_offset = self.server.log_offset()
        lead = 3.0 if kind == "flood" else 0.5  # the flooder needs to start and join
        start_wall, t0 = time.time() + lead, time.monotonic() + lead
        window_start = t0 + cfg["warmup"]
        window_end = window_start + cfg["window"]
        phase = Phase(
            len(self.phases), rep, kind, t0, window_start, window_end, window_end + cfg["drain"]
        )
        self.phases.append(phase)
        flooder = self.start_flooder(phase, start_wall) if kind == "flood" else None
        senders = [asyncio.create_task(self.send_loop(k, phase)) for k in range(cfg["senders"])]
        await sleep_until(window_start)
        before = self.snapshot(pg_pids, flooder)
        recorder = self.start_py_spy(*profile) if profile else None
        await sleep_until(window_end)
        after = self.snapshot(pg_pids, flooder)
        if recorder:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(recorder.wait, timeout=60)
            procs.stop(recorder)
        await asyncio.gather(*senders)
        phase.complete.clear()  # it may have caught up with `expected` while sending
        if len(phase.latencies) < phase.expected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(phase.complete.wait(), phase.deadline - time.monotonic())
        flood_result = await self.finish_flooder(flooder) if flooder else None
        settle_s = await self.settle()
        return self.row(phase, before, after, flood_result, settle_s, log_offset)

    def start_py_spy(self, py_spy: Path, path: Path) -> subprocess.Popen:
        path.unlink(missing_ok=True)
        cmd = [py_spy, "record", "--pid", self.server.pid, "--duration", int(self.cfg["window"])]
        cmd += ["--rate", 100, "--format", "raw", "--output", path]
        return procs.spawn(cmd, cwd=ROOT, env=dict(os.environ), log=LOGS / "py-spy.log")

    def start_flooder(self, phase: Phase, start_wall: float) -> tuple:
        out = LOGS / f"flooder-{phase.index}.json"
        out.unlink(missing_ok=True)
        cmd = [
            VENV_BIN / "python",
            BENCH / "flooder.py",
            f"--url=ws://127.0.0.1:{self.server.port}/ws/chat/",
            f"--room={self.room}",
            f"--username={self.flooder['name']}",
            f"--phase={phase.index}",
            f"--rate={self.cfg['flood_rate']}",
            f"--start-at={start_wall}",
            f"--duration={self.cfg['warmup'] + self.cfg['window']}",
            f"--out={out}",
        ]
        env = dict(os.environ, FLOOD_TOKEN=self.flooder["token"])
        return procs.spawn(cmd, cwd=ROOT, env=env, log=LOGS / "flooder.log"), out

    async def finish_flooder(self, flooder: tuple) -> dict:
        process, out = flooder
        try:
            await asyncio.to_thread(process.wait, timeout=30)
        except subprocess.TimeoutExpired:
            procs.stop(process)
            return {"problem": "did not finish within 30 s of the window's end"}
        if process.returncode != 0 or not out.exists():
            return {"problem": f"exit code {process.returncode}; see bench/logs/flooder.log"}
        return json.loads(out.read_text())

    async def settle(self) -> float:
        """Wait until Daphne is nearly idle, so that no backlog of one phase
        (the flood's queued frames) runs into the next."""
        start = time.monotonic()
        while time.monotonic() - start < SETTLE_MAX:
            cpu0 = procs.cpu_seconds(self.server.pid) or 0.0
            await asyncio.sleep(1.0)
            if (procs.cpu_seconds(self.server.pid) or 0.0) - cpu0 < 0.15:
                break
        return round(time.monotonic() - start, 1)

    def snapshot(self, pg_pids: list[int], flooder: tuple | None) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "t": time.monotonic(),
            "server": procs.cpu_seconds(self.server.pid),
            "self": usage.ru_utime + usage.ru_stime,
            "flooder": procs.cpu_seconds(flooder[0].pid) if flooder else None,
            "redis": procs.cpu_seconds(self.redis_pid) if self.redis_pid else None,
            "postgres": {pid: procs.cpu_seconds(pid) for pid in pg_pids},
            "machine": machine_busy(),
            "rss": procs.rss_kib(self.server.pid),
        }

    def row(self, phase: Phase, before: dict, after: dict, flood: dict | None, settle_s, offset):
        wall = after["t"] - before["t"]

        def pct(key: str) -> float | None:
            if before[key] is None or after[key] is None:
                return None
            return round((after[key] - before[key]) / wall * 100, 1)

        pg = [
            after["postgres"][pid] - before["postgres"][pid]
            for pid in before["postgres"]
            if before["postgres"][pid] is not None and after["postgres"].get(pid) is not None
        ]
        (busy0, total0), (busy1, total1) = before["machine"], after["machine"]
        loadgen = pct("self")
        valid = loadgen is not None and loadgen <= LOADGEN_CPU_LIMIT
        return {
            "rep": phase.rep,
            "phase": phase.kind,
            "window_s": round(wall, 2),
            "latency_ms": flood_report.percentiles(phase.latencies),
            "ack_ms": flood_report.percentiles(phase.acks),
            "normal_sent": phase.sent,
            "expected": phase.expected,
            "deliveries": len(phase.latencies),
            "lost": phase.expected - len(phase.latencies),
            "out_of_order": phase.out_of_order,
            "duplicates": phase.duplicates,
            "normal_refused": dict(phase.refused),
            "server_cpu_pct": pct("server"),
            "loadgen_cpu_pct": loadgen,
            "flooder_cpu_pct": pct("flooder"),
            "redis_cpu_pct": pct("redis"),
            "postgres_cpu_pct": round(sum(pg) / wall * 100, 1) if pg else None,
            "postgres_backends": len(pg),
            "machine_busy_pct": round(
                (busy1 - busy0) / (total1 - total0) * 100 * os.cpu_count(), 1
            ),
            "server_rss_mib": [
                round(before["rss"] / 1024, 1) if before["rss"] else None,
                round(after["rss"] / 1024, 1) if after["rss"] else None,
            ],
            "settle_s": settle_s,
            "tracebacks": self.server.errors_since(offset)["tracebacks"],
            "load_average": os.getloadavg()[0],
            "valid": valid,
            "invalid_reason": None if valid else f"loadgen CPU {loadgen}% > {LOADGEN_CPU_LIMIT}%",
            "flooder": flood,
        }


async def sleep_until(moment: float) -> None:
    if (delay := moment - time.monotonic()) > 0:
        await asyncio.sleep(delay)


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def redis_pid() -> int | None:
    try:
        info = servers.run_checked(["redis-cli", "-h", "127.0.0.1", "info", "server"], timeout=10)
    except RuntimeError:
        return None
    for line in info.splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":")[1])
    return None


def postgres_pids(server_name: str) -> list[int]:
    """The PostgreSQL backends of the Daphne `server_name` (servers.daphne names them)."""
    sql = f"SELECT pid FROM pg_stat_activity WHERE application_name = 'bench-{server_name}'"  # noqa: S608
    out = servers.run_checked(["psql", *PG, "-d", servers.DB_NAME, "-tAc", sql], timeout=10)
    return [int(line) for line in out.split() if line.strip()]
