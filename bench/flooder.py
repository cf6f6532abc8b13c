"""The flooding client of `make bench-flood` (bench/flood.py starts it).

One socket of one user, in a process of its own so that its sending never
delays the measuring clients' clocks: it joins the room, waits for the
agreed start time, then sends an open loop of RATE frames a second until
the end, mostly `message` frames, with oversized and malformed ones mixed in
(MIX), while it reads and counts every answer. Then it keeps reading for a
short tail and writes its counts as JSON to --out.

The access token comes in the FLOOD_TOKEN environment variable, never on
the command line: procs.spawn writes command lines to the logs.
"""

import argparse
import asyncio
import json
import os
import resource
import time
from collections import Counter
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

# One cycle of 20 frames: 16 valid messages, then one of each bad kind.
# `oversized` is a message whose frame is over the default MAX_FRAME_BYTES
# (16 KiB), so the server refuses it before parsing.
MIX = ["message"] * 16 + ["oversized", "garbage", "not_object", "unknown_type"]
OVERSIZED_BODY = "x" * 20_000


def frame_text(kind: str, room: str, client_id: str) -> str:
    if kind == "message":
        return json.dumps(
            {"type": "message", "room": room, "body": "flood", "client_id": client_id}
        )
    if kind == "oversized":
        return json.dumps(
            {"type": "message", "room": room, "body": OVERSIZED_BODY, "client_id": client_id}
        )
    if kind == "garbage":
        return '{"type": "message", "room": '  # cut short: not JSON
    if kind == "not_object":
        return "[1, 2, 3]"
    return json.dumps({"type": "shout", "room": room})


class Counts:
    def __init__(self, username: str) -> None:
        self.username = username
        self.sent: Counter[str] = Counter()
        self.acked = 0
        self.errors: Counter[str] = Counter()
        self.others_messages = 0
        self.other_frames: Counter[str] = Counter()
        self.last_answer = 0.0
        self.closed: str | None = None

    def answer(self, raw: str | bytes) -> None:
        self.last_answer = time.time()
        frame = json.loads(raw)
        kind = frame.get("type")
        if kind == "error":
            self.errors[frame.get("code", "?")] += 1
        elif kind == "message" and frame.get("user") == self.username:
            self.acked += 1
        elif kind == "message":
            self.others_messages += 1
        else:
            self.other_frames[kind] += 1


async def read_all(ws, counts: Counts) -> None:
    try:
        async for raw in ws:
            counts.answer(raw)
    except ConnectionClosed as exc:
        counts.closed = f"{exc.rcvd.code if exc.rcvd else '?'} {exc}"


async def flood(ws, args: argparse.Namespace, counts: Counts) -> dict:
    """Open loop: frame n is due at start + n / rate; a late sender catches up."""
    start = args.start_at
    end = start + args.duration
    n = 0
    lag_max = 0.0
    while True:
        now = time.time()
        if now >= end or counts.closed:
            break
        due = int((now - start) * args.rate) if now >= start else 0
        if due > n:
            lag_max = max(lag_max, (due - n) / args.rate)
        while n < due and not counts.closed:
            kind = MIX[n % len(MIX)]
            try:
                await ws.send(frame_text(kind, args.room, f"f{args.phase}-{n}"))
            except ConnectionClosed as exc:
                # The server closed the flood (too_many_errors): what it is for.
                counts.closed = counts.closed or f"{exc.rcvd.code if exc.rcvd else '?'} {exc}"
                break
            counts.sent[kind] += 1
            n += 1
        await asyncio.sleep(min(0.05, start - now) if now < start else 0.001)
    return {"offered": round(args.rate * args.duration), "lag_max_s": round(lag_max, 3)}


async def main(args: argparse.Namespace) -> dict:
    counts = Counts(args.username)
    headers = {"Authorization": f"Bearer {os.environ['FLOOD_TOKEN']}"}
    t0 = time.time()
    async with connect(
        args.url, additional_headers=headers, compression=None, max_size=2**22
    ) as ws:
        await ws.send(json.dumps({"type": "join", "room": args.room}))
        while json.loads(await ws.recv()).get("type") != "joined":
            pass
        ready = time.time()
        reader = asyncio.create_task(read_all(ws, counts))
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        schedule = await flood(ws, args, counts)
        # Answers still on their way: read until the tail is quiet or over.
        tail_end = time.time() + args.tail
        while time.time() < tail_end and not counts.closed:
            if counts.last_answer and time.time() - counts.last_answer > 1.0:
                break
            await asyncio.sleep(0.1)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        reader.cancel()
    sent = sum(counts.sent.values())
    answered = counts.acked + sum(counts.errors.values())
    return {
        "connect_join_s": round(ready - t0, 3),
        "late_start_s": round(max(0.0, ready - args.start_at), 3),
        **schedule,
        "sent": sent,
        "sent_by_kind": dict(counts.sent),
        "acked": counts.acked,
        "refused": dict(counts.errors),
        "unanswered": sent - answered,
        "others_messages": counts.others_messages,
        "other_frames": dict(counts.other_frames),
        "closed_by_server": counts.closed,
        "cpu_s": round(
            cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime,
            3,
        ),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--phase", type=int, required=True)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--start-at", type=float, required=True, help="time.time() to start")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--tail", type=float, default=3.0)
    parser.add_argument("--out", type=Path, required=True)
    arguments = parser.parse_args()
    if not arguments.url.startswith("ws://127.0.0.1:"):
        parser.error("only loopback targets (ws://127.0.0.1:PORT/...)")
    result = asyncio.run(main(arguments))
    arguments.out.write_text(json.dumps(result, indent=1))
