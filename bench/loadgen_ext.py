"""../shared/bench/loadgen.py with four additions; run.py runs every load through it.

This wrapper imports loadgen where it lies (nothing is copied) and replaces a
few of its functions before calling its own main(). The users, rooms, joins,
the open-loop schedule, the measurement, the sweep and the validity rule are
all loadgen's. What it adds:

- several servers (--also-url): socket i goes to server (i // rooms) % n, so
  that the sockets loadgen deals to each room (i % rooms) are split over
  every server, for the scale-out scenario (loadgen takes one --url); its
  connect_all runs once per server, concurrently;
- the CPU of several processes (--server-pids): loadgen's `server_cpu_pct`
  is their sum, and each one's share is added as `server_cpu_pct_per_process`;
- settling after the joins (--settle-joins S): every join makes the server
  tell the room's other members (`presence`), so joining N sockets to one
  room sends about N²/2 frames. Measuring while a slow server still works
  through that backlog would measure the join storm, not the fan-out of
  messages. So after the joins, the wrapper waits until no frame has arrived
  for S seconds (at most --settle-max), and reports how long that took as
  `join_settle_s` (with `join_settle_frames`, `join_settle_timed_out`);
- --no-room-create: skip POST /api/rooms/, for a server whose rooms were made
  beforehand because it has no room API.

Users are registered and rooms created through the first URL; the servers
share the database. Run it with the loadgen venv's Python:

    .venvs/loadgen/bin/python loadgen_ext.py --url http://127.0.0.1:A \
        [--also-url http://127.0.0.1:B --server-pids PA,PB] [--settle-joins 1] [loadgen options]
"""

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

LOADGEN_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "bench"
sys.path.insert(0, str(LOADGEN_DIR))

import loadgen  # noqa: E402
import orjson  # noqa: E402
import uvloop  # noqa: E402

_connect_all = loadgen.connect_all
_tree_cpu_s = loadgen.tree_cpu_s
_measure = loadgen.measure
_prepare = loadgen.prepare
_on_ws_frame = loadgen.Client.on_ws_frame


def ws_url(base: str) -> str:
    parts = urlsplit(base)
    return f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}/ws/chat/"


def spread_over(urls: list[str], rooms: int) -> None:
    """Deal the sockets over several servers, every room on every server."""
    ws_urls = [ws_url(u) for u in urls]

    def server_of(i: int) -> int:
        return (i // rooms) % len(ws_urls)

    async def connect_all(_ws_url, run, tokens, concurrency):
        groups = [[t for i, t in enumerate(tokens) if server_of(i) == s] for s in range(len(urls))]
        share = max(1, concurrency // len(ws_urls))
        started = time.perf_counter()
        results = await asyncio.gather(
            *(_connect_all(u, run, g, share) for u, g in zip(ws_urls, groups, strict=True))
        )
        elapsed = time.perf_counter() - started
        # Re-interleave so that position i belongs to server_of(i) again.
        queues = [list(clients) for clients, *_ in results]
        ordered = [queues[server_of(i)].pop(0) for i in range(len(tokens)) if queues[server_of(i)]]
        failures = sum(r[1] for r in results)
        first = next((r[3] for r in results if r[3]), None)
        rate = round(len(ordered) / elapsed, 1) if elapsed else None
        return ordered, failures, rate, first

    loadgen.connect_all = connect_all


def cpu_of(pids: list[int]) -> None:
    """Sum the CPU of several server processes and keep each one's share."""
    snapshots: list[tuple[float, list[float]]] = []

    def tree_cpu_s(_pid: int) -> float:
        values = [_tree_cpu_s(p) for p in pids]
        snapshots.append((time.perf_counter(), values))
        return sum(values)

    async def measure(*args, **kwargs):
        snapshots.clear()
        result = await _measure(*args, **kwargs)
        if len(snapshots) >= 2:
            (t0, cpu0), (t1, cpu1) = snapshots[0], snapshots[-1]
            result["server_cpu_pct_per_process"] = [
                round(100 * (b - a) / (t1 - t0), 1) if t1 > t0 else None
                for a, b in zip(cpu0, cpu1, strict=True)
            ]
        return result

    loadgen.tree_cpu_s = tree_cpu_s
    loadgen.measure = measure


def settle_after_joins(quiet_s: float, max_s: float) -> None:
    """After prepare(), wait until the sockets have been quiet for `quiet_s`."""
    frames = [0]

    def counting_on_ws_frame(self, transport, frame):
        frames[0] += 1
        _on_ws_frame(self, transport, frame)

    async def prepare(args, http, run):
        loadgen.Client.on_ws_frame = counting_on_ws_frame
        try:
            clients, senders, members_of, setup = await _prepare(args, http, run)
            started = last_change = time.perf_counter()
            at_start = seen = frames[0]
            timed_out = True
            while time.perf_counter() - started < max_s:
                await asyncio.sleep(0.05)
                now = time.perf_counter()
                if frames[0] != seen:
                    seen, last_change = frames[0], now
                elif now - last_change >= quiet_s:
                    timed_out = False
                    break
        finally:
            # Counting costs a call per frame: measure with loadgen's own handler.
            loadgen.Client.on_ws_frame = _on_ws_frame
        setup["join_settle_s"] = round(last_change - started, 2)
        setup["join_settle_frames"] = frames[0] - at_start
        setup["join_settle_timed_out"] = timed_out
        return clients, senders, members_of, setup

    loadgen.prepare = prepare


def skip_room_creation() -> None:
    async def make_rooms(*_args, **_kwargs):
        return None

    loadgen.make_rooms = make_rooms


def main() -> None:
    own = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    own.add_argument("--also-url", action="append", default=[], help="another server")
    own.add_argument("--server-pids", default="", help="comma-separated pids, CPU summed")
    own.add_argument("--settle-joins", type=float, default=0.0, help="quiet seconds after joins")
    own.add_argument("--settle-max", type=float, default=60.0, help="longest wait for quiet")
    own.add_argument("--no-room-create", action="store_true")
    extra, rest = own.parse_known_args()
    args = loadgen.parse_args(rest)
    for url in extra.also_url:
        loadgen.require_loopback(url)
    urls = [args.url, *(u.rstrip("/") for u in extra.also_url)]
    pids = [int(p) for p in extra.server_pids.split(",") if p]
    if len(urls) > 1:
        spread_over(urls, max(1, args.rooms))
    if pids:
        args.server_pid = args.server_pid or pids[0]  # loadgen reads CPU only with a pid
        cpu_of(pids)
    if extra.settle_joins > 0:
        settle_after_joins(extra.settle_joins, extra.settle_max)
    if extra.no_room_create:
        skip_room_creation()

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    steps = loadgen.LIMITS["sweep_steps"] if args.sweep else 1
    budget = 120 + extra.settle_max + steps * (args.warmup + args.duration + args.drain + 5)
    result = uvloop.run(asyncio.wait_for(loadgen.main(args), budget))
    result = {
        "label": args.label,
        "target": args.url,
        "targets": urls,
        "server_pids": pids or [args.server_pid],
        "rooms": args.rooms,
        "members": args.members,
        "senders_per_room": args.senders,
        **result,
    }
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
