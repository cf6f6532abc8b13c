"""The history API on 1,000,000 stored messages: latency per page and queries per page.

    DJANGO_SETTINGS_MODULE=bench.settings DATABASE_URL=... .venv/bin/python bench/history.py \
        --url http://127.0.0.1:PORT [--messages 1000000] [--requests 1000] [--out FILE.json]

Runs with the project's environment (the same variables as the Daphne it
measures; `bench/run.py` passes them). It

1. seeds one room (`history-1m`) with --messages messages in a single
   `INSERT ... SELECT generate_series` (seconds, not the ORM row by row); a
   room that already has them is kept, so a second run starts at once;
2. times `GET /api/rooms/history-1m/messages/` over HTTP on loopback, one
   keep-alive connection, requests one after another, for four pages: the
   latest, `?before=<id>` near the start of the room, the `next` cursor of
   that page (a deep cursor), and `?after=<id>` in the middle: at the client
   over loopback (Daphne and the socket round trip included), and **at the
   server**: each request carries an `X-Request-ID` naming its page, and the
   server's own request log (`--server-log`, JSON lines from
   chatsite.requestlog) gives its `duration_ms`, from the request entering
   Django's middleware to the response leaving it;
3. runs the same pages in-process through Django's test client against the
   same database: the time of the Django/DRF stack and its queries without
   Daphne (the closest to "at the server"), and the number of SQL queries per
   page from `CaptureQueriesContext`, with their SQL and the plan of the
   page query (`EXPLAIN ANALYZE`).

The endpoint contract: JWT (`Authorization: Bearer`), DRF cursor pagination
`{"next", "previous", "results"}`, newest first, `page_size` up to 100,
`?before=<id>` and `?after=<id>`.
"""

import argparse
import http.client
import json
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

# The project tree to import (run.py may point at a snapshot of a commit).
ROOT = Path(os.environ.get("BENCH_PROJECT_DIR") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # for bench.settings
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Max, Min  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from rest_framework_simplejwt.tokens import AccessToken  # noqa: E402

from chat.models import Membership, Message, Room  # noqa: E402
from chatsite.requestlog import HEADER  # noqa: E402

ROOM_SLUG = "history-1m"
USERNAME = "history-bench"
PAGE_SIZE = 50  # the page the chat UI loads; the API allows up to 100
WARMUP_REQUESTS = 20


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def summary_ms(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": percentile(values, 0.50),
        "p90": percentile(values, 0.90),
        "p99": percentile(values, 0.99),
        "max": round(max(values), 3) if values else None,
        "mean": round(statistics.fmean(values), 3) if values else None,
    }


# --- seeding ---------------------------------------------------------------------------


def room_and_user() -> tuple[Room, object]:
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=USERNAME)
    if created:
        user.set_unusable_password()
        user.save()
    room, _ = Room.objects.get_or_create(slug=ROOM_SLUG, defaults={"name": "History 1M"})
    Membership.objects.get_or_create(user=user, room=room)
    return room, user


def quote_table() -> str:
    return connection.ops.quote_name(Message._meta.db_table)


def seed(room: Room, user, total: int) -> dict:
    """Top the room up to `total` messages with one INSERT ... SELECT."""
    have = Message.objects.filter(room=room).count()
    missing = total - have
    seconds = 0.0
    if missing > 0:
        quote = connection.ops.quote_name
        field = Message._meta.get_field
        columns = ", ".join(
            quote(field(name).column)
            for name in ("room", "user", "body", "created_at", "client_id", "seq")
        )
        table = quote_table()
        started = time.perf_counter()
        with connection.cursor() as cursor:
            # One second apart, oldest first, so ids and times rise together.
            select = (
                "SELECT %s, %s, 'history message ' || g, now() - make_interval(secs => %s - g), "
                "NULL, %s + g FROM generate_series(1, %s) AS g"
            )
            # Table and column names come from the model, values are parameters.
            sql = f"INSERT INTO {table} ({columns}) {select}"
            cursor.execute(sql, [room.id, user.id, missing, have, missing])
        seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        # As autovacuum would have by now (it is off on some machines here): a
        # table never vacuumed has no visibility map, so every index scan also
        # visits the heap, and the first reads of fresh rows write hint bits.
        cursor.execute(f"VACUUM (ANALYZE) {quote_table()}")
    bounds = Message.objects.filter(room=room).aggregate(first=Min("id"), last=Max("id"))
    return {
        "room": room.slug,
        "messages_before": have,
        "inserted": max(0, missing),
        "insert_seconds": round(seconds, 2),
        "first_id": bounds["first"],
        "last_id": bounds["last"],
    }


# --- pages -------------------------------------------------------------------------------


def base_path() -> str:
    return f"/api/rooms/{ROOM_SLUG}/messages/"


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def pages(first_id: int, last_id: int, next_of) -> dict[str, str]:
    """The pages to time; `next_of(path)` fetches a page and returns its next link."""
    base = base_path()
    deep = f"{base}?before={first_id + 1000}&page_size={PAGE_SIZE}"
    middle = first_id + (last_id - first_id) // 2
    chosen = {
        "latest": f"{base}?page_size={PAGE_SIZE}",
        "before_deep": deep,
        "after_middle": f"{base}?after={middle}&page_size={PAGE_SIZE}",
    }
    cursor = next_of(deep)
    if cursor:
        chosen["cursor_deep"] = path_of(cursor)
    return chosen


