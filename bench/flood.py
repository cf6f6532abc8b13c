"""`make bench-flood`: a flood from one client must not delay the others (issue 7).

Starts the project as `make bench` does (servers.py: production settings,
PostgreSQL `chat_bench`, the Redis channel layer, Daphne), with the socket
limits at their production defaults (SEND_RATE, SEND_BURST, MAX_FRAME_BYTES
are taken out of the environment). Registers MEMBERS users through the API,
creates a fresh public room and joins one socket per user to it. In every
phase SENDERS of them send SENDER_RATE messages a second (periodic, staggered);
every other member records when each one arrives, and the latency counts
from the *scheduled* send time, so a late sender cannot hide server delay.

Phases alternate, REPEATS times: `baseline` (no flood) and `flood`: one more
socket of its own user (bench/flooder.py, a process of its own) sending an
open loop of FLOOD_RATE frames a second, valid messages with oversized and
malformed frames mixed in. Writes bench/results/<date>-flood.{json,md}; the
method and the last run's table are in docs/performance.md ("Flood").

    make bench-flood
    BENCH_PROJECT_REF=HEAD make bench-flood     # serve a commit, not the work tree
    FLOOD_REPEATS=1 FLOOD_WINDOW=3 make bench-flood   # a smoke run (<date>-flood-custom.*)
    .venv/bin/python bench/flood.py --render bench/results/<date>-flood.json   # redo the table
"""

import asyncio
import datetime
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import flood_report
import output
import procs
import profile_summary
import servers
from flood_phase import Flood, Member
from run import env_num, take_lock
from servers import BENCH, LOGS, RESULTS, ROOT, VENV_BIN, VENVS, Server
from websockets.asyncio.client import connect

DEFAULTS = {
    "repeats": 3,
    "members": 20,
    "senders": 5,
    "sender_rate": 5.0,
    "flood_rate": 2000.0,
    "warmup": 2.0,
    "window": 10.0,
    "drain": 5.0,
    "profile": 1,  # one more flood phase, unmeasured, with py-spy on Daphne
}
PASSWORD = "bench-pass-1"  # noqa: S105 - throwaway bench accounts
# Production defaults are what this benchmark is about: never inherited.
LIMIT_VARS = ("SEND_RATE", "SEND_BURST", "MAX_FRAME_BYTES")


def config() -> dict:
    """DEFAULTS, each overridable by FLOOD_<KEY> (FLOOD_RATE for flood_rate)."""
    cfg = {
        key: env_num("FLOOD_" + key.upper().removeprefix("FLOOD_"), value)
        for key, value in DEFAULTS.items()
    }
    for key in ("repeats", "members", "senders"):
        cfg[key] = int(cfg[key])
    return cfg


def socket_limits(env: dict) -> dict:
    code = (
        "import json; from django.conf import settings as s; "
        f"print(json.dumps({{k: getattr(s, k) for k in {list(LIMIT_VARS)!r}}}))"
    )
    out = servers.run_checked([VENV_BIN / "python", "manage.py", "shell", "-c", code], env=env)
    return json.loads(out.strip().splitlines()[-1])


def register(server: Server, name: str) -> str:
    """A fresh user through the API; returns its access token."""
    creds = {"username": name, "password": PASSWORD}
    status, text = servers.http_json("POST", f"{server.url}/api/auth/register/", creds)
    if status != 201:
        raise RuntimeError(f"register {name}: HTTP {status} {text[:200]}")
    status, text = servers.http_json("POST", f"{server.url}/api/auth/token/", creds)
    if status != 200:
        raise RuntimeError(f"token {name}: HTTP {status} {text[:200]}")
    return json.loads(text)["access"]


async def open_member(server: Server, name: str, token: str, room: str) -> Member:
    ws = await connect(
        f"ws://127.0.0.1:{server.port}/ws/chat/",
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
    )
    await ws.send(json.dumps({"type": "join", "room": room}))
    while json.loads(await ws.recv()).get("type") != "joined":
        pass
    return Member(name, ws)


async def drive(cfg: dict, server: Server, rows: list[dict], profile: dict) -> None:
    """Set up the room and its members, then run the phases into `rows` and,
    with profile["py_spy"], one more flood phase under py-spy into `profile`."""
    run_id = secrets.token_hex(3)
    names = [f"fl{run_id}u{i}" for i in range(cfg["members"])]
    tokens = [register(server, name) for name in names]
    flooder = {"name": f"fl{run_id}flood", "token": register(server, f"fl{run_id}flood")}
    room = f"flood-{run_id}"
    status, text = servers.http_json(
        "POST", f"{server.url}/api/rooms/", {"name": room, "slug": room}, tokens[0]
    )
    if status != 201:
        raise RuntimeError(f"POST /api/rooms/: HTTP {status} {text[:200]}")
    members = [await open_member(server, n, t, room) for n, t in zip(names, tokens, strict=True)]
    bench = Flood(cfg, server, room, members, flooder)
    readers = [asyncio.create_task(bench.read(m)) for m in members]
    await asyncio.sleep(1.0)  # the joins' presence frames
    try:
        for rep in range(cfg["repeats"]):
            for kind in ("baseline", "flood"):
                row = await bench.run_phase(rep, kind)
                rows.append(row)
                lat = row["latency_ms"]
                print(
                    f"flood: rep {rep + 1} {kind}: p50 {lat['p50']} ms, p99 {lat['p99']} ms,"
                    f" max {lat['max']} ms, lost {row['lost']}, server CPU"
                    f" {row['server_cpu_pct']}%, loadgen CPU {row['loadgen_cpu_pct']}%",
                    flush=True,
                )
        if profile.get("py_spy"):
            path = RESULTS / profile.pop("stem")
            print(f"flood: one more flood phase with py-spy on Daphne -> {path.name}", flush=True)
            row = await bench.run_phase(-1, "flood", profile=(profile.pop("py_spy"), path))
            profile.update(
                row=row,
                files={"raw": str(path.relative_to(ROOT)) if path.exists() else None},
                summary=profile_summary.summarize(path) if path.exists() else None,
            )
    finally:
        for member in members:
            await member.ws.close()
        for reader in readers:
            reader.cancel()


def main() -> None:
    cfg = config()
    lock = take_lock()  # noqa: F841 - one bench at a time; released when the process ends
    today = datetime.date.today().isoformat()
    stem = f"{today}-flood" if cfg == DEFAULTS else f"{today}-flood-custom"
    RESULTS.mkdir(parents=True, exist_ok=True)
    for log in [LOGS / "flood_project.log", LOGS / "flooder.log", *LOGS.glob("flooder-*.json")]:
        log.unlink(missing_ok=True)
    meta = {
        "date": today,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "config": cfg,
        "nproc": os.cpu_count(),
        "git": output.git_info(),
        "server_extra_env": servers.SERVER_EXTRA_ENV,
        "notes": [],
    }
    rows: list[dict] = []
    profile: dict = {}
    interrupted = None
    try:
        servers.check_services()
        tree = servers.use_project_tree()
        meta["project_tree"] = str(tree.relative_to(ROOT)) if tree != ROOT else "."
        meta["project_ref"] = os.environ.get("BENCH_PROJECT_REF") or None
        env = servers.project_env()
        for name in LIMIT_VARS:
            env.pop(name, None)
        print("flood: preparing the project (database chat_bench, migrate)", flush=True)
        servers.prepare_project(os.environ.get("BENCH_RESET_DB") == "1", env)
        meta["limits"] = socket_limits(env)
        if cfg["sender_rate"] > meta["limits"]["SEND_RATE"]:
            cfg["sender_rate"] = 0.8 * meta["limits"]["SEND_RATE"]
            meta["notes"].append(
                f"SEND_RATE is below 5/s: normal senders use {cfg['sender_rate']}/s."
            )
        server = servers.daphne("flood_project", env)
        server.start()
        meta["server"] = {"cmd": " ".join(map(str, server.cmd)), "port": server.port}
        meta["versions"] = output.versions()
        if cfg["profile"]:
            tools = procs.ensure_venv(
                VENVS / "tools", [BENCH / "requirements.txt"], LOGS / "venvs.log"
            )
            profile.update(
                py_spy=tools.parent / "py-spy",
                stem=f"{stem}-profile.txt",
                scenario="flood (an extra phase, not in the table above)",
                rate_msgs_per_s=cfg["flood_rate"],
                seconds=cfg["window"],
            )
        asyncio.run(drive(cfg, server, rows, profile))
    except KeyboardInterrupt:
        interrupted = "interrupted"
        print("\nflood: interrupted; stopping everything", flush=True)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        interrupted = f"failed: {exc}"
        print(f"\nflood: {interrupted}", flush=True)
    finally:
        procs.stop_all()
        meta["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        meta["interrupted"] = interrupted
        meta.setdefault("limits", {})
        meta.setdefault("project_tree", ".")
        summary = flood_report.summarize(rows)
        profile.pop("py_spy", None)
        data = {**meta, "summary": summary, "rows": rows, "profile": profile or None}
        (RESULTS / f"{stem}.json").write_text(json.dumps(data, indent=1, default=str))
        table = flood_report.render(data)
        (RESULTS / f"{stem}.md").write_text(table)
        print(table, flush=True)
        print(f"flood: wrote bench/results/{stem}.json and .md", flush=True)
    if interrupted:
        sys.exit(1)


def on_signal(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    if sys.argv[1:2] == ["--render"]:  # redo the markdown of a run from its JSON
        source = Path(sys.argv[2])
        source.with_suffix(".md").write_text(flood_report.render(json.loads(source.read_text())))
    else:
        main()