class HttpTimer:
    """Sequential GETs on one keep-alive connection to the server."""

    def __init__(self, url: str, token: str):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.headers = {"Authorization": f"Bearer {token}", "Host": parts.netloc}
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self.run_id = os.urandom(4).hex()  # this run's request ids, in a log that may hold others

    def request_id(self, page: str, i: int) -> str:
        return f"bh-{self.run_id}-{page}-{i}"

    def get(self, path: str, request_id: str | None = None) -> tuple[int, bytes, float]:
        headers = self.headers if request_id is None else {**self.headers, HEADER: request_id}
        started = time.perf_counter()
        try:
            self.conn.request("GET", path, headers=headers)
            response = self.conn.getresponse()
            body = response.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # the server closed a kept-alive connection: once more
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self.conn.request("GET", path, headers=headers)
            response = self.conn.getresponse()
            body = response.read()
        return response.status, body, (time.perf_counter() - started) * 1000

    def next_of(self, path: str) -> str | None:
        status, body, _ = self.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status} {body[:300]!r}")
        return json.loads(body).get("next")

    def time_page(self, name: str, path: str, requests: int) -> dict:
        statuses: dict[int, int] = {}
        times: list[float] = []
        results = None
        for i in range(WARMUP_REQUESTS + requests):
            timed = i >= WARMUP_REQUESTS
            status, body, ms = self.get(path, self.request_id(name, i) if timed else None)
            statuses[status] = statuses.get(status, 0) + 1
            if timed:
                times.append(ms)
            if results is None and status == 200:
                results = len(json.loads(body).get("results", []))
        return {
            "path": path,
            "results_per_page": results,
            "statuses": statuses,
            **summary_ms(times),
        }


def server_durations(log: Path, prefix: str) -> list[float]:
    """`duration_ms` of the requests whose id starts with `prefix`, from the server's log."""
    durations = []
    with log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if prefix not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # Daphne's own access lines are not JSON
            if str(record.get("request_id", "")).startswith(prefix) and "duration_ms" in record:
                durations.append(float(record["duration_ms"]))
    return durations


def in_process(path: str, token: str, requests: int) -> dict:
    """The page through Django's test client: stack time and the queries it runs."""
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST="127.0.0.1")
    response = client.get(path)  # warm the pool and the caches
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    queries = [q["sql"] for q in captured.captured_queries]
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        client.get(path)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "status": response.status_code,
        "queries": len(queries),
        "sql": queries,
        "plan": explain(queries),
        **summary_ms(times),
    }


def explain(queries: list[str]) -> list[str] | None:
    """EXPLAIN ANALYZE of the page query (the one reading messages with a LIMIT)."""
    table = Message._meta.db_table
    page_query = next((q for q in queries if f'FROM "{table}"' in q and "LIMIT" in q), None)
    if page_query is None or connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {page_query}")
        return [row[0] for row in cursor.fetchall()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the project's server (loopback)")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=1000, help="timed HTTP requests per page")
    parser.add_argument("--in-process-requests", type=int, default=300)
    parser.add_argument(
        "--server-log", help="the server's log (JSON lines), for the durations at the server"
    )
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    if urlsplit(args.url).hostname not in {"127.0.0.1", "localhost", "::1"}:
        sys.exit("history.py measures loopback servers only")

    room, user = room_and_user()
    seeded = seed(room, user, args.messages)
    print(
        f"history: room {room.slug} holds ids {seeded['first_id']}..{seeded['last_id']} "
        f"({seeded['inserted']:,} inserted in {seeded['insert_seconds']} s)",
        flush=True,
    )
    token = str(AccessToken.for_user(user))
    timer = HttpTimer(args.url, token)
    chosen = pages(seeded["first_id"], seeded["last_id"], timer.next_of)
    result: dict = {"seed": seeded, "page_size": PAGE_SIZE, "pages": {}}
    for name, path in chosen.items():
        over_http = timer.time_page(name, path, args.requests)
        stack = in_process(path, token, args.in_process_requests)
        result["pages"][name] = {"http_loopback_ms": over_http, "in_process_ms": stack}
        at_server = ""
        if args.server_log:
            time.sleep(0.5)  # the last lines reach the file
            server = summary_ms(server_durations(Path(args.server_log), timer.request_id(name, "")))
            result["pages"][name]["server_ms"] = server
            at_server = f"server p50 {server['p50']} p99 {server['p99']} ms (n={server['n']}); "
        print(
            f"history: {name:13} {at_server}http p50 {over_http['p50']} p99 {over_http['p99']} ms; "
            f"in-process p50 {stack['p50']} p99 {stack['p99']} ms; {stack['queries']} queries; "
            f"{over_http['results_per_page']} results; statuses {over_http['statuses']}",
            flush=True,
        )
    counts = {page["in_process_ms"]["queries"] for page in result["pages"].values()}
    result["constant_query_count"] = len(counts) == 1
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
